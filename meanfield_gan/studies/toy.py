"""The ``meanfield-gan toy`` study: the explicit example of MODEL.md section 5.

A thin script over the model :mod:`meanfield_gan.models.explicit` (step generator, ReLU critic,
logistic latent, critic in ``[-1, 1]``): for each ``gamma_c`` and each start it integrates the
constrained flow, measures the orbit the trajectory settles on and compares it with the closed
form (``E* = 2 + 1/gamma_c``, ``max |g| = arccosh(1 + 1/(2 gamma_c))``). It writes
``toy.json``, ``toy.h5`` and ``toy.png``.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meanfield_gan._util import want_progress, write_study_outputs
from meanfield_gan._validation import positive, positive_int
from meanfield_gan.models.explicit import (
    CLIP,
    INTEGRATORS,
    check_run_args,
    integrate,
    measure_limit,
    orbit_period,
    predicted_limit,
    toy_energy,
)
from meanfield_gan.parallel import map_tasks

__all__ = [
    "DEFAULT_STARTS",
    "ToyTrajectory",
    "ToyStudy",
    "check_toy_args",
    "run_toy",
    "write_toy",
    "plot_toy",
    "configure_parser",
    "cli_main",
]

#: Default initial conditions ``(g0, omega0)``: for gamma_c = 1 the first two lie outside the
#: limit orbit (E > E*) and the last two inside; for gamma_c = 10 only the last lies inside.
DEFAULT_STARTS: tuple[tuple[float, float], ...] = (
    (-2.0, 0.0), (1.0, -0.8), (0.5, 0.0), (0.15, 0.0))


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------
@dataclass
class ToyTrajectory:
    """One constrained trajectory of the study and its measured limit orbit."""

    gamma_c: float
    g0: float
    omega0: float
    t: np.ndarray
    g: np.ndarray
    omega: np.ndarray
    energy: np.ndarray
    summary: dict[str, Any]


@dataclass
class ToyStudy:
    """Result of :func:`run_toy`.

    Attributes
    ----------
    runs : list of dict
        One JSON-ready record per ``gamma_c`` (see :func:`run_toy`).
    trajectories : list of list of ToyTrajectory
        ``trajectories[i][j]``: gamma_c number ``i``, start number ``j``.
    settings : dict
        The study's parameters.
    euler_spiral : dict
        The unconstrained explicit-Euler trajectory of the figure's small panel.
    """

    runs: list[dict[str, Any]]
    trajectories: list[list[ToyTrajectory]]
    settings: dict[str, Any]
    euler_spiral: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON summary written to ``toy.json`` (no trajectories)."""
        spiral = {k: v for k, v in self.euler_spiral.items() if not isinstance(v, np.ndarray)}
        return {"runs": self.runs, "settings": self.settings, "euler_spiral": spiral}


def _run_one(task: tuple[float, float, float, float, float, str, int]) -> ToyTrajectory:
    gc, g0, w0, t_end, dt, scheme, n_periods = task
    t, g, w = integrate(g0, w0, gc, t_end, dt, scheme=scheme, constrained=True)
    e = toy_energy(g, w, gc)
    summary = {
        "g0": g0,
        "omega0": w0,
        "initial_energy": float(e[0]),
        "outside_limit_orbit": bool(e[0] >= predicted_limit(gc)["limit_energy"] - 1e-12),
        "touched_boundary": bool(np.max(np.abs(w)) >= CLIP),
        **measure_limit(t, g, w, gc, n_periods=n_periods),
    }
    return ToyTrajectory(gc, g0, w0, t, g, w, e, summary)


