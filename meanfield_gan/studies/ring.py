"""The 8-Gaussian ring of Gulrajani et al. under three GAN objectives (MODEL.md section 7).

Target: the toy data set of Gulrajani et al. (2017), ``gen_8gaussians`` of their code: eight
equal Gaussian modes centred at ``2 (cos, sin)(k pi/4) / 1.414`` (radius 1.41443) with standard
deviation ``0.02 / 1.414 = 0.0141443`` (``K = 2``), a standard normal latent (``L = 2``), the
one-hidden-layer sigmoid generator and critic of the package.  The configuration
(``meanfield_gan/data/ring.toml`` by default) is run once per case, from the same initial
particles, with the same scheme, batches and step budget; only the objective changes:

* ``wasserstein_clip``: the WGAN, critic clipped to ``[-clip, clip]^{K+2}`` (``clip = 1``);
* ``wasserstein_gp``: WGAN-GP, no box, gradient penalty ``lambda`` (10);
* ``non_saturating``: the "-log D" GAN, no box.

At every record a fixed set of latent samples is pushed through the generator, and the
generated samples are scored against the target's modes (:func:`mode_coverage`): the fraction
within ``3`` standard deviations of a mode ("near a mode": the high-quality samples of
VEEGAN/PacGAN's 2-D benchmarks), the number of modes holding at least ``min_fraction`` of the
samples within that radius ("covered"), and the same at a loose radius, a quarter of the
distance between the two closest modes, which shows mass that is close to a mode without being
on it.

This is ``meanfield-gan ring [CONFIG.toml] -o OUTDIR`` (``ring.json``, ``ring.h5``,
``ring.png``).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import meanfield_gan as mfg
from meanfield_gan._util import check_outdir, want_progress, write_study_outputs
from meanfield_gan._validation import finite_array, nonnegative, positive, positive_int
from meanfield_gan.io.config import BACKENDS, RunConfig, read_config_document
from meanfield_gan.studies.coagulation_gp import critic_gradient_norm

__all__ = [
    "DEFAULT_CONFIG",
    "CASES",
    "gulrajani_ring",
    "mode_coverage",
    "load_ring_config",
    "case_config",
    "RingCase",
    "RingResult",
    "run_ring",
    "write_ring",
    "plot_ring",
    "configure_parser",
    "cli_main",
]

#: The configuration ``meanfield-gan ring`` runs when none is given.
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "data" / "ring.toml"
#: The objectives compared, in order.
CASES = ("wasserstein_clip", "wasserstein_gp", "non_saturating")
#: "Near a mode": within this many of the mode's standard deviations.
N_SD = 3.0
#: Where ``|grad f|`` is measured at every record (the penalty's target is 1).
GRAD_SETS = ("data", "generated", "interpolates")
#: Its quantiles, as the columns of ``RingCase.grad_norm[set]``.
GRAD_QUANTILES = (0.1, 0.5, 0.9)


def gulrajani_ring(n_modes: int = 8, scale: float = 2.0, sd: float = 0.02,
                   divisor: float = 1.414) -> tuple[np.ndarray, float]:
    """Centres and standard deviation of Gulrajani et al.'s ring (their ``gen_8gaussians``).

    Their code draws ``scale (cos, sin)(2 pi k / n_modes) + N(0, sd^2 I)`` and divides the
    result by ``divisor``.

    Returns
    -------
    centres : ndarray, shape (n_modes, 2)
    sd : float
        The standard deviation of each mode after the division.
    """
    n = positive_int(n_modes, "n_modes")
    a = 2.0 * math.pi * np.arange(n) / n
    r = positive(scale, "scale") / positive(divisor, "divisor")
    return r * np.stack([np.cos(a), np.sin(a)], axis=1), positive(sd, "sd") / divisor


def mode_coverage(samples: Any, centers: Any, radius: Any, min_fraction: float = 0.01
                  ) -> dict[str, Any]:
    """How generated samples sit on the modes of a mixture.

    Parameters
    ----------
    samples : array_like, shape (n, K)
        Generated samples.
    centers : array_like, shape (C, K)
        The modes' centres.
    radius : float or array_like (C,)
        A sample is near mode ``c`` when within ``radius[c]`` of its centre (Euclidean).
    min_fraction : float
        Mode ``c`` is covered when at least this fraction of the samples is near it.

    Returns
    -------
    dict
        ``"per_mode"`` (C,): fraction of the samples near each mode (a sample near two modes
        counts for the closer); ``"near_fraction"``: fraction near some mode;
        ``"modes_covered"``: number of covered modes; ``"nearest"`` (C,): fraction of the
        samples whose closest centre is each mode, whatever the distance.
    """
    x = finite_array(samples, "samples", 2)
    c = finite_array(centers, "centers", 2)
    if c.shape[0] < 1 or x.shape[0] < 1:
        raise ValueError("samples and centers must be non-empty")
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"samples have dimension {x.shape[1]} but centers {c.shape[1]}")
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (c.shape[0],))
    if not np.all(np.isfinite(r) & (r > 0)):
        raise ValueError(f"radius must be finite and > 0, got {radius!r}")
    frac = nonnegative(min_fraction, "min_fraction")
    d = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2))   # (n, C)
    closest = np.argmin(d / r, axis=1)
    near = d[np.arange(len(x)), closest] <= r[closest]
    n = len(x)
    per_mode = np.bincount(closest[near], minlength=len(c)) / n
    return {
        "per_mode": per_mode,
        "near_fraction": float(near.mean()),
        "modes_covered": int(np.sum(per_mode >= frac) if frac > 0 else np.sum(per_mode > 0)),
        "nearest": np.bincount(np.argmin(d, axis=1), minlength=len(c)) / n,
    }



def load_ring_config(path: str | os.PathLike | None = None,
                     overrides: Mapping[str, Any] | None = None, *,
                     backend: str | None = None) -> RunConfig:
    """Read and validate the run configuration of a ring study.

    Parameters
    ----------
    path : path, optional
        A TOML run configuration with a ``gaussian_mixture`` target; default
        :data:`DEFAULT_CONFIG`.
    overrides : mapping, optional
        Values replacing those of the file before validation, as nested tables, e.g.
        ``{"init": {"N": 32, "M": 32}, "run": {"t_end": 0.5}}`` (how tests shrink the study).
    backend : {"numpy", "numba", "cuda"}, optional
        Replaces ``run.backend``.

    Returns
    -------
    RunConfig

    Raises
    ------
    ValueError
        If the file is missing, the configuration invalid, the target not a Gaussian mixture,
        or a ``[reference]`` section present.
    """
    p, text, doc = read_config_document(path, DEFAULT_CONFIG, overrides)
    if "reference" in doc:
        raise ValueError("reference: the ring study runs no reference scheme; remove the "
                         "[reference] section")
    cfg = RunConfig.from_dict(doc, p.resolve().parent, text=text if not overrides else "",
                              source=str(p))
    if cfg.problem.target.kind != "gaussian_mixture":
        raise ValueError(f"problem.target.kind: the ring study scores samples against the modes "
                         f"of a Gaussian mixture, got {cfg.problem.target.kind!r}")
    if backend is not None:
        cfg = cfg.with_backend(backend)
    return cfg


def case_config(config: RunConfig, case: str, *, clip: float = 1.0,
                penalty: float = 10.0) -> RunConfig:
    """``config`` with the objective of ``case`` (one of :data:`CASES`).

    ``wasserstein_clip``: box ``clip``, no penalty; ``wasserstein_gp``: no box, penalty
    ``penalty``; ``non_saturating``: no box, no penalty.  Everything else is kept.
    """
    settings = _case_settings(case, positive(clip, "clip"), positive(penalty, "penalty"))
    doc = config.to_dict()
    doc["problem"].update(settings)
    base = Path(config.source).resolve().parent if config.source else Path(".")
    return RunConfig.from_dict(doc, base)


def _case_settings(case: str, clip: float, penalty: float) -> dict[str, Any]:
    table = {
        "wasserstein_clip": {"loss": "wasserstein", "clip": clip, "gradient_penalty": 0.0},
        "wasserstein_gp": {"loss": "wasserstein", "clip": math.inf, "gradient_penalty": penalty},
        "non_saturating": {"loss": "non_saturating", "clip": math.inf, "gradient_penalty": 0.0},
    }
    if case not in table:
        raise ValueError(f"cases: unknown case {case!r}; known: {', '.join(CASES)}")
    return table[case]


@dataclass
class RingCase:
    """One objective's run and its scores at every record.

    Attributes
    ----------
    settings : dict
        ``loss``, ``clip`` (``inf``: no box) and ``gradient_penalty``.
    times, steps : ndarray, shape (T,)
    theta : ndarray, shape (T, N, K, L+2)
    omega : ndarray, shape (T, M, K+2)
    samples : ndarray, shape (T, n_samples, K)
        The generated samples ``g(Z_s)`` of the fixed latent draws at each record.
    per_mode, per_mode_loose : ndarray, shape (T, C)
        Fraction of the samples near each mode (3 sd; loose radius).
    near_fraction, near_fraction_loose : ndarray, shape (T,)
    modes_covered, modes_covered_loose : ndarray, shape (T,)
    grad_norm : dict of str -> ndarray (T, 3)
        The 10%, 50% and 90% quantiles of the critic's ``|grad f|`` at each of
        :data:`GRAD_SETS`: fresh target samples, the generated samples, and the interpolates
        ``eps X + (1 - eps) g(Z)`` of the two (``eps`` uniform, drawn once).
    observables : dict of str -> ndarray (T,)
        The trajectory's observables (``psi``, ``generator_speed``, ...).
    wall_s : float
        Wall-clock seconds of the run (measurements excluded).
    """

    settings: dict[str, Any]
    times: np.ndarray
    steps: np.ndarray
    theta: np.ndarray
    omega: np.ndarray
    samples: np.ndarray
    per_mode: np.ndarray
    per_mode_loose: np.ndarray
    near_fraction: np.ndarray
    near_fraction_loose: np.ndarray
    modes_covered: np.ndarray
    modes_covered_loose: np.ndarray
    grad_norm: dict[str, np.ndarray]
    observables: dict[str, np.ndarray]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        """The case's JSON record: the final scores first, then the series."""
        return {
            **self.settings,  # clip: null in JSON when there is no box
            "box": math.isfinite(self.settings["clip"]),
            "modes_covered": int(self.modes_covered[-1]),
            "near_fraction": float(self.near_fraction[-1]),
            "modes_covered_loose": int(self.modes_covered_loose[-1]),
            "near_fraction_loose": float(self.near_fraction_loose[-1]),
            "per_mode_fraction": self.per_mode[-1].tolist(),
            "per_mode_fraction_loose": self.per_mode_loose[-1].tolist(),
            "best_near_fraction": float(self.near_fraction.max()),
            "best_near_fraction_time": float(self.times[int(np.argmax(self.near_fraction))]),
            "max_modes_covered": int(self.modes_covered.max()),
            "generated_norm_median": float(np.median(np.linalg.norm(self.samples[-1], axis=1))),
            "grad_norm": {k: dict(zip(("q10", "median", "q90"), v[-1].tolist()))
                          for k, v in self.grad_norm.items()},
            "wall_s": self.wall_s,
            "steps": int(self.steps[-1]),
            "series": {
                "times": self.times.tolist(),
                "near_fraction": self.near_fraction.tolist(),
                "near_fraction_loose": self.near_fraction_loose.tolist(),
                "modes_covered": self.modes_covered.tolist(),
                "modes_covered_loose": self.modes_covered_loose.tolist(),
                **{f"grad_norm_{k}_median": v[:, 1].tolist() for k, v in self.grad_norm.items()},
                **{k: v.tolist() for k, v in self.observables.items()},
            },
        }


