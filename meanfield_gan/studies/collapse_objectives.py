"""Mode collapse across GAN objectives: the bimodal study of :mod:`.modecollapse` under
``wasserstein_clip``, ``minimax``, ``non_saturating`` and ``wasserstein_gp`` (MODEL.md 7).

Every run starts from the same generator and critic particles (the critic uniform on
``[-clip/2, clip/2]^3``, inside the box of ``wasserstein_clip``) and follows the same scheme
(default: projected Euler, ``dt = 0.05``, ``gamma_c = 1``, ``t_end = 200``, ``N = M = 64``);
only the objective, the box and the penalty change (the cases of
:func:`meanfield_gan.studies.vanishing.objective_settings`). For each run: the generated mass
near each mode over time, and a table of the fraction of time collapsed onto one mode and the
number of mode switches (:func:`meanfield_gan.studies.modecollapse.simulate_mode_collapse`).

This module is the ``meanfield-gan modecollapse -o OUTDIR`` subcommand
(``mode_collapse_objectives.json``, ``.h5``, ``.png``).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meanfield_gan._util import check_outdir, write_study_outputs
from meanfield_gan._validation import positive
from meanfield_gan.studies.modecollapse import ModeCollapseResult, simulate_mode_collapse
from meanfield_gan.studies.vanishing import objective_settings

__all__ = ["OBJECTIVES", "TABLE", "ObjectivesComparison", "compare_objectives", "plot_objectives",
           "write_objectives", "configure_parser", "cli_main"]

#: The objectives compared, in the order of the figure (cases of the vanishing study).
OBJECTIVES = ("wasserstein_clip", "minimax", "non_saturating", "wasserstein_gp")

#: Columns of the comparison's table (keys of each run's summary).
TABLE = ("collapsed_fraction", "mode_switches", "covered_fraction", "modes_visited",
         "max_minority_fraction", "w1_min", "w1_final", "max_generated_std")


@dataclass
class ObjectivesComparison:
    """Mode-collapse runs of several objectives from the same initial particles.

    Attributes
    ----------
    results : dict of str -> ModeCollapseResult
        One run per objective (``settings`` of each name its loss, box and penalty).
    """

    results: dict[str, ModeCollapseResult]
    paths: dict[str, Path] = field(default_factory=dict)

    def table(self) -> dict[str, dict[str, Any]]:
        """Per objective, the :data:`TABLE` entries of its summary."""
        return {name: {k: r.summary[k] for k in TABLE} for name, r in self.results.items()}

    def to_json(self) -> dict[str, Any]:
        """The ``mode_collapse_objectives.json`` content: ``table`` and each run's JSON."""
        return {"table": self.table(), "runs": {n: r.to_json() for n, r in self.results.items()}}


def compare_objectives(objectives: Sequence[str] = OBJECTIVES, *, clip: float = 1.0,
                       gradient_penalty: float = 10.0, **kwargs: Any) -> ObjectivesComparison:
    """Run :func:`simulate_mode_collapse` under each objective from the same initial particles.

    Parameters
    ----------
    objectives : sequence of str
        Cases of :func:`meanfield_gan.studies.vanishing.objective_settings` without instance
        noise: ``wasserstein_clip`` (box ``clip``), ``minimax``, ``non_saturating`` (no box),
        ``wasserstein_gp`` (penalty ``gradient_penalty``, no box).
    clip, gradient_penalty : float
        The box of ``wasserstein_clip`` and the ``lambda`` of ``wasserstein_gp``.
    **kwargs
        Passed to :func:`simulate_mode_collapse` (``N``, ``M``, ``scheme``, ``t_end``,
        ``record``, ``seed``, ...; not ``clip``, ``loss`` or ``gradient_penalty``).

    Returns
    -------
    ObjectivesComparison

    Notes
    -----
    The critic starts uniform on ``[-clip/2, clip/2]^3`` in every run (inside the box of
    ``wasserstein_clip``), so all runs start from the same particles.
    """
    names = [objectives] if isinstance(objectives, str) else list(objectives)
    if not names or len(set(names)) != len(names) or any(n not in OBJECTIVES for n in names):
        raise ValueError(f"objectives: must be distinct names among {', '.join(OBJECTIVES)}; "
                         f"got {names}")
    for key in ("loss", "critic_scale"):
        if key in kwargs:
            raise ValueError(f"{key}: set by each objective of the comparison")
    c = positive(clip, "clip")
    lam = positive(gradient_penalty, "gradient_penalty")
    settings = {n: objective_settings(n, clip=c, gradient_penalty=lam) for n in names}
    return ObjectivesComparison({
        n: simulate_mode_collapse(clip=st["clip"], loss=st["loss"], critic_scale=c / 2,
                                  gradient_penalty=st["gradient_penalty"], **kwargs)
        for n, st in settings.items()})


