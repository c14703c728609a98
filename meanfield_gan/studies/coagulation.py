"""Coagulation of the critic at the boundary of the clipping box (MODEL.md section 4.3).

Once the support of the critic measure ``nu`` reaches ``boundary(Q)`` it flattens there, and it
can collapse to a single point (a corner of ``Q``) in finite time ``t0``, after which
``nu(t) = delta_{omega(t)}``. This module runs a configuration in which that happens, measures
it with :func:`meanfield_gan.metrics.coagulation` at every record, and is the
``meanfield-gan coagulation [CONFIG.toml] -o OUTDIR`` subcommand (``coagulation.json``,
``coagulation.h5``, ``coagulation.png``).

Why the default configuration (``meanfield_gan/data/coagulation.toml``) collapses onto *one*
point. The critic velocity is the gradient of the first variation
``F(omega) = E_Z sigma(g(Z); omega) - E_X sigma(X; omega)``. Since ``s(-u) = 1 - s(u)``,
``sigma(x; -omega) = sigma(x; omega) - alpha``, and the constant cancels in ``F``:
``F(-omega) = F(omega)``. The critic velocity field is therefore odd, ``V(-omega) = -V(omega)``
(and the box is symmetric), so every maximiser of ``F`` over ``Q`` has a mirror image and a
critic cloud symmetric about 0 ends as a pair of antipodal Diracs, never as one point. (The
generator cannot tell the two apart: ``grad_x sigma(x; -omega) = grad_x sigma(x; omega)``.) A
single Dirac needs the initial cloud inside one basin. With ``P_* = delta_{-3}`` and the
generator near 0, ``F(omega) ~ alpha (s(gamma) - s(gamma - 3 beta))`` is maximised over
``Q = [-1, 1]^3`` at the corner ``(1, 1, 1)`` (and ``(-1, -1, -1)``); a critic started in
``[0, 0.5]^3`` has ``alpha' > 0`` and ``beta' > 0`` and climbs to ``(1, 1, 1)``. Projected
Euler clips each coordinate to exactly ``+-clip``, so the particles that reach the corner
coincide exactly, and coincident particles stay bitwise equal (same inputs, same arithmetic):
the number of distinct critic positions can only decrease.

The configuration file is an ordinary run configuration (:mod:`meanfield_gan.io.config`, the
format of ``meanfield-gan run``), so the same file also runs under ``meanfield-gan run``.
A configuration without a box (``clip = inf``) runs too (boundary fractions are then 0).
``--compare-penalty`` runs the configuration with its box and as WGAN-GP (no box, gradient
penalty) from the same particles: :mod:`meanfield_gan.studies.coagulation_gp`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import meanfield_gan as mfg
from meanfield_gan._util import check_outdir, want_progress, write_study_outputs
from meanfield_gan._validation import nonnegative
from meanfield_gan.io.config import BACKENDS, RunConfig, read_config_document
from meanfield_gan.studies.coagulation_gp import (
    DEFAULT_PENALTY,
    cloud_diagnostics,
    first_time,
    run_penalty_comparison,
    write_penalty_comparison,
)

__all__ = [
    "DEFAULT_CONFIG",
    "default_config_path",
    "load_coagulation_config",
    "CoagulationResult",
    "run_coagulation",
    "write_coagulation",
    "plot_coagulation",
    "configure_parser",
    "cli_main",
]

#: The configuration ``meanfield-gan coagulation`` runs when none is given.
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "data" / "coagulation.toml"

#: Diagnostics recorded at every record time (lists in ``coagulation.json``).
SERIES = ("n_distinct", "n_clusters", "boundary_fraction", "corner_fraction", "spread",
          "effective_dimension")


def default_config_path() -> Path:
    """Path of the default configuration, ``meanfield_gan/data/coagulation.toml``."""
    return DEFAULT_CONFIG



def load_coagulation_config(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    backend: str | None = None,
) -> RunConfig:
    """Read and validate the run configuration of a coagulation study.

    Parameters
    ----------
    path : path, optional
        A TOML run configuration (the format of ``meanfield-gan run``); default
        :data:`DEFAULT_CONFIG`.
    overrides : mapping, optional
        Values replacing those of the file before validation, as nested tables, e.g.
        ``{"init": {"N": 64, "M": 64}, "run": {"t_end": 2.0}}`` (how the notebooks and tests
        shrink the study). A table with another ``kind`` replaces the file's table, e.g.
        ``{"scheme": {"kind": "sgd", "lr": 1.0, "n_critic": 10}}``.
    backend : {"numpy", "numba", "cuda"}, optional
        Replaces ``run.backend``.

    Returns
    -------
    RunConfig

    Raises
    ------
    ValueError
        If the file is missing or the configuration is invalid (the message names the key),
        or it has a ``[reference]`` section (the study has no use for one).
    """
    p, text, doc = read_config_document(path, DEFAULT_CONFIG, overrides)
    if "reference" in doc:
        raise ValueError("reference: the coagulation study runs no reference scheme; "
                         "remove the [reference] section")
    cfg = RunConfig.from_dict(doc, p.resolve().parent, text=text if not overrides else "",
                              source=str(p))
    if backend is not None:
        cfg = cfg.with_backend(backend)
    return cfg


def _check_tol(tol: float | None, clip: float) -> float:
    if tol is None:
        # relative to the box; without one, to the unit scale of the initial critic
        return 1e-6 * (clip if math.isfinite(clip) else 1.0)
    return nonnegative(tol, "tol")


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------
@dataclass
class CoagulationResult:
    """What :func:`run_coagulation` measured.

    Attributes
    ----------
    config : RunConfig
        The configuration that ran.
    times, steps : ndarray, shape (T,)
        Record times and step indices.
    theta : ndarray, shape (T, N, K, L+2)
    omega : ndarray, shape (T, M, K+2)
        Generator and critic snapshots.
    psi : ndarray, shape (T,)
        The WGAN energy at each record.
    series : dict of str -> ndarray (T,)
        The diagnostics of :data:`SERIES` at each record (``n_distinct`` counts exactly
        coincident positions; ``n_clusters`` links particles within ``tol``).
    face_fractions : ndarray, shape (T, K+2, 2)
        Per record and coordinate, the fraction of critic particles at ``-clip`` (column 0)
        and ``+clip`` (column 1).
    t0 : float or None
        First record time at which every critic particle sits at one position exactly.
    t0_tol : float or None
        First record time with a single cluster at linking distance ``tol``.
    tol : float
        The linking distance of ``n_clusters`` and ``t0_tol``.
    """

    config: RunConfig
    times: np.ndarray
    steps: np.ndarray
    theta: np.ndarray
    omega: np.ndarray
    psi: np.ndarray
    series: dict[str, np.ndarray]
    face_fractions: np.ndarray
    t0: float | None
    t0_tol: float | None
    tol: float
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def clip(self) -> float:
        return self.config.problem.clip

    def final_positions(self) -> np.ndarray:
        """The distinct critic positions at the last record, shape ``(n_distinct, K+2)``."""
        return np.unique(self.omega[-1] + 0.0, axis=0)

    def to_json(self) -> dict[str, Any]:
        """The summary written to ``coagulation.json`` (API.md keys first)."""
        idx = None if self.t0 is None else int(np.searchsorted(self.times, self.t0))
        return {
            "t0": self.t0,
            "n_distinct": self.series["n_distinct"].tolist(),
            "boundary_fraction": self.series["boundary_fraction"].tolist(),
            "times": self.times.tolist(),
            "t0_tol": self.t0_tol,
            "tol": self.tol,
            "t0_step": None if idx is None else int(self.steps[idx]),
            "t0_position": None if idx is None else self.omega[idx, 0].tolist(),
            "final_positions": self.final_positions().tolist(),
            "steps": self.steps.tolist(),
            **{k: self.series[k].tolist() for k in SERIES
               if k not in ("n_distinct", "boundary_fraction")},
            "face_fractions": self.face_fractions.tolist(),
            "psi": self.psi.tolist(),
            "N": int(self.theta.shape[1]),
            "M": int(self.omega.shape[1]),
            "clip": self.clip,
            "config": self.config.to_dict(),
        }


def run_coagulation(
    config: RunConfig | str | os.PathLike | None = None,
    *,
    tol: float | None = None,
    progress: bool | None = False,
) -> CoagulationResult:
    """Run a configuration and measure the coagulation of its critic over time.

    Parameters
    ----------
    config : RunConfig, path or None
        A validated configuration (:func:`load_coagulation_config`), a TOML file, or ``None``
        for :data:`DEFAULT_CONFIG`.
    tol : float, optional
        Linking distance of ``n_clusters`` and ``t0_tol`` (default ``1e-6 * clip``, ``1e-6``
        without a box). ``t0`` itself always means exact coincidence.
    progress : bool or None
        Progress bar (``None``: only on a terminal).

    Returns
    -------
    CoagulationResult

    Raises
    ------
    ValueError
        On an invalid configuration or ``tol``.
    """
    if not isinstance(config, RunConfig):
        config = load_coagulation_config(config)
    if config.reference is not None:
        raise ValueError("reference: the coagulation study runs no reference scheme")
    clip = config.problem.clip
    t = _check_tol(tol, clip)
    problem, state, scheme = config.build()
    rs = config.run
    record = rs.record if isinstance(rs.record, int) else list(rs.record)
    traj = mfg.simulate(problem, state, scheme, rs.t_end, record=record, seed=rs.seed,
                    backend=rs.backend, progress=want_progress(progress))
    diags = [cloud_diagnostics(om, clip, tol=t) for om in traj.omega]
    series = {k: np.array([d[k] for d in diags]) for k in SERIES}
    faces = np.stack([d["face_fractions"] for d in diags])
    # t0 counts exact coincidence only: clipping puts merged particles on the same bits.
    if math.isfinite(clip):
        t0 = mfg.metrics.coagulation_time(traj.times, traj.omega, clip, tol=0.0)
        t0_tol = mfg.metrics.coagulation_time(traj.times, traj.omega, clip, tol=t)
    else:  # the same definitions, from the series (coagulation_time takes a finite box)
        t0 = first_time(np.asarray(traj.times), series["n_distinct"] == 1)
        t0_tol = first_time(np.asarray(traj.times), series["n_clusters"] == 1)
    return CoagulationResult(
        config=config, times=np.asarray(traj.times, dtype=float), steps=np.asarray(traj.steps),
        theta=traj.theta, omega=traj.omega, psi=np.asarray(traj.observables["psi"]),
        series=series, face_fractions=faces, t0=t0, t0_tol=t0_tol, tol=t)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def write_coagulation(result: CoagulationResult, outdir: str | os.PathLike) -> dict[str, Path]:
    """Write ``coagulation.json``, ``coagulation.h5`` and ``coagulation.png`` into ``outdir``.

    Parameters
    ----------
    result : CoagulationResult
        The output of :func:`run_coagulation`.
    outdir : path
        Output folder (created if needed).

    Returns
    -------
    dict
        Paths under the keys ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``coagulation.h5`` (plain HDF5): datasets ``times`` (T,), ``steps`` (T,), ``theta``
    (T, N, K, L+2), ``omega`` (T, M, K+2), ``psi`` (T,), and ``diagnostics/<name>`` (T,) for
    each of :data:`SERIES` plus ``diagnostics/face_fractions`` (T, K+2, 2); root attributes
    ``t0`` and ``t0_tol`` (NaN when never reached), ``tol``, ``clip``, ``config_toml`` (the
    canonical configuration) and ``creator``.
    """

    def fill(f):
        f.attrs["t0"] = np.nan if result.t0 is None else result.t0
        f.attrs["t0_tol"] = np.nan if result.t0_tol is None else result.t0_tol
        f.attrs["tol"] = result.tol
        f.attrs["clip"] = result.clip
        f.attrs["config_toml"] = result.config.to_toml()
        f.create_dataset("times", data=result.times)
        f.create_dataset("steps", data=result.steps)
        for name in ("theta", "omega"):
            arr = getattr(result, name)
            f.create_dataset(name, data=arr, chunks=(1,) + arr.shape[1:], compression="gzip",
                             compression_opts=4, shuffle=True)
        f.create_dataset("psi", data=result.psi)
        g = f.create_group("diagnostics")
        for k in SERIES:
            g.create_dataset(k, data=result.series[k])
        g.create_dataset("face_fractions", data=result.face_fractions)

    paths = write_study_outputs(outdir, "coagulation", "meanfield_gan.studies.coagulation",
                                result.to_json(),
                                fill, lambda png: plot_coagulation(result, png))
    result.paths = paths
    return paths


def _snapshot_indices(result: CoagulationResult, n: int = 4) -> list[int]:
    """Records to draw: the start, when half the particles reached a face, when half reached
    a corner, and ``t0`` (or the end); evenly spaced records fill in duplicates."""
    T = len(result.times)
    bf, cf = result.series["boundary_fraction"], result.series["corner_fraction"]

    def first(mask: np.ndarray) -> int | None:
        hit = np.flatnonzero(mask)
        return int(hit[0]) if hit.size else None

    last = T - 1 if result.t0 is None else int(np.searchsorted(result.times, result.t0))
    picks = [0, first(bf >= 0.5), first(cf >= 0.5), last]
    out: list[int] = []
    for i in picks:
        if i is not None and i not in out and i <= last:
            out.append(i)
    for i in np.linspace(0, last, n + 2).round().astype(int)[1:-1]:
        if len(out) >= n:
            break
        if int(i) not in out:
            out.append(int(i))
    return sorted(out)[:n]


def plot_coagulation(result: CoagulationResult, path: str | os.PathLike,
                     coords: tuple[int, int] = (0, 1)) -> Path:
    """Critic clouds at four times, projected on two coordinates, and the diagnostics over time.

    Parameters
    ----------
    result : CoagulationResult
        The output of :func:`run_coagulation`.
    path : path
        PNG file to write.
    coords : (int, int)
        The two critic coordinates of the projection (0 is ``alpha``, ``1..K`` are ``beta``,
        ``K+1`` is ``gamma``); colour shows the last coordinate.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    d = result.omega.shape[2]
    K = d - 2
    names = ["alpha"] + ([f"beta_{k + 1}" for k in range(K)] if K > 1 else ["beta"]) + ["gamma"]
    i, j = coords
    if not (0 <= i < d and 0 <= j < d and i != j):
        raise ValueError(f"coords: need two distinct critic coordinates in [0, {d - 1}], "
                         f"got {coords!r}")
    box = math.isfinite(result.clip)
    # without a box, the cube that holds every record's cloud plays the box's part in the axes
    c = result.clip if box else max(float(np.abs(result.omega).max()), 1e-12)
    idx = _snapshot_indices(result)
    # A Figure on an Agg canvas, not pyplot: no global backend switch (a notebook's inline
    # plots keep working) and no figure left registered with pyplot.
    fig = Figure(figsize=(3.0 * len(idx) + 4.6, 3.3), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(1, len(idx) + 1, width_ratios=[1.0] * len(idx) + [1.55], wspace=0.32)
    for n, k in enumerate(idx):
        ax = fig.add_subplot(gs[0, n])
        # Coincident particles are drawn once, with an area growing with their number.
        pts, counts = np.unique(result.omega[k] + 0.0, axis=0, return_counts=True)
        if box:
            ax.add_patch(Rectangle((-c, -c), 2 * c, 2 * c, fill=False, lw=1.0, color="k"))
        ax.scatter(pts[:, i], pts[:, j], c=pts[:, -1], s=8.0 * np.sqrt(counts), cmap="viridis",
                        vmin=-c, vmax=c, edgecolors="none", alpha=0.8)
        ax.set_xlim(-1.15 * c, 1.15 * c)
        ax.set_ylim(-1.15 * c, 1.15 * c)
        ax.set_aspect("equal")
        ax.set_xlabel(names[i], fontsize=8)
        if n == 0:
            ax.set_ylabel(names[j], fontsize=8)
        nd = int(result.series["n_distinct"][k])
        bf = float(result.series["boundary_fraction"][k])
        ax.set_title(f"t = {result.times[k]:.3g}: {nd} distinct\non boundary {bf:.0%}",
                     fontsize=8.5)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"critic particles in Q, projected on ({names[i]}, {names[j]}); "
                 f"colour: {names[-1]} "
                 f"from -{c:g} (purple) to {c:g} (yellow); marker area grows with the number of "
                 "coincident particles", fontsize=8.5, x=0.42, y=1.04)
    ax = fig.add_subplot(gs[0, len(idx)])
    t = result.times
    M = result.omega.shape[1]
    s = result.series
    ax.plot(t, s["boundary_fraction"], label="on a face of Q", color="C0")
    ax.plot(t, s["corner_fraction"], label="at a corner", color="C1")
    ax.plot(t, s["n_distinct"] / M, label="distinct positions / M", color="C2")
    # sqrt(K+2) clip bounds the spread of any cloud in Q: the curve stays in [0, 1].
    ax.plot(t, s["spread"] / (c * math.sqrt(d)), color="C3", ls="--",
            label=f"spread / ({'clip' if box else 'max |omega|'} sqrt(K+2))")
    if result.t0 is not None:
        ax.axvline(result.t0, color="k", lw=0.8, ls=":")
        ax.text(result.t0, 1.04, f" t0 = {result.t0:.3g}", fontsize=8, va="bottom")
    ax.set_ylim(-0.03, 1.12)
    ax.set_xlabel("time t")
    ax.set_title(f"critic coagulation (M = {M}, gamma_c = "
                 f"{result.config.scheme.build().gamma_c(result.theta.shape[1], M):g})", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan coagulation`` arguments to ``parser``."""
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG.toml",
                        help="run configuration (default: the packaged coagulation.toml)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="engine (default: the configuration's run.backend)")
    parser.add_argument("--tol", type=float, default=None,
                        help="linking distance of n_clusters and t0_tol (default: 1e-6 * clip)")
    parser.add_argument("--compare-penalty", action="store_true",
                        help="run the configuration with its box and as WGAN-GP (no box, "
                             "gradient penalty) from the same particles; writes "
                             "OUTDIR/coagulation_gp.{json,h5,png}")
    parser.add_argument("--penalty", type=float, default=None, metavar="LAMBDA",
                        help=f"lambda of --compare-penalty (default {DEFAULT_PENALTY:g})")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study and write ``OUTDIR/coagulation.{json,h5,png}`` (``coagulation_gp.*`` with
    ``--compare-penalty``); print t0 and the paths."""
    # Everything is validated before the run, so bad input leaves no output behind.
    cfg = load_coagulation_config(args.config, backend=args.backend)
    _check_tol(args.tol, cfg.problem.clip)
    out = check_outdir(args.output)
    progress = cfg.run.progress
    if getattr(args, "penalty", None) is not None and not getattr(args, "compare_penalty", False):
        raise ValueError("--penalty: goes with --compare-penalty")
    if getattr(args, "compare_penalty", False):
        return _compare_penalty(cfg, args, out, None if progress == "auto" else progress)
    result = run_coagulation(cfg, tol=args.tol, progress=None if progress == "auto" else progress)
    paths = write_coagulation(result, out)
    M = result.omega.shape[1]
    if result.t0 is None:
        print(f"no coagulation by t = {result.times[-1]:.6g}: {result.series['n_distinct'][-1]} "
              f"distinct critic positions remain (M = {M})")
    else:
        k0 = np.searchsorted(result.times, result.t0)
        corner = json.dumps([float(v) for v in result.omega[k0, 0]])
        print(f"t0 = {result.t0:.6g}: all {M} critic particles at {corner}")
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0


def _compare_penalty(cfg: RunConfig, args: argparse.Namespace, out: Path,
                     progress: bool | None) -> int:
    """``--compare-penalty``: both runs, ``OUTDIR/coagulation_gp.*`` and a line per run."""
    lam = DEFAULT_PENALTY if args.penalty is None else args.penalty
    result = run_penalty_comparison(cfg, penalty=lam, tol=args.tol, progress=progress)
    paths = write_penalty_comparison(result, out)
    M = cfg.init.M
    for name, run in result.runs.items():
        what = "box" if name == "clip" else f"no box, lambda = {result.penalty:g}"
        end = (f"coagulates at t0 = {run.t0:.6g}" if run.t0 is not None else
               f"{int(run.series['n_distinct'][-1])} distinct critic positions at "
               f"t = {run.times[-1]:.6g}")
        med = float(np.median(run.grad_norm["interpolates"][-1]))
        print(f"{name} ({what}): {end} (M = {M}), spread {run.series['spread'][-1]:.4g}, "
              f"median |grad f| at the interpolates {med:.3g}")
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
