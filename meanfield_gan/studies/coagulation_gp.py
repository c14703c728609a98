"""Coagulation with and without the gradient penalty (MODEL.md sections 4.3 and 7).

The coagulation study's configuration (``meanfield_gan/data/coagulation.toml`` or any run
configuration with a box) is run twice from the same initial particles, with the same scheme
and the same target: as written (the critic clipped to ``Q = [-clip, clip]^{K+2}``) and as
WGAN-GP (no box, ``clip = inf``, gradient penalty ``lambda``).  At every record both runs are
measured by :func:`meanfield_gan.metrics.coagulation` (distinct critic positions, clusters,
spread) and by the norm of the critic's gradient ``|grad f|`` at the data nodes, at the
generated points ``g(z_b)`` (the problem's quadrature) and at the penalty's interpolates
``xh = eps X + (1 - eps) g(Z)`` (the penalised problem's fixed triples), where the penalty
pulls ``|grad f|`` towards 1.

Why the penalised critic cannot coagulate exactly: coincidence of distinct particles in finite
time needs a velocity field that is not Lipschitz, and the only such ingredient of the
clipped dynamics is the projection onto ``Q``.  Without a box the critic velocity (penalty
included) is smooth in ``omega``, so distinct particles stay distinct for all time
(uniqueness of the particle ODE); the study measures whether they still cluster.

This is ``meanfield-gan coagulation [CONFIG.toml] --compare-penalty -o OUTDIR``
(``coagulation_gp.json``, ``coagulation_gp.h5``, ``coagulation_gp.png``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import meanfield_gan as mfg
from meanfield_gan._util import want_progress, write_study_outputs
from meanfield_gan._validation import check_omega, finite_array, nonnegative, positive
from meanfield_gan.io.config import RunConfig

__all__ = [
    "DEFAULT_PENALTY",
    "SERIES",
    "POINT_SETS",
    "critic_gradient_norm",
    "cloud_diagnostics",
    "first_time",
    "CloudRun",
    "PenaltyComparison",
    "penalised_config",
    "run_penalty_comparison",
    "write_penalty_comparison",
    "plot_penalty_comparison",
]

#: The penalty weight of the comparison when none is given (the paper's lambda).
DEFAULT_PENALTY = 10.0
#: Diagnostics of :func:`cloud_diagnostics` kept at every record.
SERIES = ("n_distinct", "n_clusters", "boundary_fraction", "corner_fraction", "spread",
          "effective_dimension")
#: Where ``|grad f|`` is measured.
POINT_SETS = ("data", "generated", "interpolates")
#: Quantiles of ``|grad f|`` written to the JSON summary.
QUANTILES = {"q10": 0.1, "median": 0.5, "q90": 0.9}
RUNS = ("clip", "penalty")


def critic_gradient_norm(omega: Any, points: Any) -> np.ndarray:
    """``|grad_x f_nu(x_b)|``, ``grad_x f = (1/M) sum_j alpha_j s'(beta_j . x + gamma_j) beta_j``.

    Parameters
    ----------
    omega : array_like, shape (M, K+2)
        Critic particles.
    points : array_like, shape (B, K)
        Where to evaluate.

    Returns
    -------
    ndarray, shape (B,)
    """
    om = check_omega(omega)
    x = finite_array(points, "points", 2)
    K = om.shape[1] - 2
    if x.shape[1] != K:
        raise ValueError(f"points must have shape (B, K) = (B, {K}), got {x.shape}")
    alpha, beta, gamma = om[:, 0], om[:, 1:K + 1], om[:, K + 1]
    u = x @ beta.T + gamma                     # (B, M)
    s = 0.5 * (1.0 + np.tanh(0.5 * u))         # the sigmoid without overflow for large |u|
    grad = (alpha * s * (1.0 - s)) @ beta / om.shape[0]
    return np.sqrt(np.sum(grad * grad, axis=1))


def cloud_diagnostics(omega: Any, clip: float, tol: float) -> dict[str, Any]:
    """:func:`meanfield_gan.metrics.coagulation` of a critic cloud, with or without a box
    (``clip = inf``: no faces, so boundary and corner fractions are 0)."""
    return mfg.metrics.coagulation(omega, clip, tol=tol)


def first_time(times: np.ndarray, mask: np.ndarray) -> float | None:
    """The first of ``times`` where ``mask`` holds (``None`` if never)."""
    hit = np.flatnonzero(mask)
    return float(times[hit[0]]) if hit.size else None


def _wquantiles(values: np.ndarray, weights: np.ndarray, qs: list[float]) -> list[float]:
    """Quantiles of the discrete law ``sum_b w_b delta_{v_b}`` (lower quantile: the first
    value whose cumulative weight reaches ``q``)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    cum /= cum[-1]
    return [float(values[order][min(int(np.searchsorted(cum, q - 1e-12)), len(cum) - 1)])
            for q in qs]


