"""Time to a first result: a first run on an empty Numba cache, then the same run again.

Each case runs in a fresh Python process with ``NUMBA_CACHE_DIR`` pointing to an empty folder
(the cold run: Numba compiles the kernel variants the run selects and writes them to the
cache), then in another fresh process with that folder (the warm run: everything is loaded).
Times are wall-clock seconds of the timed call inside the process (the import of the package
is reported apart), or of the whole command for the CLI case.

Cases:

* ``tiny sgd``: ``simulate`` of SGD with batch 1 on N = M = 16, K = L = 1, Wasserstein,
  ``t_end = 0.5``, two records (with the default observables, a velocity evaluation on the
  256-node quadrature, and without them: ``observables=False``);
* ``ten lines``: the README's ten-line example (SGD batch 1 then projected Euler from the same
  particles, N = M = 1000, ``t_end = 2``, ten records each);
* ``rate --quick``: the README's main job, ``meanfield-gan rate --quick`` (two workers).

Usage::

    python benchmarks/bench_cold_start.py [-o benchmarks/results]

Results: ``benchmarks/results/bench_cold_start.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _cpu import cpu_description  # noqa: E402

_TINY = r"""
import json, time
t0 = time.perf_counter()
import meanfield_gan as mfg
t1 = time.perf_counter()
p = mfg.Problem(K=1, L=1, target=mfg.GaussianMixture([[-1.0], [1.0]], scales=0.3))
st = mfg.initial_state(p, N=16, M=16, seed=0)
mfg.simulate(p, st, mfg.SGD(lr=1.0, n_critic=1, batch_size=1), t_end=0.5, record=2, seed=1,
             observables=OBS)
print(json.dumps({"import": t1 - t0, "run": time.perf_counter() - t1}))
"""

_TEN_LINES = r"""
import json, time
t0 = time.perf_counter()
import meanfield_gan as mfg
t1 = time.perf_counter()
problem = mfg.Problem(K=1, L=1, target=mfg.GaussianMixture([[-1.0], [1.0]], scales=0.3))
state = mfg.initial_state(problem, N=1000, M=1000, seed=0)
sgd = mfg.SGD(lr=1.0, n_critic=1, batch_size=1)
euler = mfg.ProjectedEuler.matching(sgd, N=1000, M=1000)
a = mfg.simulate(problem, state, sgd, t_end=2.0, record=10, seed=1)
b = mfg.simulate(problem, state, euler, t_end=2.0, record=10)
print(json.dumps({"import": t1 - t0, "run": time.perf_counter() - t1}))
"""


def _python(code: str, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli(args: list[str], cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "meanfield_gan.cli", *args, "-o", out], env=env,
                       capture_output=True, text=True, check=True, cwd=ROOT)
        return {"import": float("nan"), "run": time.perf_counter() - t}


CASES = {
    "tiny sgd (N = M = 16, batch 1), observables": lambda c: _python(
        _TINY.replace("OBS", "True"), c),
    "tiny sgd (N = M = 16, batch 1), no observables": lambda c: _python(
        _TINY.replace("OBS", "False"), c),
    "ten lines (SGD then Euler, N = M = 1000)": lambda c: _python(_TEN_LINES, c),
    "meanfield-gan rate --quick (whole command)": lambda c: _cli(["rate", "--quick"], c),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    rows = {}
    for name, run in CASES.items():
        with tempfile.TemporaryDirectory() as cache:
            cold = run(cache)
            warm = run(cache)
        rows[name] = {"cold": cold, "warm": warm}
        print(f"{name}: cold {cold['run']:.1f} s, warm {warm['run']:.1f} s", flush=True)
    cpu = cpu_description()
    lines = ["| case | cold (s) | warm (s) | import (s) |", "|---|---|---|---|"]
    for name, r in rows.items():
        imp = r["warm"]["import"]
        lines.append(f"| {name} | {r['cold']['run']:.1f} | {r['warm']['run']:.1f} | "
                     f"{'-' if imp != imp else f'{imp:.1f}'} |")
    lines += ["", f"Machine: {cpu}.  Cold: a fresh process on an empty `NUMBA_CACHE_DIR`; warm: "
              "a fresh process on the cache the cold run wrote.  Times of the simulate calls "
              "(the package import apart), or of the whole command."]
    table = "\n".join(lines)
    print(table)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cold_start.md").write_text(table + "\n")
    (out / "bench_cold_start.json").write_text(json.dumps({"cpu": cpu, "cases": rows},
                                                          indent=1) + "\n")
    print(f"wrote {out / 'bench_cold_start.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
