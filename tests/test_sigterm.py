"""SIGTERM (a batch scheduler's notice before it kills a job) stops a run like Ctrl-C.

The run stops between two file writes, keeps its newest checkpoint, says how to resume and
exits with 128 + SIGTERM; ``--resume`` then finishes bitwise like an uninterrupted run.
"""
from __future__ import annotations

import copy
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
from meanfield_gan.io.h5md import H5MDWriter, read_checkpoint
from meanfield_gan.io.runfile import RunInterrupted, _StopOnSignal, run_config

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "problem": {"K": 1, "L": 1, "quadrature_size": 32,
                "target": {"kind": "gaussian_mixture", "means": [[-1.0], [1.0]], "scales": 0.3}},
    "init": {"N": 4, "M": 4, "seed": 0},
    "scheme": {"kind": "sgd", "lr": 0.5},
    "run": {"t_end": 2.0, "record": 4, "seed": 1, "backend": "numpy", "checkpoint_every": 3,
            "progress": False},
}


def _write(tmp_path, run=None, scheme=None):
    d = copy.deepcopy(BASE)
    d["run"].update(run or {})
    d["scheme"].update(scheme or {})
    p = tmp_path / "cfg.toml"
    p.write_text(dumps_toml(d))
    return p


def _valid_checkpoint_steps(path):
    """Steps of the valid checkpoint slots of a file another process is writing (or None)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return sorted(int(f[f"checkpoint/{s}"].attrs["step"]) for s in ("slot0", "slot1")
                          if f"checkpoint/{s}" in f
                          and int(f[f"checkpoint/{s}"].attrs.get("valid", 0)))
    except Exception:  # the writer may be mid-flush: look again later
        return None


def _assert_same_final_state(a, b):
    ra, rb = mfg.load(a), mfg.load(b)
    assert ra.complete and rb.complete
    np.testing.assert_array_equal(ra.steps, rb.steps)
    np.testing.assert_array_equal(ra.theta, rb.theta)
    np.testing.assert_array_equal(ra.omega, rb.omega)
    assert ra.observables.keys() == rb.observables.keys()
    for k in ra.observables:
        np.testing.assert_array_equal(ra.observables[k], rb.observables[k], err_msg=k)
    sa, sb = ra.checkpoint.state, rb.checkpoint.state
    assert sa.step == sb.step
    np.testing.assert_array_equal(sa.theta, sb.theta)
    np.testing.assert_array_equal(sa.omega, sb.omega)
    assert sa.opt.keys() == sb.opt.keys()
    for k in sa.opt:
        np.testing.assert_array_equal(sa.opt[k], sb.opt[k])


@pytest.mark.slow
def test_sigterm_stops_the_cli_run_keeping_a_current_checkpoint_and_resume_finishes(tmp_path,
                                                                                     capsys):
    # 6000 numpy-engine steps of RMSProp (optimiser state goes through the checkpoint);
    # checkpoints every 150 steps, records every 200
    cfg = _write(tmp_path, run=dict(t_end=750.0, record=30, checkpoint_every=150),
                 scheme=dict(kind="rmsprop", lr=0.05))
    full, cut = tmp_path / "full.h5", tmp_path / "cut.h5"
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    # POT would import torch/jax for its array backends (seconds); numpy arrays do not need them
    env.update({f"POT_BACKEND_DISABLE_{b}": "1" for b in ("PYTORCH", "JAX", "TENSORFLOW", "CUPY")})
    proc = subprocess.Popen([sys.executable, "-m", "meanfield_gan.cli", "run", str(cfg), "-o",
                             str(cut)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if cut.exists() and any(s > 0 for s in _valid_checkpoint_steps(cut) or ()):
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before SIGTERM: {proc.communicate()}"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    ck = read_checkpoint(cut)
    assert ck is not None and 0 < ck.state.step < 6000 and ck.state.step % 150 == 0
    assert lines[0] == (f"meanfield-gan run: interrupted by SIGTERM; {cut} keeps its checkpoint at "
                        f"step {ck.state.step}; continue with: meanfield-gan run {cfg} -o {cut} "
                        f"--resume")
    with h5py.File(cut, "r") as f:
        assert int(f.attrs["complete"]) == 0
        assert f.attrs["error"] == "interrupted by SIGTERM; continue with --resume"
        rec_steps = f["particles/generator/position/step"][...]
        # stopped between writes: every element has the same records (none cut short)
        for name in f["observables"]:
            np.testing.assert_array_equal(f[f"observables/{name}/step"][...], rec_steps)
        np.testing.assert_array_equal(f["particles/critic/position/step"][...], rec_steps)
    # the checkpoint is current: the newest the run reached (one was due at every multiple of
    # 150 steps up to the last record, and none is newer than the state the run stopped in)
    assert ck.state.step >= (int(rec_steps[-1]) // 150) * 150
    assert set(ck.state.opt) == {"theta_sq", "omega_sq"}

    assert main(["run", str(cfg), "-o", str(full)]) == 0
    capsys.readouterr()
    assert main(["run", str(cfg), "-o", str(cut), "--resume"]) == 0
    assert f"resumed from step {ck.state.step}" in capsys.readouterr().out
    _assert_same_final_state(full, cut)
    with h5py.File(cut, "r") as f:
        assert f.attrs["error"] == ""


def test_sigterm_during_a_checkpoint_write_waits_for_the_write(tmp_path, monkeypatch):
    """A signal that arrives mid-checkpoint is raised only once the slot is complete and valid."""
    cfg = load_config(_write(tmp_path, run=dict(t_end=2.0, record=4, checkpoint_every=3)))
    full, cut = tmp_path / "full.h5", tmp_path / "cut.h5"
    run_config(cfg, full, progress=False)
    before = signal.getsignal(signal.SIGTERM)

    real_put = H5MDWriter._put_state
    calls = {"checkpoints": 0, "signalled_at": None}
    real_write = H5MDWriter.write_checkpoint

    def write_checkpoint(self, state, extras=None):
        calls["checkpoints"] += 1
        return real_write(self, state, extras)

    def put_state(self, g, state):
        # the second checkpoint: SIGTERM arrives after the slot was marked invalid
        if calls["checkpoints"] == 2 and calls["signalled_at"] is None:
            calls["signalled_at"] = state.step
            os.kill(os.getpid(), signal.SIGTERM)
        real_put(self, g, state)

    monkeypatch.setattr(H5MDWriter, "write_checkpoint", write_checkpoint)
    monkeypatch.setattr(H5MDWriter, "_put_state", put_state)
    with pytest.raises(RunInterrupted) as info:
        run_config(cfg, cut, progress=False)
    monkeypatch.undo()
    assert info.value.signame == "SIGTERM" and isinstance(info.value, KeyboardInterrupt)
    assert calls["signalled_at"] == 6
    # the interrupted write was finished: the newest checkpoint is the one being written
    assert info.value.checkpoint_step == 6 == read_checkpoint(cut).state.step
    assert signal.getsignal(signal.SIGTERM) is before  # the handler was restored
    assert not mfg.load(cut).complete
    res = run_config(cfg, cut, resume=True, progress=False)
    assert res.resumed_from == 6 and res.complete
    _assert_same_final_state(full, cut)


@pytest.mark.parametrize("disposition", ["default", "ignored"])
def test_handlers_during_a_run_and_after(tmp_path, monkeypatch, disposition):
    """Installed over the default disposition only (a SIGTERM a parent process set to be
    ignored stays ignored), and restored when the run ends."""
    cfg = load_config(_write(tmp_path))
    seen = []
    real = H5MDWriter.record

    def record(self, *args, **kwargs):
        seen.append(signal.getsignal(signal.SIGTERM))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(H5MDWriter, "record", record)
    start = signal.SIG_DFL if disposition == "default" else signal.SIG_IGN
    previous = signal.signal(signal.SIGTERM, start)
    try:
        run_config(cfg, tmp_path / "a.h5", progress=False)
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(seen) == 5
    if disposition == "default":
        assert all(isinstance(getattr(h, "__self__", None), _StopOnSignal) for h in seen)
    else:
        assert all(h is signal.SIG_IGN for h in seen)
    assert after is start
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