@dataclass
class CloudRun:
    """One run of the comparison and what was measured along it.

    Attributes
    ----------
    clip, gradient_penalty : float
        The run's box half-width (``inf``: none) and penalty weight.
    times, steps : ndarray, shape (T,)
    theta : ndarray, shape (T, N, K, L+2)
    omega : ndarray, shape (T, M, K+2)
    series : dict of str -> ndarray (T,)
        :data:`SERIES` at every record.
    t0, t0_tol : float or None
        First record with a single exact critic position / a single cluster at ``tol``.
    grad_norm : dict of str -> ndarray (T, B)
        ``|grad f|`` at each of :data:`POINT_SETS` at every record.
    generated_mean : ndarray, shape (T, K)
        Mean of the generated law ``E_Z g(Z)`` (the problem's quadrature).
    observables : dict of str -> ndarray (T,)
        The trajectory's observables (``psi``, ``generator_speed``, ...).
    """

    clip: float
    gradient_penalty: float
    times: np.ndarray
    steps: np.ndarray
    theta: np.ndarray
    omega: np.ndarray
    series: dict[str, np.ndarray]
    t0: float | None
    t0_tol: float | None
    grad_norm: dict[str, np.ndarray]
    generated_mean: np.ndarray
    observables: dict[str, np.ndarray]

    def summary(self, weights: dict[str, np.ndarray]) -> dict[str, Any]:
        """The run's JSON record (lists over the record times)."""
        g = {}
        for name in POINT_SETS:
            per = [_wquantiles(v, weights[name], list(QUANTILES.values()))
                   for v in self.grad_norm[name]]
            g[name] = {k: [p[i] for p in per] for i, k in enumerate(QUANTILES)}
            g[name]["mean"] = (self.grad_norm[name] @ weights[name]).tolist()
        return {
            "clip": self.clip, "gradient_penalty": self.gradient_penalty,
            "t0": self.t0, "t0_tol": self.t0_tol,
            **{k: self.series[k].tolist() for k in SERIES},
            "grad_norm": g,
            "generated_mean": self.generated_mean.tolist(),
            "generator_speed": self.observables["generator_speed"].tolist(),
            "psi": self.observables["psi"].tolist(),
        }


