"""``meanfield-gan rate``: the command line of the rate study."""
from __future__ import annotations

import argparse

import numpy as np

from meanfield_gan._util import check_outdir

from .companions import run_euler_order, run_iid_study
from .config import load_rate_config
from .output import write_rate
from .tasks import run_rate_study

__all__ = ["configure_parser", "cli_main"]


def _runs_text(runs: np.ndarray) -> str:
    return str(runs[0]) if runs.min() == runs.max() else f"{runs.max()}..{runs.min()}"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan rate`` arguments to ``parser``."""
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml",
                        help="rate configuration overriding the defaults "
                             "(see data/rate_quick.toml)")
    parser.add_argument("--quick", action="store_true",
                        help="the few-minute study (defaults from rate_quick.toml)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: one per CPU)")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run the tasks on a Dask cluster, e.g. tcp://host:8786")
    parser.add_argument("--serial", action="store_true", help="run every task in this process")
    parser.add_argument("--euler-order", action="store_true",
                        help="also measure the order of projected Euler in dt ([euler_order])")
    parser.add_argument("--iid", action="store_true",
                        help="also run Corollary 9: i.i.d. initial data vs a large system ([iid])")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study, write ``OUTDIR/rate.{json,h5,png}`` and print the fitted slope."""
    cfg = load_rate_config(args.config, quick=args.quick)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    if sum([args.serial, args.scheduler is not None]) > 1:
        raise ValueError("--serial and --scheduler exclude each other")
    out = check_outdir(args.output)
    executor: str | None = "serial" if args.serial else None
    if args.scheduler:
        # Passed on as an address: each study opens (and closes) its own Dask client.
        executor = args.scheduler if "://" in args.scheduler else f"tcp://{args.scheduler}"
    result = run_rate_study(cfg, executor, progress=None, max_workers=args.workers)
    extras: dict[str, dict] = {}
    # The pools first: the Euler-order check compiles in this process, and numba in a parent
    # process must not change under forked workers.
    if args.iid:
        extras["iid"] = run_iid_study(cfg, executor, progress=None, max_workers=args.workers)
    if args.euler_order:
        extras["euler_order"] = run_euler_order(cfg)
    paths = write_rate(result, out, extras)
    s = result.summary()
    lo, hi = s["slope_ci"]
    dist = "exact W2" if s["distance"] == "exact" else "coupling bound"
    print(f"E d_2^2 ~ N^slope ({dist}, t = {s['t_end']:g}): slope {s['slope']:.3f} "
          f"(95% CI [{lo:.3f}, {hi:.3f}]; Theorem 7: -1), N = {s['N'][0]}..{s['N'][-1]}, "
          f"{s['seeds']} seeds x {_runs_text(result.runs)} SGD runs, {result.wall_seconds:.0f} s")
    print("per-time slopes (coupling bound): " + ", ".join(
        f"t={p['t']:g}: {p['slope']:.3f}" for p in s["per_time"]))
    if "euler_order" in extras:
        e = extras["euler_order"]
        print(f"projected Euler order in dt: interior {e['interior']['order']:.3f} "
              f"(touches boundary: {e['interior']['touches_boundary']}), with boundary "
              f"{e['boundary']['order']:.3f} (boundary fraction "
              f"{e['boundary']['boundary_fraction']:.2f})")
    if "iid" in extras:
        i = extras["iid"]
        print(f"i.i.d. initial data (Corollary 9), t = {i['times'][-1]:g}: measured exponent "
              f"{i['slope']:.3f} (95% CI [{i['slope_ci'][0]:.3f}, {i['slope_ci'][1]:.3f}]); "
              f"-2/(K(L+2)) = {i['bound_exponent']:.3f}, -1/(K(L+2)) = {i['talk_exponent']:.3f} "
              f"(the talk's Corollary 9), i.i.d. sampling rate of W2^2: "
              f"{i['sampling_exponent']:.3f}")
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
