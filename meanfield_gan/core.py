"""The public model functions of API.md: :func:`velocity`, :func:`project_velocity`, :func:`energy`.

They validate, dispatch to an engine and return; the arithmetic lives in
:mod:`meanfield_gan._reference` (NumPy), :mod:`meanfield_gan._numba_engine` and
:mod:`meanfield_gan._cuda_engine`.
"""
from __future__ import annotations

import numpy as np

from . import _reference
from .problem import check_clip, check_nodes, check_particles

__all__ = ["velocity", "project_velocity", "energy", "BACKENDS", "check_backend"]

BACKENDS = ("numpy", "numba", "cuda")


def check_backend(backend: str) -> str:
    """Validate an engine name (``numpy``, ``numba`` or ``cuda``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


def _numba_velocity(theta, omega, z, zw, x, xw):
    from . import _numba_engine as ne

    N, K, L2 = theta.shape
    ws = ne.Workspace(N, omega.shape[0], K, L2 - 2, len(zw), len(xw))
    vt = np.empty_like(theta)
    vo = np.empty_like(omega)
    ne.velocity_into(theta, omega, np.ascontiguousarray(z.T), zw, np.ascontiguousarray(x.T), xw,
                     vt, vo, *ws.args())
    return vt, vo


def velocity(theta, omega, z, z_weights, x, x_weights, backend: str = "numba"
             ) -> tuple[np.ndarray, np.ndarray]:
    """The mean-field velocity fields ``(V_theta, V_omega)`` at every particle (MODEL.md section 2).

    The critic velocity is neither projected nor scaled by ``gamma_c``.

    Parameters
    ----------
    theta : ndarray, shape (N, K, L+2)
        Generator particles ``(a, B, c)`` per row ``k``.
    omega : ndarray, shape (M, K+2)
        Critic particles ``(alpha, beta, gamma)``.
    z : ndarray, shape (Bz, L)
        Latent nodes (quadrature nodes or an SGD batch).
    z_weights : ndarray, shape (Bz,)
        Their weights (``1/m`` for a batch of ``m``).
    x : ndarray, shape (Bx, K)
        Data nodes.
    x_weights : ndarray, shape (Bx,)
        Their weights.
    backend : {"numpy", "numba", "cuda"}
        Engine.

    Returns
    -------
    v_theta : ndarray, shape (N, K, L+2)
    v_omega : ndarray, shape (M, K+2)
    """
    check_backend(backend)
    theta, omega, K, L = check_particles(theta, omega)
    z, zw, x, xw = check_nodes(z, z_weights, x, x_weights, K, L)
    if backend == "numpy":
        return _reference.velocity(theta, omega, z, zw, x, xw)
    if backend == "numba":
        return _numba_velocity(theta, omega, z, zw, x, xw)
    from . import _cuda_engine

    return _cuda_engine.velocity(theta, omega, z, zw, x, xw)


def project_velocity(omega, v_omega, clip: float) -> np.ndarray:
    """Project critic velocities onto the tangent cone of ``Q = [-clip, clip]^{K+2}``.

    Coordinate ``l`` of ``v_omega[j]`` is set to 0 where ``omega[j, l] >= clip`` and the
    velocity points out (``> 0``), or ``omega[j, l] <= -clip`` and it is ``< 0``.

    Parameters
    ----------
    omega : ndarray, shape (M, K+2)
    v_omega : ndarray, shape (M, K+2)
    clip : float
        Half-width of the box, > 0.

    Returns
    -------
    ndarray, shape (M, K+2)
        The projected velocity (a new array).
    """
    clip = check_clip(clip)
    omega = np.asarray(omega, dtype=np.float64)
    v = np.asarray(v_omega, dtype=np.float64)
    if omega.ndim != 2 or omega.shape[1] < 3:
        raise ValueError(f"omega must have shape (M, K+2); got {omega.shape}")
    if v.shape != omega.shape:
        raise ValueError(f"v_omega must have the shape of omega {omega.shape}; got {v.shape}")
    if not (np.all(np.isfinite(omega)) and np.all(np.isfinite(v))):
        raise ValueError("omega and v_omega must be finite")
    return _reference.project_velocity(omega, v, clip)


def energy(theta, omega, z, z_weights, x, x_weights, backend: str = "numpy") -> float:
    """The WGAN energy ``Psi[mu_N, nu_M] = E_Z f(g(Z)) - E_X f(X)`` with the given quadratures.

    Parameters
    ----------
    theta, omega, z, z_weights, x, x_weights
        As in :func:`velocity`.
    backend : {"numpy", "numba"}
        Engine (``"cuda"`` evaluates on the CPU with Numba: energies are diagnostics).

    Returns
    -------
    float
    """
    check_backend(backend)
    theta, omega, K, L = check_particles(theta, omega)
    z, zw, x, xw = check_nodes(z, z_weights, x, x_weights, K, L)
    if backend == "numpy":
        return _reference.energy(theta, omega, z, zw, x, xw)
    from . import _numba_engine as ne

    return ne.energy(theta, omega, np.ascontiguousarray(z.T), zw, np.ascontiguousarray(x.T), xw)
