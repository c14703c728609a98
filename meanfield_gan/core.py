"""The public model functions of API.md: :func:`velocity`, :func:`project_velocity`,
:func:`energy`, :func:`generator_output`, :func:`critic_output`.

They validate, dispatch to an engine and return; the arithmetic lives in
:mod:`meanfield_gan.engines.reference` (NumPy), :mod:`meanfield_gan.engines._numba` and
:mod:`meanfield_gan.engines._cuda`.
"""
from __future__ import annotations

import numpy as np

from ._validation import (
    check_nodes,
    check_omega,
    check_particles,
    clip_value,
    finite_array,
    nonnegative,
)
from .engines import BACKENDS, check_backend
from .engines import reference as _reference
from .model.objectives import check_loss

__all__ = ["velocity", "objectives", "project_velocity", "energy", "generator_output",
           "critic_output",
           "BACKENDS", "check_backend"]


def _engine(backend: str):
    """The engine module of a backend (imported on first use)."""
    check_backend(backend)
    if backend == "numpy":
        return _reference
    if backend == "numba":
        from .engines import _numba

        return _numba
    from .engines import _cuda

    return _cuda


def generator_output(theta, z, backend: str = "numpy") -> np.ndarray:
    """The generator ``g_mu(z_b) = (1/N) sum_i sigma(z_b; theta_i)`` (MODEL.md section 1).

    Parameters
    ----------
    theta : ndarray, shape (N, K, L+2)
        Generator particles.
    z : ndarray, shape (B, L)
        Latent points.
    backend : {"numpy", "numba", "cuda"}
        Engine (``"cuda"`` evaluates with Numba on the CPU: outputs are diagnostics).

    Returns
    -------
    ndarray, shape (B, K)
    """
    check_backend(backend)
    theta = finite_array(theta, "theta", 3)
    if theta.shape[0] < 1 or theta.shape[1] < 1 or theta.shape[2] < 3:
        raise ValueError(f"theta must have shape (N, K, L+2) with N, K, L >= 1; got {theta.shape}")
    L = theta.shape[2] - 2
    z = finite_array(z, "z", 2)
    if z.shape[1] != L or z.shape[0] < 1:
        raise ValueError(f"z must have shape (B, L) = (B, {L}) with B >= 1; got {z.shape}")
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    if backend == "numpy":
        return _reference.generator_output(theta, z)
    from .engines import _numba

    return _numba.generator_output(theta, z)