@dataclass
class PenaltyComparison:
    """What :func:`run_penalty_comparison` measured.

    Attributes
    ----------
    config : RunConfig
        The configuration with its box (the ``"clip"`` run).
    penalty : float
        ``lambda`` of the ``"penalty"`` run (no box).
    tol : float
        Linking distance of ``n_clusters`` and ``t0_tol`` in both runs.
    runs : dict
        ``"clip"`` and ``"penalty"``: :class:`CloudRun`.
    weights : dict of str -> ndarray
        Weights of the points of each of :data:`POINT_SETS`.
    points : dict of str -> ndarray
        The data nodes (fixed); the generated points and interpolates move with the
        generator, so they are recomputed per record and not stored.
    """

    config: RunConfig
    penalty: float
    tol: float
    runs: dict[str, CloudRun]
    weights: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    paths: dict[str, Path] = field(default_factory=dict)

    def coagulates(self, name: str) -> bool:
        """Whether run ``name`` ends as a single exact critic position."""
        return self.runs[name].t0 is not None

    def to_json(self) -> dict[str, Any]:
        """The summary written to ``coagulation_gp.json``."""
        runs = {k: r.summary(self.weights) for k, r in self.runs.items()}
        final = {}
        for k, r in self.runs.items():
            gm = runs[k]["grad_norm"]
            final[k] = {"n_distinct": int(r.series["n_distinct"][-1]),
                        "n_clusters": int(r.series["n_clusters"][-1]),
                        "spread": float(r.series["spread"][-1]),
                        "coagulates": self.coagulates(k),
                        **{f"grad_norm_{s}_median": gm[s]["median"][-1] for s in POINT_SETS}}
        c = self.runs["clip"]
        return {
            "times": c.times.tolist(),
            "steps": c.steps.tolist(),
            "penalty": self.penalty,
            "clip": c.clip,
            "tol": self.tol,
            "same_initial_particles": bool(
                np.array_equal(c.omega[0], self.runs["penalty"].omega[0])
                and np.array_equal(c.theta[0], self.runs["penalty"].theta[0])),
            "final": final,
            "runs": runs,
            "N": int(c.theta.shape[1]),
            "M": int(c.omega.shape[1]),
            "config": self.config.to_dict(),
        }


def penalised_config(config: RunConfig, penalty: float = DEFAULT_PENALTY) -> RunConfig:
    """``config`` with no box (``clip = inf``) and gradient penalty ``penalty`` (> 0)."""
    lam = positive(penalty, "penalty")
    doc = config.to_dict()
    doc["problem"].update(clip=math.inf, gradient_penalty=lam)
    base = Path(config.source).resolve().parent if config.source else Path(".")
    return RunConfig.from_dict(doc, base)


def _check(config: RunConfig) -> None:
    p = config.problem
    if config.reference is not None:
        raise ValueError("reference: the penalty comparison runs no reference scheme")
    if not math.isfinite(p.clip):
        raise ValueError("problem.clip: the comparison runs the configuration with its box and "
                         "then without; it needs a finite clip, got inf")
    if p.gradient_penalty != 0:
        raise ValueError(f"problem.gradient_penalty: the clipped run has no penalty; got "
                         f"{p.gradient_penalty}")
    if p.loss != "wasserstein":
        raise ValueError(f"problem.loss: the gradient penalty goes with 'wasserstein', got "
                         f"{p.loss!r}")


def _measure(problem: mfg.Problem, traj: mfg.Trajectory, tol: float,
             nodes: dict[str, tuple]) -> CloudRun:
    clip = problem.clip
    diags = [cloud_diagnostics(om, clip, tol) for om in traj.omega]
    series = {k: np.array([d[k] for d in diags]) for k in SERIES}
    times = np.asarray(traj.times, dtype=float)
    z, zw, x, _ = nodes["quadrature"]
    zp, xp, eps, _ = nodes["triples"]
    grad = {s: [] for s in POINT_SETS}
    means = []
    for th, om in zip(traj.theta, traj.omega):
        g = mfg.generator_output(th, z)
        means.append(zw @ g)
        xh = eps[:, None] * xp + (1.0 - eps[:, None]) * mfg.generator_output(th, zp)
        grad["data"].append(critic_gradient_norm(om, x))
        grad["generated"].append(critic_gradient_norm(om, g))
        grad["interpolates"].append(critic_gradient_norm(om, xh))
    return CloudRun(
        clip=clip, gradient_penalty=problem.gradient_penalty, times=times,
        steps=np.asarray(traj.steps), theta=traj.theta, omega=traj.omega, series=series,
        t0=first_time(times, series["n_distinct"] == 1),
        t0_tol=first_time(times, series["n_clusters"] == 1),
        grad_norm={k: np.array(v) for k, v in grad.items()}, generated_mean=np.array(means),
        observables={k: np.asarray(v) for k, v in traj.observables.items()})


