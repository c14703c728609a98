"""The CUDA engine (``backend="cuda"``) against the NumPy reference.

``NUMBA_ENABLE_CUDASIM`` is read when numba is first imported, and the rest of the suite
imports numba in this process without it.  So every check here runs in a child process
(this file, run as a script with a mode argument) with the environment it needs:

* ``sim``: under numba's CUDA simulator (tiny sizes, small thread blocks): velocities and
  short trajectories of every scheme equal NumPy's to 1e-12 in float64 (critic particles on
  the boundary of Q included), float32 within its own tolerance, coincident critic particles
  stay bitwise equal, the NaN/Inf early return matches the CPU runners.
* ``sim_obj``: the same under the other objectives (MODEL.md section 7): velocities for each
  loss with instance-noise offsets and the gradient penalty (and a saturated critic,
  ``|f|`` in the hundreds), and trajectories of SGD, alternating SGD, Adam (both forms),
  projected Euler and Heun under minimax with annealed instance noise, non-saturating without
  a box, and the penalty with instance noise; Adam's state, a resumed run, a frozen generator.
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
MODES = {"sim": True, "sim_obj": True, "types": False, "nogpu": False}


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Start the children at once (they are independent); results read on demand.

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


@pytest.fixture(scope="module")
def sim_obj(children):
    return children("sim_obj")


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


#: Velocity checks of the other objectives: (case index in VELOCITY_CASES, loss, with z_noise,
#: with the gradient penalty).
OBJECTIVE_VELOCITIES = [
    (0, "minimax", False, False),
    (0, "non_saturating", True, False),
    (1, "minimax", True, False),
    (2, "non_saturating", False, False),
    (0, "wasserstein", True, True),
    (1, "wasserstein", False, True),
    (3, "minimax", True, False),
]
#: Trajectory problems of ``sim_obj`` (keywords of mfg.Problem besides K, L, target).
OBJECTIVE_PROBLEMS = {
    # the box with critic particles on it, noise annealed to 0 at t = 1 (within the runs)
    "minimax_noise": dict(loss="minimax", instance_noise=0.4, noise_anneal=1.0,
                          noise_nodes=2),
    "non_saturating": dict(loss="non_saturating", clip=None),
    "penalty_noise": dict(clip=None, gradient_penalty=3.0, penalty_size=4,
                          instance_noise=0.3, noise_nodes=2),
}
OBJECTIVE_SCHEMES = ["sgd", "sgd_alt", "adam", "adam_alt", "euler", "heun"]


def _objective_schemes(mfg) -> dict:
    """Each scheme of OBJECTIVE_SCHEMES and its number of steps (tiny: the simulator)."""
    return {
        "sgd": (mfg.SGD(lr=3.0, batch_size=3), 3),
        "sgd_alt": (mfg.SGD(lr=3.0, batch_size=2, n_critic=2, alternating=True), 2),
        "adam": (mfg.Adam(lr=0.3, batch_size=3), 3),
        "adam_alt": (mfg.Adam(lr=0.3, batch_size=2, n_critic=2, alternating=True, beta1=0.0),
                     2),
        "euler": (mfg.ProjectedEuler(0.3, 2.0, n_latent=3, n_target=2), 2),
        "heun": (mfg.ProjectedHeun(0.3, 2.0, n_latent=3, n_target=2), 2),
    }


def _sim_obj_main() -> dict:
    """Mode ``sim_obj``: the objectives, instance noise, the penalty and Adam (simulator)."""
    import warnings

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_config

    import meanfield_gan as mfg
    from meanfield_gan.driver import draw_batches, draw_extras
    from meanfield_gan.engines import _cuda as ce
    from meanfield_gan.engines import reference as _reference

    warnings.simplefilter("ignore", UserWarning)  # scipy's Sobol: "n a power of 2"
    out: dict = {}
    err = lambda a, b: float(max(np.abs(x - y).max() for x, y in zip(a, b)))  # noqa: E731

    vel = []
    for i, loss, noisy, penalised in OBJECTIVE_VELOCITIES:
        K, L, N, M, Bz, Bx, tpb, mt = VELOCITY_CASES[i]
        th, om, z, zw, x, xw = random_config(K + N, K, L, N, M, Bz, Bx)
        rng = np.random.default_rng(i)
        zn = 0.5 * rng.normal(size=(Bz, K)) if noisy else None
        pen = None
        if penalised:
            P = 3
            pen = (2.5, (rng.normal(size=(P, L)), rng.normal(size=(P, K)), rng.random(P),
                         np.full(P, 1.0 / P)))
        ref = _reference.velocity(th, om, z, zw, x, xw, loss, zn, pen)
        kw = dict(loss=loss, z_noise=zn, penalty=pen)
        v64 = ce.velocity(th, om, z, zw, x, xw, threads_per_block=tpb, min_terms=mt, **kw)
        v32 = ce.velocity(th, om, z, zw, x, xw, threads_per_block=tpb, min_terms=mt,
                          dtype="float32", **kw)
        pub = mfg.velocity(th, om, z, zw, x, xw, backend="cuda", **kw)  # through core
        vel.append(dict(case=[i, loss, noisy, penalised], err64=err(v64, ref),
                        err32=err(v32, ref), err_public=err(pub, ref),
                        scale=float(max(np.abs(r).max() for r in ref))))
    out["velocity"] = vel

    # A saturated critic, f = 700 tanh(15 (x_1 + x_2)) up to rounding: |f| near 700 at the
    # nodes, the objectives' weights s(+-f) deep in both tails.
    th, om, z, zw, x, xw = random_config(11, 2, 1, 5, 2, 6, 5)
    om[:] = [[1400.0, 30.0, 30.0, 0.0], [-1400.0, -30.0, -30.0, 0.0]]
    f_gen = _reference.critic_output(om, _reference.generator_output(th, z))
    f_data = _reference.critic_output(om, x)
    sat = {}
    for loss in ("minimax", "non_saturating"):
        ref = _reference.velocity(th, om, z, zw, x, xw, loss)
        v64 = ce.velocity(th, om, z, zw, x, xw, loss, threads_per_block=8, min_terms=1)
        v32 = ce.velocity(th, om, z, zw, x, xw, loss, threads_per_block=8, min_terms=1,
                          dtype="float32")
        # Relative errors per field: the non-saturating V_theta is ~1e-305 (weights s(-700)),
        # and a sigmoid that underflowed to 0 would make it 0.  (float32 is only required to
        # stay finite here: s' = s (1 - s) loses the digits of 1 - s near s = 1 in float32,
        # a property of the formula every engine shares.)
        sat[loss] = dict(rel64=[float(np.abs(v - r).max() / np.abs(r).max())
                                for v, r in zip(v64, ref)],
                         scales=[float(np.abs(r).max()) for r in ref],
                         finite32=bool(all(np.all(np.isfinite(v)) for v in v32)),
                         f_gen_max=float(f_gen.max()), f_data_min=float(f_data.min()))
    out["saturated"] = sat

    # Trajectories: every scheme under every problem in float64; float32 for one problem
    # per scheme.  Critic particles 3 and 4 coincide; with the box, some start on it.
    gm = mfg.GaussianMixture([[-1.0, 0.5], [1.0, -0.5]], 0.3)
    schemes = _objective_schemes(mfg)
    opts = dict(threads_per_block=8, min_terms=1)
    traj = {}
    for ip, (pname, kw) in enumerate(OBJECTIVE_PROBLEMS.items()):
        prob = mfg.Problem(K=2, L=1, target=gm, quadrature_size=5, **kw)
        st = mfg.initial_state(prob, N=6, M=5, seed=3)
        om = st.omega.copy()
        if prob.has_box:
            om[0, :2] = [prob.clip, -prob.clip]
        om[3] = om[4]
        st = mfg.State(st.theta, om)
        for js, sname in enumerate(OBJECTIVE_SCHEMES):
            scheme, n = schemes[sname]
            t_end = n * scheme.dt(st.N)
            def run(backend, prob=prob, st=st, scheme=scheme, t_end=t_end, n=n, **o):
                return mfg.simulate(prob, st, scheme, t_end, record=n, seed=5, backend=backend,
                                    observables=False, **o)

            ref = run("numpy")
            cu = run("cuda", **opts)
            r = dict(steps=int(cu.state.step), ref_steps=int(ref.state.step),
                     err64=err((cu.theta, cu.omega), (ref.theta, ref.omega)),
                     opt_keys=sorted(cu.state.opt), ref_opt_keys=sorted(ref.state.opt),
                     err_opt=max([float(np.abs(v - ref.state.opt[k]).max())
                                  for k, v in cu.state.opt.items()], default=0.0),
                     moved=float(max(np.abs(ref.theta[-1] - ref.theta[0]).max(),
                                     np.abs(ref.omega[-1] - ref.omega[0]).max())),
                     scale=float(max(np.abs(ref.theta).max(), np.abs(ref.omega).max())),
                     coincident=bool(np.array_equal(cu.omega[:, 3], cu.omega[:, 4])),
                     err32=None)
            if (ip + js) % len(OBJECTIVE_PROBLEMS) == 0:
                c32 = run("cuda", dtype="float32", **opts)
                r["err32"] = err((c32.theta, c32.omega), (ref.theta, ref.omega))
            traj[f"{pname}:{sname}"] = r
    out["trajectories"] = traj

    # Adam's bias corrections and the annealed noise follow the run's step: a resumed
    # alternating Adam run equals the uninterrupted one bitwise.
    prob = mfg.Problem(K=2, L=1, target=gm, **OBJECTIVE_PROBLEMS["minimax_noise"])
    st = mfg.initial_state(prob, N=6, M=5, seed=4)
    scheme = schemes["adam_alt"][0]
    dt = scheme.dt(st.N)
    full = mfg.simulate(prob, st, scheme, 3 * dt, seed=2, backend="cuda", observables=False,
                        **opts)
    half = mfg.simulate(prob, st, scheme, 1 * dt, seed=2, backend="cuda", observables=False,
                        **opts)
    rest = mfg.simulate(prob, half.state, scheme, 3 * dt, seed=2, backend="cuda",
                        observables=False, **opts)
    out["resumed_bitwise"] = bool(
        np.array_equal(rest.state.theta, full.state.theta)
        and np.array_equal(rest.state.omega, full.state.omega)
        and all(np.array_equal(rest.state.opt[k], full.state.opt[k]) for k in full.state.opt))

    # A frozen generator (the critic trains alone), runner against runner: the driver's
    # make_runner does not hand this scheme to the cuda engine yet.
    frozen = {}
    prob = mfg.Problem(K=2, L=1, target=gm, **OBJECTIVE_PROBLEMS["penalty_noise"])
    st = mfg.initial_state(prob, N=6, M=5, seed=6)
    for name, scheme in (("sgd", mfg.SGD(lr=3.0, batch_size=2, freeze_generator=True)),
                         ("adam_alt", mfg.Adam(lr=0.3, batch_size=2, n_critic=2,
                                               alternating=True, freeze_generator=True))):
        Zs, Xs = draw_batches(prob, scheme, 1, 0)
        ex = draw_extras(prob, scheme, 1, 0)
        n = 2
        runners = (_reference.NumpyRunner(prob, st, scheme), ce.make_runner(prob, st, scheme,
                                                                            **opts))
        for r in runners:
            r.advance(n, Zs[:n], Xs[:n], {k: v[:n] for k, v in ex.items()})
        (th0, om0), (th1, om1) = (r.particles() for r in runners)
        frozen[name] = dict(err=err((th1, om1), (th0, om0)),
                            theta_fixed=bool(np.array_equal(th1, st.theta)),
                            moved=float(np.abs(om0 - st.omega).max()))
    out["frozen"] = frozen
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
    res = {"ptx": ptx, "kernels": {}, "names": sorted(ce.kernel_signatures())}
    for dtype in ("float64", "float32"):
        kern = ce._kernels(2, 3, dtype, 64)
        crit = ce._kernels(1, 2, dtype, 64)  # f at the nodes: pass 1 on the critic
        sigs = ce.kernel_signatures(dtype)
        todo = [(name, getattr(kern, name), sig) for name, sig in sigs.items()]
        todo += [(f"critic_{name}", getattr(crit, name), sigs[name])
                 for name in ("gen_out_part", "reduce_nodes")]
        for name, k, sig in todo:
            fn = k.py_func
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


@pytest.mark.parametrize("i", range(len(OBJECTIVE_VELOCITIES)))
def test_objective_velocity_matches_reference(sim_obj, i):
    """minimax / non_saturating with and without noise offsets; the penalty (wasserstein)."""
    r = sim_obj["velocity"][i]
    assert r["case"] == list(OBJECTIVE_VELOCITIES[i])
    assert r["err64"] <= TOL64, r
    assert r["err_public"] <= TOL64, r  # mfg.velocity(backend="cuda", loss=..., ...)
    assert r["err32"] <= TOL32 * max(1.0, r["scale"]), r


@pytest.mark.parametrize("loss", ["minimax", "non_saturating"])
def test_saturated_critic_weights(sim_obj, loss):
    r = sim_obj["saturated"][loss]
    assert r["f_gen_max"] < -699 and r["f_data_min"] > 699, r  # |f| = 700 at every node
    assert min(r["scales"]) > 0, r
    assert max(r["rel64"]) <= 1e-10, r
    assert r["finite32"], r


@pytest.mark.parametrize("problem", list(OBJECTIVE_PROBLEMS))
@pytest.mark.parametrize("scheme", OBJECTIVE_SCHEMES)
def test_objective_trajectory_matches_reference(sim_obj, problem, scheme):
    r = sim_obj["trajectories"][f"{problem}:{scheme}"]
    assert r["steps"] == r["ref_steps"] > 0
    assert r["moved"] > 1e-2, r  # the particles did move
    assert r["err64"] <= TOL64, r
    assert r["opt_keys"] == r["ref_opt_keys"] and r["err_opt"] <= TOL64, r
    if scheme.startswith("adam"):
        assert r["opt_keys"] == ["omega_m", "omega_v", "theta_m", "theta_v"]
    if r["err32"] is not None:
        assert r["err32"] <= TOL32 * max(1.0, r["scale"]), r
    assert r["coincident"]


def test_float32_trajectory_of_every_objective_scheme(sim_obj):
    checked = {k.split(":")[1] for k, r in sim_obj["trajectories"].items()
               if r["err32"] is not None}
    assert checked == set(OBJECTIVE_SCHEMES)


def test_adam_resumed_run_equals_uninterrupted(sim_obj):
    assert sim_obj["resumed_bitwise"]


@pytest.mark.parametrize("scheme", ["sgd", "adam_alt"])
def test_frozen_generator_matches_reference(sim_obj, scheme):
    r = sim_obj["frozen"][scheme]
    assert r["theta_fixed"] and r["moved"] > 1e-2, r
    assert r["err"] <= TOL64, r


def test_kernels_compile_for_cuda_and_float32_has_no_float64(children):
    res = children("types")
    kernels = res["kernels"]
    names = {"gen_out_part", "reduce_nodes", "shift_nodes", "obj_weights", "h_part",
             "penalty_points", "penalty_dirs", "pen_part", "crit_vel_part", "gen_vel_part",
             "finish"}
    assert set(res["names"]) == names
    names |= {"critic_gen_out_part", "critic_reduce_nodes"}
    assert set(kernels) == {f"{d}:{n}" for d in ("float64", "float32") for n in names}
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
    result = {"sim": _sim_main, "sim_obj": _sim_obj_main, "types": _types_main,
              "nogpu": _nogpu_main}[mode]()
    print(json.dumps(result, default=float))
