"""Vanishing generator gradients: Arjovsky and Bottou's experiment in the mean field (MODEL.md 8).

A generator measure ``mu`` is frozen, a fresh critic ``nu_in`` is trained alone (Adam, as the
paper's discriminator was), and at log-spaced critic steps the study records how fast the
generator would move: ``|V_theta|_mu = sqrt((1/N) sum_i |V_theta(theta_i)|^2)`` under the
case's generator objective, with exact expectations (the problem's latent quadrature, the
Dirac target's exact sum, Gauss-Hermite nodes for the instance noise). The cases share the
frozen generator, the fresh critic draw and the critic's batches:

====================  ==================  ==========  =================================
case                  objective           box         critic's extra
====================  ==================  ==========  =================================
``minimax``           ``minimax``         none
``non_saturating``    ``non_saturating``  none
``wasserstein_clip``  ``wasserstein``     ``clip``
``wasserstein_gp``    ``wasserstein``     none        gradient penalty ``lambda``
``minimax_noise``     ``minimax``         none        instance noise ``sigma_n``
====================  ==================  ==========  =================================

``minimax`` and ``non_saturating`` have the same critic objective (``phi_1``, ``phi_2`` of
MODEL.md 7), so their critics are the same, bit for bit: only the generator's weight
``phi_3'(f)`` differs (``s(-f)`` against ``s(f)``). Per record the study also keeps the error
of the discriminator ``D = s(-f)`` (minimax objectives), the mean ``|f|`` on data and on
generated points, the mean ``|grad f|`` at the generated points and the mean weight
``phi_3'`` there: the generator velocity is ``-E phi_3'(f) grad_theta (grad f . sigma)``, so
a falling speed comes either from the weight (the loss saturates) or from ``grad f`` (the
critic goes flat at the samples). For ``minimax_noise`` every quantity is the noisy game's
(``f`` at ``X + sigma_n E`` and ``g(Z) + sigma_n E'``), the discriminator's error on the clean
points is kept beside it. The generator speed under every objective is kept too
(``generator_speed_by_objective``): the ``wasserstein`` one, ``|E grad_theta (grad f .
sigma)|``, has weight 1.

Two frozen generators, like the paper's stages: the initial draw (``cases``) and the
generator after ``pretrain_steps`` steps of non-saturating GAN training from it, with the same
optimiser and the same fresh critic draw (``cases_trained``).

What it measures with the default configuration (``K = 2``, ``L = 1``, 8 Diracs on the unit
circle, ``N = M = 256``, Adam with per-coordinate critic steps ``lr/M = 0.01``, batch 64, 4000
critic steps; 17-25 s on two cores, warm Numba cache). Every speed first rises (the fresh
critic learns); all but one peak after 250-1400 critic steps. Against the initial generator (a
curve of extent 0.04 near the origin), at step 4000: ``minimax`` has fallen to ``5.7e-4`` of
its peak (error ``2.3e-3``), a product of its weight ``s(-f)`` (0.42 at the peak, ``2.2e-3`` at
the end) and of ``|grad f|`` at the samples (down 9x: every critic unit is saturated there,
``|beta|`` having grown to ~40); ``non_saturating`` keeps weight ~1 but loses the same 9x of
``|grad f|``, so it ends at 0.15 of its peak, 450x above ``minimax``; ``wasserstein_clip`` is
flat at its peak from step ~300 (every critic coordinate is on the box by step 386) and
``wasserstein_gp`` ends at 0.96 of its peak (1600x and 6600x above ``minimax``);
``minimax_noise`` ends at 0.44 of its peak, 880x above ``minimax``, its noisy error 0.14 (the
Bayes error of the noisy laws is 0.092). Against the trained generator (1000 non-saturating GAN
steps: a curve spanning 3.1 in x, 0.44 from a Dirac) the critic stays steep between curve and
Diracs, ``|grad f|`` at the samples grows 8x past the minimax peak, and ``non_saturating``
grows to 14.8 (Theorem 2.6's instability) while ``minimax`` falls to ``1.1e-3`` of its peak
(error ``5e-6``); noise keeps minimax 1550x above the noiseless run.

This module is the ``meanfield-gan vanishing [CONFIG.toml] -o OUTDIR`` subcommand
(``vanishing.json``, ``vanishing.h5``, ``vanishing.png``); the default configuration is
``meanfield_gan/data/vanishing.toml``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

import meanfield_gan as mfg
from meanfield_gan._util import (
    check_outdir,
    prepare_outdir,
    want_progress,
    write_study_outputs,
)
from meanfield_gan._validation import nonneg_int, positive, positive_int
from meanfield_gan.io.config import BACKENDS, RunConfig, read_config_document
from meanfield_gan.model.objectives import LOSSES, discriminator_error, dphi

__all__ = [
    "DEFAULT_CONFIG",
    "CASES",
    "VanishingSettings",
    "CaseRun",
    "VanishingResult",
    "case_problem",
    "objective_settings",
    "load_vanishing_config",
    "record_grid",
    "critic_gradient",
    "measure",
    "run_vanishing",
    "write_vanishing",
    "plot_vanishing",
    "configure_parser",
    "cli_main",
]

#: The configuration ``meanfield-gan vanishing`` runs when none is given.
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "data" / "vanishing.toml"

#: The cases, in the order of the figure and the JSON file.
CASES = ("minimax", "non_saturating", "wasserstein_clip", "wasserstein_gp", "minimax_noise")

#: ``[problem]`` keys each case sets itself (refused in the configuration file).
_CASE_KEYS = ("loss", "clip", "gradient_penalty", "instance_noise", "noise_anneal")

#: Names of the frozen generators and their JSON keys.
GENERATORS = {"initial": "cases", "trained": "cases_trained"}


@dataclass(frozen=True)
class VanishingSettings:
    """The ``[vanishing]`` table: what the study runs.

    Attributes
    ----------
    critic_steps : int
        Critic updates per case (at least 4000 in the paper's experiment).
    records : int
        Log-spaced records between critic step 1 and ``critic_steps`` (step 0 is added).
    pretrain_steps : int
        Non-saturating GAN steps that make the second frozen generator (0: only the initial
        draw).
    clip : float
        Box half-width of ``wasserstein_clip``.
    gradient_penalty : float
        ``lambda`` of ``wasserstein_gp``.
    instance_noise : float
        ``sigma_n`` of ``minimax_noise``.
    cases : tuple of str
        The cases to run (a subset of :data:`CASES`).
    """

    critic_steps: int = 4000
    records: int = 40
    pretrain_steps: int = 1000
    clip: float = 1.0
    gradient_penalty: float = 10.0
    instance_noise: float = 0.3
    cases: tuple[str, ...] = CASES

    def __post_init__(self) -> None:
        object.__setattr__(self, "critic_steps", positive_int(self.critic_steps, "critic_steps"))
        object.__setattr__(self, "records", positive_int(self.records, "records"))
        object.__setattr__(self, "pretrain_steps",
                           nonneg_int(self.pretrain_steps, "pretrain_steps"))
        # wasserstein_clip needs a box: a finite half-width
        object.__setattr__(self, "clip", positive(self.clip, "clip"))
        object.__setattr__(self, "gradient_penalty",
                           positive(self.gradient_penalty, "gradient_penalty"))
        object.__setattr__(self, "instance_noise", positive(self.instance_noise, "instance_noise"))
        cases = (self.cases,) if isinstance(self.cases, str) else tuple(self.cases)
        bad = [c for c in cases if c not in CASES]
        if not cases or bad or len(set(cases)) != len(cases):
            raise ValueError(f"cases: must be distinct names among {', '.join(CASES)}; "
                             f"got {list(cases)}")
        object.__setattr__(self, "cases", cases)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VanishingSettings:
        """Settings from a ``[vanishing]`` table (unknown keys are refused)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"vanishing.{unknown[0]}: unknown key "
                             f"(known: {', '.join(sorted(names))})")
        try:
            return cls(**dict(d))
        except ValueError as exc:
            # "name must be ..." -> "vanishing.name: must be ..."
            name, _, rest = str(exc).partition(" ")
            raise ValueError(f"vanishing.{name}: {rest}") from None

    def case_settings(self, case: str) -> dict[str, Any]:
        """The ``Problem`` keywords of ``case`` (:func:`objective_settings`)."""
        return objective_settings(case, clip=self.clip, gradient_penalty=self.gradient_penalty,
                                  instance_noise=self.instance_noise)


