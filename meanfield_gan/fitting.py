"""Power-law fits with bootstrap confidence intervals over independent seeds.

The convergence study (MODEL.md section 4.1) measures ``E d_2^2`` at several particle numbers
``N``, each estimated by averaging independent seeds, and checks that the fitted exponent of
``E d_2^2 ~ C N^slope`` is near ``-1``. :func:`fit_power_law` fits the log of the seed average
against ``log N`` by least squares and puts a percentile-bootstrap interval on the slope,
resampling the seeds of each ``N`` independently (the seeds of different ``N`` are independent
experiments).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._util import to_jsonable

__all__ = ["PowerLawFit", "fit_power_law"]


@dataclass(frozen=True, eq=False)
class PowerLawFit:
    """Result of :func:`fit_power_law`: ``mean(N) ~ exp(intercept) * N**slope``.

    Attributes
    ----------
    slope : float
        Least-squares slope of ``log mean`` against ``log N``.
    intercept : float
        Least-squares intercept (natural log of the prefactor).
    slope_ci : tuple of float
        ``(low, high)`` percentile-bootstrap interval of the slope at confidence ``level``;
        ``(nan, nan)`` when ``n_boot == 0``.
    mean : numpy.ndarray, shape (P,)
        Average over the finite seeds at each ``N`` (NaN where a row has none).
    stderr : numpy.ndarray, shape (P,)
        Standard error of that average, ``std(ddof=1) / sqrt(n_seeds)`` (NaN with < 2 seeds).
    n_boot : int
        Number of bootstrap replicates used (replicates with a zero mean, whose log is
        undefined, are left out).
    N : numpy.ndarray, shape (P,)
        The particle numbers, as given (integers stay integers in :meth:`to_dict`).
    n_seeds : numpy.ndarray of int, shape (P,)
        Number of finite values at each ``N``.
    level : float
        Confidence level of ``slope_ci``.
    """

    slope: float
    intercept: float
    slope_ci: tuple[float, float]
    mean: np.ndarray
    stderr: np.ndarray
    n_boot: int
    N: np.ndarray
    n_seeds: np.ndarray
    level: float

    @property
    def prefactor(self) -> float:
        """``exp(intercept)``, the constant ``C`` of ``C * N**slope``."""
        return math.exp(self.intercept)

    def predict(self, N: Any) -> np.ndarray:
        """Evaluate the fitted law ``exp(intercept) * N**slope`` at ``N``."""
        return np.exp(self.intercept + self.slope * np.log(np.asarray(N, dtype=np.float64)))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form for JSON (NaN becomes ``None``)."""
        return to_jsonable(
            {
                "slope": self.slope,
                "intercept": self.intercept,
                "prefactor": self.prefactor,
                "slope_ci": list(self.slope_ci),
                "level": self.level,
                "n_boot": self.n_boot,
                "N": self.N,
                "mean": self.mean,
                "stderr": self.stderr,
                "n_seeds": self.n_seeds,
            }
        )


