"""Mode collapse and mode hopping of the mean-field WGAN on a bimodal Gaussian target.

A one-dimensional target ``P_* = (1/2) N(-1, 0.2^2) + (1/2) N(1, 0.2^2)`` (``K = 1``), a
standard normal latent (``L = 1``), ``N`` generator and ``M`` critic neurons, critic weights
clipped to ``Q = [-1, 1]^3``. The run follows the generated law ``g_mu # N(0, 1)`` over time
through a fixed set of latent samples: its histogram, the mass it puts near each target mode,
its 1-D ``W_1`` distance to the target (:func:`meanfield_gan.metrics.w1_1d`), and writes an
animation of the particles and the generated density (GIF, matplotlib's Pillow writer).

What the dynamics do (measured with the defaults of :func:`simulate_mode_collapse`: projected
Euler, ``dt = 0.05``, ``gamma_c = 1``, ``N = M = 64``, ``t_end = 200``): the generator starts as
a narrow bump near ``+0.6`` (``theta`` coordinates i.i.d. ``N(1, 1)``; with mean-zero
coordinates the generated law would be a near-Dirac at 0, the mean-field average of
``a s(b z + c)`` being ``E[a] E[s] = 0``). It never spreads over both modes: it stays one narrow
bump (standard deviation at most 0.12, below a mode's 0.2) that swings between ``-0.7`` and
``+0.7``, onto the inner flank of one mode and then of the other, about every 31 time units
(period ~62). With "near a mode" meaning within 0.5 of it, 93% of the generated mass is near
``-1`` at ``t = 32`` and 77% near ``+1`` at ``t = 126``; 35% of the records are collapsed onto
one mode (5 switches of mode up to ``t = 200``), no record ever has a quarter of the mass near
each mode, and ``W_1`` to the target stays between 0.90 and 1.0 (a Dirac at a mode is at 1.08).
SGD (the WGAN algorithm, ``lr = 1``, batch 8) hops the same way, and so does a larger box
(``clip = 3``), where the bump swings further, past the modes. The same study under other
objectives (no box, gradient penalty) is :mod:`meanfield_gan.studies.collapse_objectives`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import meanfield_gan as mfg
from meanfield_gan._util import check_outdir, want_progress, write_study_outputs
from meanfield_gan._validation import clip_value, finite_array, positive, positive_int

__all__ = [
    "ModeCollapseResult",
    "mode_collapse_problem",
    "simulate_mode_collapse",
    "run_mode_collapse",
    "write_mode_collapse",
    "plot_mode_collapse",
    "plot_frame",
    "animate_mode_collapse",
]


def mode_collapse_problem(
    modes: Sequence[float] = (-1.0, 1.0),
    scale: float = 0.2,
    *,
    clip: float = 1.0,
    generator_loc: float = 1.0,
    generator_scale: float = 1.0,
    critic_scale: float | None = None,
    quadrature_size: int = 32,
    loss: str = "wasserstein",
    gradient_penalty: float = 0.0,
) -> mfg.Problem:
    """The 1-D problem: equal-weight Gaussian modes, standard normal latent (``K = L = 1``).

    Parameters
    ----------
    modes : sequence of float
        Means of the target's components (at least two, distinct).
    scale : float
        Standard deviation of each component, > 0.
    clip : float
        Half-width of the critic's box ``Q`` (``math.inf``: no box).
    generator_loc, generator_scale : float
        Every generator coordinate ``(a, b, c)`` starts i.i.d. ``N(loc, scale^2)``. A non-zero
        ``loc`` gives a non-degenerate generated law (see the module docstring).
    critic_scale : float, optional
        Critic coordinates start uniform on ``[-critic_scale, critic_scale]`` (default
        ``clip / 2``; ``1/2`` without a box).
    quadrature_size : int
        Quadrature nodes of the latent and of the target (projected Euler/Heun, ``psi``).
    loss, gradient_penalty
        The objective of MODEL.md 7 and the penalty's ``lambda`` (``wasserstein`` only).

    Returns
    -------
    Problem
    """
    m = np.asarray(modes, dtype=np.float64).ravel()
    if m.size < 2 or not np.all(np.isfinite(m)) or np.unique(m).size != m.size:
        raise ValueError(f"modes: need at least two distinct finite mode positions, got {modes!r}")
    s = positive(scale, "scale")
    c = clip_value(clip)
    if critic_scale is None:
        cs = c / 2 if math.isfinite(c) else 0.5
    else:
        cs = positive(critic_scale, "critic_scale")
    loc = float(finite_array(generator_loc, "generator_loc", 0))
    gs = positive(generator_scale, "generator_scale")
    return mfg.Problem(K=1, L=1, target=mfg.GaussianMixture(m[:, None], s), clip=c,
                       generator_init=mfg.NormalInit(loc, gs),
                       critic_init=mfg.UniformInit(-min(cs, c), min(cs, c)),
                       quadrature_size=positive_int(quadrature_size, "quadrature_size"),
                       loss=loss, gradient_penalty=gradient_penalty)


@dataclass
class ModeCollapseResult:
    """A mode-collapse run and what was measured along it.

    Attributes
    ----------
    settings : dict
        The run's parameters (JSON-ready).
    modes : ndarray, shape (C,)
    scale, radius : float
        Component standard deviation; "near a mode" means within ``radius`` of it.
    times : ndarray, shape (T,)
    theta : ndarray, shape (T, N, 1, 3)
    omega : ndarray, shape (T, M, 3)
    psi : ndarray, shape (T,)
    samples : ndarray, shape (T, n_samples)
        ``g(Z_s)`` for a fixed set of latent samples ``Z_s`` (the generated law at each record).
    mass_near : ndarray, shape (T, C)
        Fraction of the generated samples within ``radius`` of each mode.
    nearest_fraction : ndarray, shape (T, C)
        Fraction of the generated samples nearer to each mode than to the others (the target
        has ``1/C`` for each).
    w1 : ndarray, shape (T,)
        1-D ``W_1`` between the generated samples and the target (its quadrature).
    summary : dict
        Scalar findings (see :func:`simulate_mode_collapse`).
    """

    settings: dict[str, Any]
    modes: np.ndarray
    scale: float
    radius: float
    times: np.ndarray
    theta: np.ndarray
    omega: np.ndarray
    psi: np.ndarray
    samples: np.ndarray
    mass_near: np.ndarray
    nearest_fraction: np.ndarray
    w1: np.ndarray
    summary: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def clip(self) -> float:
        return float(self.settings["clip"])

    def target_pdf(self, x: np.ndarray) -> np.ndarray:
        """Density of the target at ``x``."""
        z = (np.asarray(x)[..., None] - self.modes) / self.scale
        return np.mean(np.exp(-0.5 * z * z), axis=-1) / (self.scale * math.sqrt(2 * math.pi))

    def x_range(self) -> tuple[float, float]:
        """Plot range covering the modes (+-4 scales) and every generated sample."""
        lo = min(float(self.modes.min()) - 4 * self.scale, float(self.samples.min()))
        hi = max(float(self.modes.max()) + 4 * self.scale, float(self.samples.max()))
        pad = 0.05 * (hi - lo)
        return lo - pad, hi + pad

    def densities(self, bins: int = 120) -> tuple[np.ndarray, np.ndarray]:
        """Histogram densities of the generated law at each record.

        Returns ``(edges, dens)``, of shapes ``(bins + 1,)`` and ``(T, bins)``.
        """
        edges = np.linspace(*self.x_range(), bins + 1)
        dens = np.stack([np.histogram(s, bins=edges, density=True)[0] for s in self.samples])
        return edges, dens

    def to_json(self) -> dict[str, Any]:
        """The summary written to ``mode_collapse.json``."""
        return {
            **self.summary,
            "times": self.times.tolist(),
            "mass_near": self.mass_near.tolist(),
            "nearest_fraction": self.nearest_fraction.tolist(),
            "w1": self.w1.tolist(),
            "generated_mean": self.samples.mean(axis=1).tolist(),
            "generated_std": self.samples.std(axis=1).tolist(),
            "psi": self.psi.tolist(),
            "settings": self.settings,
        }


def _summarise(times: np.ndarray, mass: np.ndarray, sides: np.ndarray, w1: np.ndarray,
               samples: np.ndarray, target_mass: np.ndarray, w1_dirac: np.ndarray,
               scale: float) -> dict[str, Any]:
    C = mass.shape[1]
    top = mass.argmax(axis=1)
    top_mass = mass.max(axis=1)
    others = mass.sum(axis=1) - top_mass
    # Collapsed: at least half the generated mass near one mode, almost none near the others.
    collapsed = (top_mass >= 0.5) & (others < 0.05)
    covered = np.all(mass >= 0.25, axis=1)
    seq = top[collapsed]
    switches = int(np.count_nonzero(seq[1:] != seq[:-1])) if seq.size else 0
    first = [None] * C
    for c in range(C):
        hit = np.flatnonzero(collapsed & (top == c))
        first[c] = float(times[hit[0]]) if hit.size else None
    return {
        "collapsed_fraction": float(collapsed.mean()),
        "covered_fraction": float(covered.mean()),
        "mode_switches": switches,
        "modes_visited": int(np.unique(seq).size),
        "collapsed_records_per_mode": [
            int(np.count_nonzero(collapsed & (top == c))) for c in range(C)
        ],
        "first_collapse_time_per_mode": first,
        "max_mass_near_per_mode": mass.max(axis=0).tolist(),
        "target_mass_near": target_mass.tolist(),
        "w1_min": float(w1.min()),
        "w1_final": float(w1[-1]),
        "w1_dirac_at_mode": w1_dirac.tolist(),
        # The target puts 1/2 on each side; a generator that never covers two modes keeps
        # this near 0 (it is the largest mass ever seen away from the dominant mode).
        "max_minority_fraction": float((1.0 - sides.max(axis=1)).max()),
        "max_generated_std": float(samples.std(axis=1).max()),
        "mode_scale": scale,
        "collapsed": collapsed.tolist(),
    }


def simulate_mode_collapse(
    *,
    modes: Sequence[float] = (-1.0, 1.0),
    scale: float = 0.2,
    N: int = 64,
    M: int = 64,
    scheme: mfg.SGD | mfg.ProjectedEuler | mfg.ProjectedHeun | None = None,
    t_end: float = 200.0,
    record: int = 100,
    seed: int = 0,
    clip: float = 1.0,
    generator_loc: float = 1.0,
    generator_scale: float = 1.0,
    quadrature_size: int = 32,
    n_samples: int = 4000,
    radius: float | None = None,
    backend: str = "numba",
    progress: bool | None = False,
    loss: str = "wasserstein",
    gradient_penalty: float = 0.0,
    critic_scale: float | None = None,
) -> ModeCollapseResult:
    """Run the WGAN dynamics on the bimodal target and measure the generated law over time.

    Parameters
    ----------
    modes, scale, clip, generator_loc, generator_scale, quadrature_size, loss, gradient_penalty
        The problem (:func:`mode_collapse_problem`).
    critic_scale : float, optional
        Critic coordinates start uniform on ``[-critic_scale, critic_scale]`` (see
        :func:`mode_collapse_problem`).
    N, M : int
        Generator and critic particles.
    scheme : SGD, ProjectedEuler or ProjectedHeun, optional
        Default ``ProjectedEuler(0.05, critic_scale=1.0)`` (the WGAN-PDE, gamma_c = 1).
    t_end : float
        Final time (the default covers three mode-to-mode swings).
    record : int
        Number of intervals between records (``record + 1`` frames).
    seed : int
        Seed of the initial particles, of the SGD batches and of the latent samples.
    n_samples : int
        Latent samples ``Z_s`` through which the generated law is observed.
    radius : float, optional
        "Near a mode" means within ``radius``; default a quarter of the smallest gap between
        modes (0.5 for modes at +-1: 2.5 component scales).
    backend : {"numpy", "numba", "cuda"}
    progress : bool or None
        Progress bar (``None``: only on a terminal).

    Returns
    -------
    ModeCollapseResult
        ``summary`` holds ``collapsed_fraction`` (records with >= 1/2 of the generated mass near
        one mode and < 5% near the others), ``covered_fraction`` (records with >= 1/4 of the
        mass near every mode), ``mode_switches`` (changes of the dominant mode between
        collapsed records), ``modes_visited``, ``max_minority_fraction`` (the largest
        generated mass ever nearer to a mode other than the dominant one; 1/2 for the target),
        ``w1_min``, ``w1_final``,
        ``w1_dirac_at_mode`` (W1 of a Dirac at each mode, the value of a full collapse),
        ``max_generated_std`` and the target's own ``target_mass_near``.
    """
    # Every argument is checked before the run starts.
    problem = mode_collapse_problem(modes, scale, clip=clip, generator_loc=generator_loc,
                                    generator_scale=generator_scale, critic_scale=critic_scale,
                                    quadrature_size=quadrature_size, loss=loss,
                                    gradient_penalty=gradient_penalty)
    m = problem.target.means[:, 0]
    s = float(problem.target.scales[0, 0])
    gap = float(np.min(np.diff(np.sort(m))))
    r = 0.25 * gap if radius is None else positive(radius, "radius")
    scheme = mfg.ProjectedEuler(0.05, critic_scale=1.0) if scheme is None else scheme
    n_s = positive_int(n_samples, "n_samples")
    if n_s < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    record = positive_int(record, "record")
    t_end = positive(t_end, "t_end")
    state = mfg.initial_state(problem, positive_int(N, "N"), positive_int(M, "M"), seed=seed)
    traj = mfg.simulate(problem, state, scheme, t_end, record=record, seed=seed, backend=backend,
                        progress=want_progress(progress))
    # One fixed set of latent samples: the records differ only by the generator.
    z = problem.latent.sample(np.random.default_rng(np.random.SeedSequence([seed, 1])), n_s)
    samples = np.stack([mfg.generator_output(th, z)[:, 0] for th in traj.theta])
    mass = np.stack([[np.mean(np.abs(g - mc) < r) for mc in m] for g in samples])
    nearest = np.abs(samples[:, :, None] - m).argmin(axis=2)
    sides = np.stack([np.mean(nearest == c, axis=1) for c in range(m.size)], axis=1)
    xq, xw = problem.target.quadrature(256)  # Gauss-Hermite: 128 nodes per mode
    w1 = np.array([mfg.metrics.w1_1d(g, xq[:, 0], None, xw) for g in samples])
    target_mass = np.array([float(xw @ (np.abs(xq[:, 0] - mc) < r)) for mc in m])
    w1_dirac = np.array([mfg.metrics.w1_1d(np.array([mc]), xq[:, 0], None, xw) for mc in m])
    settings = {
        "modes": m.tolist(), "scale": s, "N": int(N), "M": int(M), "clip": problem.clip,
        "generator_loc": float(generator_loc), "generator_scale": float(generator_scale),
        "scheme": type(scheme).__name__, "scheme_params": {k: v for k, v in vars(scheme).items()},
        "dt": scheme.dt(int(N)), "gamma_c": scheme.gamma_c(int(N), int(M)), "t_end": t_end,
        "record": record, "seed": int(seed), "quadrature_size": int(quadrature_size),
        "n_samples": n_s, "radius": r, "backend": backend, "loss": problem.loss,
        "gradient_penalty": problem.gradient_penalty,
    }
    return ModeCollapseResult(
        settings=settings, modes=m, scale=s, radius=r, times=np.asarray(traj.times),
        theta=traj.theta, omega=traj.omega, psi=np.asarray(traj.observables["psi"]),
        samples=samples, mass_near=mass, nearest_fraction=sides, w1=w1,
        summary=_summarise(np.asarray(traj.times), mass, sides, w1, samples, target_mass,
                           w1_dirac, s))


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _figure(figsize: tuple[float, float], dpi: int, **gridspec: Any):
    """A figure with one row of three axes on an Agg canvas.

    Not pyplot: no global backend switch (a notebook's inline plots keep working) and no
    figure left registered with pyplot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, 3, gridspec_kw=gridspec)