def objective_settings(case: str, *, clip: float = 1.0, gradient_penalty: float = 10.0,
                       instance_noise: float = 0.3) -> dict[str, Any]:
    """The ``Problem`` keywords ``loss``, ``clip``, ``gradient_penalty``, ``instance_noise`` of
    a case of :data:`CASES` (only ``wasserstein_clip`` has a box).

    Parameters
    ----------
    case : str
        One of :data:`CASES`.
    clip, gradient_penalty, instance_noise : float
        The box of ``wasserstein_clip``, the ``lambda`` of ``wasserstein_gp``, the ``sigma_n``
        of ``minimax_noise``.

    Returns
    -------
    dict
    """
    base = {"clip": math.inf, "gradient_penalty": 0.0, "instance_noise": 0.0}
    table = {
        "minimax": {"loss": "minimax", **base},
        "non_saturating": {"loss": "non_saturating", **base},
        "wasserstein_clip": {"loss": "wasserstein", **base, "clip": clip},
        "wasserstein_gp": {"loss": "wasserstein", **base, "gradient_penalty": gradient_penalty},
        "minimax_noise": {"loss": "minimax", **base, "instance_noise": instance_noise},
    }
    if case not in table:
        raise ValueError(f"objective: must be one of {', '.join(CASES)}; got {case!r}")
    return table[case]


