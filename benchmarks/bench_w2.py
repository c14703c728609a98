"""Exact W_2^2 between equal-size uniform clouds: ``mfg.metrics.w2_squared`` against ``ot.emd2``.

For n = m, ``w2_squared`` proves with a k-d tree that pairing ``a_i`` with ``b_i`` is optimal
when it is (nearly matched clouds), and otherwise solves the assignment problem with
``scipy.optimize.linear_sum_assignment``; ``ot.emd2`` (POT's network simplex) is what it must
agree with. Cases: n in {1024, 4096, 8192}, d in {3, 12}, two kinds of clouds:

* ``random``: ``a`` and ``b`` independent standard normal clouds;
* ``near``: ``b = a + 1e-3 * noise`` (noise standard normal), the situation of SGD particles
  against the Euler particles they started from.

Columns: ``w2_squared`` (whole call, best of ``--repeats``; one call where it takes over 5 s),
the route it took, the cost matrix alone (what ``ot.emd2`` needs first), ``ot.emd2`` alone on
that matrix (one call, ``numItermax = 1e9``, one thread), the speed-up (emd2 + matrix over
``w2_squared``) and the relative difference of the two values. Also times ``python -c "import
ot"`` with and without POT's backend-disabling environment variables.

Usage::

    python benchmarks/bench_w2.py [--sizes 1024 4096 8192] [--dims 3 12] [--repeats 3]

Writes ``benchmarks/results/bench_w2.md``. The whole grid takes 3 to 4 minutes: ``ot.emd2`` on
two independent 8192-point clouds alone takes 10 to 45 s.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import ot
import scipy

from meanfield_gan import metrics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _cpu import cpu_description  # noqa: E402

_POT_DISABLE = {f"POT_BACKEND_DISABLE_{b}": "1" for b in ("PYTORCH", "JAX", "TENSORFLOW", "CUPY")}


def import_time(env_extra: dict[str, str], repeats: int) -> float:
    """Best wall time of ``python -c "import ot"`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POT_BACKEND_DISABLE_")}
    env.update(env_extra)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ot"], env=env, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def clouds(kind: str, n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, n, d])
    a = rng.normal(size=(n, d))
    if kind == "random":
        return a, rng.normal(size=(n, d))
    return a, a + 1e-3 * rng.normal(size=(n, d))


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Best of ``repeats`` calls; a single call when the first takes over 5 s."""
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
        if best > 5.0:
            break
    return best, out


def measure(kind: str, n: int, d: int, repeats: int) -> dict:
    a, b = clouds(kind, n, d, seed=0)
    t_ours, ours = best_time(lambda: metrics.w2_squared(a, b), repeats)
    own = metrics._sq_distances(a, b)
    route = "certificate" if metrics._identity_is_optimal(a, b, own) else "assignment"
    t_cost, cost = best_time(lambda: metrics._sq_euclidean_cost(a, b), repeats)
    w = np.full(n, 1.0 / n)
    t = time.perf_counter()
    ref, log = ot.emd2(w, w, cost, numItermax=1_000_000_000, log=True)
    t_emd = time.perf_counter() - t
    del cost
    ref = float(ref)
    return {"kind": kind, "n": n, "d": d, "route": route, "t_ours": t_ours, "t_cost": t_cost,
            "t_emd2": t_emd, "value": ours, "emd2": ref,
            "rel_diff": abs(ours - ref) / ref if ref else abs(ours),
            "emd2_warning": log.get("warning") or ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--dims", type=int, nargs="+", default=[3, 12])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    cpu = cpu_description()
    load_before = os.getloadavg()
    print(cpu, flush=True)
    imp_plain = import_time({}, 3)
    imp_disabled = import_time(_POT_DISABLE, 3)
    print(f'python -c "import ot": {imp_plain:.2f} s; with POT_BACKEND_DISABLE_*=1: '
          f"{imp_disabled:.2f} s", flush=True)

    header = ("| clouds | n | d | w2_squared (s) | route | cost matrix (s) | ot.emd2 (s) | "
              "speed-up | rel. difference |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    print(header, flush=True)
    for kind in ("random", "near"):
        for d in args.dims:
            for n in args.sizes:
                r = measure(kind, n, d, args.repeats)
                speedup = (r["t_emd2"] + r["t_cost"]) / r["t_ours"]
                row = (f"| {kind} | {n} | {d} | {r['t_ours']:.3g} | {r['route']} | "
                       f"{r['t_cost']:.3g} | {r['t_emd2']:.3g} | {speedup:.3g}x | "
                       f"{r['rel_diff']:.1e} |")
                if r["emd2_warning"]:
                    row += f" emd2: {r['emd2_warning']}"
                lines.append(row)
                print(row, flush=True)

    load_after = os.getloadavg()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    doc = [
        "# Exact W_2^2: `mfg.metrics.w2_squared` against `ot.emd2`",
        "",
        f"Machine: {cpu}. NumPy {np.__version__}, SciPy {scipy.__version__}, POT "
        f"{ot.__version__}, Python {platform.python_version()}. Load average (1, 5, 15 min) "
        f"{tuple(round(x, 2) for x in load_before)} before, "
        f"{tuple(round(x, 2) for x in load_after)} after.",
        "",
        "`random`: independent N(0, I) clouds; `near`: b = a + 1e-3 noise. w2_squared: the "
        "whole call (best of "
        f"{args.repeats}, one call above 5 s). ot.emd2: one call on the prebuilt matrix "
        "(numItermax = 1e9, one thread); speed-up = (cost matrix + ot.emd2) / w2_squared. "
        "rel. difference: |w2_squared - ot.emd2| / ot.emd2.",
        "",
        *lines,
        "",
        f'`python -c "import ot"` (best of 3): {imp_plain:.2f} s as installed, '
        f"{imp_disabled:.2f} s with `POT_BACKEND_DISABLE_{{PYTORCH,JAX,TENSORFLOW,CUPY}}=1`.",
        "",
        "Written by `python benchmarks/bench_w2.py " + " ".join(argv or sys.argv[1:]) + "`.",
        "",
    ]
    (out / "bench_w2.md").write_text("\n".join(doc))
    print(f"wrote {out / 'bench_w2.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