def critic_output(omega, x, backend: str = "numpy") -> np.ndarray:
    """The critic ``f_nu(x_b) = (1/M) sum_j alpha_j s(<beta_j, x_b> + gamma_j)`` (MODEL.md 1).

    Parameters
    ----------
    omega : ndarray, shape (M, K+2)
        Critic particles.
    x : ndarray, shape (B, K)
        Points.
    backend : {"numpy", "numba", "cuda"}
        Engine (``"cuda"`` evaluates with Numba on the CPU).

    Returns
    -------
    ndarray, shape (B,)
    """
    check_backend(backend)
    omega = check_omega(omega)
    K = omega.shape[1] - 2
    x = finite_array(x, "x", 2)
    if x.shape[1] != K or x.shape[0] < 1:
        raise ValueError(f"x must have shape (B, K) = (B, {K}) with B >= 1; got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if backend == "numpy":
        return _reference.critic_output(omega, x)
    from .engines import _numba

    # A critic is a generator with one output row: f_nu = g for theta = omega[:, None, :].
    return _numba.generator_output(omega[:, None, :], x)[:, 0]


def _check_objective_args(loss, z_noise, penalty, Bz: int, K: int, L: int):
    """Validate the objective keywords of :func:`velocity` and :func:`objectives`."""
    check_loss(loss)
    if z_noise is not None:
        z_noise = finite_array(z_noise, "z_noise", 2)
        if z_noise.shape != (Bz, K):
            raise ValueError(f"z_noise must have shape (Bz, K) = ({Bz}, {K}); got {z_noise.shape}")
        z_noise = np.ascontiguousarray(z_noise, dtype=np.float64)
    if penalty is not None:
        try:
            lam, (zp, xp, eps, wp) = penalty
        except (TypeError, ValueError):
            raise ValueError("penalty must be (lam, (zp, xp, eps, wp))") from None
        lam = nonnegative(lam, "penalty weight lam")
        if lam > 0 and loss != "wasserstein":
            raise ValueError(f"the gradient penalty goes with loss 'wasserstein'; got {loss!r}")
        zp, _, xp, wp = check_nodes(zp, wp, xp, wp, K, L)
        eps = np.ascontiguousarray(finite_array(eps, "eps", 1), dtype=np.float64)
        if not (len(zp) == len(xp) == len(eps) == len(wp)):
            raise ValueError("penalty: zp, xp, eps and wp must have the same length P")
        penalty = (lam, (zp, xp, eps, wp))
    return z_noise, penalty


def velocity(theta, omega, z, z_weights, x, x_weights, backend: str = "numba", *,
             loss: str = "wasserstein", z_noise=None, penalty=None
             ) -> tuple[np.ndarray, np.ndarray]:
    """The mean-field velocity fields ``(V_theta, V_omega)`` at every particle (MODEL.md 2, 7).

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
        Data nodes (noisy ones for data-side instance noise).
    x_weights : ndarray, shape (Bx,)
        Their weights.
    backend : {"numpy", "numba", "cuda"}
        Engine.
    loss : {"wasserstein", "minimax", "non_saturating"}
        The objective (MODEL.md section 7).
    z_noise : ndarray, shape (Bz, K), optional
        Offsets added to the generated points ``g(z_b)`` before the critic (instance noise).
    penalty : (lam, (zp, xp, eps, wp)), optional
        The gradient penalty's weight and triples ``zp (P, L)``, ``xp (P, K)``, ``eps (P,)``,
        ``wp (P,)`` (``wasserstein`` only); it adds ``-lam grad_omega dP/dnu`` to ``V_omega``.

    Returns
    -------
    v_theta : ndarray, shape (N, K, L+2)
    v_omega : ndarray, shape (M, K+2)
    """
    check_backend(backend)
    theta, omega, K, L = check_particles(theta, omega)
    z, zw, x, xw = check_nodes(z, z_weights, x, x_weights, K, L)
    z_noise, penalty = _check_objective_args(loss, z_noise, penalty, len(zw), K, L)
    if backend == "numpy":
        return _reference.velocity(theta, omega, z, zw, x, xw, loss, z_noise, penalty)
    return _engine(backend).velocity(theta, omega, z, zw, x, xw, loss, z_noise, penalty)


def objectives(theta, omega, z, z_weights, x, x_weights, backend: str = "numpy", *,
               loss: str = "wasserstein", z_noise=None, penalty=None) -> tuple[float, float]:
    """The critic's and the generator's objectives ``(Psi_c, Psi_g)`` (MODEL.md section 7).

    ``Psi_c = sum_b zw_b phi_1(f(g(z_b))) + sum_b xw_b phi_2(f(x_b)) - lam P`` and
    ``Psi_g = sum_b zw_b phi_3(f(g(z_b)))``, in forms that stay finite when the critic
    saturates.  Arguments as in :func:`velocity` (``backend`` is accepted for symmetry: the
    objectives are diagnostics and evaluate with the NumPy reference).

    Returns
    -------
    psi_c, psi_g : float
    """
    check_backend(backend)
    theta, omega, K, L = check_particles(theta, omega)
    z, zw, x, xw = check_nodes(z, z_weights, x, x_weights, K, L)
    z_noise, penalty = _check_objective_args(loss, z_noise, penalty, len(zw), K, L)
    return _reference.objectives(theta, omega, z, zw, x, xw, loss, z_noise, penalty)


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
    clip = clip_value(clip)
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
    from .engines import _numba as ne

    return ne.energy(theta, omega, np.ascontiguousarray(z.T), zw, np.ascontiguousarray(x.T), xw)
