"""The two companions of the rate study (``--euler-order``, ``--iid``): the order of projected
Euler in ``dt`` against a projected-Heun reference, and Corollary 9 (i.i.d. initial data
against a much larger particle system).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from meanfield_gan._util import want_progress

from .config import EulerOrderCase, RateConfig
from .result import _fit
from .tasks import _IID, _IID_REF, _ORDER, _map, _rng

__all__ = ["run_euler_order", "run_iid_study", "IidTask", "iid_task"]


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
    from meanfield_gan.driver import boundary_fraction, simulate
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import ProjectedEuler, ProjectedHeun

    eo = config.euler_order
    problem = config.problem_instance()
    N = eo.N
    dts = eo.dt_max / 2.0 ** np.arange(eo.n_dt)
    state = initial_state(problem, N, N, seed=_rng(config.seed, _ORDER, eo.seed))
    out: dict[str, Any] = {"N": N, "M": N, "reference": "projected Heun"}
    show = want_progress(progress)
    for case in ("interior", "boundary"):
        c: EulerOrderCase = getattr(eo, case)
        dref = float(dts[-1]) / eo.ref_refine
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
    return [0.0, 0.5 * cfg.iid.t_end, cfg.iid.t_end]


def iid_task(task: IidTask) -> dict[str, Any]:
    """Projected Euler from ``N`` i.i.d. particles; exact ``W_2^2`` to the reference at each
    time."""
    from meanfield_gan import metrics
    from meanfield_gan.driver import simulate
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import ProjectedEuler

    cfg, N, s = task.config, int(task.N), int(task.index)
    iid = cfg.iid
    problem = cfg.problem_instance()
    state = initial_state(problem, N, N, seed=_rng(cfg.seed, _IID, iid.seed, N, s))
    run = simulate(problem, state, ProjectedEuler(iid.dt, iid.gamma_c), iid.t_end,
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
    from meanfield_gan.driver import simulate
    from meanfield_gan.model.problem import initial_state
    from meanfield_gan.model.schemes import ProjectedEuler

    iid = config.iid
    problem = config.problem_instance()
    t0 = time.perf_counter()
    Nr = iid.N_ref
    ref_state = initial_state(problem, Nr, Nr, seed=_rng(config.seed, _IID_REF, iid.seed, Nr))
    ref = simulate(problem, ref_state, ProjectedEuler(iid.dt, iid.gamma_c), iid.t_end,
                   record=_iid_times(config), backend=config.backend, observables=False)
    tasks = [IidTask(config, N, s, ref.theta, ref.omega)
             for N in sorted(iid.N, reverse=True) for s in range(iid.seeds)]
    res = _map(iid_task, tasks, executor, max_workers, want_progress(progress), "iid (N, seed)")
    row = {N: i for i, N in enumerate(iid.N)}
    w2 = np.empty((len(iid.N), iid.seeds, len(ref.times)))
    for r in res:
        w2[row[r["N"]], r["index"]] = r["w2"]
    fits = [_fit(iid.N, w2[:, :, k], config.n_boot, config.seed) for k in range(len(ref.times))]
    K, L = problem.K, problem.L
    d = K * (L + 2)
    # Fournier-Guillin for W_2^2 of an i.i.d. sample (the critic's K+2 <= K(L+2) never dominates)
    sampling = -0.5 if d <= 4 else -2.0 / d
    return {
        "N": list(iid.N), "N_ref": Nr, "seeds": iid.seeds, "dt": iid.dt,
        "gamma_c": iid.gamma_c, "times": ref.times.tolist(), "w2": w2,
        "mean_d2": w2.mean(axis=1).tolist(),
        "slopes": [{"t": float(t), "slope": f.slope, "slope_ci": list(f.slope_ci)}
                   for t, f in zip(ref.times, fits)],
        "slope": fits[-1].slope, "slope_ci": list(fits[-1].slope_ci),
        "bound_exponent": -2.0 / d,
        "talk_exponent": -1.0 / d,
        "sampling_exponent": sampling,
        "seconds": time.perf_counter() - t0,
    }