def case_problem(problem: mfg.Problem, settings: VanishingSettings, case: str) -> mfg.Problem:
    """``problem`` with the objective, box, penalty and noise of ``case`` (no annealing)."""
    return dataclasses.replace(problem, noise_anneal=None, **settings.case_settings(case))


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def _critic_updates_per_step(scheme: Any) -> int:
    return scheme.n_critic if scheme.alternating else 1


def record_grid(critic_steps: int, records: int, per_step: int = 1) -> np.ndarray:
    """Critic steps of the records: 0, then ``records`` log-spaced steps from 1 to
    ``critic_steps`` (rounded to whole steps of ``per_step`` critic updates; duplicates merged).
    """
    n = positive_int(critic_steps, "critic_steps")
    k = positive_int(per_step, "per_step")
    r = positive_int(records, "records")
    steps = np.rint(np.logspace(0.0, math.log10(max(n / k, 1.0)), r)).astype(np.int64)
    return np.unique(np.concatenate([[0], steps])) * k


def load_vanishing_config(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    backend: str | None = None,
) -> tuple[RunConfig, VanishingSettings]:
    """Read and validate a vanishing-gradient configuration.

    Parameters
    ----------
    path : path, optional
        A TOML file: a run configuration without ``t_end``/``record`` and without the
        per-case ``[problem]`` keys, plus a ``[vanishing]`` table (see
        ``meanfield_gan/data/vanishing.toml``); default :data:`DEFAULT_CONFIG`.
    overrides : mapping, optional
        Nested tables replacing values of the file, e.g. ``{"init": {"N": 32, "M": 32},
        "vanishing": {"critic_steps": 50}}`` (how the tests and the notebook shrink it).
    backend : {"numpy", "numba"}, optional
        Replaces ``run.backend``.

    Returns
    -------
    config : RunConfig
        The run configuration of the critic-only training (``run.t_end`` is the time of
        ``critic_steps``, ``run.record`` the log-spaced record times).
    settings : VanishingSettings

    Raises
    ------
    ValueError
        One line naming the offending key.
    """
    p, text, doc = read_config_document(path, DEFAULT_CONFIG, overrides)
    for section in ("vanishing", "problem", "run", "scheme"):
        if not isinstance(doc.get(section, {}), Mapping):
            raise ValueError(f"{section}: must be a table, got {doc[section]!r}")
    if "scheme" not in doc:
        raise ValueError("scheme: required (the critic's optimiser, e.g. kind = \"adam\")")
    settings = VanishingSettings.from_dict(doc.pop("vanishing", {}))
    for key in _CASE_KEYS:
        if key in doc.get("problem", {}):
            raise ValueError(f"problem.{key}: set by each case of the vanishing study; "
                             "remove it (see [vanishing])")
    run = dict(doc.get("run", {}))
    for key in ("t_end", "record"):
        if key in run:
            raise ValueError(f"run.{key}: set by [vanishing] critic_steps and records; remove it")
    if backend is not None:
        run["backend"] = backend
    if run.get("backend", "numba") not in ("numpy", "numba"):
        raise ValueError(f"run.backend: the vanishing study runs on numpy or numba, "
                         f"got {run.get('backend')!r}")
    scheme = doc.get("scheme", {})
    if scheme.get("kind") not in ("adam", "sgd", "rmsprop"):
        raise ValueError(f"scheme.kind: the critic is trained by a stochastic optimiser "
                         f"(adam, sgd or rmsprop), got {scheme.get('kind')!r}")
    if scheme.get("freeze_generator", True) is not True:
        raise ValueError("scheme.freeze_generator: must be true (the critic is trained alone)")
    # Validate once with a placeholder time to learn dt, then with the real record times.
    doc["run"] = {**run, "t_end": 1.0}
    cfg = RunConfig.from_dict(doc, p.resolve().parent, source=str(p))
    sch = cfg.scheme.build()
    dt = sch.dt(cfg.init.N)
    per = _critic_updates_per_step(sch)
    grid = record_grid(settings.critic_steps, settings.records, per)
    steps_end = int(grid[-1] // per)
    doc["run"] = {**run, "t_end": steps_end * dt, "record": [float(s // per) * dt for s in grid]}
    doc["scheme"] = {**scheme, "freeze_generator": True}
    cfg = RunConfig.from_dict(doc, p.resolve().parent, source=str(p))
    return cfg, settings


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------
def critic_gradient(omega: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The critic's gradient in ``x``, ``grad_x f_nu`` (MODEL.md 1), at points ``x``.

    ``grad_x f_nu(x) = (1/M) sum_j alpha_j s'(<beta_j, x> + gamma_j) beta_j``.

    Parameters
    ----------
    omega : ndarray, shape (M, K+2)
    x : ndarray, shape (B, K)

    Returns
    -------
    ndarray, shape (B, K)
    """
    omega = np.asarray(omega, dtype=np.float64)
    alpha, beta, gamma = omega[:, 0], omega[:, 1:-1], omega[:, -1]
    s = expit(np.asarray(x, dtype=np.float64) @ beta.T + gamma)
    return (s * (1.0 - s) * alpha) @ beta / omega.shape[0]


def _noisy_nodes(problem: mfg.Problem, z, zw, x, xw):
    """The nodes of the noisy game: ``(z, zw, z_noise, x, xw)``, tensor products with
    Gauss-Hermite noise nodes (the rule of the deterministic engines), or the clean nodes."""
    sigma = problem.instance_noise
    if sigma == 0:
        return z, zw, None, x, xw
    zq, zwq, ez, xq, xwq, ex = problem.noise_tensor(z, zw, x, xw)
    return zq, zwq, sigma * ez, xq + sigma * ex, xwq


def _speed(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(v * v, axis=(1, 2)))))


def measure(problem: mfg.Problem, theta: np.ndarray, omega: np.ndarray, nodes=None,
            backend: str = "numba") -> dict[str, Any]:
    """What the study records for one critic ``omega`` against the frozen generator ``theta``.

    Parameters
    ----------
    problem : Problem
        A case's problem (its ``loss`` and ``instance_noise`` matter here).
    theta : ndarray, shape (N, K, L+2)
    omega : ndarray, shape (M, K+2)
    nodes : tuple, optional
        ``(z, zw, x, xw)``; default ``problem.quadrature()``.
    backend : {"numpy", "numba"}
        Engine of the velocity fields.

    Returns
    -------
    dict
        ``generator_speed`` (``|V_theta|_mu`` under the problem's objective),
        ``generator_speed_by_objective`` (the same under each objective of MODEL.md 7),
        ``generator_weight`` (``E phi_3'(f(g(Z)))``), ``f_data`` (``E |f(X)|``),
        ``f_generated`` (``E |f(g(Z))|``), ``grad_f_generated`` (``E |grad f(g(Z))|``), and for
        the minimax objectives ``discriminator_error`` and ``discriminator_error_clean``
        (``None`` otherwise). With instance noise, every expectation is over the noisy points.
    """
    z, zw, x, xw = problem.quadrature() if nodes is None else nodes
    zq, zwq, z_noise, xq, xwq = _noisy_nodes(problem, z, zw, x, xw)
    g = mfg.generator_output(theta, zq)
    gn = g if z_noise is None else g + z_noise
    fg = mfg.critic_output(omega, gn)
    fx = mfg.critic_output(omega, xq)
    grad = critic_gradient(omega, gn)
    by_objective = {}
    for loss in LOSSES:
        vt, _ = mfg.velocity(theta, omega, zq, zwq, xq, xwq, backend=backend, loss=loss,
                             z_noise=z_noise)
        by_objective[loss] = _speed(vt)
    out: dict[str, Any] = {
        "generator_speed": by_objective[problem.loss],
        "generator_speed_by_objective": by_objective,
        "generator_weight": float(zwq @ dphi(problem.loss, fg)[2]),
        "f_data": float(xwq @ np.abs(fx)),
        "f_generated": float(zwq @ np.abs(fg)),
        "grad_f_generated": float(zwq @ np.sqrt(np.sum(grad * grad, axis=1))),
        "discriminator_error": None,
        "discriminator_error_clean": None,
    }
    if problem.loss != "wasserstein":
        out["discriminator_error"] = discriminator_error(fg, zwq, fx, xwq)
        out["discriminator_error_clean"] = out["discriminator_error"]
        if z_noise is not None:
            fg0 = mfg.critic_output(omega, mfg.generator_output(theta, z))
            out["discriminator_error_clean"] = discriminator_error(
                fg0, zw, mfg.critic_output(omega, x), xw)
    return out


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------
#: Per-record series of a case (lists in the JSON file, datasets in the HDF5 file).
SERIES = ("generator_speed", "discriminator_error", "discriminator_error_clean", "generator_weight",
          "f_data", "f_generated", "grad_f_generated")


@dataclass
class CaseRun:
    """One case against one frozen generator.

    Attributes
    ----------
    case : str
    settings : dict
        ``loss``, ``clip``, ``gradient_penalty``, ``instance_noise`` of the case.
    critic_steps, times : ndarray, shape (T,)
        Critic updates and mean-field times of the records.
    omega : ndarray, shape (T, M, K+2)
        The critic at every record.
    series : dict of str -> ndarray (T,) or None
        :data:`SERIES` (``None`` for the discriminator errors of Wasserstein cases).
    speed_by_objective : dict of str -> ndarray (T,)
        The generator speed under each objective.
    generator_displacement : float
        ``max |theta(t) - theta(0)|`` over the records and the final state (0: frozen).
    """

    case: str
    settings: dict[str, Any]
    critic_steps: np.ndarray
    times: np.ndarray
    omega: np.ndarray
    series: dict[str, np.ndarray | None]
    speed_by_objective: dict[str, np.ndarray]
    generator_displacement: float

    def summary(self) -> dict[str, Any]:
        """Peak, final value and decay of the generator speed."""
        v = self.series["generator_speed"]
        k = int(np.argmax(v))
        out = {
            "peak_speed": float(v[k]),
            "peak_step": int(self.critic_steps[k]),
            "final_speed": float(v[-1]),
            "final_over_peak": float(v[-1] / v[k]) if v[k] > 0 else None,
            "final_grad_f_over_peak": float(self.series["grad_f_generated"][-1]
                                            / self.series["grad_f_generated"][k]),
            "final_generator_weight": float(self.series["generator_weight"][-1]),
        }
        err = self.series["discriminator_error"]
        out["final_discriminator_error"] = None if err is None else float(err[-1])
        return out

    def to_json(self) -> dict[str, Any]:
        err = self.series["discriminator_error"]
        return {
            "critic_steps": self.critic_steps.tolist(),
            "generator_speed": self.series["generator_speed"].tolist(),
            "discriminator_error": None if err is None else err.tolist(),
            **self.settings,
            "times": self.times.tolist(),
            **{k: (None if self.series[k] is None else self.series[k].tolist())
               for k in SERIES if k not in ("generator_speed", "discriminator_error")},
            "generator_speed_by_objective": {k: v.tolist()
                                             for k, v in self.speed_by_objective.items()},
            "generator_displacement": self.generator_displacement,
            "summary": self.summary(),
        }


@dataclass
class VanishingResult:
    """Result of :func:`run_vanishing`.

    Attributes
    ----------
    config : RunConfig
    settings : VanishingSettings
    generators : dict of str -> ndarray (N, K, L+2)
        The frozen generators (``"initial"``, and ``"trained"`` with pretraining).
    omega0 : ndarray, shape (M, K+2)
        The fresh critic draw every case starts from.
    runs : dict of str -> dict of str -> CaseRun
        ``runs[generator][case]``.
    pretrain : dict
        The pretraining's settings and end state (empty without pretraining).
    """

    config: RunConfig
    settings: VanishingSettings
    generators: dict[str, np.ndarray]
    omega0: np.ndarray
    runs: dict[str, dict[str, CaseRun]]
    pretrain: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)

    def comparison(self, generator: str = "initial") -> dict[str, Any]:
        """Each case's speed over the minimax speed at the same critic step, at every record."""
        runs = self.runs[generator]
        if "minimax" not in runs:
            return {}
        ref = runs["minimax"].series["generator_speed"]
        return {c: (r.series["generator_speed"] / ref).tolist() for c, r in runs.items()}

    def to_json(self) -> dict[str, Any]:
        """The ``vanishing.json`` content (API.md: ``cases`` for the initial generator)."""
        doc: dict[str, Any] = {}
        for gen, key in GENERATORS.items():
            if gen in self.runs:
                doc[key] = {c: r.to_json() for c, r in self.runs[gen].items()}
        doc["speed_over_minimax"] = {gen: self.comparison(gen) for gen in self.runs}
        doc["generators"] = {gen: _generator_summary(self.config, th)
                             for gen, th in self.generators.items()}
        if "trained" in doc["generators"]:
            doc["generators"]["trained"]["pretrain"] = self.pretrain
        doc["settings"] = dataclasses.asdict(self.settings)
        doc["config"] = self.config.to_dict()
        return doc


def _generator_summary(config: RunConfig, theta: np.ndarray) -> dict[str, Any]:
    """Where the frozen generator's curve lies: its extent and distance to the target."""
    problem = config.problem_instance()
    z, zw, x, xw = problem.quadrature()
    g = mfg.generator_output(theta, z)
    d = np.sqrt(((g[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return {"generated_mean": (zw @ g).tolist(), "generated_extent": np.ptp(g, axis=0).tolist(),
            "min_distance_to_target": float(d.min())}


def _pretrain(problem, state, scheme, steps: int, seed: int, backend: str, progress: bool):
    """``steps`` non-saturating GAN steps (no box) from ``state``: the second frozen generator."""
    p = dataclasses.replace(problem, loss="non_saturating", clip=math.inf, gradient_penalty=0.0,
                            instance_noise=0.0, noise_anneal=None)
    sch = dataclasses.replace(scheme, freeze_generator=False)
    traj = mfg.simulate(p, state, sch, steps * sch.dt(state.N), record=None, seed=seed,
                        backend=backend, progress=progress, record_particles=False)
    info = {"steps": int(steps), "loss": "non_saturating", "clip": math.inf, "seed": int(seed),
            "scheme": sch.to_dict(),
            "final_discriminator_error": float(traj.observables["discriminator_error"][-1]),
            "final_generator_speed": float(traj.observables["generator_speed"][-1])}
    return traj.state.theta.copy(), info


def _run_case(problem, theta, omega0, scheme, settings, case, cfg, progress) -> CaseRun:
    p = case_problem(problem, settings, case)
    state = mfg.initial_state(p, len(theta), len(omega0), theta=theta, omega=omega0)
    rs = cfg.run
    traj = mfg.simulate(p, state, scheme, rs.t_end, record=list(rs.record), seed=rs.seed,
                        backend=rs.backend, progress=progress, observables=False)
    nodes = p.quadrature()
    rows = [measure(p, theta, om, nodes, backend=rs.backend) for om in traj.omega]
    series: dict[str, np.ndarray | None] = {}
    for k in SERIES:
        vals = [r[k] for r in rows]
        series[k] = None if vals[0] is None else np.asarray(vals, dtype=float)
    by_obj = {loss: np.array([r["generator_speed_by_objective"][loss] for r in rows])
              for loss in LOSSES}
    moved = max(float(np.max(np.abs(traj.theta - theta))),
                float(np.max(np.abs(traj.state.theta - theta))))
    per = _critic_updates_per_step(scheme)
    return CaseRun(case=case, settings=dict(settings.case_settings(case)),
                   critic_steps=np.asarray(traj.steps, dtype=np.int64) * per,
                   times=np.asarray(traj.times, dtype=float), omega=traj.omega, series=series,
                   speed_by_objective=by_obj, generator_displacement=moved)


def run_vanishing(
    config: RunConfig | str | os.PathLike | None = None,
    settings: VanishingSettings | None = None,
    *,
    progress: bool | None = False,
) -> VanishingResult:
    """Train a fresh critic alone against each frozen generator, for every case.

    Parameters
    ----------
    config : RunConfig, path or None
        A configuration from :func:`load_vanishing_config` (with ``settings``), a TOML file, or
        ``None`` for :data:`DEFAULT_CONFIG`.
    settings : VanishingSettings, optional
        Required with a ``RunConfig`` (it fixed the record times); read from the file otherwise.
    progress : bool or None
        Progress bars (``None``: only on a terminal).

    Returns
    -------
    VanishingResult
    """
    if isinstance(config, RunConfig):
        if settings is None:
            raise ValueError("settings: give the VanishingSettings that came with the RunConfig "
                             "(load_vanishing_config returns both)")
    else:
        if settings is not None:
            raise ValueError("settings: read from the configuration file; pass overrides to "
                             "load_vanishing_config instead")
        config, settings = load_vanishing_config(config)
    problem, state, scheme = config.build()
    bar = want_progress(progress)
    generators = {"initial": state.theta.copy()}
    pretrain: dict[str, Any] = {}
    if settings.pretrain_steps > 0:
        generators["trained"], pretrain = _pretrain(problem, state, scheme, settings.pretrain_steps,
                                                    config.run.seed + 1, config.run.backend, bar)
    runs = {gen: {case: _run_case(problem, th, state.omega, scheme, settings, case, config, bar)
                  for case in settings.cases}
            for gen, th in generators.items()}
    return VanishingResult(config=config, settings=settings, generators=generators,
                           omega0=state.omega.copy(), runs=runs, pretrain=pretrain)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def write_vanishing(result: VanishingResult, outdir: str | os.PathLike) -> dict[str, Path]:
    """Write ``vanishing.json``, ``vanishing.h5`` and ``vanishing.png`` into ``outdir``.

    Returns
    -------
    dict
        Paths under the keys ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``vanishing.h5`` (plain HDF5): ``omega0`` (M, K+2), the fresh critic; for each frozen
    generator a group ``<generator>`` (``initial``, ``trained``) with ``theta`` (N, K, L+2) and
    one subgroup per case holding ``critic_steps``, ``times``, ``omega`` (T, M, K+2), the
    series of :data:`SERIES` (the discriminator errors only for the minimax objectives) and
    ``speed_<objective>``; the case's settings are the subgroup's attributes. The root's
    attribute ``config_toml`` is the canonical run configuration.
    """

    def fill(f):
        f.attrs["config_toml"] = result.config.to_toml()
        for k, v in dataclasses.asdict(result.settings).items():
            f.attrs[k] = np.asarray(v) if not isinstance(v, tuple) else ",".join(v)
        f.create_dataset("omega0", data=result.omega0)
        for gen, runs in result.runs.items():
            g = f.create_group(gen)
            g.create_dataset("theta", data=result.generators[gen])
            for case, r in runs.items():
                c = g.create_group(case)
                for k, v in r.settings.items():
                    c.attrs[k] = v
                c.create_dataset("critic_steps", data=r.critic_steps)
                c.create_dataset("times", data=r.times)
                c.create_dataset("omega", data=r.omega, compression="gzip", shuffle=True)
                for k in SERIES:
                    if r.series[k] is not None:
                        c.create_dataset(k, data=r.series[k])
                for loss, v in r.speed_by_objective.items():
                    c.create_dataset(f"speed_{loss}", data=v)

    paths = write_study_outputs(outdir, "vanishing", "meanfield_gan.studies.vanishing",
                                result.to_json(), fill, lambda png: plot_vanishing(result, png))
    result.paths = paths
    return paths


_STYLE = {"minimax": "C3", "non_saturating": "C0", "wasserstein_clip": "C2", "wasserstein_gp": "C4",
          "minimax_noise": "C1"}


def plot_vanishing(result: VanishingResult, path: str | os.PathLike) -> Path:
    """Two panels in the style of Arjovsky-Bottou's Figures 1-3: the generator speed (log
    scale) and the discriminator's error against critic steps, every case; solid lines for
    the initial generator, dashed for the trained one.

    Parameters
    ----------
    result : VanishingResult
    path : path
        PNG file to write.

    Returns
    -------
    Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax_v, ax_e = fig.subplots(1, 2, gridspec_kw={"wspace": 0.25})
    dashes = {"initial": "-", "trained": "--"}
    for gen, runs in result.runs.items():
        for case, r in runs.items():
            s = r.critic_steps > 0  # log axes: step 0 is left out of the plot
            label = case if gen == "initial" else None
            ax_v.plot(r.critic_steps[s], r.series["generator_speed"][s], dashes[gen],
                      color=_STYLE[case], lw=1.4, label=label)
            err = r.series["discriminator_error"]
            # non_saturating trains the same critic as minimax: one error curve for both
            if err is not None and case != "non_saturating":
                name = "minimax / non_saturating" if case == "minimax" else case
                ax_e.plot(r.critic_steps[s], err[s], dashes[gen], color=_STYLE[case], lw=1.4,
                          label=name if gen == "initial" else None)
    for gen in result.runs:
        if gen != "initial":
            for ax in (ax_v, ax_e):
                ax.plot([], [], dashes[gen], color="0.4",
                        label=f"{gen} generator ({result.settings.pretrain_steps} GAN steps)")
    ax_v.set(xscale="log", yscale="log", xlabel="critic steps",
             ylabel="generator speed |V_theta|_mu",
             title="generator speed under each case's objective (solid: initial generator)")
    ax_e.set(xscale="log", yscale="log", xlabel="critic steps",
             ylabel="(E[1 - D(X)] + E[D(g(Z))]) / 2",
             title="discriminator error, D = s(-f)")
    for ax, where in ((ax_v, "lower center"), (ax_e, "lower left")):
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7.5, loc=where)
        ax.title.set_fontsize(9.5)
    cfg = result.config
    step = cfg.scheme.build().critic_dt(cfg.init.M)
    fig.suptitle(f"a frozen generator, a fresh critic trained alone: K = {cfg.problem.K}, "
                 f"L = {cfg.problem.L}, N = {cfg.init.N}, M = {cfg.init.M}, "
                 f"{cfg.scheme.kind} (critic step lr/M = {step:.3g})",
                 fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan vanishing`` arguments to ``parser``."""
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG.toml",
                        help="configuration (default: the packaged vanishing.toml)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--backend", choices=[b for b in BACKENDS if b != "cuda"], default=None,
                        help="engine (default: the configuration's run.backend)")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study and write ``OUTDIR/vanishing.{json,h5,png}``; print the speeds and paths."""
    # Everything is validated before the run, so bad input leaves no output behind.
    cfg, settings = load_vanishing_config(args.config, backend=args.backend)
    out = check_outdir(args.output)
    progress = cfg.run.progress
    result = run_vanishing(cfg, settings, progress=None if progress == "auto" else progress)
    paths = write_vanishing(result, prepare_outdir(out))
    for gen, runs in result.runs.items():
        for case, r in runs.items():
            s = r.summary()
            print(f"{gen:8s} {case:17s} speed: peak {s['peak_speed']:.3g} at step "
                  f"{s['peak_step']}, final {s['final_speed']:.3g} "
                  f"({s['final_over_peak']:.2g} of the peak)")
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