def _draw_frame(
    axes, result: ModeCollapseResult, k: int, edges: np.ndarray, dens: np.ndarray
) -> None:
    """Draw record ``k`` on three axes: generator particles, critic particles, densities."""
    ax_g, ax_c, ax_d = axes
    for ax in axes:
        ax.clear()
    th, om, c = result.theta[k][:, 0, :], result.omega[k], result.clip
    box = math.isfinite(c)
    if not box:  # no box: frame the critic by its largest coordinate over the run
        c = max(1.0, float(np.abs(result.omega[:, :, 1:]).max()))
    glim = max(3.0, float(np.abs(result.theta[:, :, 0, 1:]).max()) * 1.05)
    ax_g.scatter(th[:, 1], th[:, 2], c=th[:, 0], cmap="coolwarm", vmin=-3, vmax=3, s=10,
                 edgecolors="none")
    ax_g.set_xlim(-glim, glim)
    ax_g.set_ylim(-glim, glim)
    ax_g.set_xlabel("slope b", fontsize=8)
    ax_g.set_ylabel("bias c", fontsize=8)
    ax_g.set_title("generator neurons a s(b z + c)\n(colour: a)", fontsize=8)
    from matplotlib.patches import Rectangle

    if box:
        ax_c.add_patch(Rectangle((-c, -c), 2 * c, 2 * c, fill=False, color="k", lw=0.8))
    ax_c.scatter(om[:, 1], om[:, 2], c=om[:, 0], cmap="coolwarm", vmin=-c, vmax=c, s=10,
                 edgecolors="none")
    ax_c.set_xlim(-1.15 * c, 1.15 * c)
    ax_c.set_ylim(-1.15 * c, 1.15 * c)
    ax_c.set_xlabel("beta", fontsize=8)
    ax_c.set_ylabel("gamma", fontsize=8)
    ax_c.set_title("critic neurons alpha s(beta x + gamma)\n(colour: alpha; box Q)", fontsize=8)
    x = 0.5 * (edges[1:] + edges[:-1])
    ax_d.fill_between(x, dens[k], step="mid", color="C0", alpha=0.5, label="generated g(Z)")
    ax_d.plot(x, result.target_pdf(x), color="k", lw=1.0, label="target P*")
    ymax = max(float(result.target_pdf(x).max()) * 1.3,
               float(np.quantile(dens.max(axis=1), 0.9)) * 1.05)
    for mc in result.modes:
        ax_d.axvspan(mc - result.radius, mc + result.radius, color="0.9", zorder=0)
    f = mfg.critic_output(om, x[:, None])
    span = max(float(np.ptp(f)), 1e-12)
    ax_d.plot(x, (f - f.min()) / span * 0.9 * ymax, color="C3", lw=0.9, ls="--",
              label="critic f (rescaled)")
    ax_d.set_xlim(edges[0], edges[-1])
    ax_d.set_ylim(0, ymax)
    mass = ", ".join(f"{v:.2f}" for v in result.mass_near[k])
    ax_d.set_title(f"t = {result.times[k]:.4g}: mass near modes [{mass}], W1 = {result.w1[k]:.3f}",
                   fontsize=8)
    ax_d.set_xlabel("x", fontsize=8)
    ax_d.legend(fontsize=6.5, loc="upper right")
    for ax in axes:
        ax.tick_params(labelsize=7)


