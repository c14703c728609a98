"""Problems, particle states and the input validation shared by every engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .laws import (
    DiracMixture,
    EmpiricalData,
    GaussianMixture,
    Law,
    NormalInit,
    ParticleLaw,
    StandardNormal,
    UniformInit,
)

__all__ = ["Problem", "State", "initial_state", "check_particles", "check_nodes", "check_clip"]


def check_clip(clip: float) -> float:
    """Validate the half-width of the clipping box ``Q = [-clip, clip]^{K+2}``."""
    from .schemes import _pos  # one validator for every positive parameter

    return _pos("clip", clip)


def _check_array(arr: Any, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real floating-point array, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values (NaN or Inf)")
    return a


def check_particles(theta: Any, omega: Any, K: int | None = None, L: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate generator ``theta (N, K, L+2)`` and critic ``omega (M, K+2)`` arrays.

    Returns float64 C-contiguous arrays and ``(K, L)``. Raises ValueError naming the argument.
    """
    theta = _check_array(theta, "theta", 3)
    omega = _check_array(omega, "omega", 2)
    N, Kt, L2 = theta.shape
    M, K2 = omega.shape
    if N < 1:
        raise ValueError("theta: need N >= 1 generator particles")
    if M < 1:
        raise ValueError("omega: need M >= 1 critic particles")
    if Kt < 1 or L2 < 3:
        raise ValueError(f"theta must have shape (N, K, L+2) with K >= 1, L >= 1; got {theta.shape}")
    if K2 != Kt + 2:
        raise ValueError(f"omega must have shape (M, K+2) = (M, {Kt + 2}) to match theta's K={Kt}; got {omega.shape}")
    if K is not None and Kt != K:
        raise ValueError(f"theta has K={Kt} but the problem has K={K}")
    if L is not None and L2 - 2 != L:
        raise ValueError(f"theta has L={L2 - 2} but the problem has L={L}")
    return (np.ascontiguousarray(theta, dtype=np.float64),
            np.ascontiguousarray(omega, dtype=np.float64), Kt, L2 - 2)


def check_nodes(z: Any, z_weights: Any, x: Any, x_weights: Any, K: int, L: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate latent nodes ``z (Bz, L)``, data nodes ``x (Bx, K)`` and their weights."""
    z = _check_array(z, "z", 2)
    x = _check_array(x, "x", 2)
    zw = _check_array(z_weights, "z_weights", 1)
    xw = _check_array(x_weights, "x_weights", 1)
    if z.shape[1] != L or z.shape[0] < 1:
        raise ValueError(f"z must have shape (Bz, L) = (Bz, {L}) with Bz >= 1; got {z.shape}")
    if x.shape[1] != K or x.shape[0] < 1:
        raise ValueError(f"x must have shape (Bx, K) = (Bx, {K}) with Bx >= 1; got {x.shape}")
    if zw.shape != (z.shape[0],):
        raise ValueError(f"z_weights must have shape ({z.shape[0]},) to match z; got {zw.shape}")
    if xw.shape != (x.shape[0],):
        raise ValueError(f"x_weights must have shape ({x.shape[0]},) to match x; got {xw.shape}")
    f = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return f(z), f(zw), f(x), f(xw)


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
        The data law ``P_*`` (:class:`~meanfield_gan.laws.GaussianMixture`,
        :class:`~meanfield_gan.laws.DiracMixture` or :class:`~meanfield_gan.laws.EmpiricalData`).
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
    """

    K: int
    L: int
    target: Law
    latent: Law | None = None
    clip: float = 1.0
    generator_init: ParticleLaw = field(default_factory=NormalInit)
    critic_init: ParticleLaw | None = None
    quadrature_size: int = 256

    def __post_init__(self) -> None:
        for name in ("K", "L"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        object.__setattr__(self, "clip", check_clip(self.clip))
        if self.latent is None:
            object.__setattr__(self, "latent", StandardNormal(self.L))
        if self.latent.dim != self.L:
            raise ValueError(f"latent law has dimension {self.latent.dim}, but L={self.L}")
        if not isinstance(self.target, (GaussianMixture, DiracMixture, EmpiricalData)) and not isinstance(self.target, Law):
            raise ValueError("target must be a GaussianMixture, DiracMixture or EmpiricalData")
        if self.target.dim != self.K:
            raise ValueError(f"target has dimension {self.target.dim}, but K={self.K}")
        if self.critic_init is None:
            object.__setattr__(self, "critic_init", UniformInit(-0.5 * self.clip, 0.5 * self.clip))
        if int(self.quadrature_size) != self.quadrature_size or self.quadrature_size < 1:
            raise ValueError(f"quadrature_size must be a positive integer, got {self.quadrature_size!r}")

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

    def copy(self) -> "State":
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
    th = problem.generator_init.sample(rng, (int(N),) + problem.generator_shape) if theta is None else theta
    om = problem.critic_init.sample(rng, (int(M), problem.critic_dim)) if omega is None else omega
    th, om, _, _ = check_particles(th, om, problem.K, problem.L)
    if th.shape[0] != N or om.shape[0] != M:
        raise ValueError(f"explicit particles have N={th.shape[0]}, M={om.shape[0]}; expected N={N}, M={M}")
    np.clip(om, -problem.clip, problem.clip, out=om)
    return State(th.copy(), om.copy())
