"""Steps per second of one projected Euler step: the NumPy reference against the Numba engine.

K = L in {1, 2}, N = M in {1e3, 1e4}, B = 1e3 quadrature nodes (latent and data).  Both
engines are the package's runners (``simulate``'s ``backend="numpy"`` and ``"numba"``) on the
same arrays; they are first checked to agree to 1e-10 after a few steps.  The target (issue 2):
Numba at least 10 times NumPy at N = M = B = 1e3, K = L = 1.

Usage::

    python benchmarks/bench_step.py [--min-time 0.3] [--repeats 5]

Writes ``benchmarks/results/bench_step.{md,json}``.  See ``bench_engines.py`` for PyTorch and
JAX and the sigmoid-throughput bound.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu import cpu_description  # noqa: E402
from bench_engines import ROOT, _Config, check_agreement, make_engine, steps_per_second  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    rows = []
    for K in (1, 2):
        for N in (1000, 10_000):
            cfg = _Config("euler", K, N, 1000)
            diff = check_agreement(_Config("euler", K, 64, 50), ["numba"])["numba"]
            if not diff <= 1e-10:
                print(f"numba disagrees with numpy: {diff:.3g}", file=sys.stderr)
                return 1
            rate = {}
            for name in ("numpy", "numba"):
                adv, _ = make_engine(name, cfg)
                rate[name], _ = steps_per_second(adv, args.min_time, args.repeats)
            rows.append({"K": K, "L": K, "N": N, "M": N, "B": 1000,
                         "numpy_steps_per_s": rate["numpy"], "numba_steps_per_s": rate["numba"],
                         "speedup": rate["numba"] / rate["numpy"], "agreement": diff})
            r = rows[-1]
            print(f"K=L={K} N=M={N:>6} B=1000  numpy {r['numpy_steps_per_s']:9.2f} steps/s  "
                  f"numba {r['numba_steps_per_s']:9.2f} steps/s  x{r['speedup']:.1f}", flush=True)

    lines = ["| K = L | N = M | B | numpy (steps/s) | numba (steps/s) | numba / numpy |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['K']} | {r['N']:.0e} | {r['B']:.0e} | {r['numpy_steps_per_s']:.2f} | "
                     f"{r['numba_steps_per_s']:.2f} | {r['speedup']:.1f}x |")
    lines.append("")
    lines.append(f"Projected Euler step, float64, {numba.get_num_threads()} Numba threads "
                 f"({numba.threading_layer()} layer), load average "
                 f"{os.getloadavg()[0]:.2f} at the end; median of {args.repeats} timings.")
    lines.append(f"Machine: {cpu_description()}.")
    table = "\n".join(lines) + "\n"
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": cpu_description(), "cpus": os.cpu_count(),
            "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": numba.threading_layer(),
            "load_average": os.getloadavg(), "numpy": np.__version__, "numba": numba.__version__}
    (out / "bench_step.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "bench_step.md").write_text(table)
    print(table)
    print(f"wrote {out / 'bench_step.json'} and {out / 'bench_step.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
