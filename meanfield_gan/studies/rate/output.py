"""The rate study's files: ``rate.json``, ``rate.h5`` and ``rate.png`` (write, read back, plot)."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from meanfield_gan._util import to_jsonable, write_study_outputs

from .config import loads_rate_config
from .result import RateResult

__all__ = ["write_rate", "read_rate", "plot_rate"]


def _json_extras(extras: Mapping[str, Any]) -> dict:
    out = {}
    for name, d in extras.items():
        out[name] = {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
    return out


def write_rate(result: RateResult, outdir: str | os.PathLike,
               extras: Mapping[str, dict] | None = None) -> dict[str, Path]:
    """Write ``rate.json``, ``rate.h5`` and ``rate.png`` into ``outdir``.

    Parameters
    ----------
    result : RateResult
    outdir : path
        Output folder (created if needed).
    extras : dict, optional
        ``{"euler_order": run_euler_order(...), "iid": run_iid_study(...)}`` (either or
        both): added to ``rate.json`` under those keys and to ``rate.h5`` as groups.

    Returns
    -------
    dict
        Paths under ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``rate.h5`` (plain h5py) holds every per-run number: ``N``, ``M``, ``runs``, ``times``,
    ``coupling_generator``, ``coupling_critic``, ``boundary_sgd`` (nN, S, R, T),
    ``exact_generator``, ``exact_critic`` (nN, S, R), NaN where not computed or beyond
    ``runs``; ``sgd_seeds``
    (nN, S, R), ``boundary_euler`` (nN, S, T), ``task_seconds`` (nN, S); attributes
    ``config_toml`` (the full configuration), ``slope``, ``slope_ci``, ``distance``. The fit
    is redone offline from ``exact_*`` or ``coupling_*`` summed, averaged over runs (axis 2),
    or with :func:`read_rate`. Each extra is a group with its arrays as datasets (``iid/w2``,
    shape (nN, S, T)) and the rest as a JSON string attribute ``json``.
    """
    extras = dict(extras or {})
    summary = result.summary()
    summary.update(_json_extras(extras))

    def fill(f):
        f.attrs["config_toml"] = result.config.to_toml()
        f.attrs["distance"] = result.distance
        f.attrs["slope"] = summary["slope"]
        f.attrs["slope_ci"] = np.array(summary["slope_ci"])
        f.attrs["axes"] = "N index, seed index, SGD run, record time"
        f.attrs["wall_seconds"] = result.wall_seconds
        f.attrs["executor"] = result.executor
        for name in ("N", "M", "runs", "times", "coupling_generator", "coupling_critic",
                     "exact_generator", "exact_critic", "boundary_euler", "boundary_sgd",
                     "sgd_seeds", "task_seconds"):
            f.create_dataset(name, data=getattr(result, name))
        for name, d in extras.items():
            # Arrays as datasets; everything else (nested dicts, lists) as one JSON attribute.
            g = f.create_group(name)
            for k, v in d.items():
                if isinstance(v, np.ndarray):
                    g.create_dataset(k, data=v)
            g.attrs["json"] = json.dumps(to_jsonable(_json_extras({name: d})[name]))

    paths = write_study_outputs(outdir, "rate", "meanfield_gan.studies.rate", summary,
                                fill, lambda png: plot_rate(result, png))
    return paths


def read_rate(path: str | os.PathLike) -> tuple[RateResult, dict[str, dict]]:
    """Read ``rate.h5`` back: the :class:`RateResult` (fits redone) and the extras.

    Parameters
    ----------
    path : path
        A file written by :func:`write_rate`.

    Returns
    -------
    result : RateResult
    extras : dict
        ``{"euler_order": {...}, "iid": {...}}`` for those present (arrays included).
    """
    import h5py

    with h5py.File(path, "r") as f:
        config = loads_rate_config(str(f.attrs["config_toml"]), source=str(path))
        data = {name: f[name][...] for name in (
            "N", "M", "runs", "times", "coupling_generator", "coupling_critic", "exact_generator",
            "exact_critic", "boundary_euler", "boundary_sgd", "sgd_seeds", "task_seconds")}
        extras = {}
        for name, g in f.items():
            if isinstance(g, h5py.Group):
                d = json.loads(g.attrs["json"])
                d.update({k: v[...] for k, v in g.items()})
                extras[name] = d
        wall, executor = float(f.attrs["wall_seconds"]), str(f.attrs["executor"])
    result = RateResult(config=config, wall_seconds=wall, executor=executor, **data)
    result.analyse()
    return result, extras


def plot_rate(result: RateResult, path: str | os.PathLike) -> Path:
    """Log-log figure of ``E d_2^2`` against ``N`` (points, 95% bars, fit, ``1/N`` guide).

    The right panel shows ``N E d_2^2`` against time for every ``N``: under Theorem 7 the
    curves collapse onto one.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = result.summary()
    N = result.N.astype(float)
    d2 = result.d2
    S = d2.shape[1]
    mean = d2.mean(axis=1)
    # 95% interval of each mean: seeds are the independent units
    half = 1.96 * d2.std(axis=1, ddof=1) / math.sqrt(S)
    # A Figure on an Agg canvas, not pyplot: no global backend switch, nothing left open.
    fig = Figure(figsize=(10.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(1, 2)
    lo = np.maximum(mean - half, mean * 1e-3)
    label = "exact $W_2$ (POT)" if result.distance == "exact" else "coupling bound"
    ax.errorbar(N, mean, yerr=[mean - lo, half], fmt="o", color="C0", capsize=3,
                label=f"$E\\,d_2^2$ at t = {result.config.t_end:g}, {label}")
    if result.distance == "exact":
        cp = result.coupling[:, :, -1].mean(axis=1)
        ax.plot(N, cp, "x", color="C2", ms=7, label="coupling bound")
    elif summary["exact"] is not None:
        ex = np.array(summary["exact"]["mean_d2"])
        ax.plot(np.array(summary["exact"]["N"], float), ex, "x", color="C2", ms=7,
                label="exact $W_2$ (POT)")
    head = result.fits["headline"]
    xs = np.geomspace(N[0] / 1.3, N[-1] * 1.3, 50)
    ax.plot(xs, np.exp(head.intercept) * xs ** head.slope, "-", color="C3",
            label=f"fit: slope {head.slope:.3f} [{head.slope_ci[0]:.3f}, {head.slope_ci[1]:.3f}]")
    g = math.exp(np.mean(np.log(mean)) + np.mean(np.log(N)))
    ax.plot(xs, g / xs, "--", color="0.5", label="1/N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"N (generator particles), M = {result.config.M_ratio:g} N")
    ax.set_ylabel("$E\\, d_2^2$(SGD, projected Euler)")
    runs = (f"{result.runs[0]}" if result.runs.min() == result.runs.max()
            else f"{result.runs.max()}..{result.runs.min()}")
    ax.set_title(f"Theorem 7: {S} initial draws x {runs} SGD runs per N", fontsize=10)
    ax.legend(fontsize=7)
    cmap = colormaps["viridis"]
    for i, n in enumerate(result.N):
        ax2.plot(np.r_[0.0, result.times], np.r_[0.0, n * result.coupling[i].mean(axis=0)], "o-",
                 ms=3, color=cmap(i / max(1, len(N) - 1)), label=f"N = {n}")
    ax2.set_xlabel("t")
    ax2.set_ylabel("$N\\, E\\, d_2^2$ (coupling bound)")
    ax2.set_title("C/N at every time: the curves collapse", fontsize=10)
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
