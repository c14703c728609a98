"""The CUDA engine (``backend="cuda"``) against the NumPy reference.

``NUMBA_ENABLE_CUDASIM`` is read when numba is first imported, and the rest of the suite
imports numba in this process without it.  So every check here runs in a child process
(this file, run as a script with a mode argument) with the environment it needs:

* ``sim``: under numba's CUDA simulator (tiny sizes, small thread blocks): velocities and
  short trajectories of every scheme equal NumPy's to 1e-12 in float64 (critic particles on
  the boundary of Q included), float32 within its own tolerance, coincident critic particles
  stay bitwise equal, the NaN/Inf early return matches the CPU runners.
* ``types``: without the simulator, every kernel is compiled for the real CUDA target (to
  PTX where a CUDA toolkit's libNVVM is installed, else to LLVM IR; no GPU needed), so
  typing errors the simulator cannot see are caught, and the float32 kernels are checked
  to contain no float64 arithmetic.
* ``nogpu``: importing ``meanfield_gan`` never imports ``numba.cuda``, and with
  ``numba.cuda.is_available()`` forced to False, ``backend="cuda"`` raises the documented
  error before any work.

The parent collects each child's JSON results once per mode and asserts on them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Every test waits on child processes (the CUDA simulator: about 25 s): the slow loop only.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOL64 = 1e-12
TOL32 = 2e-5  # float32 rounding over a few steps of O(1) quantities (seen: ~3e-7)


#: Child modes and whether each runs under the simulator.
MODES = {"sim": True, "types": False, "nogpu": False}


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Start the three children at once (they are independent); results read on demand.

    Their output goes to files, so a child never blocks on a full pipe while the parent
    waits for another.
    """
    tmp = tmp_path_factory.mktemp("cuda_children")
    procs = {}
    for mode, simulated in MODES.items():
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
        if simulated:
            env["NUMBA_ENABLE_CUDASIM"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(tmp / f"{mode}.out", "w") as out, open(tmp / f"{mode}.err", "w") as err:
            procs[mode] = subprocess.Popen([sys.executable, __file__, mode], env=env, cwd=ROOT,
                                           stdout=out, stderr=err)
    results: dict = {}

    def get(mode: str) -> dict:
        if mode not in results:
            code = procs[mode].wait(timeout=600)
            out = (tmp / f"{mode}.out").read_text()
            if code != 0:
                err = (tmp / f"{mode}.err").read_text()
                raise AssertionError(f"child '{mode}' failed:\n{out[-3000:]}\n{err[-6000:]}")
            results[mode] = json.loads(out.strip().splitlines()[-1])
        return results[mode]

    yield get
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def sim(children):
    return children("sim")


# --------------------------------------------------------------------------------------
# what the children compute
# --------------------------------------------------------------------------------------

#: (K, L, N, M, Bz, Bx, threads_per_block, min_terms): block shapes that exercise one and
#: several chunks per sum, trees of several levels (few outputs, Y > 1) and none (X = T).
VELOCITY_CASES = [
    (2, 1, 5, 4, 6, 5, 8, 1),
    (1, 2, 9, 3, 2, 7, 16, 1),
    (3, 2, 4, 6, 1, 1, 8, 16),
    (2, 2, 20, 17, 13, 11, 32, 2),
]


def _sim_main() -> dict:
    """Mode ``sim``: everything that runs kernels (under the simulator)."""
    import importlib
    import warnings

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_config

    import meanfield_gan as mfg
    from meanfield_gan.engines import _cuda as ce
    from meanfield_gan.engines import reference as _reference

    sim_mod = importlib.import_module("meanfield_gan.driver")
    out: dict = {"available": ce.is_available()}

    vel = []
    for case in VELOCITY_CASES:
        K, L, N, M, Bz, Bx, tpb, mt = case
        th, om, z, zw, x, xw = random_config(K + N, K, L, N, M, Bz, Bx)
        rt, ro = _reference.velocity(th, om, z, zw, x, xw)
        vt, vo = ce.velocity(th, om, z, zw, x, xw, threads_per_block=tpb, min_terms=mt)
        ft, fo = ce.velocity(th, om, z, zw, x, xw, threads_per_block=tpb, min_terms=mt,
                             dtype="float32")
        vel.append(dict(case=case, err64=max(np.abs(vt - rt).max(), np.abs(vo - ro).max()),
                        err32=max(np.abs(ft - rt).max(), np.abs(fo - ro).max()),
                        scale=max(np.abs(rt).max(), np.abs(ro).max()),
                        dtypes=[str(vt.dtype), str(fo.dtype)],
                        on_boundary=float(np.mean(np.abs(om) >= 1.0))))
    # The public entry point (core.velocity validates, then calls the engine).
    th, om, *quad = random_config(7, 2, 1, 6, 5, 4, 3)
    rt, ro = mfg.velocity(th, om, *quad, backend="numpy")
    vt, vo = mfg.velocity(th, om, *quad, backend="cuda")
    out["public_velocity_err"] = max(np.abs(vt - rt).max(), np.abs(vo - ro).max())
    out["velocity"] = vel

    # Short trajectories of every scheme; critic particles start on the boundary, and
    # particles 3 and 4 coincide.
    prob = mfg.Problem(K=2, L=1, target=mfg.GaussianMixture([[-1.0, 0.5], [1.0, -0.5]], 0.3),
                       quadrature_size=5)
    st = mfg.initial_state(prob, N=6, M=5, seed=3)
    om = st.omega.copy()
    om[0, :2] = [1.0, -1.0]
    om[2, 3] = 1.0
    om[3] = om[4]
    st = mfg.State(st.theta, om)
    opts = dict(threads_per_block=8, min_terms=1)
    schemes = {
        "sgd": (mfg.SGD(lr=2.0, batch_size=3), 4),
        "sgd_alternating": (mfg.SGD(lr=2.0, batch_size=2, n_critic=2, alternating=True), 3),
        "rmsprop": (mfg.RMSProp(lr=0.05, batch_size=3), 3),
        "euler": (mfg.ProjectedEuler(0.3, 2.0, n_latent=4, n_target=3), 3),
        "heun": (mfg.ProjectedHeun(0.3, 2.0, n_latent=4, n_target=3), 2),
    }
    traj = {}
    for name, (scheme, n) in schemes.items():
        t_end = n * scheme.dt(st.N)
        ref = mfg.simulate(prob, st, scheme, t_end, record=n, seed=5, backend="numpy")
        # Observables (psi: evaluated on the host by the numba CPU engine) once, to cover
        # simulate's default path; elsewhere only the particles are compared.
        obs = name == "sgd"
        cu = mfg.simulate(prob, st, scheme, t_end, record=n, seed=5, backend="cuda",
                          observables=obs, **opts)
        c32 = mfg.simulate(prob, st, scheme, t_end, record=n, seed=5, backend="cuda",
                           dtype="float32", observables=False, **opts)
        err = lambda a, b: max(np.abs(a.theta - b.theta).max(),  # noqa: E731
                               np.abs(a.omega - b.omega).max())
        traj[name] = dict(
            steps=int(cu.state.step), ref_steps=int(ref.state.step),
            err64=err(cu, ref), err32=err(c32, ref),
            err_opt=max([np.abs(v - ref.state.opt[k]).max() for k, v in cu.state.opt.items()],
                        default=0.0),
            opt_keys=sorted(cu.state.opt), ref_opt_keys=sorted(ref.state.opt),
            moved=float(np.abs(ref.omega[-1] - ref.omega[0]).max()),
            boundary=ref.observables["critic_boundary_fraction"].tolist(),
            psi_err=float(np.abs(cu.observables["psi"] - ref.observables["psi"]).max())
            if obs else 0.0,
            coincident=bool(np.array_equal(cu.omega[:, 3], cu.omega[:, 4])),
            dtype32=str(c32.theta.dtype))
    out["trajectories"] = traj

    # NaN/Inf early return: an infinite data point in step k's batch makes omega NaN at
    # step k; each runner must report k steps completed.
    prob1 = mfg.Problem(K=1, L=1, target=mfg.GaussianMixture([[-1.0], [1.0]], 0.3))
    st1 = mfg.initial_state(prob1, N=4, M=3, seed=1)
    sgd = mfg.SGD(lr=1.0, batch_size=2)
    Zs, Xs = sim_mod.draw_batches(prob1, sgd, 0, 0)
    n, k = 9, 5
    Zs, Xs = Zs[:n], Xs[:n].copy()
    Xs[k, 0, 0, 1] = np.inf
    done = {}
    # NaN arithmetic warns (in the simulator's threads, which np.errstate does not reach).
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        done["numpy"] = _reference.NumpyRunner(prob1, st1, sgd).advance(n, Zs, Xs)
        for name, o in [("cuda", dict(check_every=2)), ("cuda_every_32", {}),
                        ("cuda32", dict(check_every=4, dtype="float32"))]:
            r = ce.make_runner(prob1, st1, sgd, threads_per_block=8, **o)
            done[name] = r.advance(n, Zs, Xs)
            done[name + "_after"] = r.advance(1, Zs[:1], Xs[:1] * 0)
    out["nonfinite"] = dict(k=k, done=done)

    # Option validation.
    errors = {}
    for bad in (dict(dtype="float16"), dict(threads_per_block=48), dict(colour="red"),
                dict(check_every=0)):
        try:
            mfg.simulate(prob1, st1, sgd, sgd.dt(4), backend="cuda", **bad)
            errors[str(bad)] = None
        except ValueError as exc:
            errors[str(bad)] = str(exc)
    out["option_errors"] = errors
    return out


def _types_main() -> dict:
    """Mode ``types``: compile every kernel for the CUDA target (sm_90) and inspect the code.

    With libNVVM present (a CUDA toolkit, no GPU needed) the kernels go all the way to PTX,
    else to LLVM IR (``compile_cuda`` needs no toolkit).  Device functions ask the current
    device for its compute capability, so that lookup is answered here.
    """
    import re
    import types

    import numba.cuda.dispatcher as disp

    disp.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    from numba import cuda, void
    from numba.cuda.compiler import compile_cuda
    from numba.cuda.cudadrv import nvvm

    from meanfield_gan.engines import _cuda as ce

    ptx = nvvm.is_available()
    res = {"ptx": ptx, "kernels": {}}
    for dtype in ("float64", "float32"):
        kern = ce._kernels(2, 3, dtype, 64)
        for name, sig in ce.kernel_signatures(dtype).items():
            fn = getattr(kern, name).py_func
            if ptx:
                code, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
                f64 = len(re.findall(r"\.f64\b", code))
            else:
                code = compile_cuda(fn, void, sig, cc=(9, 0)).library.get_llvm_str()
                f64 = len(re.findall(r"\bdouble\b", code))
            res["kernels"][f"{dtype}:{name}"] = dict(f64=f64, expf="__nv_expf" in code)
    return res


def _nogpu_main() -> dict:
    """Mode ``nogpu``: import hygiene and the error without a GPU."""
    import meanfield_gan as mfg

    prob = mfg.Problem(K=1, L=1, target=mfg.GaussianMixture([[-1.0], [1.0]], 0.3))
    st = mfg.initial_state(prob, N=4, M=3, seed=0)
    from meanfield_gan.engines import _numba  # noqa: F401  (imports numba, not numba.cuda)

    mfg.simulate(prob, st, mfg.SGD(), 2 * mfg.SGD().dt(4), backend="numpy")
    z, zw, x, xw = prob.quadrature(3, 2)
    mfg.velocity(st.theta, st.omega, z, zw, x, xw, backend="numpy")
    out = {"cuda_imported_by_package": "numba.cuda" in sys.modules}

    from numba import cuda

    cuda.is_available = lambda: False  # as on a machine without a GPU
    from meanfield_gan.engines import _cuda as ce

    before = st.theta.copy()
    msgs = {}
    calls = {
        "velocity": lambda: mfg.velocity(st.theta, st.omega, z, zw, x, xw, backend="cuda"),
        "simulate": lambda: mfg.simulate(prob, st, mfg.SGD(), mfg.SGD().dt(4), backend="cuda"),
        "simulate_float32": lambda: mfg.simulate(prob, st, mfg.SGD(), mfg.SGD().dt(4),
                                                 backend="cuda", dtype="float32"),
    }
    for name, call in calls.items():
        try:
            call()
            msgs[name] = None
        except ValueError as exc:
            msgs[name] = [type(exc).__name__, str(exc)]
    out.update(messages=msgs, available=ce.is_available(),
               kernels_built=ce._kernels.cache_info().currsize,
               state_untouched=bool(np.array_equal(before, st.theta)))
    return out


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------


def test_simulator_counts_as_available(sim):
    assert sim["available"] is True


@pytest.mark.parametrize("i", range(len(VELOCITY_CASES)))
def test_velocity_matches_reference(sim, i):
    r = sim["velocity"][i]
    assert r["on_boundary"] > 0  # the configurations put critic coordinates on +-clip
    assert r["err64"] <= TOL64, r
    assert r["err32"] <= TOL32 * max(1.0, r["scale"]), r
    assert r["dtypes"] == ["float64", "float64"]  # host arrays are float64 either way
    assert sim["public_velocity_err"] <= TOL64


@pytest.mark.parametrize("scheme", ["sgd", "sgd_alternating", "rmsprop", "euler", "heun"])
def test_trajectory_matches_reference(sim, scheme):
    r = sim["trajectories"][scheme]
    assert r["steps"] == r["ref_steps"] > 0
    assert r["moved"] > 1e-2  # the particles did move
    assert r["boundary"][0] > 0  # ... starting with critic particles on the boundary of Q
    assert r["err64"] <= TOL64, r
    assert r["psi_err"] <= TOL64, r
    assert r["opt_keys"] == r["ref_opt_keys"] and r["err_opt"] <= TOL64, r
    assert r["err32"] <= TOL32, r
    assert r["dtype32"] == "float64"


@pytest.mark.parametrize("scheme", ["sgd", "sgd_alternating", "rmsprop", "euler", "heun"])
def test_coincident_critic_particles_stay_equal(sim, scheme):
    assert sim["trajectories"][scheme]["coincident"]


def test_nonfinite_early_return(sim):
    r = sim["nonfinite"]
    d = r["done"]
    assert d["numpy"] == r["k"]
    for name in ("cuda", "cuda_every_32", "cuda32"):
        assert d[name] == r["k"], d
        assert d[name + "_after"] == 0, d  # a runner that hit NaN/Inf takes no more steps


def test_engine_options_are_validated(sim):
    errs = sim["option_errors"]
    assert all(msg is not None for msg in errs.values()), errs
    assert "dtype" in errs[str(dict(dtype="float16"))]
    assert "threads_per_block" in errs[str(dict(threads_per_block=48))]
    assert "colour" in errs[str(dict(colour="red"))]
    assert "check_every" in errs[str(dict(check_every=0))]


def test_kernels_compile_for_cuda_and_float32_has_no_float64(children):
    res = children("types")
    kernels = res["kernels"]
    assert len(kernels) == 12
    for key, r in kernels.items():
        if key.startswith("float32"):
            assert r["f64"] == 0, (key, r)  # no literal or argument promoted to float64
        else:
            assert r["f64"] > 0, (key, r)
    if not res["ptx"]:  # in PTX the libdevice exponential is inlined, in LLVM IR a call
        assert kernels["float32:gen_out_part"]["expf"]
        assert not kernels["float64:gen_out_part"]["expf"]


def test_no_gpu_error_and_lazy_import(children):
    r = children("nogpu")
    assert r["cuda_imported_by_package"] is False
    assert r["available"] is False
    for name, msg in r["messages"].items():
        assert msg is not None, name
        kind, text = msg
        assert kind == "CUDAUnavailableError"
        assert "backend 'cuda' needs a CUDA GPU" in text and "backend='numba'" in text
    assert r["kernels_built"] == 0  # raised before any work
    assert r["state_untouched"]


if __name__ == "__main__":
    mode = sys.argv[1]
    result = {"sim": _sim_main, "types": _types_main, "nogpu": _nogpu_main}[mode]()
    print(json.dumps(result, default=float))