@dataclass
class RingResult:
    """What :func:`run_ring` measured.

    Attributes
    ----------
    config : RunConfig
        The configuration (its ``[problem]`` objective keys are replaced per case).
    centers : ndarray, shape (C, K)
    sd : ndarray, shape (C,)
        The modes' centres and (largest) standard deviations.
    radius, radius_loose : ndarray, shape (C,)
        The "near a mode" radii: ``3 sd`` and a quarter of the smallest distance between two
        centres.
    min_fraction : float
        A mode is covered when at least this fraction of the samples is near it.
    latent : ndarray, shape (n_samples, L)
        The fixed latent draws.
    cases : dict of str -> RingCase
    """

    config: RunConfig
    centers: np.ndarray
    sd: np.ndarray
    radius: np.ndarray
    radius_loose: np.ndarray
    min_fraction: float
    latent: np.ndarray
    cases: dict[str, RingCase]
    paths: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The summary written to ``ring.json``."""
        first = next(iter(self.cases.values()))
        return {
            "cases": {k: c.summary() for k, c in self.cases.items()},
            "n_modes": int(len(self.centers)),
            "centers": self.centers.tolist(),
            "sd": self.sd.tolist(),
            "radius": self.radius.tolist(),
            "radius_loose": self.radius_loose.tolist(),
            "min_fraction": self.min_fraction,
            "n_samples": int(len(self.latent)),
            "budget": {"kind": "steps", "generator_steps": int(first.steps[-1]),
                       "critic_updates": int(first.steps[-1]) * self._n_critic(),
                       "t_end": float(first.times[-1])},
            "same_initial_particles": all(
                np.array_equal(c.theta[0], first.theta[0])
                and np.array_equal(c.omega[0], first.omega[0]) for c in self.cases.values()),
            "N": int(first.theta.shape[1]),
            "M": int(first.omega.shape[1]),
            "config": self.config.to_dict(),
        }

    def _n_critic(self) -> int:
        scheme = self.config.scheme.build()
        n = getattr(scheme, "n_critic", 1)
        return n if getattr(scheme, "alternating", False) else 1


def _score(samples: np.ndarray, centers, radius, radius_loose, min_fraction):
    strict = [mode_coverage(s, centers, radius, min_fraction) for s in samples]
    loose = [mode_coverage(s, centers, radius_loose, min_fraction) for s in samples]
    return {
        "per_mode": np.array([d["per_mode"] for d in strict]),
        "per_mode_loose": np.array([d["per_mode"] for d in loose]),
        "near_fraction": np.array([d["near_fraction"] for d in strict]),
        "near_fraction_loose": np.array([d["near_fraction"] for d in loose]),
        "modes_covered": np.array([d["modes_covered"] for d in strict]),
        "modes_covered_loose": np.array([d["modes_covered"] for d in loose]),
    }


def run_ring(
    config: RunConfig | str | os.PathLike | None = None,
    *,
    cases: Sequence[str] = CASES,
    clip: float = 1.0,
    penalty: float = 10.0,
    n_samples: int = 2000,
    sample_seed: int = 12345,
    min_fraction: float = 0.01,
    progress: bool | None = False,
) -> RingResult:
    """Run the configuration under each objective of ``cases`` and score the generated samples.

    Parameters
    ----------
    config : RunConfig, path or None
        A configuration with a Gaussian-mixture target (:func:`load_ring_config`), a TOML
        file, or ``None`` for :data:`DEFAULT_CONFIG`.
    cases : sequence of str
        Which of :data:`CASES` to run (each at most once).
    clip : float
        Box half-width of ``wasserstein_clip``.
    penalty : float
        ``lambda`` of ``wasserstein_gp``.
    n_samples : int
        Latent draws pushed through the generator at every record (and as many target
        samples and interpolation weights for ``|grad f|``).
    sample_seed : int
        Seed of those draws.
    min_fraction : float
        A mode is covered when at least this fraction of the samples is near it.
    progress : bool or None
        Progress bars (``None``: only on a terminal).

    Returns
    -------
    RingResult
        Every case starts from the same initial particles (drawn by the configuration's
        ``init``; the critic's initial law must lie in the clip case's box) and uses the same
        scheme, batches (``run.seed``) and number of steps.

    Raises
    ------
    ValueError
        On an invalid configuration or argument, or an initial critic law outside the box.
    """
    if not isinstance(config, RunConfig):
        config = load_ring_config(config)
    if config.reference is not None:
        raise ValueError("reference: the ring study runs no reference scheme")
    if isinstance(cases, str) or not len(cases) or len(set(cases)) != len(cases):
        raise ValueError(f"cases: need distinct names among {', '.join(CASES)}, got {cases!r}")
    c, lam = positive(clip, "clip"), positive(penalty, "penalty")
    configs = {name: case_config(config, name, clip=c, penalty=lam) for name in cases}
    n = positive_int(n_samples, "n_samples")
    frac = nonnegative(min_fraction, "min_fraction")
    if frac > 1:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
    built = {name: cfg.build() for name, cfg in configs.items()}
    states = [b[1] for b in built.values()]
    # The clip case clips the initial critic into its box: the comparison needs it untouched.
    if not all(np.array_equal(s.omega, states[0].omega) for s in states):
        raise ValueError(f"init.critic: the initial critic must lie in the box [-{c:g}, {c:g}] "
                         "of the clip case, so that every case starts from the same particles")
    problem0 = next(iter(built.values()))[0]
    target = problem0.target
    centers = np.asarray(target.means, dtype=np.float64)
    sd = np.asarray(target.scales, dtype=np.float64).max(axis=1)
    radius = N_SD * sd
    gaps = np.sqrt(((centers[:, None] - centers[None]) ** 2).sum(axis=2))
    gaps[np.diag_indices(len(centers))] = np.inf
    radius_loose = np.full(len(centers), 0.25 * gaps.min() if len(centers) > 1 else 4 * sd.max())
    rng = np.random.default_rng(sample_seed)
    z = problem0.latent.sample(rng, n)
    x_data = target.sample(rng, n)
    eps = rng.random(n)[:, None]
    rs = config.run
    record = rs.record if isinstance(rs.record, int) else list(rs.record)
    out = {}
    for name, (problem, state, scheme) in built.items():
        t = time.perf_counter()
        traj = mfg.simulate(problem, state, scheme, rs.t_end, record=record, seed=rs.seed,
                            backend=rs.backend, progress=want_progress(progress))
        wall = time.perf_counter() - t
        backend = "numpy" if rs.backend == "numpy" else "numba"
        samples = np.stack([mfg.generator_output(th, z, backend=backend) for th in traj.theta])
        grad = {k: [] for k in GRAD_SETS}
        for om, g in zip(traj.omega, samples):
            for k, pts in (("data", x_data), ("generated", g),
                           ("interpolates", eps * x_data + (1.0 - eps) * g)):
                grad[k].append(np.quantile(critic_gradient_norm(om, pts), GRAD_QUANTILES))
        out[name] = RingCase(
            settings=dict(_case_settings(name, c, lam)), times=np.asarray(traj.times, float),
            steps=np.asarray(traj.steps), theta=traj.theta, omega=traj.omega, samples=samples,
            observables={k: np.asarray(v) for k, v in traj.observables.items()}, wall_s=wall,
            grad_norm={k: np.array(v) for k, v in grad.items()},
            **_score(samples, centers, radius, radius_loose, frac))
    return RingResult(config=config, centers=centers, sd=sd, radius=radius,
                      radius_loose=radius_loose, min_fraction=frac, latent=z, cases=out)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def write_ring(result: RingResult, outdir: str | os.PathLike) -> dict[str, Path]:
    """Write ``ring.json``, ``ring.h5`` and ``ring.png`` into ``outdir``.

    Parameters
    ----------
    result : RingResult
        The output of :func:`run_ring`.
    outdir : path
        Output folder (created if needed).

    Returns
    -------
    dict
        Paths under the keys ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``ring.h5`` (plain HDF5): ``centers`` (C, K), ``sd``, ``radius``, ``radius_loose`` (C,),
    ``latent`` (n_samples, L); one group per case with ``times``, ``steps``, ``theta``
    (T, N, K, L+2), ``omega`` (T, M, K+2), ``samples`` (T, n_samples, K), ``per_mode`` and
    ``per_mode_loose`` (T, C), ``near_fraction``, ``near_fraction_loose``, ``modes_covered``,
    ``modes_covered_loose`` (T,), ``grad_norm/<set>`` (T, 3: the 10/50/90% quantiles of
    ``|grad f|``), ``observables/<name>`` (T,); group attributes ``loss``,
    ``clip`` (``inf``: no box), ``gradient_penalty``, ``wall_s``.  Root attributes
    ``min_fraction``, ``config_toml``, ``creator``.
    """

    def fill(f):
        f.attrs["min_fraction"] = result.min_fraction
        f.attrs["config_toml"] = result.config.to_toml()
        for k in ("centers", "sd", "radius", "radius_loose", "latent"):
            f.create_dataset(k, data=getattr(result, k))
        for name, case in result.cases.items():
            g = f.create_group(name)
            for k, v in case.settings.items():
                g.attrs[k] = v
            g.attrs["wall_s"] = case.wall_s
            for k in ("times", "steps", "per_mode", "per_mode_loose", "near_fraction",
                      "near_fraction_loose", "modes_covered", "modes_covered_loose"):
                g.create_dataset(k, data=getattr(case, k))
            for k in ("theta", "omega", "samples"):
                arr = getattr(case, k)
                g.create_dataset(k, data=arr, chunks=(1,) + arr.shape[1:], compression="gzip",
                                 compression_opts=4, shuffle=True)
            for grp, data in (("grad_norm", case.grad_norm), ("observables", case.observables)):
                sub = g.create_group(grp)
                for k, v in data.items():
                    sub.create_dataset(k, data=v)

    paths = write_study_outputs(outdir, "ring", "meanfield_gan.studies.ring", result.to_json(),
                                fill, lambda png: plot_ring(result, png))
    result.paths = paths
    return paths


TITLES = {"wasserstein_clip": "WGAN, weight clipping", "wasserstein_gp": "WGAN-GP",
          "non_saturating": "non-saturating GAN"}
COLOURS = {"wasserstein_clip": "C0", "wasserstein_gp": "C3", "non_saturating": "C2"}


def plot_ring(result: RingResult, path: str | os.PathLike, lim: float | None = None) -> Path:
    """Generated samples over the target per case (last record), and the scores over time.

    Parameters
    ----------
    result : RingResult
        The output of :func:`run_ring`.
    path : path
        PNG file to write.
    lim : float, optional
        Half-width of the sample panels (default: the ring's radius plus a margin, widened
        to show every sample up to 4).

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    names = list(result.cases)
    r_ring = float(np.linalg.norm(result.centers, axis=1).max())
    if lim is None:
        far = max(float(np.abs(c.samples[-1]).max()) for c in result.cases.values())
        lim = max(1.35 * r_ring, min(far * 1.05, 4.0))
    # six grid columns: the sample panels share the top row, the three series the bottom one
    fig = Figure(figsize=(4.2 * 3, 8.3), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 6, hspace=0.33, wspace=1.2, height_ratios=[1.25, 1.0])
    span = 6 // len(names)
    mf = result.min_fraction
    for n, name in enumerate(names):
        case = result.cases[name]
        ax = fig.add_subplot(gs[0, n * span:(n + 1) * span])
        for c, r, rl in zip(result.centers, result.radius, result.radius_loose):
            ax.add_patch(Circle(c, rl, fill=False, lw=0.6, ls=":", color="0.5"))
            ax.add_patch(Circle(c, r, fill=True, lw=0, color="0.3", alpha=0.5))
        s = case.samples[-1]
        ax.scatter(s[:, 0], s[:, 1], s=2.0, color=COLOURS.get(name, "C1"), alpha=0.35,
                   edgecolors="none", rasterized=True)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        st = case.settings
        box = f"clip {st['clip']:g}" if math.isfinite(st["clip"]) else "no box"
        pen = f", lambda {st['gradient_penalty']:g}" if st["gradient_penalty"] else ""
        ax.set_title(f"{TITLES.get(name, name)} ({box}{pen}), t = {case.times[-1]:.3g}\n"
                     f"{int(case.modes_covered[-1])}/{len(result.centers)} modes covered, "
                     f"{case.near_fraction[-1]:.0%} of the samples within 3 sd\n"
                     f"(within the dotted radius: {int(case.modes_covered_loose[-1])} modes, "
                     f"{case.near_fraction_loose[-1]:.0%})", fontsize=8.5)
    ax = fig.add_subplot(gs[1, 0:2])
    for name, case in result.cases.items():
        ax.plot(case.times, case.near_fraction, color=COLOURS.get(name), label=name)
        ax.plot(case.times, case.near_fraction_loose, color=COLOURS.get(name), ls=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time t (generator steps x dt)", fontsize=8)
    ax.set_title("fraction of samples near a mode\n(solid: within 3 sd; dotted: loose radius)",
                 fontsize=8.5)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(gs[1, 2:4])
    for k, (name, case) in enumerate(result.cases.items()):
        off = 0.08 * (k - 1)  # the curves of integer counts are shifted apart to stay visible
        ax.plot(case.times, case.modes_covered + off, color=COLOURS.get(name), label=name,
                drawstyle="steps-post")
        ax.plot(case.times, case.modes_covered_loose + off, color=COLOURS.get(name), ls=":",
                drawstyle="steps-post")
    ax.set_ylim(-0.4, len(result.centers) + 0.4)
    ax.set_xlabel("time t", fontsize=8)
    ax.set_title(f"modes covered (>= {mf:.0%} of the samples near it)\n"
                 "(solid: 3 sd; dotted: loose radius)", fontsize=8.5)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(gs[1, 4:6])
    for name, case in result.cases.items():
        ax.semilogy(case.times, np.maximum(case.observables["generator_speed"], 1e-300),
                    color=COLOURS.get(name), label=name)
    ax.set_xlabel("time t", fontsize=8)
    ax.set_title("generator speed sqrt(mean |V_theta|^2)\n(each under its own objective)",
                 fontsize=8.5)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    first = next(iter(result.cases.values()))
    fig.suptitle(f"8-Gaussian ring (Gulrajani et al.), N = {first.theta.shape[1]}, "
                 f"M = {first.omega.shape[1]}, same particles, batches and "
                 f"{int(first.steps[-1])} generator steps per objective; grey discs: 3 sd "
                 "around each mode", fontsize=10, y=0.995)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan ring`` arguments to ``parser``."""
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG.toml",
                        help="run configuration with a Gaussian-mixture target (default: the "
                             "packaged ring.toml, Gulrajani et al.'s 8 Gaussians)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="engine (default: the configuration's run.backend)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                        help="objectives to run (default: all three)")
    parser.add_argument("--clip", type=float, default=1.0,
                        help="box half-width of wasserstein_clip (default 1)")
    parser.add_argument("--penalty", type=float, default=10.0, metavar="LAMBDA",
                        help="gradient penalty of wasserstein_gp (default 10)")
    parser.add_argument("--samples", type=int, default=2000,
                        help="generated samples scored at every record (default 2000)")
    parser.add_argument("--min-fraction", type=float, default=0.01,
                        help="a mode is covered when at least this fraction of the samples is "
                             "within 3 sd of it (default 0.01)")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study and write ``OUTDIR/ring.{json,h5,png}``; print the scores and the paths."""
    # Everything is validated before the runs, so bad input leaves no output behind.
    cfg = load_ring_config(args.config, backend=args.backend)
    out = check_outdir(args.output)
    for name in args.cases:
        case_config(cfg, name, clip=args.clip, penalty=args.penalty)
    positive_int(args.samples, "--samples")
    nonnegative(args.min_fraction, "--min-fraction")
    progress = cfg.run.progress
    result = run_ring(cfg, cases=args.cases, clip=args.clip, penalty=args.penalty,
                      n_samples=args.samples, min_fraction=args.min_fraction,
                      progress=None if progress == "auto" else progress)
    paths = write_ring(result, out)
    C = len(result.centers)
    for name, case in result.cases.items():
        print(f"{name}: {int(case.modes_covered[-1])}/{C} modes covered, "
              f"{case.near_fraction[-1]:.1%} of the samples within 3 sd of a mode "
              f"({int(case.modes_covered_loose[-1])} modes, {case.near_fraction_loose[-1]:.1%} "
              f"within {result.radius_loose[0]:.3g}); {int(case.steps[-1])} steps in "
              f"{case.wall_s:.1f} s")
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
