"""``meanfield-gan run``: bad input, no silent overwrite, resume after SIGKILL, NaN stops."""
from __future__ import annotations

import copy
import hashlib
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.cli import main
from meanfield_gan.io.config import dumps_toml, load_config
from meanfield_gan.io.h5md import H5MDWriter
from meanfield_gan.io.runfile import run_config

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "problem": {"K": 1, "L": 1, "quadrature_size": 32,
                "target": {"kind": "gaussian_mixture", "means": [[-1.0], [1.0]], "scales": 0.3}},
    "init": {"N": 4, "M": 4, "seed": 0},
    "scheme": {"kind": "sgd", "lr": 0.5},
    "run": {"t_end": 2.0, "record": 4, "seed": 1, "backend": "numpy", "checkpoint_every": 3},
}


def _write(tmp_path, mutate=None, name="cfg.toml", base=BASE):
    d = copy.deepcopy(base)
    if mutate:
        mutate(d)
    p = tmp_path / name
    p.write_text(dumps_toml(d))
    return p


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


# ------------------------------------------------------------------------------------------
# bad input: one line, exit 2, no file
# ------------------------------------------------------------------------------------------
def _put(section, key, value):
    def f(d):
        t = d
        for k in section.split(".") if section else []:
            t = t.setdefault(k, {})
        t[key] = value
    return f


BAD = [
    ("top-level unknown section", _put("", "solver", {}), "solver: unknown section"),
    ("unknown key in problem", _put("problem", "dim", 3), "problem.dim: unknown key"),
    ("unknown key in problem.target", _put("problem.target", "sigma", 1.0),
     "problem.target.sigma: unknown key"),
    ("unknown key in problem.latent", _put("problem.latent", "df", 3),
     "problem.latent.df: unknown key"),
    ("unknown key in init", _put("init", "P", 3), "init.P: unknown key"),
    ("unknown key in scheme", _put("scheme", "momentum", 0.9), "scheme.momentum: unknown key"),
    ("unknown key in run", _put("run", "t_final", 3.0), "run.t_final: unknown key"),
    ("unknown key in reference", _put("reference", "order", 2), "reference.order: unknown key"),
    ("wrong type", _put("init", "N", "four"), 'init.N: must be an integer, got "four"'),
    ("lr < 0", _put("scheme", "lr", -1), "scheme.lr: must be finite and > 0, got -1"),
    ("lr = 0", _put("scheme", "lr", 0), "scheme.lr: must be finite and > 0, got 0"),
    ("clip = 0", _put("problem", "clip", 0.0),
     "problem.clip: must be > 0 (or inf for no box), got 0.0"),
    ("clip < 0", _put("problem", "clip", -1.0),
     "problem.clip: must be > 0 (or inf for no box), got -1.0"),
    ("N < 1", _put("init", "N", 0), "init.N: must be a positive integer, got 0"),
    ("K mismatch", _put("problem", "K", 3),
     "problem.target.means: each of the means must have K = 3"),
    ("unknown backend", _put("run", "backend", "opencl"),
     'run.backend: must be one of numpy, numba, cuda; got "opencl"'),
    ("unknown scheme kind", _put("scheme", "kind", "sgdm"),
     'scheme.kind: must be one of sgd, rmsprop, adam, euler, heun; got "sgdm"'),
]


