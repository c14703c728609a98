"""Problems, particle states and the input validation shared by every engine."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_particles, clip_value, nonnegative, positive, positive_int
from .laws import (
    MAX_TENSOR_NODES,
    DiracMixture,
    EmpiricalData,
    GaussianMixture,
    Law,
    NormalInit,
    ParticleLaw,
    StandardNormal,
    UniformInit,
    gauss_hermite,
)
from .objectives import check_loss

__all__ = ["Problem", "State", "initial_state"]


#: Seed of the penalty's fixed triples (:meth:`Problem.penalty_triples`).
PENALTY_SEED = 20170331


@dataclass(frozen=True, eq=False)
class Problem:
    """A WGAN mean-field problem: dimensions, target ``P_*``, latent law and clipping box.

    Parameters
    ----------
    K : int
        Data dimension.
    L : int
        Latent dimension.
    target : Law
        The data law ``P_*`` (:class:`~meanfield_gan.model.laws.GaussianMixture`,
        :class:`~meanfield_gan.model.laws.DiracMixture` or
        :class:`~meanfield_gan.model.laws.EmpiricalData`).
    latent : Law, optional
        The latent law of ``Z``; ``N(0, I_L)`` by default.
    clip : float
        Half-width of the critic's box ``Q = [-clip, clip]^{K+2}`` (1 in the paper).
    generator_init : ParticleLaw
        Initial law ``mu_in`` of every generator coordinate; default i.i.d. ``N(0, 1)``.
    critic_init : ParticleLaw or None
        Initial law ``nu_in`` of every critic coordinate; default i.i.d. uniform on
        ``[-clip/2, clip/2]`` (inside ``Q``, so the critic reaches the boundary by dynamics).
    quadrature_size : int
        Default number of quadrature nodes for exact expectations (latent and target each).
    loss : {"wasserstein", "minimax", "non_saturating"}
        The GAN objective (MODEL.md section 7).
    gradient_penalty : float
        Weight ``lambda >= 0`` of the gradient penalty on the critic (``wasserstein`` only).
    penalty_size : int
        Number of quasi-Monte Carlo ``(z, x, eps)`` triples of the penalty for deterministic
        schemes (SGD uses the batch's own pairs).
    instance_noise : float
        Standard deviation ``sigma_n >= 0`` of the instance noise added to data and generated
        samples before the critic.
    noise_anneal : float or None
        If set (``> 0``), ``sigma_n`` decays linearly to 0 at this time; constant otherwise.
    noise_nodes : int
        Gauss-Hermite nodes per data dimension for the noise in deterministic schemes.
    """

    K: int
    L: int
    target: Law
    latent: Law | None = None
    clip: float = 1.0
    generator_init: ParticleLaw = field(default_factory=NormalInit)
    critic_init: ParticleLaw | None = None
    quadrature_size: int = 256
    loss: str = "wasserstein"
    gradient_penalty: float = 0.0
    penalty_size: int = 256
    instance_noise: float = 0.0
    noise_anneal: float | None = None
    noise_nodes: int = 5

    def __post_init__(self) -> None:
        for name in ("K", "L"):
            object.__setattr__(self, name, positive_int(getattr(self, name), name))
        object.__setattr__(self, "clip", clip_value(self.clip))
        if self.latent is None:
            object.__setattr__(self, "latent", StandardNormal(self.L))
        if self.latent.dim != self.L:
            raise ValueError(f"latent law has dimension {self.latent.dim}, but L={self.L}")
        if not isinstance(self.target, (GaussianMixture, DiracMixture, EmpiricalData, Law)):
            raise ValueError("target must be a GaussianMixture, DiracMixture or EmpiricalData")
        if self.target.dim != self.K:
            raise ValueError(f"target has dimension {self.target.dim}, but K={self.K}")
        if self.critic_init is None:
            # Inside Q, so the critic reaches the boundary by dynamics; [-1/2, 1/2] without a box.
            half = 0.5 * (self.clip if math.isfinite(self.clip) else 1.0)
            object.__setattr__(self, "critic_init", UniformInit(-half, half))
        object.__setattr__(self, "quadrature_size",
                           positive_int(self.quadrature_size, "quadrature_size"))
        object.__setattr__(self, "loss", check_loss(self.loss))
        object.__setattr__(self, "gradient_penalty",
                           nonnegative(self.gradient_penalty, "gradient_penalty"))
        if self.gradient_penalty > 0 and self.loss != "wasserstein":
            raise ValueError(f"gradient_penalty goes with loss 'wasserstein' only; got loss "
                             f"{self.loss!r}")
        object.__setattr__(self, "penalty_size", positive_int(self.penalty_size, "penalty_size"))
        object.__setattr__(self, "instance_noise",
                           nonnegative(self.instance_noise, "instance_noise"))
        if self.noise_anneal is not None:
            object.__setattr__(self, "noise_anneal", positive(self.noise_anneal, "noise_anneal"))
        object.__setattr__(self, "noise_nodes", positive_int(self.noise_nodes, "noise_nodes"))
        if self.instance_noise > 0 and self.noise_nodes ** self.K > MAX_TENSOR_NODES:
            # (every quadrature node is tensored with the noise nodes: keep that product small)
            raise ValueError(f"noise_nodes: {self.noise_nodes}^K = {self.noise_nodes ** self.K} "
                             f"tensor Gauss-Hermite nodes for the noise exceed "
                             f"{MAX_TENSOR_NODES}; lower noise_nodes")

    def noise_tensor(self, z: np.ndarray, zw: np.ndarray, x: np.ndarray, xw: np.ndarray
                     ) -> tuple[np.ndarray, ...]:
        """Nodes ``z (Bz, L)``, ``x (Bx, K)`` tensored with the Gauss-Hermite noise nodes
        (``noise_nodes`` per data dimension; MODEL.md 7), node-major, noise node fastest.

        Returns ``(z', zw', ez, x', xw', ex)``: at noise level ``sigma`` the generated points
        are ``g(z'_r) + sigma ez_r`` and the data nodes ``x'_r + sigma ex_r``.
        """
        e, we = gauss_hermite(self.noise_nodes, self.K)
        nq = len(we)
        return (np.repeat(z, nq, axis=0), np.outer(zw, we).ravel(), np.tile(e, (len(zw), 1)),
                np.repeat(x, nq, axis=0), np.outer(xw, we).ravel(), np.tile(e, (len(xw), 1)))

    def penalty_triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The gradient penalty's fixed ``(z, x, eps, weights)`` for deterministic schemes.

        ``penalty_size`` triples: ``eps`` a scrambled Sobol sequence on ``[0, 1]`` (low
        discrepancy where the interpolates' spread matters most), ``z`` and ``x`` drawn once
        from the latent law and the target with a fixed seed; equal weights.  Fixed, so every
        engine and every call sees the same nodes.
        """
        from scipy.stats import qmc

        cache = self.__dict__.setdefault("_quadrature_cache", {})
        if "penalty" in cache:  # (drawn once: records and runners ask again and again)
            return tuple(a.copy() for a in cache["penalty"])
        P = self.penalty_size
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(PENALTY_SEED)))
        eps = qmc.Sobol(1, scramble=True, seed=rng).random(P)[:, 0]
        z = self.latent.sample(rng, P)
        x = self.target.sample(rng, P)
        cache["penalty"] = (z, x, eps, np.full(P, 1.0 / P))
        return tuple(a.copy() for a in cache["penalty"])

    def noise_at(self, t: float) -> float:
        """The instance-noise standard deviation at time ``t`` (annealed linearly if asked)."""
        if self.noise_anneal is None:
            return self.instance_noise
        return self.instance_noise * max(0.0, 1.0 - t / self.noise_anneal)

    @property
    def has_box(self) -> bool:
        """Whether the critic lives in a box (``clip`` finite)."""
        return math.isfinite(self.clip)

    @property
    def generator_shape(self) -> tuple[int, int]:
        """Shape of one generator particle, ``(K, L+2)``."""
        return (self.K, self.L + 2)

    @property
    def critic_dim(self) -> int:
        """Dimension of one critic particle, ``K+2``."""
        return self.K + 2

    def quadrature(self, n_latent: int | None = None, n_target: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Quadrature ``(z, z_weights, x, x_weights)`` for the exact expectations (fresh copies)."""
        # Cached: a Gauss-Hermite rule costs an eigenvalue problem, and drivers that advance a
        # run in several simulate() calls ask for the same rule each time.
        key = (n_latent or self.quadrature_size, n_target or self.quadrature_size)
        cache = self.__dict__.setdefault("_quadrature_cache", {})
        if key not in cache:
            z, zw = self.latent.quadrature(key[0])
            x, xw = self.target.quadrature(key[1])
            cache[key] = (z, zw, x, xw)
        return tuple(a.copy() for a in cache[key])


@dataclass
class State:
    """A particle configuration and where it stands in a run.

    Attributes
    ----------
    theta : ndarray, shape (N, K, L+2)
        Generator particles.
    omega : ndarray, shape (M, K+2)
        Critic particles.
    step : int
        Number of (generator) steps taken.
    time : float
        Mean-field time ``step * dt``.
    opt : dict
        Optimiser state (RMSProp's running squared velocities), empty for plain schemes.
    """

    theta: np.ndarray
    omega: np.ndarray
    step: int = 0
    time: float = 0.0
    opt: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def N(self) -> int:
        return self.theta.shape[0]

    @property
    def M(self) -> int:
        return self.omega.shape[0]

    def copy(self) -> State:
        """A deep copy (particle arrays and optimiser state copied)."""
        return State(self.theta.copy(), self.omega.copy(), self.step, self.time,
                     {k: v.copy() for k, v in self.opt.items()})


def initial_state(problem: Problem, N: int, M: int, seed: int | np.random.Generator | None = 0,
                  *, theta: np.ndarray | None = None, omega: np.ndarray | None = None) -> State:
    """Draw i.i.d. initial particles from the problem's ``mu_in`` and ``nu_in``.

    Parameters
    ----------
    problem : Problem
    N, M : int
        Numbers of generator and critic particles.
    seed : int or Generator
        Seed of the draw (generator particles first, then critic particles).
    theta, omega : ndarray, optional
        Explicit initial particles instead of draws (validated against the problem).

    Returns
    -------
    State
        Critic particles are clipped into ``Q``.
    """
    for name, v in (("N", N), ("M", M)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    th = (problem.generator_init.sample(rng, (int(N),) + problem.generator_shape)
          if theta is None else theta)
    om = problem.critic_init.sample(rng, (int(M), problem.critic_dim)) if omega is None else omega
    th, om, _, _ = check_particles(th, om, problem.K, problem.L)
    if th.shape[0] != N or om.shape[0] != M:
        raise ValueError(f"explicit particles have N={th.shape[0]}, M={om.shape[0]}; "
                         f"expected N={N}, M={M}")
    np.clip(om, -problem.clip, problem.clip, out=om)
    return State(th.copy(), om.copy())
