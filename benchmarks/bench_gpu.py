"""GPU benchmark: the CUDA engine beside the Numba CPU engine and a plain PyTorch version.

For ``N = M`` in {1e3, 1e4, 1e5} particles and SGD batches of ``B`` in {1e3, 1e4} latent and
data points (``Bz = Bx = B``), in float64 and float32, it measures steps per second of the
simultaneous SGD step (``advance`` of each engine's runner: batches copied to the device
once per call, particles kept there) and the sigmoid evaluations per second this achieves.
A step evaluates ``2 N K B + 2 M B`` sigmoids in the model count (what the CPU engine and the
PyTorch version evaluate); the CUDA engine evaluates ``M B`` more (see
``meanfield_gan/engines/_cuda.py``).  ``--losses wasserstein minimax`` adds rows for the
minimax objective (MODEL.md section 7: ``f`` at every node first, ``2 M B`` more sigmoids in
both counts); the PyTorch version has the Wasserstein objective only.  The GPU's sigmoid
throughput is bounded by two trivial kernels using the same sigmoid: an element-wise pass
over a large array (memory-bound, as a library's ``sigmoid(x)`` would be) and a
register-resident one (4 independent chains per thread: the arithmetic bound); the table
gives the fraction of the latter achieved.

Before timing, it checks on the GPU that the CUDA engine (and the PyTorch version) agree with
the NumPy reference.  Results go to ``benchmarks/results/gpu_<gpu name>.{json,md}``.  With no
GPU it prints a note and exits 0.

Usage::

    python benchmarks/bench_gpu.py                 # the full grid (a few minutes on an H100)
    python benchmarks/bench_gpu.py --quick         # N in {1e3, 1e4}, B = 1e3
    python benchmarks/bench_gpu.py --no-cpu --no-torch --dtypes float32
    python benchmarks/bench_gpu.py --quick --losses wasserstein minimax
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_gpu.py --allow-simulator --sizes 16 \
        --batches 8 --min-time 0 --bound-elems 64 --bound-threads 64 --bound-reps 2 \
        --losses wasserstein minimax -o /tmp/bench_gpu_smoke    # smoke test, no GPU
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

#: ``numba.cuda``, imported by :func:`main` once it has checked for a GPU.  A module global
#: (not an argument): the simulator swaps in its kernel API only for globals of a kernel.
cuda = None


# --------------------------------------------------------------------------------------
# the PyTorch baseline: the NumPy reference's formulas on tensors, chunked over particles
# --------------------------------------------------------------------------------------


def torch_namespace(torch, device, dtype) -> SimpleNamespace:
    """The few array functions :func:`array_sgd_step` needs, for PyTorch tensors."""
    return SimpleNamespace(
        sigmoid=torch.sigmoid, cat=lambda a, axis: torch.cat(a, dim=axis),
        clip=torch.clamp, einsum=torch.einsum,
        zeros=lambda *shape: torch.zeros(shape, dtype=dtype, device=device),
        empty_like=torch.empty_like)


def numpy_namespace() -> SimpleNamespace:
    """The same for NumPy (to check :func:`array_sgd_step` without PyTorch)."""
    from scipy.special import expit

    return SimpleNamespace(sigmoid=expit, cat=lambda a, axis: np.concatenate(a, axis=axis),
                           clip=np.clip, einsum=np.einsum, zeros=lambda *s: np.zeros(s),
                           empty_like=np.empty_like)


def array_velocity(xp, theta, omega, zT, zw, xT, xw, chunk_elems=1 << 25):
    """``(V_theta, V_omega)`` with dense array operations (MODEL.md section 2).

    ``theta (N, K, L+2)``, ``omega (M, K+2)``, nodes transposed ``zT (L, Bz)``, ``xT (K, Bx)``.
    Particles are processed in chunks so no temporary exceeds ``chunk_elems`` elements.
    """
    N, K, L2 = theta.shape
    L = L2 - 2
    M = omega.shape[0]
    Bz = zT.shape[1]
    cn = max(1, chunk_elems // (K * Bz))
    g = xp.zeros(K, Bz)
    for i in range(0, N, cn):
        t = theta[i:i + cn]
        u = xp.einsum("nkl,lb->nkb", t[..., 1:L + 1], zT) + t[..., L + 1:L + 2]
        g += (t[..., 0:1] * xp.sigmoid(u)).sum(0)
    g = g / N
    P = xp.cat([g, xT], 1)
    w = xp.cat([zw, -xw], 0)
    cm = max(1, chunk_elems // P.shape[1])
    vo = xp.empty_like(omega)
    wh = xp.zeros(K, Bz)  # w_b grad f(g(z_b))
    for j in range(0, M, cm):
        o = omega[j:j + cm]
        alpha, beta = o[:, 0:1], o[:, 1:K + 1]
        s = xp.sigmoid(beta @ P + o[:, K + 1:K + 2])
        ds = s * (1.0 - s) * w
        vo[j:j + cm, 0] = s @ w
        vo[j:j + cm, 1:K + 1] = alpha * (ds @ P.T)
        vo[j:j + cm, K + 1] = alpha[:, 0] * ds.sum(1)
        wh += (alpha * beta).T @ ds[:, :Bz]
    wh = wh / M
    vt = xp.empty_like(theta)
    for i in range(0, N, cn):
        t = theta[i:i + cn]
        u = xp.einsum("nkl,lb->nkb", t[..., 1:L + 1], zT) + t[..., L + 1:L + 2]
        s = xp.sigmoid(u)
        dsh = s * (1.0 - s) * wh
        vt[i:i + cn, :, 0] = -(s * wh).sum(-1)
        vt[i:i + cn, :, 1:L + 1] = -t[..., 0:1] * xp.einsum("nkb,lb->nkl", dsh, zT)
        vt[i:i + cn, :, L + 1] = -t[..., 0] * dsh.sum(-1)
    return vt, vo


def array_sgd_step(xp, theta, omega, zT, zw, xT, xw, dt, gdt, clip):
    """One simultaneous SGD step in place (the update of ``_NumpyRunner``)."""
    vt, vo = array_velocity(xp, theta, omega, zT, zw, xT, xw)
    theta += dt * vt
    omega += gdt * vo
    omega[...] = xp.clip(omega, -clip, clip)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _device_name() -> tuple[str, str]:
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    cc = getattr(dev, "compute_capability", ("?", "?"))
    return name, f"{cc[0]}.{cc[1]}"


def _sigmoid_bound(ce, dtype: str, n_elems: int, n_threads: int, reps: int) -> dict:
    """Sigmoids per second of the element-wise and register-resident kernels."""
    f = np.dtype(dtype).type
    sig = ce._maths(dtype).sigmoid
    shift = f(0.25)

    @cuda.jit
    def elementwise(x, y):
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        while i < x.shape[0]:
            y[i] = sig(x[i])
            i += stride

    @cuda.jit
    def in_register(x, y, reps):
        i = cuda.grid(1)
        if i < x.shape[0]:
            a = x[i]
            b = a + shift
            c = a - shift
            d = -a
            for _ in range(reps):  # four independent chains hide the latency of each
                a = sig(a)
                b = sig(b)
                c = sig(c)
                d = sig(d)
            y[i] = a + b + c + d

    rng = np.random.default_rng(0)
    out = {}
    for name, kern, n, count, args in (
            ("elementwise", elementwise, n_elems, n_elems, ()),
            ("in_register", in_register, n_threads, 4 * n_threads * reps, (reps,))):
        x = cuda.to_device(rng.normal(size=n).astype(f))
        y = cuda.device_array_like(x)
        blocks = min(-(-n // 256), 65535 * 4) if name == "elementwise" else -(-n // 256)
        kern[blocks, 256](x, y, *args)  # compile and warm up
        cuda.synchronize()
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            kern[blocks, 256](x, y, *args)
            cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        out[name] = count / best
        del x, y
    return out


def _checks(ce, mfg, K: int, L: int, torch_mod, small: bool = False) -> dict:
    """Agreement with the NumPy reference on the GPU (before any timing)."""
    from meanfield_gan.engines import reference as _reference

    rng = np.random.default_rng(1)
    N, M, Bz, Bx = (12, 9, 7, 5) if small else (300, 200, 257, 129)
    theta = rng.normal(size=(N, K, L + 2))
    omega = rng.uniform(-1, 1, size=(M, K + 2))
    omega[::7, 1] = 1.0  # some critic coordinates on the boundary
    z, x = rng.normal(size=(Bz, L)), rng.normal(size=(Bx, K))
    zw, xw = np.full(Bz, 1.0 / Bz), np.full(Bx, 1.0 / Bx)
    rt, ro = _reference.velocity(theta, omega, z, zw, x, xw)
    scale = max(np.abs(rt).max(), np.abs(ro).max())
    res = {}
    for dtype in ("float64", "float32"):
        vt, vo = ce.velocity(theta, omega, z, zw, x, xw, dtype=dtype)
        res[f"cuda_velocity_{dtype}_max_abs_err"] = float(max(np.abs(vt - rt).max(),
                                                              np.abs(vo - ro).max()))
    res["velocity_scale"] = float(scale)
    mt, mo = _reference.velocity(theta, omega, z, zw, x, xw, "minimax")
    vt, vo = ce.velocity(theta, omega, z, zw, x, xw, "minimax")
    res["cuda_velocity_minimax_float64_max_abs_err"] = float(max(np.abs(vt - mt).max(),
                                                                 np.abs(vo - mo).max()))
    prob = mfg.Problem(K=K, L=L, target=mfg.GaussianMixture(np.eye(2, K) * 2 - 1, 0.3))
    n, steps = (6, 3) if small else (64, 40)
    st = mfg.initial_state(prob, N=n, M=n, seed=2)
    sgd = mfg.SGD(lr=1.0, batch_size=4 if small else 16)
    t_end = steps * sgd.dt(n)
    a = mfg.simulate(prob, st, sgd, t_end, seed=3, backend="numpy", observables=False)
    b = mfg.simulate(prob, st, sgd, t_end, seed=3, backend="cuda", observables=False)
    res["cuda_sgd_steps"] = steps
    res["cuda_sgd_max_abs_err"] = float(max(
        np.abs(a.state.theta - b.state.theta).max(), np.abs(a.state.omega - b.state.omega).max()))
    xpn = numpy_namespace()
    vt, vo = array_velocity(xpn, theta, omega, z.T.copy(), zw, x.T.copy(), xw, 1 << 12)
    res["array_velocity_numpy_max_abs_err"] = float(max(np.abs(vt - rt).max(),
                                                        np.abs(vo - ro).max()))
    if torch_mod is not None:
        tt = lambda a: torch_mod.as_tensor(a, device="cuda")  # noqa: E731
        xpt = torch_namespace(torch_mod, "cuda", torch_mod.float64)
        vt, vo = array_velocity(xpt, tt(theta), tt(omega), tt(z.T.copy()), tt(zw),
                                tt(x.T.copy()), tt(xw))
        res["torch_velocity_float64_max_abs_err"] = float(max(
            np.abs(vt.cpu().numpy() - rt).max(), np.abs(vo.cpu().numpy() - ro).max()))
    return res


def _table(rows: list[dict]) -> str:
    head = ("| engine | loss | dtype | N = M | B | steps/s | model sigmoids/s "
            "| executed sigmoids/s | of bound |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        frac = r.get("fraction_of_bound")
        lines.append(f"| {r['engine']} | {r['loss']} | {r['dtype']} | {r['N']:.0e} | "
                     f"{r['B']:.0e} | "
                     f"{r['steps_per_s']:.4g} | {r['model_sigmoids_per_s']:.3e} | "
                     f"{r['executed_sigmoids_per_s']:.3e} | "
                     f"{'' if frac is None else f'{100 * frac:.1f}%'} |")
    return head + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e3, 1e4, 1e5],
                    help="particle numbers N = M")
    ap.add_argument("--batches", type=float, nargs="+", default=[1e3, 1e4],
                    help="SGD batch sizes B (latent and data points per step)")
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"],
                    choices=["float64", "float32"])
    ap.add_argument("--losses", nargs="+", default=["wasserstein"],
                    choices=["wasserstein", "minimax", "non_saturating"],
                    help="objectives to time (MODEL.md section 7)")
    ap.add_argument("--K", type=int, default=2, help="data dimension")
    ap.add_argument("--L", type=int, default=2, help="latent dimension")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds each timed call should last at least")
    ap.add_argument("--quick", action="store_true", help="N in {1e3, 1e4}, B = 1e3")
    ap.add_argument("--no-cpu", action="store_true", help="skip the Numba CPU engine")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--bound-elems", type=int, default=1 << 26,
                    help="array length of the element-wise sigmoid kernel")
    ap.add_argument("--bound-threads", type=int, default=1 << 22,
                    help="threads of the register-resident sigmoid kernel")
    ap.add_argument("--bound-reps", type=int, default=256)
    ap.add_argument("--allow-simulator", action="store_true",
                    help="run under NUMBA_ENABLE_CUDASIM=1 (smoke test of this script only: "
                         "the numbers mean nothing)")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"),
                    help="folder for gpu_<name>.json and .md")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.batches = [1e3, 1e4], [1e3]

    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if simulated and not args.allow_simulator:
        print("bench_gpu: NUMBA_ENABLE_CUDASIM is set: the CUDA simulator is not a GPU, "
              "nothing to measure (pass --allow-simulator to smoke-test this script).")
        return 0
    global cuda
    from bench_engines import steps_per_second  # the same timing rule as the CPU benchmark
    from numba import cuda

    from meanfield_gan.engines import _cuda as ce

    why = ce.unavailable_reason()
    if why is not None:
        print(f"bench_gpu: no usable CUDA GPU: {why}. Nothing to measure, exiting.")
        return 0

    import numba

    import meanfield_gan as mfg

    sim_mod = importlib.import_module("meanfield_gan.driver")
    from meanfield_gan.engines._numba import NumbaRunner
    torch_mod = None
    if not args.no_torch and not simulated:
        try:
            import torch

            if torch.cuda.is_available():
                torch_mod = torch
            else:
                print("bench_gpu: PyTorch found, but without CUDA: skipped")
        except ImportError:
            print("bench_gpu: PyTorch not installed: skipped")

    name, cc = ("CUDA simulator", "sim") if simulated else _device_name()
    K, L = args.K, args.L
    print(f"bench_gpu: {name} (compute capability {cc}), K={K}, L={L}")
    meta = dict(gpu=name, compute_capability=cc, K=K, L=L, numba=numba.__version__,
                numpy=np.__version__, torch=None if torch_mod is None else torch_mod.__version__,
                cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                numba_threads=numba.get_num_threads(), python=platform.python_version(),
                min_time=args.min_time, simulated=simulated,
                scheme="SGD simultaneous, lr=1, batch B latent + B data points",
                losses=args.losses)

    checks = _checks(ce, mfg, K, L, torch_mod, small=simulated)
    print("checks against the NumPy reference:", json.dumps(checks, indent=1))
    for key in ("cuda_velocity_float64_max_abs_err", "cuda_velocity_minimax_float64_max_abs_err"):
        if checks[key] > 1e-10 * max(1.0, checks["velocity_scale"]):
            print(f"WARNING: the CUDA engine disagrees with the NumPy reference ({key})")

    bound = {}
    for dtype in args.dtypes:
        bound[dtype] = _sigmoid_bound(ce, dtype, args.bound_elems, args.bound_threads,
                                      args.bound_reps)
        print(f"sigmoid bound {dtype}: element-wise {bound[dtype]['elementwise']:.3e}/s, "
              f"register-resident {bound[dtype]['in_register']:.3e}/s")

    rows = []
    max_steps = sim_mod.CHUNK_STEPS
    cases = [(int(Nf), int(Bf), loss) for Nf in args.sizes for Bf in args.batches
             for loss in args.losses]
    for N, B, loss in cases:
        M = N
        prob = mfg.Problem(K=K, L=L, target=mfg.GaussianMixture(np.eye(2, K) * 2 - 1, 0.3),
                           loss=loss)
        state = mfg.initial_state(prob, N=N, M=M, seed=0)
        sgd = mfg.SGD(lr=1.0, batch_size=B)
        t0 = time.perf_counter()
        Zs, Xs = sim_mod.draw_batches(prob, sgd, 0, 0)
        draw_us = 1e6 * (time.perf_counter() - t0) / max_steps
        model, executed = ce.sigmoid_count(N, M, K, B, B, loss)
        engines = [("cuda", d) for d in args.dtypes]
        if not args.no_cpu:
            engines.append(("numba-cpu", "float64"))
        if torch_mod is not None and loss == "wasserstein":  # its formulas: section 2 only
            engines += [("torch", d) for d in args.dtypes]
        for engine, dtype in engines:
            if engine == "cuda":
                adv = _runner_advance(ce.make_runner(prob, state, sgd, dtype=dtype), Zs, Xs)
                ex = executed
            elif engine == "numba-cpu":
                adv = _runner_advance(NumbaRunner(prob, state, sgd), Zs, Xs)
                ex = model
            else:
                adv = _torch_advance(torch_mod, prob, state, sgd, Zs, Xs, dtype)
                ex = model
            # (steps_per_second warms up, grows n to min_time, keeps the best of 3)
            rate, n = steps_per_second(adv, args.min_time, 3, max_steps)
            secs = n / rate
            bnd = bound.get(dtype, {}).get("in_register") if engine != "numba-cpu" else None
            row = dict(engine=engine, loss=loss, dtype=dtype, N=N, M=M, B=B, steps_per_s=rate,
                       timed_steps=n, seconds=secs, model_sigmoids_per_s=rate * model,
                       executed_sigmoids_per_s=rate * ex,
                       fraction_of_bound=None if not bnd else rate * ex / bnd,
                       host_batch_draw_us_per_step=draw_us)
            rows.append(row)
            print(_table([row]).splitlines()[-1], flush=True)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_" + _slug(name)
    result = dict(meta=meta, checks=checks, sigmoid_bound=bound, rows=rows)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    md = (f"# bench_gpu on {name} (compute capability {cc})\n\n"
          f"K={K}, L={L}; {meta['scheme']}; numba {meta['numba']}, torch {meta['torch']}; "
          f"CPU engine on {meta['cpu_count']} cores ({meta['numba_threads']} numba threads).\n\n"
          "Sigmoid bound (evaluations/s): "
          + ", ".join(f"{d}: element-wise {b['elementwise']:.3e}, register-resident "
                      f"{b['in_register']:.3e}" for d, b in bound.items())
          + ". 'of bound' = executed sigmoids/s over the register-resident bound.\n\n"
          + _table(rows)
          + "\nHost-side batch drawing (not in the timings): "
          + ", ".join(sorted({f"B={r['B']:.0e}: {r['host_batch_draw_us_per_step']:.0f} us/step"
                              for r in rows})) + ".\n")
    (out / f"{stem}.md").write_text(md)
    print(f"bench_gpu: wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


def _runner_advance(runner, Zs, Xs):
    """``advance(n)`` of an engine's step runner on the pre-drawn batches."""

    def advance(n):
        if runner.advance(n, Zs[:n], Xs[:n]) < n:
            raise FloatingPointError("NaN/Inf during the benchmark run")

    return advance


def _torch_advance(torch, prob, state, sgd, Zs, Xs, dtype):
    """``advance(n)`` of the PyTorch baseline (batches uploaded once, like the engine's)."""
    dev = "cuda"
    tdt = getattr(torch, dtype)
    T = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=tdt, device=dev)  # noqa: E731
    theta, omega = T(state.theta), T(state.omega)
    m = sgd.batch_size
    zw = torch.full((m,), 1.0 / m, dtype=tdt, device=dev)
    xp = torch_namespace(torch, dev, tdt)
    N, M = state.N, state.M
    dt, gdt, clip = sgd.dt(N), sgd.gamma_c(N, M) * sgd.dt(N), prob.clip

    def advance(n):
        Z, X = T(Zs[:n]), T(Xs[:n])
        for s in range(n):
            array_sgd_step(xp, theta, omega, Z[s, 0], zw, X[s, 0], zw, dt, gdt, clip)
        torch.cuda.synchronize()

    return advance


if __name__ == "__main__":
    sys.exit(main())