def run_penalty_comparison(
    config: RunConfig,
    *,
    penalty: float = DEFAULT_PENALTY,
    tol: float | None = None,
    progress: bool | None = False,
) -> PenaltyComparison:
    """Run ``config`` with its box and as WGAN-GP (no box, penalty ``lambda``), and measure.

    Parameters
    ----------
    config : RunConfig
        A configuration with a box, the Wasserstein loss and no penalty (e.g.
        :func:`meanfield_gan.studies.coagulation.load_coagulation_config`).
    penalty : float
        ``lambda > 0`` of the penalised run.
    tol : float, optional
        Linking distance of ``n_clusters`` in both runs (default ``1e-6 * clip``).
    progress : bool or None
        Progress bars (``None``: only on a terminal).

    Returns
    -------
    PenaltyComparison
        Both runs start from the clipped run's initial particles (the same critic: no
        particle of a box's initial state is outside the box) and use the same scheme,
        record times and batch seed.

    Raises
    ------
    ValueError
        On a configuration without a box, with a penalty, another loss or a
        ``[reference]``; on ``penalty <= 0`` or ``tol < 0``.
    """
    if not isinstance(config, RunConfig):
        raise ValueError(f"config must be a RunConfig, got {type(config).__name__}")
    _check(config)
    lam = positive(penalty, "penalty")
    t = 1e-6 * config.problem.clip if tol is None else nonnegative(tol, "tol")
    gp_config = penalised_config(config, lam)
    problem_c, state, scheme = config.build()
    problem_p = gp_config.build()[0]
    rs = config.run
    record = rs.record if isinstance(rs.record, int) else list(rs.record)
    nodes = {"quadrature": problem_c.quadrature(), "triples": problem_p.penalty_triples()}
    runs = {}
    for name, problem in (("clip", problem_c), ("penalty", problem_p)):
        traj = mfg.simulate(problem, state, scheme, rs.t_end, record=record, seed=rs.seed,
                            backend=rs.backend, progress=want_progress(progress))
        runs[name] = _measure(problem, traj, t, nodes)
    _, zw, x, xw = nodes["quadrature"]
    weights = {"data": xw, "generated": zw, "interpolates": nodes["triples"][3]}
    return PenaltyComparison(config=config, penalty=lam, tol=t, runs=runs, weights=weights,
                             points={"data": x})


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def write_penalty_comparison(result: PenaltyComparison, outdir: str | os.PathLike
                             ) -> dict[str, Path]:
    """Write ``coagulation_gp.json``, ``coagulation_gp.h5`` and ``coagulation_gp.png``.

    Parameters
    ----------
    result : PenaltyComparison
    outdir : path
        Output folder (created if needed).

    Returns
    -------
    dict
        Paths under ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``coagulation_gp.h5`` (plain HDF5): one group per run (``clip``, ``penalty``) with
    ``times``, ``steps``, ``theta`` (T, N, K, L+2), ``omega`` (T, M, K+2),
    ``diagnostics/<name>`` (T,) for each of :data:`SERIES`, ``grad_norm/<set>`` (T, B) for
    each of :data:`POINT_SETS`, ``generated_mean`` (T, K) and ``observables/<name>`` (T,);
    the group attributes ``clip`` (``inf``: no box), ``gradient_penalty``, ``t0`` and
    ``t0_tol`` (NaN when never reached).
    Root: ``weights/<set>`` (B,), ``data_points`` (Bx, K), attributes ``penalty``, ``tol``,
    ``config_toml`` and ``creator``.
    """

    def fill(f):
        f.attrs["penalty"] = result.penalty
        f.attrs["tol"] = result.tol
        f.attrs["config_toml"] = result.config.to_toml()
        f.create_dataset("data_points", data=result.points["data"])
        w = f.create_group("weights")
        for s in POINT_SETS:
            w.create_dataset(s, data=result.weights[s])
        for name, run in result.runs.items():
            g = f.create_group(name)
            g.attrs["clip"] = run.clip
            g.attrs["gradient_penalty"] = run.gradient_penalty
            g.attrs["t0"] = np.nan if run.t0 is None else run.t0
            g.attrs["t0_tol"] = np.nan if run.t0_tol is None else run.t0_tol
            g.create_dataset("times", data=run.times)
            g.create_dataset("steps", data=run.steps)
            for arr_name in ("theta", "omega"):
                arr = getattr(run, arr_name)
                g.create_dataset(arr_name, data=arr, chunks=(1,) + arr.shape[1:],
                                 compression="gzip", compression_opts=4, shuffle=True)
            g.create_dataset("generated_mean", data=run.generated_mean)
            for grp, data in (("diagnostics", run.series), ("grad_norm", run.grad_norm),
                              ("observables", run.observables)):
                sub = g.create_group(grp)
                for k, v in data.items():
                    sub.create_dataset(k, data=v)

    paths = write_study_outputs(outdir, "coagulation_gp", "meanfield_gan.studies.coagulation_gp",
                                result.to_json(), fill,
                                lambda png: plot_penalty_comparison(result, png))
    result.paths = paths
    return paths


