"""The numbers of a rate study and their fits: :class:`RateResult`."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import RateConfig

__all__ = ["RateResult"]


def _fit(N: Sequence[int], values: np.ndarray, n_boot: int, seed: int):
    from meanfield_gan.fitting import fit_power_law

    return fit_power_law(np.asarray(N, dtype=float), values, n_boot=n_boot, seed=seed)


@dataclass
class RateResult:
    """Every number of a rate study, and the fits (see :func:`run_rate_study`).

    Arrays are indexed ``[N index, seed index, SGD run, record time]`` where they apply.

    Attributes
    ----------
    config : RateConfig
    N, M : ndarray (nN,)
    times : ndarray (T,)
        Record times.
    coupling_generator, coupling_critic : ndarray (nN, S, R, T)
        Natural-coupling terms of ``d_2^2`` between each SGD run and its Euler reference
        (``R`` is the largest number of runs; NaN beyond ``runs[i]``).
    exact_generator, exact_critic : ndarray (nN, S, R)
        Exact ``W_2^2`` terms at ``t_end`` (NaN where ``N > exact_max_N``).
    boundary_euler : ndarray (nN, S, T)
    boundary_sgd : ndarray (nN, S, R, T)
        Fractions of critic particles on the boundary of ``Q``.
    sgd_seeds : ndarray (nN, S, R) of uint64
        The SGD batch seeds (``simulate(..., seed=...)``; 0 beyond ``runs[i]``).
    runs : ndarray (nN,)
        SGD runs per initial draw at each ``N``.
    task_seconds : ndarray (nN, S)
    wall_seconds : float
    executor : str
    """

    config: RateConfig
    N: np.ndarray
    M: np.ndarray
    times: np.ndarray
    coupling_generator: np.ndarray
    coupling_critic: np.ndarray
    exact_generator: np.ndarray
    exact_critic: np.ndarray
    boundary_euler: np.ndarray
    boundary_sgd: np.ndarray
    sgd_seeds: np.ndarray
    runs: np.ndarray
    task_seconds: np.ndarray
    wall_seconds: float = 0.0
    executor: str = ""
    fits: dict = field(default_factory=dict, repr=False)

    # -- per-seed values (mean over the SGD runs of one initial draw) ------------------------
    @property
    def coupling(self) -> np.ndarray:
        """Coupling bound of ``d_2^2`` per seed and time, mean over SGD runs: (nN, S, T)."""
        return _run_mean(self.coupling_generator + self.coupling_critic)

    @property
    def exact(self) -> np.ndarray:
        """Exact ``d_2^2`` at ``t_end`` per seed, mean over SGD runs: (nN, S) (NaN rows:
        skipped)."""
        return _run_mean(self.exact_generator + self.exact_critic)

    @property
    def distance(self) -> str:
        """``"exact"`` when exact ``W_2`` was computed for every ``N``, else ``"coupling"``."""
        return "exact" if self.config.exact_everywhere else "coupling"

    @property
    def d2(self) -> np.ndarray:
        """The headline ``d_2^2`` at ``t_end`` per seed: (nN, S)."""
        return self.exact if self.distance == "exact" else self.coupling[:, :, -1]

    def analyse(self) -> dict:
        """Fit the power laws (headline, coupling at every time, exact subset); cache in
        ``fits``."""
        cfg = self.config
        fits: dict[str, Any] = {"headline": _fit(self.N, self.d2, cfg.n_boot, cfg.seed)}
        fits["per_time"] = [_fit(self.N, self.coupling[:, :, k], cfg.n_boot, cfg.seed)
                            for k in range(len(self.times))]
        fits["coupling"] = fits["per_time"][-1]
        rows = np.flatnonzero(self.N <= cfg.exact_max_N)
        fits["exact_N"] = self.N[rows]
        fits["exact"] = (_fit(self.N[rows], self.exact[rows], cfg.n_boot, cfg.seed)
                         if len(rows) >= 2 else None)
        self.fits = fits
        return fits

    def summary(self) -> dict:
        """The ``rate.json`` document (API.md keys first)."""
        if not self.fits:
            self.analyse()
        f = self.fits
        head = f["headline"]
        mean_d2 = self.d2.mean(axis=1)
        S = self.d2.shape[1]
        out: dict[str, Any] = {
            "slope": head.slope,
            "slope_ci": list(head.slope_ci),
            "N": self.N.tolist(),
            "mean_d2": mean_d2.tolist(),
            "seeds": int(S),
            "t_end": float(self.config.t_end),
            "config": self.config.to_dict(),
            "distance": self.distance,
            "expected_slope": -1.0,
            "intercept": head.intercept,
            "M": self.M.tolist(),
            "sgd_runs": self.runs.tolist(),
            "stderr_d2": (self.d2.std(axis=1, ddof=1) / math.sqrt(S)).tolist(),
            "N_times_mean_d2": (self.N * mean_d2).tolist(),
            "coupling": {"slope": f["coupling"].slope, "slope_ci": list(f["coupling"].slope_ci),
                         "mean_d2": self.coupling[:, :, -1].mean(axis=1).tolist()},
            "exact": None,
            "per_time": [
                {"t": float(t), "slope": ft.slope, "slope_ci": list(ft.slope_ci),
                 "mean_d2": self.coupling[:, :, k].mean(axis=1).tolist()}
                for k, (t, ft) in enumerate(zip(self.times, f["per_time"]))
            ],
            "boundary_fraction_euler": self.boundary_euler[:, :, -1].mean(axis=1).tolist(),
            "boundary_fraction_sgd":
                _run_mean(self.boundary_sgd[:, :, :, -1]).mean(axis=1).tolist(),
            "wall_seconds": float(self.wall_seconds),
            "executor": self.executor,
        }
        if f["exact"] is not None:
            rows = np.flatnonzero(self.N <= self.config.exact_max_N)
            ex, cp = self.exact[rows], self.coupling[rows, :, -1]
            out["exact"] = {"N": f["exact_N"].tolist(), "slope": f["exact"].slope,
                            "slope_ci": list(f["exact"].slope_ci),
                            "mean_d2": ex.mean(axis=1).tolist(),
                            # exact W2 <= coupling bound, equal when the natural pairing is optimal
                            "exact_over_coupling": (ex.mean(axis=1) / cp.mean(axis=1)).tolist()}
        return out


def _run_mean(a: np.ndarray) -> np.ndarray:
    """Mean over axis 2 (the SGD runs of one seed) of the finite entries; NaN if there are none."""
    ok = np.isfinite(a)
    n = ok.sum(axis=2)
    total = np.where(ok, a, 0.0).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)