def _ls_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of ``y`` (shape (..., P)) against ``x`` (shape (P,))."""
    xc = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)


def fit_power_law(
    N: Any,
    values: Any,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PowerLawFit:
    """Fit ``mean over seeds of values ~ C * N**slope`` with a bootstrap interval on the slope.

    Parameters
    ----------
    N : array_like, shape (P,)
        Positive particle numbers (or any positive abscissa), at least two distinct.
    values : array_like, shape (P, S) or (P,)
        ``values[p, s]``: the measured quantity (e.g. ``d_2^2`` at the final time) for
        ``N[p]`` and seed ``s``; must be ``>= 0``. NaN marks a missing seed and is ignored,
        so rows may hold different numbers of seeds. 1-D input is one seed per ``N``.
    n_boot : int, optional
        Bootstrap replicates; 0 skips the interval.
    seed : int, optional
        Seed of the bootstrap resampling.
    level : float, optional
        Confidence level of the interval, in (0, 1).

    Returns
    -------
    PowerLawFit
        Slope, intercept, interval and the per-``N`` means and standard errors.

    Raises
    ------
    ValueError
        On shape mismatch, non-positive or non-finite ``N``, negative or infinite values, a
        row whose seeds average to zero, fewer than two distinct ``N`` with data, or bad
        ``n_boot`` / ``level``.

    Notes
    -----
    The fit is ordinary least squares of ``log(mean_p)`` on ``log(N_p)`` over the rows with
    at least one finite value. Each bootstrap replicate redraws, for every ``N`` separately,
    as many seeds as that row has (with replacement), recomputes the means and refits; the
    interval is the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the replicate slopes.
    """
    n_given = np.asarray(N)
    n_arr = n_given.astype(np.float64) if n_given.dtype.kind in "iuf" else np.asarray(N, float)
    if n_arr.ndim != 1 or n_arr.size == 0:
        raise ValueError(f"N must be a non-empty 1-D array, got shape {n_arr.shape}")
    if not np.all(np.isfinite(n_arr)) or np.any(n_arr <= 0):
        raise ValueError("N must contain finite values > 0")
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals[:, None]
    if vals.ndim != 2 or vals.shape[0] != n_arr.size or vals.shape[1] == 0:
        raise ValueError(
            f"values must have shape (len(N), n_seeds) = ({n_arr.size}, S), got {np.shape(values)}"
        )
    if np.any(np.isinf(vals)):
        raise ValueError("values must not contain inf (use NaN for a missing seed)")
    if np.any(vals < 0):
        raise ValueError("values must be >= 0 (a power law is fitted to their mean)")
    try:
        ok_boot = not isinstance(n_boot, bool) and int(n_boot) == n_boot and n_boot >= 0
    except (TypeError, ValueError, OverflowError):
        ok_boot = False
    if not ok_boot:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    try:
        ok_level = 0.0 < float(level) < 1.0
    except (TypeError, ValueError):
        ok_level = False
    if not ok_level:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")

    finite = np.isfinite(vals)
    n_seeds = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_seeds > 0, np.nansum(vals, axis=1) / n_seeds, np.nan)
        sq = np.nansum((vals - mean[:, None]) ** 2, axis=1)
        stderr = np.where(n_seeds > 1, np.sqrt(sq / (n_seeds - 1) / n_seeds), np.nan)

    used = np.flatnonzero(n_seeds > 0)
    zero = used[mean[used] == 0]
    if zero.size:
        raise ValueError(
            f"values average to 0 at N={n_arr[zero[0]]:g}; log(mean) is undefined there"
        )
    if np.unique(n_arr[used]).size < 2:
        raise ValueError("need finite values at two or more distinct N to fit a power law")

    x = np.log(n_arr[used])
    slope = float(_ls_slope(x, np.log(mean[used])))
    intercept = float(np.mean(np.log(mean[used])) - slope * x.mean())

    n_boot = int(n_boot)
    if n_boot == 0:
        ci = (math.nan, math.nan)
        used_boot = 0
    else:
        rng = np.random.default_rng(seed)
        boot_means = np.empty((n_boot, used.size))
        for col, row in enumerate(used):
            seeds_here = vals[row, finite[row]]
            draw = rng.integers(0, seeds_here.size, size=(n_boot, seeds_here.size))
            boot_means[:, col] = seeds_here[draw].mean(axis=1)
        # A replicate that drew only zeros has no logarithm; drop it rather than fail.
        ok = np.all(boot_means > 0, axis=1)
        used_boot = int(ok.sum())
        if used_boot == 0:
            ci = (math.nan, math.nan)
        else:
            slopes = _ls_slope(x, np.log(boot_means[ok]))
            lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
            ci = (float(lo), float(hi))

    return PowerLawFit(
        slope=slope,
        intercept=intercept,
        slope_ci=ci,
        mean=mean,
        stderr=stderr,
        n_boot=used_boot,
        N=n_given if n_given.dtype.kind in "iu" else n_arr,
        n_seeds=n_seeds.astype(np.int64),
        level=float(level),
    )
