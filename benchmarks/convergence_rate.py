"""The full C/N study of Theorem 7, with the Euler-order check and Corollary 9.

Runs ``meanfield_gan/data/rate_full.toml`` (or the configuration given), prints a table and
writes ``benchmarks/results/convergence_rate.{json,png,md}`` (the JSON is ``rate.json`` of
``meanfield-gan rate`` plus the two companion studies; ``--h5`` also keeps ``rate.h5``)::

    python benchmarks/convergence_rate.py                   # local processes, 15-25 min on 2 cores
    python benchmarks/convergence_rate.py --scheduler tcp://host:8786   # on a Dask cluster
    python benchmarks/convergence_rate.py --quick           # the quick study, same outputs
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402

from meanfield_gan.studies.rate import (  # noqa: E402
    load_rate_config,
    read_rate,
    run_euler_order,
    run_iid_study,
    run_rate_study,
    write_rate,
)


def _runs(runs) -> str:
    return (str(runs[0]) if runs.min() == runs.max()
            else f"{runs.max()} to {runs.min()} (see the table)")


def _table(result, summary, extras, seconds) -> str:
    cfg = result.config
    lines = [
        "# Convergence rate of SGD to the WGAN-PDE (Theorem 7)",
        "",
        f"`python benchmarks/convergence_rate.py{' --quick' if cfg.N[-1] <= 1024 else ''}`: "
        f"K = {cfg.problem.K}, L = {cfg.problem.L}, target {cfg.problem.target.kind}, "
        f"M = {cfg.M_ratio:g} N, lr = {cfg.lr:g} (dt = lr/N), n_critic = {cfg.n_critic} "
        f"(gamma_c = {cfg.n_critic * 1.0 / cfg.M_ratio:g}), batch {cfg.batch_size}, "
        f"t_end = {cfg.t_end:g}; "
        f"{cfg.seeds} initial draws per N, each with one projected-Euler reference and "
        f"{_runs(result.runs)} SGD runs.",
        "",
        f"**Fitted slope of log E d_2^2 against log N "
        f"({'exact W2' if summary['distance'] == 'exact' else 'natural-coupling bound'}, "
        f"t = {cfg.t_end:g}): "
        f"{summary['slope']:.3f}, 95% bootstrap CI [{summary['slope_ci'][0]:.3f}, "
        f"{summary['slope_ci'][1]:.3f}]** (Theorem 7: -1). Coupling bound: "
        f"{summary['coupling']['slope']:.3f} [{summary['coupling']['slope_ci'][0]:.3f}, "
        f"{summary['coupling']['slope_ci'][1]:.3f}].",
        "",
        "| N | M | SGD runs per draw | E d_2^2 | 95% half-width | N E d_2^2 | "
        "critic on boundary (Euler, t_end) | s per task |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    d2 = result.d2
    half = 1.96 * d2.std(axis=1, ddof=1) / np.sqrt(d2.shape[1])
    for i, N in enumerate(result.N):
        lines.append(f"| {N} | {result.M[i]} | {result.runs[i]} | {d2[i].mean():.4e} | "
                     f"{half[i]:.2e} | {N * d2[i].mean():.4f} | "
                     f"{summary['boundary_fraction_euler'][i]:.2f} | "
                     f"{result.task_seconds[i].mean():.2f} |")
    lines += ["", "Slopes at every record time (coupling bound):", "",
              "| t | slope | 95% CI |", "|---:|---:|---|"]
    for p in summary["per_time"]:
        lines.append(f"| {p['t']:g} | {p['slope']:.3f} | "
                     f"[{p['slope_ci'][0]:.3f}, {p['slope_ci'][1]:.3f}] |")
    if summary["exact"] is not None:
        ex = summary["exact"]
        lines += ["", f"Exact W2 for N <= {cfg.exact_max_N}: slope {ex['slope']:.3f} "
                  f"[{ex['slope_ci'][0]:.3f}, {ex['slope_ci'][1]:.3f}]; exact / coupling = "
                  + ", ".join(f"{v:.6f}" for v in ex["exact_over_coupling"]) + "."]
    if "euler_order" in extras:
        e = extras["euler_order"]
        lines += ["", f"## Projected Euler against projected Heun (N = M = {e['N']})", "",
                  "| case | t_end | gamma_c | dt | RMS particle error | local orders "
                  "| fitted order | touches boundary |",
                  "|---|---:|---:|---|---|---|---:|---|"]
        for case in ("interior", "boundary"):
            c = e[case]
            lines.append(
                f"| {case} | {c['t_end']:g} | {c['gamma_c']:g} | "
                + ", ".join(f"{v:.4g}" for v in c["dt"]) + " | "
                + ", ".join(f"{v:.3e}" for v in c["error"]) + " | "
                + ", ".join(f"{v:.2f}" for v in c["local_orders"])
                + f" | {c['order']:.3f} | {c['touches_boundary']} "
                f"(boundary fraction {c['boundary_fraction']:.2f}) |")
    if "iid" in extras:
        i = extras["iid"]
        lines += ["", "## Corollary 9: i.i.d. initial data against "
                  f"N_ref = {i['N_ref']} particles", "",
                  "| N | " + " | ".join(f"E d_2^2 (t = {t:g})" for t in i["times"]) + " |",
                  "|---:|" + "---:|" * len(i["times"])]
        for n, row in zip(i["N"], i["mean_d2"]):
            lines.append(f"| {n} | " + " | ".join(f"{v:.4e}" for v in row) + " |")
        lines += ["", "Measured exponents: " + ", ".join(
            f"t = {p['t']:g}: {p['slope']:.3f} [{p['slope_ci'][0]:.3f}, {p['slope_ci'][1]:.3f}]"
            for p in i["slopes"])
            + f". Exponents to compare: -2/(K(L+2)) = {i['bound_exponent']:.3f}; the talk's "
            f"Corollary 9, -1/(K(L+2)) = {i['talk_exponent']:.3f}; the i.i.d. sampling rate of "
            f"E W_2^2 in dimension K(L+2) (Fournier-Guillin), {i['sampling_exponent']:.3f}. "
            "The reference's own sampling error flattens the fit as N approaches N_ref."]
    lines += ["", f"Wall time: {seconds:.0f} s for this script "
              f"(rate study {result.wall_seconds:.0f} s) on "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python "
              f"{platform.python_version()}, numba {importlib.metadata.version('numba')}, "
              f"executor: {result.executor}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?",
                        help="rate configuration (default: data/rate_full.toml)")
    parser.add_argument("--quick", action="store_true", help="defaults from rate_quick.toml")
    parser.add_argument("--results", default=str(HERE / "results"), help="output folder")
    parser.add_argument("--name", default="convergence_rate", help="output file stem")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address")
    parser.add_argument("--h5", action="store_true", help="keep rate.h5 as <name>.h5")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the Euler-order and i.i.d. checks")
    parser.add_argument("--from-h5", metavar="RATE_H5", default=None,
                        help="re-use the rate study stored in this rate.h5 (the extras are rerun)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    # A scheduler address goes through as is: each study opens and closes its own Dask client.
    executor = args.scheduler
    if args.from_h5:
        result, _ = read_rate(args.from_h5)
        cfg = result.config
    else:
        cfg = load_rate_config(args.config, quick=args.quick)
        result = run_rate_study(cfg, executor, progress=True, max_workers=args.workers)
    extras: dict[str, dict] = {}
    if not args.no_extras:
        # The pool first: the Euler-order check runs numba in this process.
        extras["iid"] = run_iid_study(cfg, executor, progress=True, max_workers=args.workers)
        extras["euler_order"] = run_euler_order(cfg)
    seconds = time.perf_counter() - t0
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_rate(result, tmp, extras)
        shutil.copy(paths["json"], results / f"{args.name}.json")
        shutil.copy(paths["png"], results / f"{args.name}.png")
        if args.h5:
            shutil.copy(paths["h5"], results / f"{args.name}.h5")
    text = _table(result, result.summary(), extras, seconds)
    (results / f"{args.name}.md").write_text(text)
    print(text)
    print(f"wrote {results / (args.name + '.json')}, .png, .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
