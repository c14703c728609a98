"""Probability laws of the model: latent laws, targets ``P_*`` and initial particle laws.

Every latent law and target can **sample** (for SGD batches) and give **quadrature** nodes
and weights (for the exact expectations of projected Euler/Heun), as MODEL.md section 3
prescribes: tensor Gauss-Hermite for Gaussians in low dimension, a fixed scrambled Sobol set
pushed through the inverse CDF otherwise, exact sums for Dirac mixtures and data sets.

Sampling draws only from the ``numpy.random.Generator`` it is given, in a fixed order, so
the same generator state gives the same batch whatever engine consumes it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import special, stats

from .._validation import positive, positive_int

__all__ = [
    "Law",
    "StandardNormal",
    "StandardLogistic",
    "Uniform",
    "GaussianMixture",
    "DiracMixture",
    "EmpiricalData",
    "ParticleLaw",
    "NormalInit",
    "UniformInit",
    "gauss_hermite",
    "sobol_uniform",
    "MAX_TENSOR_NODES",
]

#: Above this many tensor-product nodes the Gaussian quadratures switch to Sobol points.
MAX_TENSOR_NODES = 4096
#: Seed of the fixed scrambled Sobol set (fixed so that quadratures are reproducible).
SOBOL_SEED = 20240527


@runtime_checkable
class Law(Protocol):
    """What the engines need from a latent law or a target: samples and quadrature."""

    dim: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` i.i.d. points, shape ``(n, dim)``."""
        ...

    def quadrature(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Nodes ``(B, dim)`` and weights ``(B,)`` summing to 1; ``n`` sets the accuracy."""
        ...


def gauss_hermite(n_per_dim: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Hermite rule for the standard normal law on ``R^dim``.

    Parameters
    ----------
    n_per_dim : int
        Nodes per coordinate (exact for polynomials of degree ``2 n_per_dim - 1``).
    dim : int
        Dimension.

    Returns
    -------
    nodes : ndarray, shape (n_per_dim**dim, dim)
    weights : ndarray, shape (n_per_dim**dim,), summing to 1
    """
    if n_per_dim < 1 or dim < 1:
        raise ValueError("gauss_hermite: n_per_dim and dim must be >= 1")
    # scipy's roots_hermitenorm switches to asymptotic formulas for large n (numpy's hermegauss
    # overflows to NaN weights from about 400 nodes).
    x, w = special.roots_hermitenorm(n_per_dim)
    w = w / math.sqrt(2.0 * math.pi)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    weights = np.prod(np.stack([g.ravel() for g in wgrids], axis=1), axis=1)
    return nodes, weights / weights.sum()


def sobol_uniform(n: int, dim: int) -> np.ndarray:
    """A fixed scrambled Sobol set of ``n`` points in ``(0, 1)^dim`` (``n`` rounded up to 2^k)."""
    if n < 1 or dim < 1:
        raise ValueError("sobol_uniform: n and dim must be >= 1")
    m = max(0, math.ceil(math.log2(n)))
    u = stats.qmc.Sobol(d=dim, scramble=True, seed=SOBOL_SEED).random_base2(m)
    # Scrambling never returns exact 0 or 1, but guard the inverse CDFs anyway.
    return np.clip(u, 1e-16, 1.0 - 1e-16)


def _per_dim_nodes(n: int, dim: int) -> int:
    """Nodes per coordinate for a tensor rule of about ``n`` nodes in total."""
    return max(1, int(round(n ** (1.0 / dim))))


def _check_n(n: int, name: str = "n") -> int:
    return positive_int(n, name)


# --------------------------------------------------------------------------------------
# Latent laws
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandardNormal:
    """The standard normal law ``N(0, I_dim)`` (the default latent law)."""

    dim: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, self.dim))

    def quadrature(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        n = _check_n(n)
        k = _per_dim_nodes(n, self.dim)
        if k**self.dim <= MAX_TENSOR_NODES:
            return gauss_hermite(k, self.dim)
        u = sobol_uniform(n, self.dim)
        return special.ndtri(u), np.full(len(u), 1.0 / len(u))


@dataclass(frozen=True)
class StandardLogistic:
    """I.i.d. standard logistic coordinates (CDF ``1/(1+exp(-z))``)."""

    dim: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.logistic(0.0, 1.0, (n, self.dim))

    def quadrature(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        u = sobol_uniform(_check_n(n), self.dim)
        return special.logit(u), np.full(len(u), 1.0 / len(u))


@dataclass(frozen=True)
class Uniform:
    """The uniform law on ``[-1, 1]^dim``."""

    dim: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, (n, self.dim))

    def quadrature(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        u = sobol_uniform(_check_n(n), self.dim)
        return 2.0 * u - 1.0, np.full(len(u), 1.0 / len(u))


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


def _as_weights(weights, n: int, name: str) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name}: weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{name}: weights must be finite, non-negative and not all zero")
    return w / w.sum()


def _as_points(points, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"{name}: points must have shape (n, K) with n >= 1, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name}: points must be finite")
    return p


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Mixture of Gaussians ``sum_c w_c N(m_c, diag(s_c^2))`` on ``R^K``.

    Parameters
    ----------
    means : array_like, shape (C, K) (or (C,) for K = 1)
    scales : float or array_like, shape (C,) or (C, K)
        Standard deviations (isotropic per component, or per coordinate).
    weights : array_like, shape (C,), optional
        Mixture weights (normalised); uniform by default.
    """

    means: np.ndarray
    scales: np.ndarray | float = 1.0
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = _as_points(self.means, "GaussianMixture.means")
        s = np.asarray(self.scales, dtype=np.float64)
        s = np.broadcast_to(
            s.reshape(s.shape + (1,) * (2 - s.ndim)) if s.ndim < 2 else s, m.shape).copy()
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("GaussianMixture.scales must be finite and > 0")
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "scales", s)
        object.__setattr__(self, "weights", _as_weights(self.weights, len(m), "GaussianMixture"))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # Draw components then normals in a fixed order: reproducible for a given rng state.
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        eps = rng.standard_normal((n, self.dim))
        return self.means[comp] + self.scales[comp] * eps

    def quadrature(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        n = _check_n(n)
        per_comp = max(1, n // len(self.weights))
        z, w = StandardNormal(self.dim).quadrature(per_comp)
        nodes = (self.means[:, None, :] + self.scales[:, None, :] * z[None]).reshape(-1, self.dim)
        weights = (self.weights[:, None] * w[None]).ravel()
        return nodes, weights


@dataclass(frozen=True, eq=False)
class DiracMixture:
    """Weighted Dirac mixture ``sum_c w_c delta_{x_c}`` (quadrature is exact)."""

    points: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        p = _as_points(self.points, "DiracMixture.points")
        object.__setattr__(self, "points", p)
        object.__setattr__(self, "weights", _as_weights(self.weights, len(p), "DiracMixture"))

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.points[rng.choice(len(self.weights), size=n, p=self.weights)]

    def quadrature(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.points.copy(), self.weights.copy()


@dataclass(frozen=True, eq=False)
class EmpiricalData:
    """An empirical data set ``(1/n) sum_i delta_{x_i}`` (quadrature is the exact sum)."""

    data: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _as_points(self.data, "EmpiricalData.data"))

    @property
    def dim(self) -> int:
        return self.data.shape[1]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.data[rng.integers(0, len(self.data), size=n)]

    def quadrature(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.data.copy(), np.full(len(self.data), 1.0 / len(self.data))


# --------------------------------------------------------------------------------------
# Initial particle laws mu_in, nu_in
# --------------------------------------------------------------------------------------


class ParticleLaw(Protocol):
    """An initial law of particles: ``sample(rng, shape)`` returns an array of that shape."""

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray: ...


@dataclass(frozen=True)
class NormalInit:
    """I.i.d. ``N(loc, scale^2)`` coordinates (default generator law: ``N(0, 1)``)."""

    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        # Messages start with the parameter's name: the run configuration reports them
        # under the key (init.critic.scale).
        if not math.isfinite(self.loc):
            raise ValueError(f"loc must be finite, got {self.loc!r}")
        positive(self.scale, "scale")

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return self.loc + self.scale * rng.standard_normal(shape)


@dataclass(frozen=True)
class UniformInit:
    """I.i.d. uniform coordinates on ``[low, high]``.

    The default critic law is ``U[-clip/2, clip/2]``.
    """

    low: float = -0.5
    high: float = 0.5

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if not self.low < self.high:
            raise ValueError(f"high must be > low = {self.low!r}, got {self.high!r} (a uniform "
                             f"law needs finite low < high)")

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(self.low, self.high, shape)