def _check_starts(starts: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    out = []
    for s in starts:
        if len(s) != 2:
            raise ValueError(f"starts: each start is a pair (g0, omega0), got {s!r}")
        g0, w0 = float(s[0]), float(s[1])
        if not (math.isfinite(g0) and math.isfinite(w0)):
            raise ValueError(f"starts: (g0, omega0) must be finite, got {s!r}")
        if abs(w0) > CLIP:
            raise ValueError(f"starts: omega0 must lie in [-1, 1], got {s!r}")
        out.append((g0, w0))
    if not out:
        raise ValueError("starts: give at least one start")
    return out


def check_toy_args(
    gamma_cs: Sequence[float], starts: Sequence[Sequence[float]], t_end: float, dt: float,
    scheme: str, n_periods: int
) -> tuple[list[float], list[tuple[float, float]]]:
    """Validate the study's arguments before any work or output.

    Parameters
    ----------
    gamma_cs, starts, t_end, dt, scheme, n_periods
        As in :func:`run_toy`.

    Returns
    -------
    gamma_cs : list of float
    starts : list of (float, float)
        The validated values.

    Raises
    ------
    ValueError
        One line naming the first bad argument.
    """
    gcs = [positive(g, "gamma_c") for g in gamma_cs]
    if not gcs:
        raise ValueError("gamma_c: give at least one value")
    if len({_group_name(g) for g in gcs}) != len(gcs):
        raise ValueError(f"gamma_c: values must be distinct, got {list(gamma_cs)!r}")
    st = _check_starts(starts)
    check_run_args(0.0, 0.0, gcs[0], t_end, dt, scheme, True)
    positive_int(n_periods, "n_periods")
    if dt > t_end:
        raise ValueError(f"dt: must not exceed t_end ({dt!r} > {t_end!r})")
    return gcs, st


def run_toy(
    gamma_cs: Sequence[float] = (1.0, 10.0),
    starts: Sequence[Sequence[float]] = DEFAULT_STARTS,
    t_end: float = 120.0,
    dt: float = 0.05,
    scheme: str = "rk4",
    n_periods: int = 2,
    executor: Any = "serial",
    progress: bool | None = False,
) -> ToyStudy:
    """Integrate the constrained example for each ``gamma_c`` and start; measure the limit orbit.

    Parameters
    ----------
    gamma_cs : sequence of float
        Critic time scales, each > 0.
    starts : sequence of (g0, omega0)
        Initial conditions, ``|omega0| <= 1``, shared by every ``gamma_c``.
    t_end, dt : float
        Integration horizon and step (> 0). The default horizon covers the transient (hit,
        slide) and at least two limit periods for gamma_c >= 1 (the limit period is about 27
        for gamma_c = 1, 8 for gamma_c = 10).
    scheme : str
        A scheme of :func:`meanfield_gan.models.explicit.integrate`; ``"rk4"`` is the accurate
        event-located one.
    n_periods : int
        Trailing periods over which the limit orbit is measured.
    executor : Executor, "serial", "processes" or None
        Passed to :func:`meanfield_gan.parallel.map_tasks`. Each trajectory takes
        milliseconds, so ``"serial"`` is the sensible default.
    progress : bool or None
        Progress bar (``None``: only on a terminal).

    Returns
    -------
    ToyStudy
        ``runs[i]`` holds ``gamma_c``, ``limit_energy`` and ``max_abs_g`` (means over the
        starts with ``E >= E*``, the ones that must converge onto the limit orbit; None if
        there is none), ``predicted_limit_energy``, ``predicted_max_abs_g``, the absolute
        errors, the limit ``period`` and per-start summaries under ``"starts"``.
    """
    gcs, st = check_toy_args(gamma_cs, starts, t_end, dt, scheme, n_periods)
    tasks = [(gc, g0, w0, float(t_end), float(dt), scheme, int(n_periods))
             for gc in gcs for (g0, w0) in st]
    results = map_tasks(_run_one, tasks, executor, progress=want_progress(progress), desc="toy")
    runs, trajectories = [], []
    for i, gc in enumerate(gcs):
        trajs = results[i * len(st) : (i + 1) * len(st)]
        trajectories.append(trajs)
        pred = predicted_limit(gc)
        outside = [tr.summary for tr in trajs if tr.summary["outside_limit_orbit"]]
        if outside:
            le = float(np.mean([s["limit_energy"] for s in outside]))
            mg = float(np.mean([s["max_abs_g"] for s in outside]))
            le_err = max(abs(s["limit_energy"] - pred["limit_energy"]) for s in outside)
            mg_err = max(abs(s["max_abs_g"] - pred["max_abs_g"]) for s in outside)
            periods = [s["period"] for s in outside if s["periods_in_window"] > 0]
            period = float(np.mean(periods)) if periods else None
        else:
            le = mg = le_err = mg_err = period = None
        runs.append(
            {
                "gamma_c": gc,
                "limit_energy": le,
                "max_abs_g": mg,
                "predicted_limit_energy": pred["limit_energy"],
                "predicted_max_abs_g": pred["max_abs_g"],
                "limit_energy_error": le_err,
                "max_abs_g_error": mg_err,
                "period": period,
                "n_converging_starts": len(outside),
                "starts": [tr.summary for tr in trajs],
            }
        )
    settings = {
        "gamma_c": gcs,
        "starts": [list(s) for s in st],
        "t_end": float(t_end),
        "dt": float(dt),
        "scheme": scheme,
        "constrained": True,
        "n_periods": int(n_periods),
        "latent": "logistic",
    }
    # The figure's small panel: explicit Euler without the constraint spirals outwards.
    sp_gc, sp_start, sp_dt = gcs[0], (0.5, 0.0), 0.25
    sp_t_end = 3.0 * orbit_period(*sp_start, sp_gc)
    ts, gs, ws = integrate(*sp_start, sp_gc, sp_t_end, sp_dt, scheme="euler", constrained=False)
    es = toy_energy(gs, ws, sp_gc)
    spiral = {
        "gamma_c": sp_gc,
        "start": list(sp_start),
        "dt": sp_dt,
        "t_end": sp_t_end,
        "scheme": "euler",
        "constrained": False,
        "initial_energy": float(es[0]),
        "final_energy": float(es[-1]),
        "t": ts,
        "g": gs,
        "omega": ws,
    }
    return ToyStudy(runs, trajectories, settings, spiral)


def _group_name(gc: float) -> str:
    return f"gamma_c_{gc:.12g}"


def write_toy(study: ToyStudy, outdir: str | os.PathLike) -> dict[str, Path]:
    """Write ``toy.json``, ``toy.h5`` and ``toy.png`` into ``outdir``.

    Parameters
    ----------
    study : ToyStudy
        The result of :func:`run_toy`.
    outdir : path
        Output folder (created if needed).

    Returns
    -------
    dict
        Paths under the keys ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``toy.h5`` has one group per gamma_c (``gamma_c_<value>``) holding ``t`` (T,), ``g``,
    ``omega``, ``energy`` (n_starts, T) and the starts ``g0``, ``omega0`` (n_starts,); its
    attributes are the run's measured and predicted values and the settings. The root's
    ``unconstrained_euler`` group holds the figure's spiral.
    """

    def fill(f):
        f.attrs["model"] = "MODEL.md section 5: step generator, ReLU critic, logistic latent"
        for key, val in study.settings.items():
            if key not in ("starts", "gamma_c"):
                f.attrs[key] = val
        for run, trajs in zip(study.runs, study.trajectories):
            grp = f.create_group(_group_name(run["gamma_c"]))
            grp.create_dataset("t", data=trajs[0].t)
            for name in ("g", "omega", "energy"):
                grp.create_dataset(name, data=np.stack([getattr(tr, name) for tr in trajs]))
            grp.create_dataset("g0", data=np.array([tr.g0 for tr in trajs]))
            grp.create_dataset("omega0", data=np.array([tr.omega0 for tr in trajs]))
            for name in ("limit_energy", "max_abs_g", "initial_energy"):
                grp.create_dataset(f"start_{name}",
                                   data=np.array([tr.summary[name] for tr in trajs]))
            for key, val in run.items():
                if key != "starts":
                    grp.attrs[key] = np.nan if val is None else val
        sp = f.create_group("unconstrained_euler")
        for name in ("t", "g", "omega"):
            sp.create_dataset(name, data=study.euler_spiral[name])
        for key, val in study.euler_spiral.items():
            if not isinstance(val, np.ndarray):
                sp.attrs[key] = val

    paths = write_study_outputs(outdir, "toy", "meanfield_gan.studies.toy", study.to_json(),
                                fill, lambda png: plot_toy(study, png))
    return paths


def plot_toy(study: ToyStudy, path: str | os.PathLike) -> Path:
    """Phase portraits: level sets of ``E``, band ``|omega| <= 1``, limit orbit, trajectories.

    One large panel per gamma_c (up to the first two), plus a small panel with the
    unconstrained explicit-Euler spiral.

    Parameters
    ----------
    study : ToyStudy
        The result of :func:`run_toy`.
    path : path
        PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = min(2, len(study.runs))
    # A Figure on an Agg canvas, not pyplot: no global backend switch (a notebook's inline
    # plots keep working) and nothing left open.
    fig = Figure(figsize=(4.6 * n + 3.4, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(1, n + 1, width_ratios=[1.0] * n + [0.7], wspace=0.28)
    for i in range(n):
        run, trajs = study.runs[i], study.trajectories[i]
        gc = run["gamma_c"]
        ax = fig.add_subplot(gs[0, i])
        gmax = max(2.2, 1.1 * max(float(np.max(np.abs(tr.g))) for tr in trajs))
        G, W = np.meshgrid(np.linspace(-gmax, gmax, 301), np.linspace(-1.5, 1.5, 241))
        E = toy_energy(G, W, gc)
        estar = run["predicted_limit_energy"]
        levels = np.linspace(2.0, float(np.max(E)), 18)[1:]
        ax.contour(G, W, E, levels=levels, colors="0.6", linewidths=0.6)
        ax.axhspan(1.0, 1.6, color="0.85", zorder=0)
        ax.axhspan(-1.6, -1.0, color="0.85", zorder=0)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(-1.0, color="k", lw=0.8)
        # Wide and translucent, under the trajectories that settle onto it.
        ax.contour(G, W, E, levels=[estar], colors="crimson", linewidths=5.0, alpha=0.35, zorder=3)
        ax.plot([], [], color="crimson", lw=5.0, alpha=0.35, label="limit orbit E = E*")
        for j, tr in enumerate(trajs):
            ax.plot(tr.g, tr.omega, lw=1.0, color=f"C{j}", zorder=4,
                    label=f"start ({tr.g0:g}, {tr.omega0:g}), "
                          f"E0={tr.summary['initial_energy']:.2f}")
            ax.plot([tr.g0], [tr.omega0], "o", ms=4, color=f"C{j}", zorder=5)
        ax.set_xlim(-gmax, gmax)
        ax.set_ylim(-1.5, 1.5)
        ax.set_xlabel("generator g")
        if i == 0:
            ax.set_ylabel("critic omega")
        ax.set_title(f"gamma_c = {gc:g}: E* = {estar:.3f}, "
                     f"max|g| = {run['predicted_max_abs_g']:.3f}", fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
    ax = fig.add_subplot(gs[0, n])
    sp = study.euler_spiral
    gc = sp["gamma_c"]
    ax.plot(sp["g"], sp["omega"], lw=0.8, color="C3", label=f"explicit Euler, dt={sp['dt']:g}")
    r = 1.1 * max(float(np.max(np.abs(sp["g"]))), 0.5)
    wr = 1.1 * max(float(np.max(np.abs(sp["omega"]))), 0.5)
    G, W = np.meshgrid(np.linspace(-r, r, 201), np.linspace(-wr, wr, 201))
    ax.contour(G, W, toy_energy(G, W, gc), levels=[sp["initial_energy"]], colors="k",
               linewidths=1.0, linestyles="--")
    ax.plot([], [], "k--", lw=1.0, label="exact orbit")
    ax.set_title(f"no constraint, gamma_c = {gc:g}\n"
                 f"E: {sp['initial_energy']:.3f} -> {sp['final_energy']:.3f}",
                 fontsize=9)
    ax.set_xlabel("g")
    ax.set_ylabel("omega (unbounded)")
    ax.legend(fontsize=6, loc="lower left")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan toy`` arguments to ``parser``."""
    parser.add_argument("--gamma-c", type=float, nargs="+", default=[1.0, 10.0], metavar="G",
                        help="critic time scales (default: 1 10)")
    parser.add_argument("--start", type=float, nargs=2, action="append", metavar=("G0", "OMEGA0"),
                        help="initial condition, repeatable (default: the module's DEFAULT_STARTS)")
    parser.add_argument("--t-end", type=float, default=120.0,
                        help="integration horizon (default: 120)")
    parser.add_argument("--dt", type=float, default=0.05, help="time step (default: 0.05)")
    parser.add_argument("--scheme", choices=INTEGRATORS, default="rk4",
                        help="time stepping (default: rk4)")
    parser.add_argument("--n-periods", type=int, default=2,
                        help="trailing periods over which the limit orbit is measured (default: 2)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study and write ``OUTDIR/toy.{json,h5,png}``; print paths and measured numbers."""
    starts = args.start if args.start else DEFAULT_STARTS
    # Validate everything before the output folder is created, so bad input writes nothing.
    check_toy_args(args.gamma_c, starts, args.t_end, args.dt, args.scheme, args.n_periods)
    study = run_toy(args.gamma_c, starts, args.t_end, args.dt, args.scheme, args.n_periods,
                    progress=None)
    paths = write_toy(study, args.output)
    for run in study.runs:
        if run["limit_energy"] is None:
            print(f"gamma_c = {run['gamma_c']:g}: no start with E >= E* = "
                  f"{run['predicted_limit_energy']:.6f}")
            continue
        print(
            f"gamma_c = {run['gamma_c']:g}: limit energy {run['limit_energy']:.6f} "
            f"(predicted {run['predicted_limit_energy']:.6f}), max|g| {run['max_abs_g']:.6f} "
            f"(predicted {run['predicted_max_abs_g']:.6f})"
        )
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