@pytest.mark.parametrize("mutate, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_one_line_error_and_no_output(tmp_path, capsys, mutate, expected):
    cfg = _write(tmp_path, mutate)
    out = tmp_path / "sub" / "run.h5"
    assert main(["run", str(cfg), "-o", str(out)]) == 2
    err = _one_line_error(capsys)
    assert (err == f"meanfield-gan run: error: {expected}"
            or err.startswith(f"meanfield-gan run: error: {expected}"))
    assert not out.exists() and not out.parent.exists()


def test_bad_command_line(tmp_path, capsys):
    cfg = _write(tmp_path)
    out = tmp_path / "run.h5"
    assert main(["run", str(cfg), "-o", str(out), "--backend", "fortran"]) == 2
    assert "backend: must be one of numpy, numba, cuda" in _one_line_error(capsys)
    assert main(["run", str(tmp_path / "nope.toml"), "-o", str(out)]) == 2
    assert "config: no such file" in _one_line_error(capsys)
    assert main(["run", str(cfg)]) == 2
    assert "output: -o/--output RUN.h5 is required" in _one_line_error(capsys)
    assert not out.exists()
    assert main(["run", "--example"]) == 0
    assert load_config(mfg.io.config.default_config_path()).text == capsys.readouterr().out


def _cuda_usable() -> bool:
    try:
        importlib.import_module("meanfield_gan.engines._cuda")
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


@pytest.mark.skipif(_cuda_usable(), reason="a CUDA device is present: the error cannot occur")
def test_unavailable_cuda_backend_fails_before_any_file(tmp_path, capsys):
    cfg = _write(tmp_path)
    out = tmp_path / "run.h5"
    assert main(["run", str(cfg), "-o", str(out), "--backend", "cuda"]) == 2
    assert _one_line_error(capsys).startswith(
        "meanfield-gan run: error: backend: the cuda engine is unavailable")
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# overwrite / resume semantics
# ------------------------------------------------------------------------------------------
def test_existing_output_is_never_silently_overwritten(tmp_path, capsys):
    cfg = _write(tmp_path)
    out = tmp_path / "run.h5"
    out.write_bytes(b"precious")
    assert main(["run", str(cfg), "-o", str(out)]) == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    assert main(["run", str(cfg), "-o", str(out), "--overwrite"]) == 0
    cap = capsys.readouterr()  # piped: one line saying where the file is, nothing on stderr
    assert cap.out == f"wrote {out} (5 records, step 16, t = 2)\n" and cap.err == ""
    run = mfg.load(out)
    assert run.complete and run.theta.shape == (5, 4, 1, 3)

    # --resume on a complete file: says so, exit 0, file untouched
    before = _digest(out)
    assert main(["run", str(cfg), "-o", str(out), "--resume"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert _digest(out) == before
    # --resume with another configuration: error naming the key, file untouched
    other = _write(tmp_path, _put("scheme", "lr", 0.25), name="other.toml")
    assert main(["run", str(other), "-o", str(out), "--resume"]) == 2
    err = _one_line_error(capsys)
    assert "differs from the one stored in" in err and "scheme.lr" in err
    assert _digest(out) == before
    # --resume and --overwrite together are refused by argparse
    with pytest.raises(SystemExit):
        main(["run", str(cfg), "-o", str(out), "--resume", "--overwrite"])
    # a comment or the progress setting may change on resume
    same = _write(tmp_path, _put("run", "progress", False), name="same.toml")
    assert main(["run", str(same), "-o", str(out), "--resume"]) == 0
    assert _digest(out) == before


def _records(path):
    run = mfg.load(path)
    return run, {"theta": run.theta, "omega": run.omega, "times": run.times, "steps": run.steps,
                 **{f"obs:{k}": v for k, v in run.observables.items()}}


def _assert_same_run(a, b):
    ra, da = _records(a)
    rb, db = _records(b)
    assert da.keys() == db.keys()
    for k in da:
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)
    assert ra.complete and rb.complete
    sa, sb = ra.checkpoint.state, rb.checkpoint.state
    assert sa.step == sb.step
    np.testing.assert_array_equal(sa.theta, sb.theta)
    np.testing.assert_array_equal(sa.omega, sb.omega)
    assert sa.opt.keys() == sb.opt.keys()
    for k in sa.opt:
        np.testing.assert_array_equal(sa.opt[k], sb.opt[k])


def _checkpoint_step(path):
    """Newest valid checkpoint step of a file being written by another process, or None."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            steps = [int(f[f"checkpoint/{s}"].attrs["step"]) for s in ("slot0", "slot1")
                     if f"checkpoint/{s}" in f and int(f[f"checkpoint/{s}"].attrs.get("valid", 0))]
            return max(steps) if steps else None
    except Exception:  # the writer may be mid-flush: try again later
        return None


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, capsys):
    # 6000 numpy-engine steps (a second or two); checkpoints every 150 steps, records every 200
    cfg = _write(tmp_path, lambda d: d["run"].update(t_end=750.0, record=30, checkpoint_every=150))
    full, killed = tmp_path / "full.h5", tmp_path / "killed.h5"
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # POT would import torch/jax for its array backends (seconds); numpy arrays do not need them
    env.update({f"POT_BACKEND_DISABLE_{b}": "1" for b in ("PYTORCH", "JAX", "TENSORFLOW", "CUPY")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "meanfield_gan.cli", "run", str(cfg), "-o", str(killed)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if killed.exists() and (_checkpoint_step(killed) or 0) > 0:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ck = _checkpoint_step(killed)
    with h5py.File(killed, "r") as f:
        assert int(f.attrs["complete"]) == 0
        n_steps = int(f["parameters"].attrs["n_steps"])
    assert 0 < ck < n_steps == 6000

    # the uninterrupted run, then the resumed one, in this process (same engine)
    assert main(["run", str(cfg), "-o", str(full)]) == 0
    capsys.readouterr()
    assert main(["run", str(cfg), "-o", str(killed), "--resume"]) == 0
    msg = capsys.readouterr().out
    resumed_from = int(msg.rsplit("resumed from step ", 1)[1].rstrip(")\n"))
    assert resumed_from >= ck and resumed_from % 150 == 0
    _assert_same_run(full, killed)
    assert mfg.load(killed).checkpoint.state.step == 6000


def test_interrupted_rmsprop_run_with_reference_resumes_bitwise(tmp_path, monkeypatch):
    """In process: a crash when the 3rd checkpoint is due (step 15, after the record of step 12),
    then resume: the record after the checkpoint is dropped and retaken, and the RMSProp
    optimiser state and the reference run's state go through the checkpoint."""
    mutate = lambda d: (d["scheme"].update(kind="rmsprop", lr=0.05),  # noqa: E731
                        d["run"].update(t_end=0.75, record=5, checkpoint_every=5),
                        d.update(reference={"kind": "euler", "refine": 2, "distance": "coupling"}))
    cfg = load_config(_write(tmp_path, mutate))
    full, cut = tmp_path / "full.h5", tmp_path / "cut.h5"
    run_config(cfg, full, progress=False)

    class Crash(Exception):
        pass

    real = H5MDWriter.write_checkpoint
    count = {"n": 0}

    def crashing(self, state, extras=None):
        count["n"] += 1
        if count["n"] == 3:
            raise Crash
        return real(self, state, extras)

    monkeypatch.setattr(H5MDWriter, "write_checkpoint", crashing)
    with pytest.raises(Crash):
        run_config(cfg, cut, progress=False)
    monkeypatch.undo()
    before = mfg.load(cut)
    assert not before.complete and before.checkpoint.state.step == 10
    np.testing.assert_array_equal(before.steps, [0, 12])  # 12: after the checkpoint
    res = run_config(cfg, cut, resume=True, progress=False)
    assert res.resumed_from == 10 and res.complete
    _assert_same_run(full, cut)
    assert set(mfg.load(cut).checkpoint.state.opt) == {"theta_sq", "omega_sq"}


def test_resume_without_checkpoint_restarts_and_missing_file_starts(tmp_path):
    cfg = load_config(_write(tmp_path))
    full, a = tmp_path / "full.h5", tmp_path / "a.h5"
    run_config(cfg, full, progress=False)
    res = run_config(cfg, a, resume=True, progress=False)  # no file yet: a fresh run
    assert res.resumed_from is None
    _assert_same_run(full, a)
    # a file killed before its first checkpoint: --resume starts over from step 0
    with h5py.File(a, "r+") as f:
        for s in ("slot0", "slot1"):
            f[f"checkpoint/{s}"].attrs["valid"] = 0
        f.attrs["complete"] = 0
    res = run_config(cfg, a, resume=True, progress=False)
    assert res.resumed_from == 0
    _assert_same_run(full, a)


# ------------------------------------------------------------------------------------------
# NaN / Inf
# ------------------------------------------------------------------------------------------
def test_non_finite_particles_stop_the_run_keeping_the_last_good_state(
        tmp_path, capsys, monkeypatch):
    sim_ref = importlib.import_module("meanfield_gan.engines.reference")

    bad_step = 7
    real = sim_ref.NumpyRunner.advance

    def advance(self, n, Zs, Xs, extra=None):
        # the real engine one step at a time; step `bad_step` produces a NaN
        done_before = getattr(self, "_done", 0)
        for s in range(n):
            real(self, 1, None if Zs is None else Zs[s:s + 1], None if Xs is None else Xs[s:s + 1],
                 None if extra is None else {k: v[s:s + 1] for k, v in extra.items()})
            self._done = done_before + s + 1
            if self._done == bad_step:
                self.theta[0, 0, 0] = np.nan
                return s
        return n

    monkeypatch.setattr(sim_ref.NumpyRunner, "advance", advance)
    cfg = _write(tmp_path, lambda d: d["run"].update(record=16, checkpoint_every=3))  # every step
    out = tmp_path / "nan.h5"
    assert main(["run", str(cfg), "-o", str(out)]) == 1
    err = _one_line_error(capsys)
    assert err.startswith("meanfield-gan run: error: non-finite particle values (NaN/Inf) "
                          f"at step {bad_step} ")
    assert "last record at step 6" in err and "checkpoint at step 6" in err
    run = mfg.load(out)
    assert not run.complete and f"step {bad_step}" in run.error
    np.testing.assert_array_equal(run.steps, np.arange(bad_step))
    assert np.all(np.isfinite(run.theta)) and np.all(np.isfinite(run.omega))
    assert run.checkpoint.state.step == 6 and np.all(np.isfinite(run.checkpoint.state.theta))
    # the last good snapshot is the state of an unperturbed run at that step
    monkeypatch.undo()
    problem, state, scheme = load_config(cfg).build()
    ok = mfg.simulate(problem, state, scheme, 6 * scheme.dt(4), record=None, seed=1,
                      backend="numpy")
    np.testing.assert_array_equal(run.theta[-1], ok.state.theta)
    np.testing.assert_array_equal(run.checkpoint.state.omega, ok.state.omega)
