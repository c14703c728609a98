"""The C/N convergence-rate study (MODEL.md section 4, Theorem 7): ``meanfield-gan rate``.

For every ``N`` of a geometric grid (``M = round(M_ratio N)``) and many independent seeds:

1. draw i.i.d. initial particles ``theta_i ~ mu_in``, ``omega_j ~ nu_in``;
2. run projected forward Euler with exact (quadrature) expectations from them: the WGAN-PDE
   started from the empirical initial measures (the theorem's ``(mu_inf, nu_inf)``);
3. run ``sgd_runs`` independent SGD trajectories (the WGAN algorithm, batch ``m``,
   ``dt = lr/N``, ``gamma_c = n_critic N/M``) from the *same* particles with the same ``dt``;
4. record the pair distance ``d_2^2 = W_2^2(mu) + W_2^2(nu)`` between SGD and Euler at
   ``n_times`` times up to ``t_end``: the natural-coupling bound
   ``(1/N) sum |theta_i - theta~_i|^2 + (1/M) sum |omega_j - omega~_j|^2`` always, the exact
   ``W_2`` (POT) at ``t_end`` where ``N <= exact_max_N``.

The value of one seed is its mean over the SGD runs (an estimate of ``E d_2^2`` given the
initial particles); seeds are the independent units that the bootstrap resamples. The fit is
``log E d_2^2 = slope log N + c``; Theorem 7 predicts ``slope = -1``.

Why ``C/N``: with the natural coupling, ``e_k = theta^k - theta~^k`` obeys
``e_{k+1} = (1 + O(dt)) e_k + dt M_k`` where ``M_k`` (the batch noise) has mean zero and
variance ``O(1)``, so ``E|e|^2 ~ dt^2 (T/dt) = dt T = lr T / N`` per particle.

Two cheap companions (``--euler-order``, ``--iid``; always run by
``benchmarks/convergence_rate.py``): the order of projected Euler in ``dt`` against a
projected-Heun reference (order 1 while no critic particle touches the box, 1/2 in general),
and Corollary 9: i.i.d. initial data against a much larger particle system, whose measured
exponent is printed beside the bound ``-2/(K(L+2))``.

Every task (one ``(N, seed)``: one Euler run and its SGD runs) is independent and goes through
:func:`meanfield_gan.parallel.map_tasks`: local processes by default, any
:class:`concurrent.futures.Executor` (``dask.distributed.Client(...).get_executor()``) or a
Dask scheduler address. Seeds are derived from ``(seed, N, seed index, run)`` alone, so the
numbers do not depend on the executor.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from meanfield_gan._util import to_jsonable, want_progress, write_study_outputs
from meanfield_gan.io.config import ConfigError, LawConfig, ProblemConfig, dumps_toml
from meanfield_gan.parallel import executor_from_scheduler, map_tasks

import tomllib as _toml  # the package requires Python >= 3.11

__all__ = [
    "RateConfig",
    "RateResult",
    "load_rate_config",
    "loads_rate_config",
    "default_rate_config_path",
    "rate_task",
    "run_rate_study",
    "run_euler_order",
    "run_iid_study",
    "write_rate",
    "read_rate",
    "plot_rate",
    "configure_parser",
    "cli_main",
]

#: Sections of a rate configuration and the keys each accepts.
SECTIONS: dict[str, tuple[str, ...]] = {
    "problem": ("K", "L", "clip", "quadrature_size", "target", "latent"),
    "init": ("generator", "critic"),
    "rate": ("N", "M_ratio", "seeds", "sgd_runs", "seed", "t_end", "n_times", "lr", "n_critic",
             "batch_size", "exact_max_N", "n_boot", "backend"),
    "euler_order": ("N", "seed", "dt_max", "n_dt", "ref_refine", "interior", "boundary"),
    "iid": ("N", "N_ref", "seeds", "seed", "dt", "t_end", "gamma_c"),
}
_CASE_KEYS = ("t_end", "gamma_c")
_BACKENDS = ("numpy", "numba", "cuda")
#: Tables replaced as a whole (not merged key by key) when a user file overrides a default.
_REPLACED = {("problem", "target"), ("problem", "latent"), ("init", "generator"),
             ("init", "critic")}


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "a table"
    return repr(v) if isinstance(v, str) else str(v)


def _int(v: Any, key: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ConfigError(f"{key}: must be an integer, got {_show(v)}")
    if v < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {v}")
    return int(v)


def _float(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{key}: must be a number, got {_show(v)}")
    f = float(v)
    if not (math.isfinite(f) and f > 0):
        raise ConfigError(f"{key}: must be finite and > 0, got {_show(v)}")
    return f


def _grid(v: Any, key: str, minimum: int = 2) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or len(v) < 3:
        raise ConfigError(f"{key}: must be a list of at least 3 particle numbers, got {_show(v)}")
    out = tuple(_int(x, f"{key}[{i}]", minimum) for i, x in enumerate(v))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ConfigError(f"{key}: must be strictly increasing, got {list(out)}")
    return out


def _table(v: Any, key: str) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: must be a table, got {_show(v)}")
    return v


def _check_keys(d: Mapping, key: str, allowed: Sequence[str]) -> None:
    for k in d:
        if k not in allowed:
            where = f"{key}.{k}" if key else k
            noun = "key" if key else "section"
            raise ConfigError(f"{where}: unknown {noun} (allowed: {', '.join(allowed)})")


def _need(d: Mapping, k: str, key: str) -> Any:
    if k not in d:
        raise ConfigError(f"{key}.{k}: required key is missing")
    return d[k]


@dataclass(frozen=True)
class EulerOrderCase:
    """One setting of the Euler-order check: horizon ``t_end`` and critic scale ``gamma_c``."""

    t_end: float
    gamma_c: float


@dataclass(frozen=True)
class RateConfig:
    """A validated rate-study configuration (see ``meanfield_gan/data/rate_quick.toml``).

    Attributes
    ----------
    problem : ProblemConfig
        ``[problem]``: dimensions, box, target, latent law and the quadrature size of the
        Euler reference (the same section as in ``meanfield-gan run`` configurations).
    generator, critic : LawConfig
        ``[init]``: the laws ``mu_in``, ``nu_in`` of the i.i.d. initial particles.
    N : tuple of int
        ``[rate]`` grid of generator particle numbers; ``M = max(1, round(M_ratio N))``.
    seeds : int
        Independent initial draws per ``N`` (each with its own Euler reference).
    sgd_runs : int or tuple of int
        Independent SGD runs per initial draw (their mean is the seed's value); a list gives
        one number per ``N`` (many cheap runs at small ``N``, few at large ``N``).
    t_end, n_times : float, int
        Distances are recorded at ``t_end k / n_times``, ``k = 1..n_times``.
    lr, n_critic, batch_size : float, int, int
        The SGD scheme: ``dt = lr/N``, ``gamma_c = n_critic N/M``.
    exact_max_N : int
        Exact ``W_2`` (POT) at ``t_end`` for ``N <= exact_max_N`` (0: never).
    n_boot, seed : int
        Bootstrap resamples of the fit; base seed of every random draw.
    euler_order, iid : dict
        Settings of the two companion checks (``[euler_order]``, ``[iid]``).
    """

    problem: ProblemConfig
    generator: LawConfig
    critic: LawConfig
    N: tuple[int, ...]
    M_ratio: float
    seeds: int
    sgd_runs: int | tuple[int, ...]
    seed: int
    t_end: float
    n_times: int
    lr: float
    n_critic: int
    batch_size: int
    exact_max_N: int
    n_boot: int
    backend: str
    euler_order: dict = field(default_factory=dict)
    iid: dict = field(default_factory=dict)
    source: str = field(default="", compare=False)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], base_dir: str | os.PathLike = ".",
                  source: str = "") -> "RateConfig":
        """Validate a parsed TOML document (every section present, see :func:`load_rate_config`).

        Raises
        ------
        ConfigError
            One line naming the offending key (``rate.seeds: must be >= 2, got 1``).
        """
        _check_keys(doc, "", tuple(SECTIONS))
        for name in SECTIONS:
            _check_keys(_table(doc.get(name, {}), name), name, SECTIONS[name])
        problem = ProblemConfig.parse(doc.get("problem", {}), "problem", Path(base_dir))
        init = doc.get("init", {})
        generator = LawConfig.parse(init.get("generator", {"kind": "normal"}), "init.generator")
        critic = LawConfig.parse(
            init.get("critic", {"kind": "uniform", "low": -0.5 * problem.clip,
                                "high": 0.5 * problem.clip}), "init.critic")
        r = doc.get("rate", {})
        backend = r.get("backend", "numba")
        if backend not in _BACKENDS:
            raise ConfigError(f"rate.backend: must be one of {', '.join(_BACKENDS)}; got {_show(backend)}")
        grid = _grid(_need(r, "N", "rate"), "rate.N")
        cfg = cls(
            problem=problem, generator=generator, critic=critic, N=grid,
            M_ratio=_float(r.get("M_ratio", 1.0), "rate.M_ratio"),
            seeds=_int(_need(r, "seeds", "rate"), "rate.seeds", 2),
            sgd_runs=_runs(r.get("sgd_runs", 1), len(grid)),
            seed=_int(r.get("seed", 0), "rate.seed", 0),
            t_end=_float(_need(r, "t_end", "rate"), "rate.t_end"),
            n_times=_int(r.get("n_times", 4), "rate.n_times", 1),
            lr=_float(r.get("lr", 1.0), "rate.lr"),
            n_critic=_int(r.get("n_critic", 1), "rate.n_critic", 1),
            batch_size=_int(r.get("batch_size", 1), "rate.batch_size", 1),
            exact_max_N=_int(r.get("exact_max_N", 0), "rate.exact_max_N", 0),
            n_boot=_int(r.get("n_boot", 2000), "rate.n_boot", 100),
            backend=backend,
            euler_order=_parse_euler_order(doc.get("euler_order", {})),
            iid=_parse_iid(doc.get("iid", {})),
            source=source,
        )
        # Every N must record at the same times: whole numbers of steps of dt = lr/N.
        for N in cfg.N:
            steps = cfg.t_end * N / cfg.lr
            if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
                raise ConfigError(f"rate.t_end: t_end * N / lr must be a whole number of steps; "
                                  f"for N = {N} it is {steps:g}")
            if round(steps) % cfg.n_times:
                raise ConfigError(f"rate.n_times: must divide the number of steps t_end * N / lr "
                                  f"({round(steps)} for N = {N})")
        cfg.problem_instance()  # let the core constructors reject what they reject, now
        return cfg

    def problem_instance(self):
        """The :class:`meanfield_gan.Problem` of this configuration."""
        from meanfield_gan.model.problem import Problem

        try:
            return Problem(K=self.problem.K, L=self.problem.L, target=self.problem.target.build(),
                           latent=self.problem.latent.build(self.problem.L), clip=self.problem.clip,
                           generator_init=self.generator.build(), critic_init=self.critic.build(),
                           quadrature_size=self.problem.quadrature_size)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"problem: {exc}") from None

    # -- derived quantities -------------------------------------------------------------------
    def runs(self, N: int) -> int:
        """SGD runs per initial draw for ``N`` particles."""
        if isinstance(self.sgd_runs, int):
            return self.sgd_runs
        return self.sgd_runs[self.N.index(N)]

    def M(self, N: int) -> int:
        """Critic particles for ``N`` generator particles."""
        return max(1, int(round(self.M_ratio * N)))

    @property
    def times(self) -> np.ndarray:
        """Nominal record times ``t_end k / n_times``, ``k = 1..n_times``."""
        return self.t_end * np.arange(1, self.n_times + 1) / self.n_times

    @property
    def exact_everywhere(self) -> bool:
        """Whether exact ``W_2`` is computed for every ``N`` (then it is the headline)."""
        return max(self.N) <= self.exact_max_N

    def to_dict(self) -> dict:
        """The configuration as a nested dict (TOML layout, every default filled in)."""
        eo = dict(self.euler_order)
        eo["interior"] = dict(vars(eo["interior"]))
        eo["boundary"] = dict(vars(eo["boundary"]))
        return {
            "problem": self.problem.to_dict(),
            "init": {"generator": self.generator.to_dict(), "critic": self.critic.to_dict()},
            "rate": {"N": list(self.N), "M_ratio": self.M_ratio, "seeds": self.seeds,
                     "sgd_runs": (self.sgd_runs if isinstance(self.sgd_runs, int)
                                  else list(self.sgd_runs)), "seed": self.seed, "t_end": self.t_end,
                     "n_times": self.n_times, "lr": self.lr, "n_critic": self.n_critic,
                     "batch_size": self.batch_size, "exact_max_N": self.exact_max_N,
                     "n_boot": self.n_boot, "backend": self.backend},
            "euler_order": eo,
            "iid": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.iid.items()},
        }

    def to_toml(self) -> str:
        """Canonical TOML text of :meth:`to_dict` (reads back to an equal configuration)."""
        return dumps_toml(self.to_dict())

    def replace(self, **changes: Any) -> "RateConfig":
        """A copy with ``[rate]`` fields changed, validated again (e.g. ``seeds=4``)."""
        doc = self.to_dict()
        for k, v in changes.items():
            if k not in SECTIONS["rate"]:
                raise ConfigError(f"rate.{k}: unknown key (allowed: {', '.join(SECTIONS['rate'])})")
            doc["rate"][k] = list(v) if isinstance(v, tuple) else v
        return RateConfig.from_dict(doc, source=self.source)


def _runs(v: Any, n: int) -> int | tuple[int, ...]:
    if isinstance(v, list):
        if len(v) != n:
            raise ConfigError(f"rate.sgd_runs: a list must give one number per N ({n}), got {len(v)}")
        return tuple(_int(x, f"rate.sgd_runs[{i}]", 1) for i, x in enumerate(v))
    return _int(v, "rate.sgd_runs", 1)


def _parse_euler_order(raw: Any) -> dict:
    d = _table(raw, "euler_order")
    out = {
        "N": _int(d.get("N", 64), "euler_order.N", 1),
        "seed": _int(d.get("seed", 0), "euler_order.seed", 0),
        "dt_max": _float(d.get("dt_max", 1.0 / 16), "euler_order.dt_max"),
        "n_dt": _int(d.get("n_dt", 5), "euler_order.n_dt", 2),
        "ref_refine": _int(d.get("ref_refine", 8), "euler_order.ref_refine", 1),
    }
    defaults = {"interior": EulerOrderCase(1.0, 1.0), "boundary": EulerOrderCase(2.0, 5.0)}
    for case, dflt in defaults.items():
        c = _table(d.get(case, {}), f"euler_order.{case}")
        _check_keys(c, f"euler_order.{case}", _CASE_KEYS)
        out[case] = EulerOrderCase(
            t_end=_float(c.get("t_end", dflt.t_end), f"euler_order.{case}.t_end"),
            gamma_c=_float(c.get("gamma_c", dflt.gamma_c), f"euler_order.{case}.gamma_c"))
        n0 = out[case].t_end / out["dt_max"]
        if abs(n0 - round(n0)) > 1e-9 * max(1.0, n0):
            raise ConfigError(f"euler_order.{case}.t_end: must be a whole multiple of "
                              f"euler_order.dt_max = {out['dt_max']:g}")
    return out


def _parse_iid(raw: Any) -> dict:
    d = _table(raw, "iid")
    out = {
        "N": _grid(d.get("N", [16, 32, 64, 128]), "iid.N", 1),
        "N_ref": _int(d.get("N_ref", 4096), "iid.N_ref", 2),
        "seeds": _int(d.get("seeds", 4), "iid.seeds", 2),
        "seed": _int(d.get("seed", 0), "iid.seed", 0),
        "dt": _float(d.get("dt", 1.0 / 32), "iid.dt"),
        "t_end": _float(d.get("t_end", 1.0), "iid.t_end"),
        "gamma_c": _float(d.get("gamma_c", 1.0), "iid.gamma_c"),
    }
    if out["N_ref"] < 4 * max(out["N"]):
        raise ConfigError(f"iid.N_ref: must be at least 4 times the largest iid.N "
                          f"({4 * max(out['N'])}), got {out['N_ref']}")
    steps = out["t_end"] / out["dt"]
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ConfigError(f"iid.t_end: must be a whole multiple of iid.dt = {out['dt']:g}")
    return out


def default_rate_config_path(quick: bool = False) -> Path:
    """The packaged defaults: ``data/rate_quick.toml`` (``quick``) or ``data/rate_full.toml``."""
    name = "rate_quick.toml" if quick else "rate_full.toml"
    return Path(str(resources.files("meanfield_gan").joinpath("data", name)))


def _merge(base: dict, over: Mapping, path: tuple[str, ...] = ()) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        here = path + (k,)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and here not in _REPLACED:
            out[k] = _merge(out[k], v, here)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_toml(text: str, source: str) -> dict:
    try:
        return _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}".replace("\n", " ")) from None


def loads_rate_config(text: str = "", quick: bool = False, base_dir: str | os.PathLike = ".",
                      source: str = "") -> RateConfig:
    """Parse a rate configuration from TOML text layered over the packaged defaults.

    Parameters
    ----------
    text : str
        TOML overriding the defaults (empty: the defaults themselves). Tables merge key by
        key, except ``problem.target``, ``problem.latent``, ``init.generator`` and
        ``init.critic``, which a user table replaces whole.
    quick : bool
        Layer over ``rate_quick.toml`` instead of ``rate_full.toml``.
    base_dir : path
        Folder against which a relative ``problem.target.path`` is resolved.
    source : str
        Name used in error messages.

    Raises
    ------
    ConfigError
        Invalid TOML, an unknown section or key, a wrong type or an impossible value.
    """
    dpath = default_rate_config_path(quick)
    base = _read_toml(dpath.read_text(encoding="utf-8"), str(dpath))
    user = _read_toml(text, source or "config") if text else {}
    # Unknown names must be reported as the user wrote them, before merging hides nothing.
    _check_keys(user, "", tuple(SECTIONS))
    for name, sec in user.items():
        _check_keys(_table(sec, name), name, SECTIONS[name])
    return RateConfig.from_dict(_merge(base, user), base_dir, source=source)


def load_rate_config(path: str | os.PathLike | None = None, quick: bool = False) -> RateConfig:
    """Read a rate configuration: ``path`` (optional) layered over the packaged defaults.

    Parameters
    ----------
    path : path, optional
        A TOML file with any of the sections ``[problem]``, ``[init]``, ``[rate]``,
        ``[euler_order]``, ``[iid]``; keys left out take the defaults.
    quick : bool
        Defaults from ``rate_quick.toml`` (the few-minute study) instead of ``rate_full.toml``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ConfigError
        On any invalid entry (one line naming the key).
    """
    if path is None:
        return loads_rate_config("", quick=quick, source=str(default_rate_config_path(quick)))
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config: no such file: {p}")
    return loads_rate_config(p.read_text(encoding="utf-8"), quick=quick,
                             base_dir=p.resolve().parent, source=str(p))


# --------------------------------------------------------------------------------------------
# seeds: functions of (base seed, purpose, N, seed index, run) only
# --------------------------------------------------------------------------------------------
_INIT, _SGD, _IID, _IID_REF, _ORDER = 0, 1, 2, 3, 4


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)))


def _int_seed(seed: int, *key: int) -> int:
    ss = np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key))
    return int(ss.generate_state(1, np.uint64)[0])


# --------------------------------------------------------------------------------------------
# one task: one (N, seed index)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateTask:
    """One independent unit of the study: initial draw ``index`` for ``N`` particles."""

    config: RateConfig
    N: int
    index: int


def rate_task(task: RateTask) -> dict[str, Any]:
    """Run one Euler reference and its SGD runs from one initial draw; return the distances.

    Parameters
    ----------
    task : RateTask

    Returns
    -------
    dict
        ``"N"``, ``"index"``; ``"times"`` (T,) actually recorded; ``"coupling_generator"``,
        ``"coupling_critic"`` (R, T); ``"exact_generator"``, ``"exact_critic"`` (R,) at
        ``t_end`` (NaN when ``N > exact_max_N``); ``"boundary_euler"`` (T,) and
        ``"boundary_sgd"`` (R, T): fraction of critic particles on the boundary of ``Q``;
        ``"sgd_seeds"`` (R,); ``"seconds"``.
    """
    from meanfield_gan import metrics
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import SGD, ProjectedEuler
    from meanfield_gan.driver import boundary_fraction, simulate

    t0 = time.perf_counter()
    cfg, N, s = task.config, int(task.N), int(task.index)
    M = cfg.M(N)
    problem = cfg.problem_instance()
    state = initial_state(problem, N, M, seed=_rng(cfg.seed, _INIT, N, s))
    sgd = SGD(lr=cfg.lr, n_critic=cfg.n_critic, batch_size=cfg.batch_size)
    record = list(cfg.times)
    euler = simulate(problem, state, ProjectedEuler.matching(sgd, N, M), cfg.t_end, record=record,
                     backend=cfg.backend, observables=False)
    R, T = cfg.runs(N), len(record)
    cg, cc = np.empty((R, T)), np.empty((R, T))
    eg, ec = np.full(R, np.nan), np.full(R, np.nan)
    bsgd = np.empty((R, T))
    seeds = np.array([_int_seed(cfg.seed, _SGD, N, s, r) for r in range(R)], dtype=np.uint64)
    for r in range(R):
        run = simulate(problem, state, sgd, cfg.t_end, record=record, seed=int(seeds[r]),
                       backend=cfg.backend, observables=False)
        for k in range(T):
            cg[r, k] = metrics.coupling_squared(run.theta[k], euler.theta[k])
            cc[r, k] = metrics.coupling_squared(run.omega[k], euler.omega[k])
            bsgd[r, k] = boundary_fraction(run.omega[k], problem.clip)
        if N <= cfg.exact_max_N:
            eg[r] = metrics.w2_squared(run.theta[-1], euler.theta[-1])
            ec[r] = metrics.w2_squared(run.omega[-1], euler.omega[-1])
    return {
        "N": N, "index": s, "times": euler.times,
        "coupling_generator": cg, "coupling_critic": cc,
        "exact_generator": eg, "exact_critic": ec,
        "boundary_euler": np.array([boundary_fraction(o, problem.clip) for o in euler.omega]),
        "boundary_sgd": bsgd, "sgd_seeds": seeds,
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------
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
        """Exact ``d_2^2`` at ``t_end`` per seed, mean over SGD runs: (nN, S) (NaN rows: skipped)."""
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
        """Fit the power laws (headline, coupling at every time, exact subset); cache in ``fits``."""
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
            "boundary_fraction_sgd": _run_mean(self.boundary_sgd[:, :, :, -1]).mean(axis=1).tolist(),
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


def _describe(executor: Any) -> str:
    if executor is None:
        return "local processes"
    if isinstance(executor, str):
        return f"dask scheduler {executor}" if "://" in executor else executor
    return type(executor).__name__


def _map(fn, tasks, executor: Executor | str | None, max_workers: int | None, progress: bool,
         desc: str) -> list:
    """:func:`map_tasks`; a scheduler address gets a Dask client for this map only."""
    if isinstance(executor, str) and "://" in executor:
        # The executor owns its Dask client and closes it on leaving the block.
        with executor_from_scheduler(executor) as ex:
            return map_tasks(fn, tasks, ex, progress=progress, desc=desc)
    return map_tasks(fn, tasks, executor, max_workers=max_workers, threads_per_worker=1,
                     progress=progress, desc=desc)


def run_rate_study(config: RateConfig | str | os.PathLike | None = None,
                   executor: Executor | str | None = None, progress: bool | None = None, *,
                   max_workers: int | None = None) -> RateResult:
    """Run the C/N study of Theorem 7 and fit the rate.

    Parameters
    ----------
    config : RateConfig, path or None
        The study (``None``: the packaged quick study, ``data/rate_quick.toml``).
    executor : Executor, str or None
        Where tasks run: ``None``/``"processes"`` (local processes, one numba thread each),
        ``"serial"``, any :class:`concurrent.futures.Executor` (e.g.
        ``dask.distributed.Client(...).get_executor()``), or a Dask scheduler address
        (``"tcp://host:8786"``).
    progress : bool or None
        Progress bar over tasks (``None``: only on a terminal).
    max_workers : int, optional
        Size of the local process pool.

    Returns
    -------
    RateResult
        With ``fits`` filled in; ``result.summary()`` is the ``rate.json`` document.
    """
    if config is None:
        config = load_rate_config(quick=True)
    elif not isinstance(config, RateConfig):
        config = load_rate_config(config)
    # Largest N first: the long tasks start early, so the pool drains evenly.
    tasks = [RateTask(config, N, s) for N in sorted(config.N, reverse=True) for s in range(config.seeds)]
    t0 = time.perf_counter()
    results = _map(rate_task, tasks, executor, max_workers, want_progress(progress), "rate (N, seed)")
    wall = time.perf_counter() - t0
    runs = np.array([config.runs(N) for N in config.N])
    nN, S, R, T = len(config.N), config.seeds, int(runs.max()), config.n_times
    row = {N: i for i, N in enumerate(config.N)}
    arr = {k: np.full((nN, S, R, T), np.nan)
           for k in ("coupling_generator", "coupling_critic", "boundary_sgd")}
    arr.update({k: np.full((nN, S, R), np.nan) for k in ("exact_generator", "exact_critic")})
    beul, secs = np.empty((nN, S, T)), np.empty((nN, S))
    seeds = np.zeros((nN, S, R), dtype=np.uint64)
    times = np.empty((nN, T))
    for res in results:
        i, s = row[res["N"]], res["index"]
        for k in arr:
            arr[k][i, s, :runs[i]] = res[k]
        beul[i, s], secs[i, s] = res["boundary_euler"], res["seconds"]
        seeds[i, s, :runs[i]] = res["sgd_seeds"]
        times[i] = res["times"]
    # Every N records at the same times (t_end N / lr whole, checked by the config).
    if not np.allclose(times, config.times[None, :], rtol=0, atol=1e-9 * config.t_end):
        raise RuntimeError("record times differ between N; check t_end * N / lr")
    result = RateResult(config=config, N=np.array(config.N),
                        M=np.array([config.M(N) for N in config.N]), times=config.times,
                        boundary_euler=beul, task_seconds=secs, sgd_seeds=seeds, runs=runs,
                        wall_seconds=wall, executor=_describe(executor), **arr)
    result.analyse()
    return result


# --------------------------------------------------------------------------------------------
# companion 1: the order of projected Euler in dt
# --------------------------------------------------------------------------------------------
def run_euler_order(config: RateConfig, progress: bool | None = None) -> dict:
    """Error of projected Euler against a fine projected-Heun reference, as ``dt`` shrinks.

    For the cases ``"interior"`` (short horizon, slow critic: no critic particle should touch
    the boundary of ``Q``) and ``"boundary"`` (critic driven onto the boundary), run projected
    Euler with ``dt = dt_max / 2^k`` (``k < n_dt``) and projected Heun with
    ``min(dt) / ref_refine`` from the same ``N = M`` particles, and fit
    ``log err = order log dt``, ``err = sqrt(coupling d_2^2)`` (RMS particle error) at ``t_end``.
    Expected: order 1 in the interior, 1/2 <= order <= 1 with the boundary active.

    Returns
    -------
    dict
        Per case: ``"dt"``, ``"error"``, ``"order"``, ``"local_orders"``, ``"t_end"``,
        ``"gamma_c"``, ``"reference_dt"``, ``"max_abs_omega"`` (over the reference's records: every
        step up to 4096 steps),
        ``"touches_boundary"``, ``"boundary_fraction"`` (reference, at ``t_end``).
    """
    from meanfield_gan import metrics
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import ProjectedEuler, ProjectedHeun
    from meanfield_gan.driver import boundary_fraction, simulate

    eo = config.euler_order
    problem = config.problem_instance()
    N = eo["N"]
    dts = eo["dt_max"] / 2.0 ** np.arange(eo["n_dt"])
    state = initial_state(problem, N, N, seed=_rng(config.seed, _ORDER, eo["seed"]))
    out: dict[str, Any] = {"N": N, "M": N, "reference": "projected Heun"}
    show = want_progress(progress)
    for case in ("interior", "boundary"):
        c: EulerOrderCase = eo[case]
        dref = float(dts[-1]) / eo["ref_refine"]
        n_ref = int(round(c.t_end / dref))
        ref = simulate(problem, state, ProjectedHeun(dref, c.gamma_c), c.t_end,
                       record=min(n_ref, 4096), backend=config.backend, observables=False,
                       progress=show)
        errs = []
        for dt in dts:
            e = simulate(problem, state, ProjectedEuler(float(dt), c.gamma_c), c.t_end,
                         backend=config.backend, observables=False, record_particles=False).state
            errs.append(math.sqrt(metrics.coupling_squared(e.theta, ref.state.theta)
                                  + metrics.coupling_squared(e.omega, ref.state.omega)))
        errs = np.array(errs)
        logs = np.log(dts), np.log(errs)
        max_abs = float(np.max(np.abs(ref.omega)))
        out[case] = {
            "t_end": c.t_end, "gamma_c": c.gamma_c, "dt": dts.tolist(), "error": errs.tolist(),
            "order": float(np.polyfit(*logs, 1)[0]),
            "local_orders": (np.diff(logs[1]) / np.diff(logs[0])).tolist(),
            "reference_dt": dref, "max_abs_omega": max_abs,
            "touches_boundary": bool(max_abs >= problem.clip),
            "boundary_fraction": boundary_fraction(ref.state.omega, problem.clip),
        }
    return out


# --------------------------------------------------------------------------------------------
# companion 2: Corollary 9, i.i.d. initial data against a large particle system
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IidTask:
    """One i.i.d. draw of ``N`` particles compared with the reference snapshots."""

    config: RateConfig
    N: int
    index: int
    ref_theta: np.ndarray  # (T, N_ref, K, L+2)
    ref_omega: np.ndarray  # (T, N_ref, K+2)


def _iid_times(cfg: RateConfig) -> list[float]:
    return [0.0, 0.5 * cfg.iid["t_end"], cfg.iid["t_end"]]


def iid_task(task: IidTask) -> dict[str, Any]:
    """Projected Euler from ``N`` i.i.d. particles; exact ``W_2^2`` to the reference at each time."""
    from meanfield_gan import metrics
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import ProjectedEuler
    from meanfield_gan.driver import simulate

    cfg, N, s = task.config, int(task.N), int(task.index)
    iid = cfg.iid
    problem = cfg.problem_instance()
    state = initial_state(problem, N, N, seed=_rng(cfg.seed, _IID, iid["seed"], N, s))
    run = simulate(problem, state, ProjectedEuler(iid["dt"], iid["gamma_c"]), iid["t_end"],
                   record=_iid_times(cfg), backend=cfg.backend, observables=False)
    w2 = np.array([metrics.w2_squared(run.theta[k], task.ref_theta[k])
                   + metrics.w2_squared(run.omega[k], task.ref_omega[k])
                   for k in range(len(run.times))])
    return {"N": N, "index": s, "w2": w2}


def run_iid_study(config: RateConfig, executor: Executor | str | None = None,
                  progress: bool | None = None, *, max_workers: int | None = None) -> dict:
    """Corollary 9: ``E d_2^2`` between ``N`` i.i.d. particles and a large particle system.

    The continuum solution ``(mu_inf, nu_inf)(t)`` from ``(mu_in, nu_in)`` is approximated by
    projected Euler on ``N_ref`` i.i.d. particles; each ``N`` of ``iid.N`` gets ``iid.seeds``
    independent draws run with the same scheme, and the exact ``d_2^2`` (POT) to the reference
    is fitted against ``N`` at ``t = 0``, ``t_end/2`` and ``t_end``.

    Returns
    -------
    dict
        ``"N"``, ``"N_ref"``, ``"times"``, ``"w2"`` (nN, S, T), per time ``"slopes"`` with
        ``"slope_ci"``, ``"mean_d2"``; ``"slope"``/``"slope_ci"`` at ``t_end``;
        ``"bound_exponent"`` = ``-2/(K(L+2))``; ``"talk_exponent"`` = ``-1/(K(L+2))``, the
        exponent of Corollary 9 as the talk states it (``E d_2^2 <= C N^{-1/(K(2+L))}``); and
        ``"sampling_exponent"``, the exponent of ``E W_2^2`` between an i.i.d. sample and its
        law in dimension ``d = K(L+2)`` (Fournier and Guillin 2015: ``-1/2`` for ``d <= 4``,
        with a log at 4, ``-2/d`` for ``d > 4``). ``-2/d`` is the large-``d`` rate: for
        ``d < 4`` the distance decays only like ``N^{-1/2}``, more slowly than ``N^{-2/d}``.

    Notes
    -----
    The reference's own sampling error puts a floor under the measured distances, which
    flattens the fitted exponent at ``N`` close to ``N_ref``.
    """
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import ProjectedEuler
    from meanfield_gan.driver import simulate

    iid = config.iid
    problem = config.problem_instance()
    t0 = time.perf_counter()
    Nr = iid["N_ref"]
    ref_state = initial_state(problem, Nr, Nr, seed=_rng(config.seed, _IID_REF, iid["seed"], Nr))
    ref = simulate(problem, ref_state, ProjectedEuler(iid["dt"], iid["gamma_c"]), iid["t_end"],
                   record=_iid_times(config), backend=config.backend, observables=False)
    tasks = [IidTask(config, N, s, ref.theta, ref.omega)
             for N in sorted(iid["N"], reverse=True) for s in range(iid["seeds"])]
    res = _map(iid_task, tasks, executor, max_workers, want_progress(progress), "iid (N, seed)")
    row = {N: i for i, N in enumerate(iid["N"])}
    w2 = np.empty((len(iid["N"]), iid["seeds"], len(ref.times)))
    for r in res:
        w2[row[r["N"]], r["index"]] = r["w2"]
    fits = [_fit(iid["N"], w2[:, :, k], config.n_boot, config.seed) for k in range(len(ref.times))]
    K, L = problem.K, problem.L
    d = K * (L + 2)
    # Fournier-Guillin for W_2^2 of an i.i.d. sample (the critic's K+2 <= K(L+2) never dominates)
    sampling = -0.5 if d <= 4 else -2.0 / d
    return {
        "N": list(iid["N"]), "N_ref": Nr, "seeds": iid["seeds"], "dt": iid["dt"],
        "gamma_c": iid["gamma_c"], "times": ref.times.tolist(), "w2": w2,
        "mean_d2": w2.mean(axis=1).tolist(),
        "slopes": [{"t": float(t), "slope": f.slope, "slope_ci": list(f.slope_ci)}
                   for t, f in zip(ref.times, fits)],
        "slope": fits[-1].slope, "slope_ci": list(fits[-1].slope_ci),
        "bound_exponent": -2.0 / d,
        "talk_exponent": -1.0 / d,
        "sampling_exponent": sampling,
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _json_extras(extras: Mapping[str, Any]) -> dict:
    out = {}
    for name, d in extras.items():
        out[name] = {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
    return out


def write_rate(result: RateResult, outdir: str | os.PathLike,
               extras: Mapping[str, dict] | None = None) -> dict[str, Path]:
    """Write ``rate.json``, ``rate.h5`` and ``rate.png`` into ``outdir``.

    Parameters
    ----------
    result : RateResult
    outdir : path
        Output folder (created if needed).
    extras : dict, optional
        ``{"euler_order": run_euler_order(...), "iid": run_iid_study(...)}`` (either or
        both): added to ``rate.json`` under those keys and to ``rate.h5`` as groups.

    Returns
    -------
    dict
        Paths under ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``rate.h5`` (plain h5py) holds every per-run number: ``N``, ``M``, ``runs``, ``times``,
    ``coupling_generator``, ``coupling_critic``, ``boundary_sgd`` (nN, S, R, T),
    ``exact_generator``, ``exact_critic`` (nN, S, R), NaN where not computed or beyond
    ``runs``; ``sgd_seeds``
    (nN, S, R), ``boundary_euler`` (nN, S, T), ``task_seconds`` (nN, S); attributes
    ``config_toml`` (the full configuration), ``slope``, ``slope_ci``, ``distance``. The fit
    is redone offline from ``exact_*`` or ``coupling_*`` summed, averaged over runs (axis 2),
    or with :func:`read_rate`. Each extra is a group with its arrays as datasets (``iid/w2``,
    shape (nN, S, T)) and the rest as a JSON string attribute ``json``.
    """
    extras = dict(extras or {})
    summary = result.summary()
    summary.update(_json_extras(extras))

    def fill(f):
        f.attrs["config_toml"] = result.config.to_toml()
        f.attrs["distance"] = result.distance
        f.attrs["slope"] = summary["slope"]
        f.attrs["slope_ci"] = np.array(summary["slope_ci"])
        f.attrs["axes"] = "N index, seed index, SGD run, record time"
        f.attrs["wall_seconds"] = result.wall_seconds
        f.attrs["executor"] = result.executor
        for name in ("N", "M", "runs", "times", "coupling_generator", "coupling_critic",
                     "exact_generator", "exact_critic", "boundary_euler", "boundary_sgd",
                     "sgd_seeds", "task_seconds"):
            f.create_dataset(name, data=getattr(result, name))
        for name, d in extras.items():
            # Arrays as datasets; everything else (nested dicts, lists) as one JSON attribute.
            g = f.create_group(name)
            for k, v in d.items():
                if isinstance(v, np.ndarray):
                    g.create_dataset(k, data=v)
            g.attrs["json"] = json.dumps(to_jsonable(_json_extras({name: d})[name]))

    paths = write_study_outputs(outdir, "rate", "meanfield_gan.studies.rate", summary,
                                fill, lambda png: plot_rate(result, png))
    return paths


def read_rate(path: str | os.PathLike) -> tuple[RateResult, dict[str, dict]]:
    """Read ``rate.h5`` back: the :class:`RateResult` (fits redone) and the extras.

    Parameters
    ----------
    path : path
        A file written by :func:`write_rate`.

    Returns
    -------
    result : RateResult
    extras : dict
        ``{"euler_order": {...}, "iid": {...}}`` for those present (arrays included).
    """
    import h5py

    with h5py.File(path, "r") as f:
        config = loads_rate_config(str(f.attrs["config_toml"]), source=str(path))
        data = {name: f[name][...] for name in (
            "N", "M", "runs", "times", "coupling_generator", "coupling_critic", "exact_generator",
            "exact_critic", "boundary_euler", "boundary_sgd", "sgd_seeds", "task_seconds")}
        extras = {}
        for name, g in f.items():
            if isinstance(g, h5py.Group):
                d = json.loads(g.attrs["json"])
                d.update({k: v[...] for k, v in g.items()})
                extras[name] = d
        wall, executor = float(f.attrs["wall_seconds"]), str(f.attrs["executor"])
    result = RateResult(config=config, wall_seconds=wall, executor=executor, **data)
    result.analyse()
    return result, extras


def plot_rate(result: RateResult, path: str | os.PathLike) -> Path:
    """Log-log figure of ``E d_2^2`` against ``N`` (points, 95% bars, fit, ``1/N`` guide).

    The right panel shows ``N E d_2^2`` against time for every ``N``: under Theorem 7 the
    curves collapse onto one.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = result.summary()
    N = result.N.astype(float)
    d2 = result.d2
    S = d2.shape[1]
    mean = d2.mean(axis=1)
    # 95% interval of each mean: seeds are the independent units
    half = 1.96 * d2.std(axis=1, ddof=1) / math.sqrt(S)
    # A Figure on an Agg canvas, not pyplot: no global backend switch, nothing left open.
    fig = Figure(figsize=(10.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(1, 2)
    lo = np.maximum(mean - half, mean * 1e-3)
    label = "exact $W_2$ (POT)" if result.distance == "exact" else "coupling bound"
    ax.errorbar(N, mean, yerr=[mean - lo, half], fmt="o", color="C0", capsize=3,
                label=f"$E\\,d_2^2$ at t = {result.config.t_end:g}, {label}")
    if result.distance == "exact":
        cp = result.coupling[:, :, -1].mean(axis=1)
        ax.plot(N, cp, "x", color="C2", ms=7, label="coupling bound")
    elif summary["exact"] is not None:
        ex = np.array(summary["exact"]["mean_d2"])
        ax.plot(np.array(summary["exact"]["N"], float), ex, "x", color="C2", ms=7,
                label="exact $W_2$ (POT)")
    head = result.fits["headline"]
    xs = np.geomspace(N[0] / 1.3, N[-1] * 1.3, 50)
    ax.plot(xs, np.exp(head.intercept) * xs ** head.slope, "-", color="C3",
            label=f"fit: slope {head.slope:.3f} [{head.slope_ci[0]:.3f}, {head.slope_ci[1]:.3f}]")
    g = math.exp(np.mean(np.log(mean)) + np.mean(np.log(N)))
    ax.plot(xs, g / xs, "--", color="0.5", label="1/N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (generator particles), M = %g N" % result.config.M_ratio)
    ax.set_ylabel("$E\\, d_2^2$(SGD, projected Euler)")
    runs = (f"{result.runs[0]}" if result.runs.min() == result.runs.max()
            else f"{result.runs.max()}..{result.runs.min()}")
    ax.set_title(f"Theorem 7: {S} initial draws x {runs} SGD runs per N", fontsize=10)
    ax.legend(fontsize=7)
    cmap = colormaps["viridis"]
    for i, n in enumerate(result.N):
        ax2.plot(np.r_[0.0, result.times], np.r_[0.0, n * result.coupling[i].mean(axis=0)], "o-",
                 ms=3, color=cmap(i / max(1, len(N) - 1)), label=f"N = {n}")
    ax2.set_xlabel("t")
    ax2.set_ylabel("$N\\, E\\, d_2^2$ (coupling bound)")
    ax2.set_title("C/N at every time: the curves collapse", fontsize=10)
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _runs_text(runs: np.ndarray) -> str:
    return str(runs[0]) if runs.min() == runs.max() else f"{runs.max()}..{runs.min()}"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan rate`` arguments to ``parser``."""
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml",
                        help="rate configuration overriding the defaults (see data/rate_quick.toml)")
    parser.add_argument("--quick", action="store_true",
                        help="the few-minute study (defaults from rate_quick.toml)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: one per CPU)")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run the tasks on a Dask cluster, e.g. tcp://host:8786")
    parser.add_argument("--serial", action="store_true", help="run every task in this process")
    parser.add_argument("--euler-order", action="store_true",
                        help="also measure the order of projected Euler in dt ([euler_order])")
    parser.add_argument("--iid", action="store_true",
                        help="also run Corollary 9: i.i.d. initial data vs a large system ([iid])")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study, write ``OUTDIR/rate.{json,h5,png}`` and print the fitted slope."""
    cfg = load_rate_config(args.config, quick=args.quick)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    if sum([args.serial, args.scheduler is not None]) > 1:
        raise ValueError("--serial and --scheduler exclude each other")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output: {out} exists and is not a directory")
    executor: str | None = "serial" if args.serial else None
    if args.scheduler:
        # Passed on as an address: each study opens (and closes) its own Dask client.
        executor = args.scheduler if "://" in args.scheduler else f"tcp://{args.scheduler}"
    result = run_rate_study(cfg, executor, progress=None, max_workers=args.workers)
    extras: dict[str, dict] = {}
    # The pools first: the Euler-order check compiles in this process, and numba in a parent
    # process must not change under forked workers.
    if args.iid:
        extras["iid"] = run_iid_study(cfg, executor, progress=None, max_workers=args.workers)
    if args.euler_order:
        extras["euler_order"] = run_euler_order(cfg)
    paths = write_rate(result, out, extras)
    s = result.summary()
    lo, hi = s["slope_ci"]
    dist = "exact W2" if s["distance"] == "exact" else "coupling bound"
    print(f"E d_2^2 ~ N^slope ({dist}, t = {s['t_end']:g}): slope {s['slope']:.3f} "
          f"(95% CI [{lo:.3f}, {hi:.3f}]; Theorem 7: -1), N = {s['N'][0]}..{s['N'][-1]}, "
          f"{s['seeds']} seeds x {_runs_text(result.runs)} SGD runs, {result.wall_seconds:.0f} s")
    print("per-time slopes (coupling bound): " + ", ".join(
        f"t={p['t']:g}: {p['slope']:.3f}" for p in s["per_time"]))
    if "euler_order" in extras:
        e = extras["euler_order"]
        print(f"projected Euler order in dt: interior {e['interior']['order']:.3f} "
              f"(touches boundary: {e['interior']['touches_boundary']}), with boundary "
              f"{e['boundary']['order']:.3f} (boundary fraction {e['boundary']['boundary_fraction']:.2f})")
    if "iid" in extras:
        i = extras["iid"]
        print(f"i.i.d. initial data (Corollary 9), t = {i['times'][-1]:g}: measured exponent "
              f"{i['slope']:.3f} (95% CI [{i['slope_ci'][0]:.3f}, {i['slope_ci'][1]:.3f}]); "
              f"-2/(K(L+2)) = {i['bound_exponent']:.3f}, -1/(K(L+2)) = {i['talk_exponent']:.3f} "
              f"(the talk's Corollary 9), i.i.d. sampling rate of W2^2: {i['sampling_exponent']:.3f}")
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