def _cloud(ax, run: CloudRun, title: str, box: float) -> None:
    """Initial (grey) and final critic particles on (alpha, beta_1), colour gamma; the box
    solid for the clipped run, dotted (the other run's) for the penalised one."""
    from matplotlib.patches import Rectangle

    ax.scatter(run.omega[0][:, 0], run.omega[0][:, 1], s=4, color="0.75", edgecolors="none")
    # coincident particles drawn once, with an area growing with their number
    pts, counts = np.unique(run.omega[-1] + 0.0, axis=0, return_counts=True)
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=pts[:, -1], s=8.0 * np.sqrt(counts), cmap="viridis",
                    edgecolors="none", alpha=0.85)
    ax.add_patch(Rectangle((-box, -box), 2 * box, 2 * box, fill=False, lw=0.8, color="k",
                           ls="-" if math.isfinite(run.clip) else ":"))
    nd = int(run.series["n_distinct"][-1])
    ax.set_title(f"{title}\n{nd} distinct position{'s' if nd != 1 else ''} at t = "
                 f"{run.times[-1]:.3g} (colour); grey: t = 0", fontsize=8.5)
    ax.set_xlabel("alpha", fontsize=8)
    ax.set_ylabel("beta" if run.omega.shape[2] == 3 else "beta_1", fontsize=8)
    ax.tick_params(labelsize=7)
    cb = ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label("gamma", fontsize=7)
    cb.ax.tick_params(labelsize=6)


