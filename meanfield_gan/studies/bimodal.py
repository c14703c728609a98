"""Optimal-discriminator versus first-order dynamics in the bimodal Gaussian GAN (MODEL.md 6).

Many random initial conditions are run under both dynamics of :mod:`meanfield_gan.models.bimodal`
(Li, Madry, Peebles, Schmidt, ICML 2018) and each end state is classified as converged to
``mu*``, mode collapse, or other (oscillating or stalled). A second set of runs starts from a
regular grid of initial generator means, for the outcome heatmaps. Beside them, from the same
starts, the optimal-discriminator dynamics of the original GAN game (``"jsd"``: the
discriminator ``D* = p/(p+q)``, then ``mu <- mu - eta grad_mu JSD``, MODEL.md 7).

Setup (the seed notes give the model and the two update rules, not the experiment, so these are
this package's choices): target ``mu* = (-2, 2)``; generator means and the four interval ends
drawn uniformly from ``[-4, 4]`` (the ends sorted, so ``l_1 <= r_1 <= l_2 <= r_2``); one step
size ``eta = 0.2`` for generator and discriminator; 1000 steps; converged when both means are
within 0.1 of the target means (up to order: the optimal dynamics, a gradient descent on the
non-smooth ``d_TV``, keep moving by about ``0.2 eta`` around ``mu*``), collapsed when both are
within 0.5 of the same target mean. The grid runs use the same random law for the discriminator
ends, one draw per grid point (the optimal dynamics do not use them). On the grid's diagonal
``mu_1 = mu_2`` both dynamics keep the two means equal for ever (the two gradients coincide), so
no diagonal start can converge: that is the non-generic set the theory excludes.

The runs are split into a modest number of chunks, each run vectorised over its runs with
NumPy, through :func:`meanfield_gan.parallel.map_tasks`, so any
:class:`concurrent.futures.Executor` (local processes, a Dask cluster) runs the study.

This module is the ``meanfield-gan bimodal`` subcommand: it writes ``bimodal.json``,
``bimodal.h5`` and ``bimodal.png``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meanfield_gan._util import check_outdir, want_progress, write_study_outputs
from meanfield_gan.models import bimodal as bm
from meanfield_gan.parallel import executor_from_scheduler, map_tasks

__all__ = [
    "BimodalConfig",
    "BimodalStudy",
    "initial_conditions",
    "run_bimodal",
    "write_bimodal",
    "plot_bimodal",
    "configure_parser",
    "cli_main",
]

#: Runs per task: large enough that NumPy's per-call overhead is amortised over the runs.
DEFAULT_CHUNK = 256
# Above this many tasks, chunks grow instead (a "modest number of tasks").
_MAX_TASKS = 64


@dataclass(frozen=True)
class BimodalConfig:
    """Settings of the bimodal study (defaults: the README's numbers).

    Attributes
    ----------
    runs : int
        Random initial conditions.
    steps : int
        Steps of each dynamics.
    lr : float
        Step size ``eta`` of generator and discriminator.
    target_means : tuple of float
        ``mu*``.
    unrolled : int
        Unrolled discriminator steps in the first-order generator update (0: plain).
    seed : int
        Seed of the initial conditions.
    grid : int
        The heatmap grid has ``grid x grid`` initial generator means (0: no grid runs).
    init_range : float
        Generator means and interval ends start uniform in ``[-init_range, init_range]``.
    tol : float
        Convergence tolerance of :func:`meanfield_gan.bimodal.classify`.
    collapse_tol : float
        Mode-collapse tolerance of :func:`meanfield_gan.bimodal.classify`.
    """

    runs: int = 1000
    steps: int = 1000
    lr: float = 0.2
    target_means: tuple[float, float] = (-2.0, 2.0)
    unrolled: int = 0
    seed: int = 0
    grid: int = 30
    init_range: float = 4.0
    tol: float = 0.1
    collapse_tol: float = 0.5

    def validate(self) -> BimodalConfig:
        """Raise ValueError naming the first bad setting; return a normalised copy."""
        def _int(name: str, value: Any, low: int) -> int:
            if isinstance(value, bool) or not float(value).is_integer() or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
            return int(value)

        def _pos(name: str, value: Any) -> float:
            v = float(value)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be positive and finite, got {value!r}")
            return v

        runs = _int("runs", self.runs, 1)
        steps = _int("steps", self.steps, 1)
        unrolled = _int("unrolled", self.unrolled, 0)
        seed = _int("seed", self.seed, 0)
        grid = _int("grid", self.grid, 0)
        if grid == 1:
            raise ValueError("grid: must be 0 (no grid) or at least 2, got 1")
        lr = _pos("lr", self.lr)
        init_range = _pos("init_range", self.init_range)
        tol = _pos("tol", self.tol)
        collapse_tol = _pos("collapse_tol", self.collapse_tol)
        tm = tuple(float(v) for v in np.ravel(self.target_means))
        if len(tm) != 2 or not all(math.isfinite(v) for v in tm):
            raise ValueError(f"target_means: must be two finite numbers, got {self.target_means!r}")
        if abs(tm[0] - tm[1]) <= 2.0 * max(tol, collapse_tol):
            raise ValueError(
                f"target_means: must be more than 2 * max(tol, collapse_tol) = "
                f"{2 * max(tol, collapse_tol):g} apart for the outcomes to be distinct, got {tm}"
            )
        return BimodalConfig(
            runs, steps, lr, tm, unrolled, seed, grid, init_range, tol, collapse_tol
        )


@dataclass
class BimodalStudy:
    """Result of :func:`run_bimodal`.

    Attributes
    ----------
    config : BimodalConfig
        The settings.
    random, grid : dict
        Per set of runs: ``mu0``, ``l0``, ``r0`` (R, 2) initial conditions and, for each of
        ``"optimal"``, ``"first_order"`` and ``"jsd"``, a dict with the final ``mu``, ``l``,
        ``r`` (R, 2), final ``tv`` and ``jsd`` (R,) and ``outcome`` codes (R,). ``grid`` also
        has ``axis`` (n,), the grid
        values (run ``i * n + j`` starts at ``(axis[i], axis[j])``); it is None without a grid.
    summary : dict
        The JSON summary (see :meth:`to_json`).
    """

    config: BimodalConfig
    random: dict[str, Any]
    grid: dict[str, Any] | None
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``bimodal.json`` content."""
        return self.summary


def initial_conditions(
    config: BimodalConfig,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Random and grid initial conditions of the study, from ``config.seed``.

    Returns
    -------
    random, grid : dict
        ``mu0``, ``l0``, ``r0`` arrays of shape (R, 2); ``grid`` also holds ``axis`` and is
        None when ``config.grid == 0``.
    """
    cfg = config.validate()
    rng = np.random.default_rng(cfg.seed)
    a = cfg.init_range

    def ends(n: int) -> tuple[np.ndarray, np.ndarray]:
        e = np.sort(rng.uniform(-a, a, size=(n, 4)), axis=1)
        return e[:, [0, 2]], e[:, [1, 3]]

    mu0 = rng.uniform(-a, a, size=(cfg.runs, 2))
    l0, r0 = ends(cfg.runs)
    random = {"mu0": mu0, "l0": l0, "r0": r0}
    if cfg.grid == 0:
        return random, None
    axis = np.linspace(-a, a, cfg.grid)
    g1, g2 = np.meshgrid(axis, axis, indexing="ij")
    gl0, gr0 = ends(cfg.grid**2)
    grid = {"axis": axis, "mu0": np.stack([g1.ravel(), g2.ravel()], axis=1), "l0": gl0, "r0": gr0}
    return random, grid


def _run_chunk(task: dict[str, Any]) -> dict[str, np.ndarray]:
    """Both dynamics on one chunk of initial conditions (a picklable top-level task)."""
    target = np.asarray(task["target"], dtype=float)
    common = {"lr": task["lr"], "steps": task["steps"]}
    opt = bm.run_dynamics("optimal", task["mu0"], target, **common)
    fo = bm.run_dynamics(
        "first_order", task["mu0"], target, l0=task["l0"], r0=task["r0"],
        unrolled=task["unrolled"], **common,
    )
    js = bm.run_dynamics("jsd", task["mu0"], target, **common)
    out: dict[str, np.ndarray] = {}
    for name, run in (("optimal", opt), ("first_order", fo), ("jsd", js)):
        out[f"{name}/mu"] = run.mu
        out[f"{name}/l"] = run.l
        out[f"{name}/r"] = run.r
        out[f"{name}/tv"] = bm.tv_distance(run.mu, target)
        out[f"{name}/jsd"] = bm.js_divergence(run.mu, target)
    return out


def _fractions(codes: np.ndarray) -> dict[str, Any]:
    n = int(codes.size)
    counts = np.bincount(codes.astype(np.int64), minlength=len(bm.OUTCOMES))
    out: dict[str, Any] = {
        name: (float(counts[k]) / n if n else None) for k, name in enumerate(bm.OUTCOMES)
    }
    out["n_runs"] = n
    return out


def run_bimodal(
    config: BimodalConfig | None = None,
    executor: Any = None,
    *,
    max_workers: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress: bool | None = False,
) -> BimodalStudy:
    """Run both dynamics from every initial condition and classify the end states.

    Parameters
    ----------
    config : BimodalConfig, optional
        The settings (default: ``BimodalConfig()``).
    executor : Executor, "serial", "processes" or None
        Passed to :func:`meanfield_gan.parallel.map_tasks` (None: local processes).
    max_workers : int, optional
        Local process count (with ``executor`` None or ``"processes"``).
    chunk : int
        Runs per task (raised so that there are at most 64 tasks).
    progress : bool or None
        Progress bar over tasks (None: only on a terminal).

    Returns
    -------
    BimodalStudy
        Initial conditions, end states, outcomes and the JSON summary: for ``"optimal"``,
        ``"first_order"`` and ``"jsd"`` the fractions ``"converged"``, ``"collapsed"``,
        ``"other"`` and ``"n_runs"`` over the random runs, plus ``"median_final_tv"`` and
        ``"median_final_jsd"``; the same fractions over
        the grid runs under ``"grid"``; the settings under ``"settings"``.
    """
    cfg = (config or BimodalConfig()).validate()
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk: must be a positive integer, got {chunk!r}")
    random, grid = initial_conditions(cfg)
    sets = [("random", random)] + ([("grid", grid)] if grid is not None else [])
    mu0 = np.concatenate([s["mu0"] for _, s in sets])
    l0 = np.concatenate([s["l0"] for _, s in sets])
    r0 = np.concatenate([s["r0"] for _, s in sets])
    total = len(mu0)
    size = max(int(chunk), math.ceil(total / _MAX_TASKS))
    tasks = [
        {
            "mu0": mu0[i : i + size],
            "l0": l0[i : i + size],
            "r0": r0[i : i + size],
            "target": cfg.target_means,
            "lr": cfg.lr,
            "steps": cfg.steps,
            "unrolled": cfg.unrolled,
        }
        for i in range(0, total, size)
    ]
    results = map_tasks(
        _run_chunk, tasks, executor, max_workers=max_workers, progress=want_progress(progress),
        desc="bimodal",
    )
    merged = {key: np.concatenate([r[key] for r in results]) for key in results[0]}

    start = 0
    for _, s in sets:
        n = len(s["mu0"])
        for dyn in bm.DYNAMICS:
            d = {k: merged[f"{dyn}/{k}"][start : start + n] for k in ("mu", "l", "r", "tv", "jsd")}
            d["outcome"] = bm.classify(d["mu"], cfg.target_means, cfg.tol, cfg.collapse_tol)
            s[dyn] = d
        start += n

    summary: dict[str, Any] = {}
    for dyn in bm.DYNAMICS:
        summary[dyn] = _fractions(random[dyn]["outcome"])
        summary[dyn]["median_final_tv"] = float(np.median(random[dyn]["tv"]))
        summary[dyn]["median_final_jsd"] = float(np.median(random[dyn]["jsd"]))
    if grid is not None:
        summary["grid"] = {
            "n": cfg.grid, **{dyn: _fractions(grid[dyn]["outcome"]) for dyn in bm.DYNAMICS}
        }
    settings = asdict(cfg)
    settings["target_means"] = list(cfg.target_means)
    settings["init"] = (
        f"generator means and sorted interval ends uniform in "
        f"[-{cfg.init_range:g}, {cfg.init_range:g}]"
    )
    settings["outcome_codes"] = {name: k for k, name in enumerate(bm.OUTCOMES)}
    summary["settings"] = settings
    return BimodalStudy(cfg, random, grid, summary)


def write_bimodal(study: BimodalStudy, outdir: str | os.PathLike) -> dict[str, Path]:
    """Write ``bimodal.json``, ``bimodal.h5`` and ``bimodal.png`` into ``outdir``.

    Returns
    -------
    dict
        Paths under the keys ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``bimodal.h5`` (plain h5py) has groups ``random`` and (with a grid) ``grid``, each holding
    the initial conditions ``mu0``, ``l0``, ``r0`` (R, 2) and, in subgroups ``optimal``,
    ``first_order`` and ``jsd``, the final ``mu``, ``l``, ``r`` (R, 2), ``tv``, ``jsd`` (R,)
    and ``outcome`` (R,)
    codes (0 converged, 1 collapsed, 2 other). ``grid/axis`` holds the grid values. The root's
    attributes are the settings.
    """
    import h5py

    def fill(f):
        f.attrs["model"] = "MODEL.md section 6: bimodal Gaussian GAN, two-interval discriminators"
        f.attrs["outcome_names"] = np.array(bm.OUTCOMES, dtype=h5py.string_dtype())
        for key, val in asdict(study.config).items():
            f.attrs[key] = np.asarray(val)
        for name, s in (("random", study.random), ("grid", study.grid)):
            if s is None:
                continue
            grp = f.create_group(name)
            for key in ("mu0", "l0", "r0") + (("axis",) if name == "grid" else ()):
                grp.create_dataset(key, data=s[key])
            for dyn in bm.DYNAMICS:
                sub = grp.create_group(dyn)
                for key in ("mu", "l", "r", "tv", "jsd", "outcome"):
                    sub.create_dataset(key, data=s[dyn][key])

    paths = write_study_outputs(outdir, "bimodal", "meanfield_gan.studies.bimodal", study.to_json(),
                                fill, lambda png: plot_bimodal(study, png))
    return paths


_COLORS = ("#2ca02c", "#d62728", "#b0b0b0")  # converged, collapsed, other


def plot_bimodal(study: BimodalStudy, path: str | os.PathLike) -> Path:
    """Outcome heatmaps over the grid of initial generator means, and outcome fractions.

    One heatmap for each dynamics (none when the study has no grid).

    Parameters
    ----------
    study : BimodalStudy
        The result of :func:`run_bimodal`.
    path : path
        PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    cfg = study.config
    grid = study.grid
    n_maps = len(bm.DYNAMICS) if grid is not None else 0
    # A Figure on an Agg canvas, not pyplot: no global backend switch, nothing left open.
    fig = Figure(figsize=(3.8 * n_maps + 4.6, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(1, n_maps + 1, width_ratios=[1.0] * n_maps + [1.2], wspace=0.3)
    cmap = ListedColormap(_COLORS)
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5], cmap.N)
    titles = {"optimal": "optimal intervals (TV)", "first_order": "first order",
              "jsd": "optimal D* = p/(p+q) (JSD)"}
    if cfg.unrolled:
        titles["first_order"] += f" ({cfg.unrolled} unrolled)"
    m1, m2 = cfg.target_means
    for i, dyn in enumerate(bm.DYNAMICS[:n_maps]):
        ax = fig.add_subplot(gs[0, i])
        axis = grid["axis"]
        n = len(axis)
        h = (axis[1] - axis[0]) / 2
        codes = grid[dyn]["outcome"].reshape(n, n)
        # rows of `codes` are mu_1: transpose so mu_1 runs along x
        ax.imshow(codes.T, origin="lower", cmap=cmap, norm=norm, interpolation="nearest",
                  extent=(axis[0] - h, axis[-1] + h, axis[0] - h, axis[-1] + h))
        ax.plot([m1, m2], [m2, m1], "*", color="k", ms=9, label="mu*")
        frac = study.summary["grid"][dyn]
        ax.set_title(f"{titles[dyn]}\nconverged {frac['converged']:.0%} of the grid", fontsize=9)
        ax.set_xlabel("initial mu_1")
        if i == 0:
            ax.set_ylabel("initial mu_2")
    ax = fig.add_subplot(gs[0, n_maps])
    x = np.arange(len(bm.OUTCOMES))
    width = 0.8 / len(bm.DYNAMICS)
    hatches = ("", "//", "..")
    for j, dyn in enumerate(bm.DYNAMICS):
        vals = [study.summary[dyn][name] for name in bm.OUTCOMES]
        bars = ax.bar(x + (j - (len(bm.DYNAMICS) - 1) / 2) * width, vals, width, color=_COLORS,
                      edgecolor="k", hatch=hatches[j], label=titles[dyn])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", va="bottom",
                    fontsize=6, rotation=90)
    ax.set_xticks(x, bm.OUTCOMES)
    ax.set_ylim(0, 1.6)  # room for the legend above the bars
    ax.set_ylabel("fraction of runs")
    ax.set_title(f"{study.summary['optimal']['n_runs']} random starts", fontsize=9)
    handles = [Patch(facecolor="w", edgecolor="k", hatch=h, label=titles[dyn])
               for h, dyn in zip(hatches, bm.DYNAMICS)]
    handles += [Patch(color=c, label=name) for c, name in zip(_COLORS, bm.OUTCOMES)]
    ax.legend(handles=handles, fontsize=6.5, loc="upper center", ncol=2)
    fig.suptitle(
        f"bimodal GAN, mu* = ({m1:g}, {m2:g}), eta = {cfg.lr:g}, {cfg.steps} steps",
        fontsize=10, y=1.02,
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
_DEFAULT = BimodalConfig()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan bimodal`` arguments to ``parser``."""
    d = _DEFAULT
    parser.add_argument("--runs", type=int, default=d.runs,
                        help=f"random initial conditions (default: {d.runs})")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help=f"steps of each dynamics (default: {d.steps})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"step size eta (default: {d.lr:g})")
    parser.add_argument("--target-means", type=float, nargs=2, default=list(d.target_means),
                        metavar=("M1", "M2"), help="target means mu* (default: -2 2)")
    parser.add_argument("--unrolled", type=int, default=d.unrolled,
                        help="unrolled discriminator steps in the first-order generator update "
                             "(default: 0)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help=f"seed of the initial conditions (default: {d.seed})")
    parser.add_argument("--grid", type=int, default=d.grid,
                        help=f"heatmap grid size n: n x n initial generator means, 0 for none "
                             f"(default: {d.grid})")
    parser.add_argument("--init-range", type=float, default=d.init_range,
                        help=f"initial means and ends uniform in [-A, A] "
                             f"(default: {d.init_range:g})")
    parser.add_argument("--tol", type=float, default=d.tol,
                        help=f"convergence tolerance on the means (default: {d.tol:g})")
    parser.add_argument("--collapse-tol", type=float, default=d.collapse_tol,
                        help=f"mode-collapse tolerance (default: {d.collapse_tol:g})")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: CPU count; 1 runs in this process)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on the Dask scheduler at ADDRESS (e.g. tcp://host:8786)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study and write ``OUTDIR/bimodal.{json,h5,png}``; print the fractions and paths."""
    # Validate everything before the output folder is created, so bad input writes nothing.
    cfg = BimodalConfig(
        runs=args.runs, steps=args.steps, lr=args.lr, target_means=tuple(args.target_means),
        unrolled=args.unrolled, seed=args.seed, grid=args.grid, init_range=args.init_range,
        tol=args.tol, collapse_tol=args.collapse_tol,
    ).validate()
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"workers: must be a positive integer, got {args.workers}")
    if args.scheduler is not None and args.workers is not None:
        raise ValueError(
            "workers: give either --workers (local processes) or --scheduler, not both"
        )
    if args.scheduler is not None and not re.match(
        r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$", args.scheduler
    ):
        raise ValueError(
            f"scheduler: expected an address like tcp://host:8786, got {args.scheduler!r}"
        )
    out = check_outdir(args.output)
    if args.scheduler is not None:
        executor: Any = executor_from_scheduler(args.scheduler)
    elif args.workers == 1:
        executor = "serial"
    else:
        executor = None
    try:
        study = run_bimodal(cfg, executor, max_workers=args.workers, progress=None)
    finally:
        # executor_from_scheduler owns a Dask client: close it, or it outlives the study and
        # logs reconnection errors when the scheduler goes away
        if not isinstance(executor, (str, type(None))):
            executor.shutdown()
    paths = write_bimodal(study, out)
    for dyn in bm.DYNAMICS:
        s = study.summary[dyn]
        print(
            f"{dyn}: converged {s['converged']:.3f}, collapsed {s['collapsed']:.3f}, "
            f"other {s['other']:.3f} ({s['n_runs']} runs)"
        )
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