def plot_frame(
    result: ModeCollapseResult, k: int, path: str | os.PathLike, bins: int = 120
) -> Path:
    """One animation frame (record ``k``) as a PNG: particles and the generated density.

    Parameters
    ----------
    result : ModeCollapseResult
    k : int
        Record index (negative counts from the end).
    path : path
        PNG file to write.
    bins : int
        Histogram bins of the generated density.

    Returns
    -------
    Path
    """
    T = len(result.times)
    if not -T <= int(k) < T:
        raise ValueError(f"k: record index out of range [-{T}, {T - 1}], got {k!r}")
    edges, dens = result.densities(bins)
    fig, axes = _figure((11.5, 3.2), 100, width_ratios=[1, 1, 1.9], wspace=0.35)
    _draw_frame(axes, result, int(k) % T, edges, dens)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


def animate_mode_collapse(result: ModeCollapseResult, path: str | os.PathLike, fps: int = 10,
                          bins: int = 120, dpi: int = 70, every: int = 1) -> Path:
    """Animate the records (particles and generated density) into a GIF (Pillow writer).

    Parameters
    ----------
    result : ModeCollapseResult
    path : path
        GIF file to write.
    fps : int
        Frames per second.
    bins : int
        Histogram bins of the generated density.
    dpi : int
        Resolution of the frames.
    every : int
        Use every ``every``-th record (the last record is always included).

    Returns
    -------
    Path
    """
    from matplotlib.animation import PillowWriter

    step = positive_int(every, "every")
    frames = list(range(0, len(result.times), step))
    if frames[-1] != len(result.times) - 1:
        frames.append(len(result.times) - 1)

    edges, dens = result.densities(bins)
    fig, axes = _figure((11.5, 3.4), dpi, width_ratios=[1, 1, 1.9], wspace=0.35)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.16, top=0.82)
    writer = PillowWriter(fps=positive_int(fps, "fps"))
    with writer.saving(fig, str(path), dpi):
        for k in frames:
            _draw_frame(axes, result, k, edges, dens)
            writer.grab_frame()
    return Path(path)


