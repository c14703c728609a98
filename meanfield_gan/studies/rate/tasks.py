"""One task of the rate study (an ``(N, seed)``: one Euler reference and its SGD runs), the
seeds it draws from, and :func:`run_rate_study`, which maps the tasks over an executor.

Seeds are functions of ``(seed, purpose, N, seed index, run)`` alone, so the numbers do not
depend on the executor.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from meanfield_gan._util import want_progress
from meanfield_gan.parallel import executor_from_scheduler, map_tasks

from .config import RateConfig, load_rate_config
from .result import RateResult

__all__ = ["RateTask", "rate_task", "run_rate_study"]


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
    from meanfield_gan.driver import boundary_fraction, simulate
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import SGD, ProjectedEuler

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
    tasks = [RateTask(config, N, s) for N in sorted(config.N, reverse=True)
             for s in range(config.seeds)]
    t0 = time.perf_counter()
    results = _map(rate_task, tasks, executor, max_workers, want_progress(progress),
                   "rate (N, seed)")
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
