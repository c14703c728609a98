"""``meanfield-gan run CONFIG.toml -o run.h5``: run a TOML configuration into an H5MD file.

The configuration (see ``meanfield_gan/data/default.toml``, printed by ``meanfield-gan run
--example``) is validated in full before any file is created. The run appends a record of
both networks and the observables at every record time, and a checkpoint every
``run.checkpoint_every`` steps (see :mod:`meanfield_gan.io.h5md` for the layout).

``--resume`` continues an interrupted run: it checks that the configuration equals the one
stored in the file, drops the records taken after the newest checkpoint, and continues from
it; since SGD batches depend only on ``(seed, step)`` the result is bitwise identical to an
uninterrupted run on the same engine. An existing file is never replaced without
``--overwrite``. If particles become NaN/Inf the run stops with an error naming the step; the
records and checkpoint taken before stay in the file, whose ``complete`` attribute stays 0.

Ctrl-C (SIGINT) and SIGTERM (what a batch scheduler sends before it kills a job) stop a run the
same way: the signal is turned into :class:`RunInterrupted` in the main thread, but never in the
middle of a record or a checkpoint being written (such a write is finished first), so the file
keeps its newest complete checkpoint, its ``error`` attribute says what stopped it, and
``--resume`` continues from that checkpoint. The command exits with status ``128 + signal``
(130 for SIGINT, 143 for SIGTERM). The previous handlers are restored when the run ends.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._util import want_progress
from ..model.problem import State
from .config import BACKENDS, RunConfig, _toml, default_config_path, load_config

__all__ = ["RunOutcome", "RunInterrupted", "run_config", "configure_parser", "cli_main"]


@dataclass
class RunOutcome:
    """What :func:`run_config` did.

    Attributes
    ----------
    path : Path
        The run file.
    records : int
        Number of records in the file.
    step, time : int, float
        Where the run stands (the final step when ``complete``).
    complete : bool
    resumed_from : int or None
        The checkpoint step a resumed run continued from (``0`` when it had none).
    already_complete : bool
        ``--resume`` found a complete file and left it untouched.
    """

    path: Path
    records: int
    step: int
    time: float
    complete: bool
    resumed_from: int | None = None
    already_complete: bool = False


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM; the file can be continued with ``--resume``.

    A :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles SIGTERM alike.

    Attributes
    ----------
    signum : int
        The signal received.
    signame : str
        Its name (``"SIGINT"``, ``"SIGTERM"``).
    checkpoint_step : int or None
        Step of the newest checkpoint in the file (set by :func:`run_config`; ``None``: the
        run had no checkpoint yet, and ``--resume`` starts it over).
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signame = signal.Signals(signum).name
        self.checkpoint_step: int | None = None
        super().__init__(f"stopped by {self.signame}")


class _StopOnSignal:
    """Turn SIGINT and SIGTERM into :class:`RunInterrupted`, deferred while the file is written.

    Installed only in the main thread (where Python runs signal handlers), and only over the
    default dispositions: a signal a parent process set to be ignored stays ignored, and a
    handler someone else installed stays theirs. The previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._depth = 0
        self._pending: int | None = None
        self._fired = False

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum, default in ((signal.SIGINT, signal.default_int_handler),
                                    (signal.SIGTERM, signal.SIG_DFL)):
                if signal.getsignal(signum) is default:
                    self._saved[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    def _handler(self, signum: int, frame: Any) -> None:
        if self._depth or self._fired:
            # finish the write in progress (or the clean-up after the first signal) first
            if self._pending is None and not self._fired:
                self._pending = signum
            return
        self._fired = True
        raise RunInterrupted(signum)

    def finished(self) -> None:
        """Ignore signals from now on (the work they would stop is done)."""
        self._fired = True

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A block that a signal does not cut: it is raised when the block ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending is not None:
            signum, self._pending = self._pending, None
            self._fired = True
            raise RunInterrupted(signum)


def _first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key where two parsed TOML documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return (f"{key}.{k}" if key else k, a.get(k, "<missing>"), b.get(k, "<missing>"))
            d = _first_difference(a[k], b[k], f"{key}.{k}" if key else k)
            if d:
                return d
        return None
    return None if a == b and type(a) is type(b) else (key, a, b)


def _comparable(canonical_toml: str) -> dict:
    """The parsed canonical configuration without what may change on resume (engine, bar)."""
    d = _toml.loads(canonical_toml)
    d.get("run", {}).pop("progress", None)
    d.get("run", {}).pop("backend", None)
    return d


def _check_backend_available(backend: str, problem, state: State, scheme) -> None:
    """Fail before any file is written if the CUDA engine cannot be used.

    A zero-step :func:`simulate` builds the engine's runner (device arrays included) and
    takes no step, so a missing module, driver or device shows up here.
    """
    if backend != "cuda":
        return
    from ..driver import simulate

    try:
        simulate(problem, state, scheme, state.time, backend="cuda", observables=False,
                 record_particles=False)
    except Exception as exc:  # ImportError, numba.cuda's CudaSupportError, driver errors, ...
        raise ValueError(f"backend: the cuda engine is unavailable ({type(exc).__name__}: {exc})"
                         .replace("\n", " ")) from None


class _Recorder:
    """Writes records and checkpoints; runs the ``[reference]`` scheme alongside if configured."""

    def __init__(self, writer, problem, ref_scheme, ref_state: State | None, cfg: RunConfig,
                 backend: str, dt: float, guard: _StopOnSignal):
        self.writer = writer
        self.guard = guard
        self.problem = problem
        self.ref_scheme = ref_scheme
        self.ref_state = ref_state
        self.ref = cfg.reference
        self.backend = backend
        self.dt = dt

    def _advance_reference(self, step: int) -> State:
        from ..driver import NonFiniteError, simulate

        target = step * self.ref.refine
        if self.ref_state.step != target:
            try:
                traj = simulate(self.problem, self.ref_state, self.ref_scheme, step * self.dt,
                                backend=self.backend, record_particles=False, observables=False)
            except NonFiniteError as exc:  # report the main step during which it happened
                err = NonFiniteError(-(-exc.step // self.ref.refine), exc.time)
                err.source = "the reference run"
                raise err from exc
            if traj.state.step != target:  # pragma: no cover - guards the time rounding
                raise RuntimeError(f"reference reached step {traj.state.step}, expected {target}")
            self.ref_state = traj.state
        return self.ref_state

    def record(self, step: int, time: float, theta: np.ndarray, omega: np.ndarray,
               observables: dict[str, float]) -> None:
        obs = dict(observables)
        rs = None
        if self.ref is not None:
            from ..metrics import pair_distance

            rs = self._advance_reference(step)
            obs["d2_squared"] = pair_distance(theta, omega, rs.theta, rs.omega, self.ref.distance)
            obs["coupling_squared"] = (obs["d2_squared"] if self.ref.distance == "coupling" else
                                       pair_distance(theta, omega, rs.theta, rs.omega, "coupling"))
        with self.guard.writing():
            if self.ref is not None and self.ref.record_particles:
                self.writer.append_particles("reference_generator", step, time, rs.theta)
                self.writer.append_particles("reference_critic", step, time, rs.omega)
            self.writer.record(step, time, theta, omega, obs)

    def checkpoint(self, state: State) -> None:
        extras = {"reference": self.ref_state} if self.ref is not None else None
        with self.guard.writing():
            self.writer.write_checkpoint(state, extras)


def run_config(cfg: RunConfig, output: str | os.PathLike, *, resume: bool = False,
               overwrite: bool = False, backend: str | None = None, progress: bool | None = None,
               log: Callable[[str], Any] | None = None) -> RunOutcome:
    """Run a configuration and write (or continue) its H5MD run file.

    Parameters
    ----------
    cfg : RunConfig
        A validated configuration (:func:`meanfield_gan.io.config.load_config`).
    output : path-like
        The run file.
    resume : bool
        Continue the run in ``output`` from its newest checkpoint (start it if the file does
        not exist; do nothing if it is complete).
    overwrite : bool
        Replace an existing ``output``.
    backend : {"numpy", "numba", "cuda"}, optional
        Engine, overriding ``run.backend`` (on resume: the engine the file was started with).
    progress : bool, optional
        Progress bar; default from ``run.progress`` (``"auto"``: only on a terminal).
    log : callable, optional
        Receives informational lines (e.g. ``print`` to stderr).

    Returns
    -------
    RunOutcome

    Raises
    ------
    FileExistsError
        ``output`` exists and neither ``resume`` nor ``overwrite`` was given.
    ValueError
        Bad arguments, or on resume a configuration different from the stored one.
    NonFiniteError
        Particles became NaN/Inf; the file keeps the records and checkpoint taken before.
    RunInterrupted
        SIGINT or SIGTERM arrived (in the main thread); the file keeps its newest checkpoint
        (``checkpoint_step``) and ``--resume`` continues it.
    """
    import h5py

    from ..driver import NonFiniteError, record_steps, simulate
    from . import h5md

    log = log or (lambda s: None)
    if resume and overwrite:
        raise ValueError("resume: --resume and --overwrite exclude each other")
    if backend is not None:
        cfg = cfg.with_backend(backend)
    out = Path(output)
    if out.is_dir():
        raise ValueError(f"output: {out} is a directory; give a file name such as run.h5")
    problem, state0, scheme = cfg.build()
    ref_scheme = cfg.build_reference(scheme)
    N, M = state0.N, state0.M
    dt = scheme.dt(N)
    step_end = int(round(cfg.run.t_end / dt))
    schedule = record_steps(cfg.run.record, dt, 0, step_end)
    data_sha = cfg.problem.target.data_sha256()

    mode = "new"
    if out.exists():
        if resume:
            try:
                f = h5py.File(out, "r")
            except OSError as exc:
                raise ValueError(f"output: cannot resume {out}: not a readable HDF5 file "
                                 f"({exc})".replace("\n", " ")) from None
            with f:
                h5md._check_run_file(f, out)
                stored = h5md.read_config_text(f)
                diff = _first_difference(_comparable(stored), _comparable(cfg.to_toml()))
                if diff:
                    k, a, b = diff
                    raise ValueError(f"config: {cfg.source or 'the configuration'} differs from "
                                     f"the one stored in {out} at {k} (stored {a!r}, given "
                                     f"{b!r}); use --overwrite to start a new run")
                params = f["parameters"].attrs
                stored_sha = h5md._str(params.get("target_data_sha256", ""))
                if data_sha is not None and stored_sha != data_sha:
                    raise ValueError(f"problem.target.path: the data set differs from the one "
                                     f"{out} was started with")
                stored_backend = h5md._str(params["backend"])
                if f.attrs.get("complete", 0):
                    gen = f["particles/generator/position"]
                    T = gen["step"].shape[0]
                    return RunOutcome(out, T, int(gen["step"][-1]), float(gen["time"][-1]), True,
                                      already_complete=True)
            if backend is None:
                cfg = cfg.with_backend(stored_backend)
            elif backend != stored_backend:
                log(f"warning: {out} was started with backend {stored_backend!r}; continuing with "
                    f"{backend!r} (engines agree to rounding, not bitwise)")
            mode = "resume"
        elif overwrite:
            mode = "overwrite"
        else:
            raise FileExistsError(f"output: {out} exists; pass --overwrite to replace it or "
                                  f"--resume to continue it")
    eng = cfg.run.backend
    if progress is None:
        progress = want_progress(None if cfg.run.progress == "auto" else bool(cfg.run.progress))

    _check_backend_available(eng, problem, state0, scheme)
    ref = cfg.reference
    writer = None
    # Signals become RunInterrupted from here on, never in the middle of a file write; the
    # ExitStack closes the file before the previous signal handlers come back.
    with _StopOnSignal() as guard, ExitStack() as stack:
        try:
            with guard.writing():
                if mode == "resume":
                    writer = stack.enter_context(h5md.H5MDWriter.open(out))
                    ck = writer.read_checkpoint()
                    if ck is None:
                        state, ref_state, resumed = state0, state0, 0
                    else:
                        state, resumed = ck.state, ck.state.step
                        ref_state = (ck.extras.get("reference", state0) if ref is not None
                                     else None)
                    writer.truncate(state.step if ck is not None else -1)
                    writer.set_status(False, "")
                    log(f"resuming {out} from step {resumed} (t = {resumed * dt:.6g})")
                else:
                    if mode == "overwrite":
                        out.unlink()
                    out.parent.mkdir(parents=True, exist_ok=True)
                    params: dict[str, Any] = dict(
                        seed=cfg.run.seed, init_seed=cfg.init.seed, backend=eng,
                        scheme=cfg.scheme.kind, dt=float(dt),
                        gamma_c=float(scheme.gamma_c(N, M)), t_end=cfg.run.t_end,
                        n_steps=step_end, checkpoint_every=cfg.run.checkpoint_every,
                        target_data_sha256=data_sha or "",
                        rng=("SGD batches of step k depend only on (seed, k): chunk k // 256 uses "
                             "PCG64(SeedSequence(seed, spawn_key=(chunk,))); a checkpoint's step "
                             "suffices"),
                    )
                    if ref_scheme is not None:
                        params.update(reference_scheme=ref.kind,
                                      reference_dt=float(ref_scheme.dt()),
                                      reference_distance=ref.distance)
                    writer = stack.enter_context(h5md.H5MDWriter.create(
                        out, K=problem.K, L=problem.L, N=N, M=M, clip=problem.clip,
                        config_text=cfg.text or cfg.to_toml(), config_canonical=cfg.to_toml(),
                        parameters=params,
                        reference_particles=bool(ref is not None and ref.record_particles)))
                    state, resumed = state0, None
                    ref_state = state0 if ref is not None else None

            recorded = writer.recorded_steps()
            last = int(recorded[-1]) if len(recorded) else -1
            todo = schedule[(schedule > last) & (schedule >= state.step)]
            rec = _Recorder(writer, problem, ref_scheme, ref_state, cfg, eng, dt, guard)
            try:
                # overflow on the way to NaN is expected with absurd settings: the NaN check
                # reports it
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    traj = simulate(problem, state, scheme, cfg.run.t_end, record=todo * dt,
                                    seed=cfg.run.seed, backend=eng, progress=progress,
                                    record_particles=False, recorder=rec,
                                    checkpoint_every=cfg.run.checkpoint_every,
                                    on_checkpoint=rec.checkpoint)
            except NonFiniteError as exc:
                writer.set_status(False, str(exc))
                steps = writer.recorded_steps()
                ck = writer.read_checkpoint()
                # what survives in the file, for the caller's message
                exc.last_record = int(steps[-1]) if len(steps) else None
                exc.last_checkpoint = ck.state.step if ck is not None else None
                raise
            guard.finished()  # every step is done: a late signal no longer stops anything
            writer.set_status(True)
            T = len(writer.recorded_steps())
        except KeyboardInterrupt as exc:
            err = exc if isinstance(exc, RunInterrupted) else RunInterrupted(signal.SIGINT)
            if writer is not None and writer.f.id.valid:
                # the file is between two writes here (see _StopOnSignal): say why it stopped
                ck = writer.read_checkpoint()
                err.checkpoint_step = ck.state.step if ck is not None else None
                writer.set_status(False, f"interrupted by {err.signame}; continue with --resume")
            if err is exc:
                raise
            raise err from exc
    return RunOutcome(out, T, traj.state.step, traj.state.time, True, resumed_from=resumed)


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``meanfield-gan run``."""
    parser.add_argument("config", metavar="CONFIG.toml", nargs="?",
                        help="run configuration (see --example)")
    parser.add_argument("-o", "--output", metavar="RUN.h5", help="the H5MD run file to write")
    parser.add_argument("--backend", metavar="{numpy,numba,cuda}",
                        help="engine (overrides run.backend)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in RUN.h5 from its newest checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace an existing RUN.h5")
    parser.add_argument("--example", action="store_true",
                        help="print the documented example configuration and exit")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``meanfield-gan run``; returns the exit status."""
    from ..driver import NonFiniteError

    if args.example:
        sys.stdout.write(default_config_path().read_text(encoding="utf-8"))
        return 0
    if args.config is None:
        raise ValueError("config: a CONFIG.toml argument is required (meanfield-gan run --example "
                         "prints one)")
    if not args.output:
        raise ValueError("output: -o/--output RUN.h5 is required")
    if args.backend is not None and args.backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}; got {args.backend!r}")
    cfg = load_config(args.config)
    tty = sys.stderr.isatty()

    def log(msg: str) -> None:
        if tty or msg.startswith("warning"):
            print(msg, file=sys.stderr)

    try:
        res = run_config(cfg, args.output, resume=args.resume, overwrite=args.overwrite,
                         backend=args.backend, log=log)
    except NonFiniteError as exc:
        kept = [f"{what} at step {getattr(exc, attr)}" for what, attr in
                (("last record", "last_record"), ("checkpoint", "last_checkpoint"))
                if getattr(exc, attr, None) is not None]
        where = f" in {exc.source}" if getattr(exc, "source", None) else ""
        print(f"meanfield-gan run: error: non-finite particle values (NaN/Inf){where} at step "
              f"{exc.step} (t = {exc.time:.6g}); {args.output} keeps the last good state "
              f"({', '.join(kept) or 'nothing recorded'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        ck = getattr(exc, "checkpoint_step", None)
        kept = (f"{args.output} keeps its checkpoint at step {ck}" if ck is not None else
                f"{args.output} has no checkpoint yet (--resume starts it over)")
        print(f"meanfield-gan run: interrupted by {signal.Signals(signum).name}; {kept}; "
              f"continue with: meanfield-gan run {args.config} -o {args.output} --resume",
              file=sys.stderr)
        return 128 + int(signum)
    if res.already_complete:
        print(f"{res.path}: the run is already complete (step {res.step}, t = {res.time:.6g}); "
              f"nothing to do")
        return 0
    note = "" if res.resumed_from is None else f", resumed from step {res.resumed_from}"
    print(f"wrote {res.path} ({res.records} records, step {res.step}, t = {res.time:.6g}{note})")
    return 0


if __name__ == "__main__":  # pragma: no cover  (``python -m meanfield_gan.io.runfile``)
    _parser = argparse.ArgumentParser(prog="meanfield-gan run")
    configure_parser(_parser)
    sys.exit(cli_main(_parser.parse_args()))