def plot_objectives(comparison: ObjectivesComparison, path: str | os.PathLike,
                    bins: int = 120) -> Path:
    """One column per objective: the generated density over time (top) and the mass near each
    mode over time (bottom), with the fraction of time collapsed and the mode switches.

    Returns
    -------
    Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    res = comparison.results
    n = len(res)
    fig = Figure(figsize=(3.6 * n, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False, sharex=True,
                        gridspec_kw={"hspace": 0.12, "wspace": 0.25})
    lo = min(float(r.modes.min()) - 5 * r.scale for r in res.values())
    hi = max(float(r.modes.max()) + 5 * r.scale for r in res.values())
    edges = np.linspace(lo, hi, bins + 1)  # one window for all: a run that leaves it is visible
    for i, (name, r) in enumerate(res.items()):
        t = r.times
        # densities of the whole sample (not renormalised to the window: mass outside is lost)
        dens = np.stack([np.histogram(s, bins=edges)[0] for s in r.samples]) / (
            r.samples.shape[1] * (edges[1] - edges[0]))
        dt = t[1] - t[0] if len(t) > 1 else 1.0
        ax = axes[0, i]
        ax.imshow(dens.T, origin="lower", aspect="auto", cmap="magma_r",
                  extent=(t[0] - dt / 2, t[-1] + dt / 2, lo, hi),
                  vmax=float(np.quantile(dens, 0.995)) or None)
        mean = r.samples.mean(axis=1)
        if np.any((mean < lo) | (mean > hi)):
            ax.text(0.04, 0.04, f"g(Z) leaves the window\n(mean {mean[-1]:.3g} at the end)",
                    transform=ax.transAxes, fontsize=7.5, color="C3",
                    bbox={"facecolor": "w", "edgecolor": "none", "alpha": 0.8})
        for mc in r.modes:
            ax.axhline(mc, color="C2", lw=0.8, ls="--")
        ax.set_title(f"{name}", fontsize=10)
        ax.set_ylabel("x" if i == 0 else "")
        ax = axes[1, i]
        for c, mc in enumerate(r.modes):
            ax.plot(t, r.mass_near[:, c], color=f"C{c}", lw=1.0,
                    label=f"mass within {r.radius:g} of {mc:g}")
        ax.axhline(float(np.mean(r.summary["target_mass_near"])), color="0.5", lw=0.8, ls=":")
        s = r.summary
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("time t")
        ax.set_title(f"collapsed {s['collapsed_fraction']:.0%} of the time, "
                     f"{s['mode_switches']} switch{'' if s['mode_switches'] == 1 else 'es'}",
                     fontsize=8.5)
        if i == 0:
            ax.set_ylabel("generated mass near a mode")
            ax.legend(fontsize=7, loc="upper right")
    for a in axes.ravel():
        a.tick_params(labelsize=7)
    r0 = next(iter(res.values()))
    st = r0.settings
    fig.suptitle(f"mode collapse across objectives: same initial particles, N = {st['N']}, "
                 f"M = {st['M']}, {st['scheme']} (dt = {st['dt']:g}, gamma_c = {st['gamma_c']:g}); "
                 "dashed: target modes", fontsize=9.5)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


def write_objectives(comparison: ObjectivesComparison,
                     outdir: str | os.PathLike) -> dict[str, Path]:
    """Write ``mode_collapse_objectives.json``, ``.h5`` and ``.png`` into ``outdir``.

    Notes
    -----
    The HDF5 file has one group per objective with the datasets of
    :func:`write_mode_collapse`'s file and the run's settings as attributes (``clip`` = inf
    for no box).
    """
    def fill(f):
        for name, r in comparison.results.items():
            g = f.create_group(name)
            g.attrs["loss"] = r.settings["loss"]
            g.attrs["gradient_penalty"] = r.settings["gradient_penalty"]
            for k in ("scale", "radius", "clip"):
                g.attrs[k] = getattr(r, k)
            for k in ("times", "theta", "omega", "psi", "samples", "mass_near", "nearest_fraction",
                      "w1", "modes"):
                big = k in ("theta", "omega", "samples")
                g.create_dataset(k, data=getattr(r, k), compression="gzip" if big else None)

    paths = write_study_outputs(outdir, "mode_collapse_objectives",
                                "meanfield_gan.studies.collapse_objectives", comparison.to_json(),
                                fill, lambda png: plot_objectives(comparison, png))
    comparison.paths = paths
    return paths


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan modecollapse`` arguments (the objectives comparison)."""
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES,
                        metavar="NAME",
                        help=f"objectives to compare (default: {' '.join(OBJECTIVES)})")
    parser.add_argument("--t-end", type=float, default=200.0, help="final time (default: 200)")
    parser.add_argument("--record", type=int, default=100, help="records (intervals, default: 100)")
    parser.add_argument("-N", type=int, default=64, help="generator particles (default: 64)")
    parser.add_argument("-M", type=int, default=64, help="critic particles (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the particles (default: 0)")
    parser.add_argument("--clip", type=float, default=1.0,
                        help="box of wasserstein_clip (default: 1)")
    parser.add_argument("--gradient-penalty", type=float, default=10.0,
                        help="lambda of wasserstein_gp (default: 10)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")


def cli_main(args: argparse.Namespace) -> int:
    """Run the comparison and write ``OUTDIR/mode_collapse_objectives.{json,h5,png}``."""
    out = check_outdir(args.output)
    comp = compare_objectives(args.objectives, clip=args.clip,
                              gradient_penalty=args.gradient_penalty, t_end=args.t_end,
                              record=args.record, N=args.N, M=args.M, seed=args.seed,
                              progress=None)
    paths = write_objectives(comp, out)
    for name, row in comp.table().items():
        print(f"{name:17s} collapsed {row['collapsed_fraction']:.2f} of the time, "
              f"{row['mode_switches']} switches, both modes covered {row['covered_fraction']:.2f}, "
              f"final W1 {row['w1_final']:.3g}")
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