def plot_mode_collapse(
    result: ModeCollapseResult, path: str | os.PathLike, bins: int = 120
) -> Path:
    """The summary figure: the generated density at two collapsed times (one per mode, when
    the run visits two), the generated density over time, and the mass near each mode and
    ``W_1`` over time.

    Parameters
    ----------
    result : ModeCollapseResult
    path : path
        PNG file to write.
    bins : int
        Histogram bins.

    Returns
    -------
    Path
    """
    edges, dens = result.densities(bins)
    x = 0.5 * (edges[1:] + edges[:-1])
    t = result.times
    fig, axes = _figure((13.5, 3.4), 100, width_ratios=[1.1, 1.5, 1.3], wspace=0.3)
    # (a) still frames: for each mode, the record where the generated mass near it peaks.
    ax = axes[0]
    ax.plot(x, result.target_pdf(x), color="k", lw=1.2, label="target P*")
    top = float(result.target_pdf(x).max())
    for c, mc in enumerate(result.modes):
        k = int(np.argmax(result.mass_near[:, c]))
        if result.mass_near[k, c] <= 0:
            continue
        top = max(top, float(dens[k].max()))
        ax.fill_between(x, dens[k], step="mid", alpha=0.45, color=f"C{c}",
                        label=f"generated, t = {t[k]:.3g} "
                              f"({result.mass_near[k, c]:.0%} near {mc:g})")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, 1.15 * top)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title("generated law at two times", fontsize=9)
    ax.legend(fontsize=6.5, loc="upper left")
    # (b) density over time.
    ax = axes[1]
    dt = t[1] - t[0] if len(t) > 1 else 1.0
    ax.imshow(dens.T, origin="lower", aspect="auto", cmap="magma_r",
              extent=(t[0] - dt / 2, t[-1] + dt / 2, edges[0], edges[-1]),
              vmax=float(np.quantile(dens, 0.995)) or None)
    for mc in result.modes:
        ax.axhline(mc, color="C2", lw=0.8, ls="--")
    ax.set_xlabel("time t")
    ax.set_ylabel("x")
    ax.set_title("generated density over time (dashed: target modes)", fontsize=9)
    # (c) mass near each mode and W1.
    ax = axes[2]
    for c, mc in enumerate(result.modes):
        ax.plot(t, result.mass_near[:, c], color=f"C{c}",
                label=f"mass within {result.radius:g} of {mc:g}")
    ax.axhline(float(np.mean(result.summary["target_mass_near"])), color="0.5", lw=0.8, ls=":",
               label="target's mass per mode")
    ax.plot(t, result.w1, color="k", lw=1.0, label="W1(generated, target)")
    ax.set_ylim(-0.02, max(1.05, float(result.w1.max()) * 1.05))
    ax.set_xlabel("time t")
    s = result.summary
    ax.set_title(f"collapsed {s['collapsed_fraction']:.0%} of the time, "
                 f"{s['mode_switches']} mode switches", fontsize=9)
    ax.legend(fontsize=6.5, loc="center right")
    for a in axes:
        a.tick_params(labelsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def write_mode_collapse(result: ModeCollapseResult, outdir: str | os.PathLike, *, gif: bool = True,
                        fps: int = 10) -> dict[str, Path]:
    """Write ``mode_collapse.json``, ``.h5``, ``.png`` (summary figure) and ``.gif`` (animation).

    Parameters
    ----------
    result : ModeCollapseResult
    outdir : path
        Output folder (created if needed).
    gif : bool
        Also write the animation (a few seconds per hundred frames).
    fps : int
        Frames per second of the animation.

    Returns
    -------
    dict
        Paths under ``"json"``, ``"h5"``, ``"png"`` and, with ``gif``, ``"gif"``.

    Notes
    -----
    ``mode_collapse.h5`` (plain HDF5): ``times`` (T,), ``theta`` (T, N, 1, 3), ``omega``
    (T, M, 3), ``psi``, ``samples`` (T, n_samples: ``g(Z_s)``), ``mass_near`` (T, C), ``w1``
    (T,), ``modes`` (C,); attributes ``scale``, ``radius``, ``clip``.
    """

    def fill(f):
        for k in ("scale", "radius", "clip"):
            f.attrs[k] = getattr(result, k)
        for k in ("times", "theta", "omega", "psi", "samples", "mass_near", "nearest_fraction",
                  "w1", "modes"):
            big = k in ("theta", "omega", "samples")
            f.create_dataset(k, data=getattr(result, k), compression="gzip" if big else None)

    paths = write_study_outputs(outdir, "mode_collapse", "meanfield_gan.studies.modecollapse",
                                result.to_json(), fill,
                                lambda png: plot_mode_collapse(result, png))
    if gif:
        paths["gif"] = animate_mode_collapse(result, paths["png"].with_suffix(".gif"), fps=fps)
    result.paths = paths
    return paths


def run_mode_collapse(outdir: str | os.PathLike | None = None, *, gif: bool = True, fps: int = 10,
                      **kwargs: Any) -> ModeCollapseResult:
    """Run :func:`simulate_mode_collapse` and, with ``outdir``, write its outputs.

    Parameters
    ----------
    outdir : path, optional
        Where to write ``mode_collapse.{json,h5,png,gif}`` (:func:`write_mode_collapse`);
        nothing is written when ``None``.
    gif, fps
        Passed to :func:`write_mode_collapse`.
    **kwargs
        Passed to :func:`simulate_mode_collapse` (``modes``, ``scale``, ``N``, ``M``,
        ``scheme``, ``t_end``, ``record``, ``seed``, ``clip``, ...).

    Returns
    -------
    ModeCollapseResult
        With ``paths`` filled when ``outdir`` was given.
    """
    if outdir is not None:
        check_outdir(outdir, "outdir")
    result = simulate_mode_collapse(**kwargs)
    if outdir is not None:
        write_mode_collapse(result, outdir, gif=gif, fps=fps)
    return result