def plot_penalty_comparison(result: PenaltyComparison, path: str | os.PathLike) -> Path:
    """The two critics side by side, their coagulation diagnostics and ``|grad f|`` over time.

    Parameters
    ----------
    result : PenaltyComparison
    path : path
        PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c, p = result.runs["clip"], result.runs["penalty"]
    M = c.omega.shape[1]
    box = c.clip
    style = {"clip": dict(color="C0", ls="-"), "penalty": dict(color="C3", ls="--")}
    label = {"clip": f"clip = {box:g} (box)", "penalty": f"no box, lambda = {result.penalty:g}"}
    fig = Figure(figsize=(14.0, 8.2), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 3, wspace=0.33, hspace=0.42)

    _cloud(fig.add_subplot(gs[0, 0]), c, f"critic with the box, {label['clip']}", box)
    _cloud(fig.add_subplot(gs[0, 1]), p,
           f"critic with the penalty, {label['penalty']}\n(dotted: the other run's box)", box)

    ax = fig.add_subplot(gs[0, 2])
    for name, run in result.runs.items():
        ax.plot(run.times, run.series["n_distinct"] / M, label=f"{label[name]}: distinct / M",
                **style[name])
        ax.plot(run.times, run.series["n_clusters"] / M, label=f"{label[name]}: clusters / M",
                color=style[name]["color"], ls=":", lw=2.0)
        if run.t0 is not None:
            ax.axvline(run.t0, color=style[name]["color"], lw=0.8, ls="-.")
            ax.text(run.t0, 0.5, f" t0 = {run.t0:.3g}", fontsize=7.5, color=style[name]["color"])
    ax.set_ylim(-0.03, 1.1)
    ax.set_xlabel("time t", fontsize=8)
    ax.set_title(f"distinct critic positions and clusters (tol = {result.tol:.2g}), M = {M}",
                 fontsize=8.5)
    ax.legend(fontsize=6.5, loc="center right")
    ax.tick_params(labelsize=7)

    ax = fig.add_subplot(gs[1, 0])
    for name, run in result.runs.items():
        ax.plot(run.times, run.series["spread"], label=label[name], **style[name])
    ax.set_xlabel("time t", fontsize=8)
    ax.set_title("spread of the critic cloud, sqrt(mean |omega_j - mean|^2)", fontsize=8.5)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)

    ax = fig.add_subplot(gs[1, 1])
    set_style = {"generated": "o", "interpolates": "s", "data": "^"}
    summ = {k: r.summary(result.weights)["grad_norm"] for k, r in result.runs.items()}
    for name, run in result.runs.items():
        for s in POINT_SETS:
            q = summ[name][s]
            ax.plot(run.times, q["median"], color=style[name]["color"], ls=style[name]["ls"],
                    marker=set_style[s], ms=3, markevery=max(1, len(run.times) // 10),
                    label=f"{name}: {s}")
            if s == "generated":
                ax.fill_between(run.times, q["q10"], q["q90"], color=style[name]["color"],
                                alpha=0.15, lw=0)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.text(run.times[0], 1.02, "penalty's target |grad f| = 1", fontsize=7, va="bottom")
    ax.set_xlabel("time t", fontsize=8)
    ax.set_title("|grad f|: median at data, generated points, interpolates\n"
                 "(band: 10-90% over generated points)", fontsize=8.5)
    ax.legend(fontsize=6.3, ncol=2, loc="center right")
    ax.tick_params(labelsize=7)

    ax = fig.add_subplot(gs[1, 2])
    hi = max(float(r.grad_norm[s][-1].max()) for r in result.runs.values() for s in POINT_SETS)
    bins = np.linspace(0.0, 1.05 * max(hi, 1.0), 60)
    for name, run in result.runs.items():
        for s, alpha in (("generated", 0.45), ("interpolates", 0.25)):
            ax.hist(run.grad_norm[s][-1], bins=bins, weights=result.weights[s],
                    color=style[name]["color"], alpha=alpha, label=f"{name}: {s}",
                    hatch=None if s == "generated" else "//")
        for v in run.grad_norm["data"][-1]:
            ax.axvline(v, color=style[name]["color"], lw=1.0, ls=style[name]["ls"])
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel(f"|grad f| at t = {c.times[-1]:.3g} (vertical lines: at the data nodes)",
                  fontsize=8)
    ax.set_ylabel("weight", fontsize=8)
    ax.set_title("distribution of |grad f| at the last record", fontsize=8.5)
    ax.legend(fontsize=6.5)
    ax.tick_params(labelsize=7)
    fig.suptitle("the same critic, target and scheme with weight clipping (solid) and with the "
                 "gradient penalty and no box (dashed)", fontsize=10, y=0.995)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)
