"""The driver: :func:`simulate` runs a scheme from a state to ``t_end`` on any engine (the one
time loop of the package: record times, SGD batches, checkpoints, progress).

Randomness. SGD batches are drawn on the host, in chunks of :data:`CHUNK_STEPS` steps; chunk
``c`` of a run with seed ``s`` uses its own generator ``PCG64(SeedSequence(s, spawn_key=(c,)))``.
The batches of a step therefore depend only on ``(seed, step)``: not on the engine, not on how
the run is cut into records or checkpoints, and a resumed run draws exactly what the
uninterrupted one would have.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ._validation import check_particles, positive_int
from .core import (
    critic_output,
    energy,
    generator_output,
    objectives,
    velocity,
)
from .engines import check_backend, make_runner
from .engines.reference import project_velocity as _project
from .model.objectives import discriminator_error
from .model.problem import Problem, State
from .model.schemes import SGD, Scheme

__all__ = ["simulate", "Trajectory", "NonFiniteError", "draw_batches", "draw_extras", "CHUNK_STEPS",
           "record_steps", "boundary_fraction"]

#: Steps per chunk of pre-drawn SGD batches (and per compiled call of the step loop).
CHUNK_STEPS = 256


class NonFiniteError(FloatingPointError):
    """A particle became NaN or infinite; ``step`` is the first step that produced it."""

    def __init__(self, step: int, time: float):
        super().__init__(f"non-finite particle values (NaN/Inf) appeared at step {step} "
                         f"(t = {time:.6g}); the last good state was kept")
        self.step = step
        self.time = time


class Recorder(Protocol):
    """Where :func:`simulate` sends snapshots (e.g. an H5MD file writer)."""

    def record(self, step: int, time: float, theta: np.ndarray, omega: np.ndarray,
               observables: dict[str, float]) -> None: ...


@dataclass
class Trajectory:
    """What :func:`simulate` returns.

    Attributes
    ----------
    times, steps : ndarray, shape (T,)
        Recorded times and step indices.
    theta : ndarray, shape (T, N, K, L+2) or None
    omega : ndarray, shape (T, M, K+2) or None
        Recorded particles (``None`` when ``record_particles=False``).
    observables : dict of str -> ndarray (T,)
        ``psi`` and ``critic_boundary_fraction`` at least.
    state : State
        The final state (continue a run by passing it back to :func:`simulate`).
    """

    times: np.ndarray
    steps: np.ndarray
    theta: np.ndarray | None
    omega: np.ndarray | None
    observables: dict[str, np.ndarray]
    state: State


def boundary_fraction(omega: np.ndarray, clip: float) -> float:
    """Fraction of critic particles with at least one coordinate on the boundary of ``Q``."""
    return float(np.mean(np.any(np.abs(omega) >= clip, axis=1)))


def record_steps(record: int | Sequence[float] | None, dt: float, step0: int, step_end: int
                 ) -> np.ndarray:
    """Step indices to record: ``None`` -> start and end; ``int n`` -> ``n+1`` even times."""
    if record is None:
        steps = np.array([step0, step_end])
    elif isinstance(record, (int, np.integer)) and not isinstance(record, bool):
        if record < 1:
            raise ValueError(f"record must be >= 1 (number of intervals), got {record}")
        steps = np.rint(np.linspace(step0, step_end, int(record) + 1)).astype(np.int64)
    else:
        t = np.asarray(record, dtype=np.float64)
        if t.ndim != 1 or not np.all(np.isfinite(t)):
            raise ValueError("record must be None, an int, or a 1-D array of finite times")
        steps = np.rint(t / dt).astype(np.int64)
        if np.any(steps < step0) or np.any(steps > step_end):
            raise ValueError("record times must lie within [start time, t_end]")
    return np.unique(steps)


def draw_batches(problem: Problem, scheme: SGD, seed: int, chunk: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The SGD batches of chunk ``chunk`` (steps ``chunk*CHUNK_STEPS`` onwards).

    Returns
    -------
    Zs : ndarray, shape (CHUNK_STEPS, latent_slots, L, m)
    Xs : ndarray, shape (CHUNK_STEPS, data_slots, K, m)
        Transposed so each batch is contiguous per coordinate, as the engines read it.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(chunk,))))
    m = scheme.batch_size
    nz, nx = scheme.latent_slots, scheme.data_slots
    z = problem.latent.sample(rng, CHUNK_STEPS * nz * m).reshape(CHUNK_STEPS, nz, m, problem.L)
    x = problem.target.sample(rng, CHUNK_STEPS * nx * m).reshape(CHUNK_STEPS, nx, m, problem.K)
    return (np.ascontiguousarray(z.transpose(0, 1, 3, 2)),
            np.ascontiguousarray(x.transpose(0, 1, 3, 2)))


def draw_extras(problem: Problem, scheme: SGD, seed: int, chunk: int) -> dict[str, np.ndarray]:
    """The instance-noise and penalty draws of chunk ``chunk`` of an SGD run (may be empty).

    Each ingredient has a stream of its own, ``SeedSequence(seed, spawn_key=(chunk, i))``
    (``i = 1`` noise, ``i = 2`` penalty), so the latent and data batches of
    :func:`draw_batches` are those of a run without them.

    Returns
    -------
    dict
        ``gen_noise (CHUNK_STEPS, latent_slots, K, m)`` and ``data_noise (CHUNK_STEPS,
        data_slots, K, m)`` standard normal offsets (scaled by ``sigma_n`` when used);
        ``eps (CHUNK_STEPS, data_slots, m)`` uniform on ``[0, 1]``.
    """
    out: dict[str, np.ndarray] = {}
    m, K = scheme.batch_size, problem.K
    nz, nx = scheme.latent_slots, scheme.data_slots
    if problem.instance_noise > 0:
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(chunk, 1))))
        out["gen_noise"] = np.ascontiguousarray(
            rng.standard_normal((CHUNK_STEPS, nz, m, K)).transpose(0, 1, 3, 2))
        out["data_noise"] = np.ascontiguousarray(
            rng.standard_normal((CHUNK_STEPS, nx, m, K)).transpose(0, 1, 3, 2))
    if problem.gradient_penalty > 0:
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(chunk, 2))))
        out["eps"] = rng.random((CHUNK_STEPS, nx, m))
    return out


# --------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------


def _noisy_nodes(problem: Problem, quad, t: float):
    """The quadrature with the instance noise of time ``t`` as tensor Gauss-Hermite nodes
    (MODEL.md 7): ``(z, zw, x, xw, z_noise)``; ``z_noise`` is None without noise."""
    z, zw, x, xw = quad
    sigma = problem.noise_at(t)
    if sigma == 0:
        return z, zw, x, xw, None
    zq, zwq, ez, xq, xwq, ex = problem.noise_tensor(z, zw, x, xw)
    return zq, zwq, xq + sigma * ex, xwq, sigma * ez


def _observe(problem: Problem, theta, omega, quad, backend: str, t: float = 0.0
             ) -> dict[str, float]:
    """The recorded observables at one snapshot, with the problem's quadrature.

    ``psi`` (the WGAN energy of the noiseless game), the critic's boundary fraction, the
    objectives ``(Psi_c, Psi_g)`` of the problem's loss, the speeds ``sqrt(mean |V|^2)`` of
    both players (the critic's projected onto the box, neither scaled by ``gamma_c``), and for
    the minimax objectives the discriminator's error (MODEL.md section 8); these with the
    instance noise of time ``t`` when the problem has any (the game being played).
    """
    z, zw, x, xw = quad
    eb = "numpy" if backend == "numpy" else "numba"
    penalty = None
    if problem.gradient_penalty > 0:
        penalty = (problem.gradient_penalty, problem.penalty_triples())
    zn_, zwn, xn, xwn, zn = _noisy_nodes(problem, quad, t)
    vt, vo = velocity(theta, omega, zn_, zwn, xn, xwn, backend=eb, loss=problem.loss,
                      z_noise=zn, penalty=penalty)
    # (no input checks here: a state about to blow up still gets its observables recorded)
    vo = _project(omega, vo, problem.clip)
    psi_c, psi_g = objectives(theta, omega, zn_, zwn, xn, xwn, loss=problem.loss, z_noise=zn,
                              penalty=penalty)
    out = {"psi": energy(theta, omega, z, zw, x, xw, backend=eb),
           "critic_boundary_fraction": boundary_fraction(omega, problem.clip),
           "critic_objective": psi_c, "generator_objective": psi_g,
           "generator_speed": float(np.sqrt(np.mean(np.sum(vt * vt, axis=(1, 2))))),
           "critic_speed": float(np.sqrt(np.mean(np.sum(vo * vo, axis=1))))}
    if problem.loss != "wasserstein":
        g = generator_output(theta, zn_)
        fg = critic_output(omega, g if zn is None else g + zn)
        out["discriminator_error"] = discriminator_error(fg, zwn, critic_output(omega, xn), xwn)
    return out


def simulate(problem: Problem, state: State, scheme, t_end: float, *,
             record: int | Sequence[float] | None = None, seed: int = 0,
             backend: str = "numba", progress: bool = False, record_particles: bool = True,
             recorder: Recorder | None = None, checkpoint_every: int | None = None,
             on_checkpoint: Callable[[State], Any] | None = None,
             observables: bool = True, **engine_options) -> Trajectory:
    """Run ``scheme`` from ``state`` to time ``t_end`` and record snapshots.

    Parameters
    ----------
    problem : Problem
        Dimensions, target, latent law and box.
    state : State
        Initial particles (``state.step``/``state.time`` > 0 continues a run).  Not modified.
    scheme : SGD, RMSProp, ProjectedEuler or ProjectedHeun
        How a step is taken.
    t_end : float
        Final time; the run takes ``round((t_end - state.time) / dt)`` more steps.
    record : None, int or sequence of float
        Record times: ``None`` (start and end), ``n`` (``n+1`` evenly spaced), or explicit
        times (rounded to steps).
    seed : int
        Seed of the SGD batches (ignored by deterministic schemes).
    backend : {"numpy", "numba", "cuda"}
        Engine; every engine gives the same trajectory to rounding (1e-12).
    progress : bool
        Show a tqdm progress bar (time reached, steps/s, ETA).
    record_particles : bool
        Keep the particle snapshots in memory (``False`` for long runs written by ``recorder``).
    recorder : object with ``record(step, time, theta, omega, observables)``, optional
        Receives every snapshot as it is taken (e.g. an H5MD writer).
    checkpoint_every : int, optional
        Call ``on_checkpoint(state)`` every this many steps (and at the end).
    on_checkpoint : callable, optional
        Receives a :class:`State` copy (particles, step, time, optimiser state).
    observables : bool
        Evaluate ``psi`` (with the problem's quadrature) and the critic's boundary fraction.

    Returns
    -------
    Trajectory

    Raises
    ------
    NonFiniteError
        When a particle becomes NaN/Inf; snapshots and checkpoints taken before stay valid.
    """
    check_backend(backend)
    theta, omega, _, _ = check_particles(state.theta, state.omega, problem.K, problem.L)
    state = State(theta, omega, int(state.step), float(state.time), dict(state.opt))
    if not isinstance(scheme, Scheme):
        raise ValueError(f"scheme must be a scheme object (mfg.SGD, mfg.RMSProp, "
                         f"mfg.ProjectedEuler, ...); got {scheme!r}")
    try:
        t_end = float(t_end)
    except (TypeError, ValueError):
        raise ValueError(f"t_end must be a number, got {t_end!r}") from None
    if not math.isfinite(t_end):
        raise ValueError(f"t_end must be finite, got {t_end!r}")
    N = state.N
    dt = scheme.dt(N)
    step_end = int(round(t_end / dt))
    if step_end < state.step:
        raise ValueError(f"t_end={t_end} lies before the state's time {state.time}")
    if checkpoint_every is not None:
        checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    rsteps = record_steps(record, dt, state.step, step_end)
    stops = set(rsteps.tolist())
    if checkpoint_every:
        stops.update(range(state.step + checkpoint_every, step_end + 1, checkpoint_every))
        stops.add(step_end)
    stops = np.array(sorted(s for s in stops if s > state.step), dtype=np.int64)

    runner = make_runner(backend, problem, state, scheme, **engine_options)
    quad = problem.quadrature() if observables else None
    rec_set = set(rsteps.tolist())
    times, steps, thetas, omegas = [], [], [], []
    obs: dict[str, list[float]] = {}

    def take(step: int) -> None:
        th, om = runner.particles()
        t = step * dt
        o = _observe(problem, th, om, quad, backend, t) if observables else {}
        times.append(t)
        steps.append(step)
        for k, v in o.items():
            obs.setdefault(k, []).append(v)
        if record_particles:
            thetas.append(th.copy())
            omegas.append(om.copy())
        if recorder is not None:
            recorder.record(step, t, th, om, o)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=step_end - state.step, unit="step", desc="simulate", leave=False)
    step = state.step
    cached_chunk, Zc, Xc, Ec = -1, None, None, {}
    try:
        if step in rec_set:
            take(step)
        for stop in stops:
            while step < stop:
                chunk, off = divmod(step, CHUNK_STEPS)
                n = int(min(stop - step, CHUNK_STEPS - off))
                Zs = Xs = extra = None
                if scheme.stochastic:
                    if chunk != cached_chunk:
                        Zc, Xc = draw_batches(problem, scheme, seed, chunk)
                        Ec = draw_extras(problem, scheme, seed, chunk)
                        cached_chunk = chunk
                    Zs, Xs = Zc[off:off + n], Xc[off:off + n]
                    extra = {k: v[off:off + n] for k, v in Ec.items()} or None
                done = runner.advance(n, Zs, Xs, extra)
                if done < n:
                    bad = step + done + 1
                    raise NonFiniteError(bad, bad * dt)
                step += n
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix(t=f"{step * dt:.4g}")
            if step in rec_set:
                take(step)
            if checkpoint_every and on_checkpoint is not None and (
                    (step - state.step) % checkpoint_every == 0 or step == step_end):
                th, om = runner.particles()
                on_checkpoint(State(th.copy(), om.copy(), step, step * dt, runner.opt_state()))
    finally:
        if bar is not None:
            bar.close()
    th, om = runner.particles()
    final = State(th.copy(), om.copy(), step, step * dt, runner.opt_state())
    return Trajectory(
        times=np.asarray(times), steps=np.asarray(steps, dtype=np.int64),
        theta=np.stack(thetas) if record_particles and thetas else None,
        omega=np.stack(omegas) if record_particles and omegas else None,
        observables={k: np.asarray(v) for k, v in obs.items()}, state=final)
