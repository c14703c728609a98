"""The readable NumPy reference of MODEL.md sections 1-2: the ground truth of every test.

Written for clarity, not speed: it forms the ``(N, B, K)`` and ``(B, M)`` arrays the fast
engines avoid. Inputs are assumed validated (see :mod:`meanfield_gan._validation`).
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit as sigmoid

from .base import Runner


def _split_theta(theta: np.ndarray):
    L = theta.shape[2] - 2
    return theta[..., 0], theta[..., 1:L + 1], theta[..., L + 1]  # a (N,K), B (N,K,L), c (N,K)


def _split_omega(omega: np.ndarray):
    K = omega.shape[1] - 2
    return omega[:, 0], omega[:, 1:K + 1], omega[:, K + 1]  # alpha (M,), beta (M,K), gamma (M,)


def generator_output(theta: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``g_mu(z_b) = (1/N) sum_i sigma(z_b; theta_i)``, shape ``(B, K)``."""
    a, B, c = _split_theta(theta)
    u = np.einsum("nkl,bl->nbk", B, z) + c[:, None, :]
    return np.mean(a[:, None, :] * sigmoid(u), axis=0)


def _preact(p: np.ndarray, beta: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """``u[b, j] = beta_j . p_b + gamma_j``, shape ``(B, M)``.

    Written as elementwise products summed over ``k`` (not a BLAS product, whose kernels treat
    edge columns with other code), so every critic particle ``j`` gets the same arithmetic:
    coincident particles get bitwise-equal values (MODEL.md section 4.3).
    """
    u = np.repeat(gamma[None, :], len(p), axis=0)
    for k in range(beta.shape[1]):
        u += p[:, k, None] * beta[None, :, k]
    return u


def _wsum(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``sum_b w_b a[b, ...]`` as an axis-0 reduction: the same order for every column."""
    return np.sum(w.reshape((-1,) + (1,) * (a.ndim - 1)) * a, axis=0)


def critic_output(omega: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``f_nu(x_b) = (1/M) sum_j alpha_j s(beta_j . x_b + gamma_j)``, shape ``(B,)``."""
    alpha, beta, gamma = _split_omega(omega)
    return np.mean(alpha * sigmoid(_preact(x, beta, gamma)), axis=1)


def critic_gradient(omega: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``grad_x f_nu(x_b) = (1/M) sum_j alpha_j s'(u_bj) beta_j``, shape ``(B, K)``."""
    alpha, beta, gamma = _split_omega(omega)
    s = sigmoid(_preact(x, beta, gamma))
    return (alpha * s * (1.0 - s)) @ beta / omega.shape[0]


def energy(theta, omega, z, zw, x, xw) -> float:
    """``Psi[mu, nu] = E_Z f(g(Z)) - E_X f(X)`` with the given quadratures."""
    return float(zw @ critic_output(omega, generator_output(theta, z)) - xw @ critic_output(omega, x))


def critic_velocity(omega, g, zw, x, xw) -> np.ndarray:
    """``V_omega`` at every critic particle (not projected, not scaled by ``gamma_c``).

    ``g`` holds the generated points ``g_mu(z_b)``.
    """
    alpha, beta, gamma = _split_omega(omega)
    out = np.empty_like(omega)
    K = omega.shape[1] - 2
    # d/dalpha = s(u); d/dbeta = alpha s'(u) x; d/dgamma = alpha s'(u): E at g(Z) minus E at X.
    sg = sigmoid(_preact(g, beta, gamma))  # (Bz, M)
    sx = sigmoid(_preact(x, beta, gamma))  # (Bx, M)
    dg = sg * (1.0 - sg)
    dx = sx * (1.0 - sx)
    out[:, 0] = _wsum(zw, sg) - _wsum(xw, sx)
    out[:, 1:K + 1] = alpha[:, None] * (_wsum(zw, dg[:, :, None] * g[:, None, :])
                                        - _wsum(xw, dx[:, :, None] * x[:, None, :]))
    out[:, K + 1] = alpha * (_wsum(zw, dg) - _wsum(xw, dx))
    return out


def generator_velocity(theta, z, zw, h) -> np.ndarray:
    """``V_theta`` at every generator particle, with ``h_b = grad f(g(z_b))``."""
    a, B, c = _split_theta(theta)
    L = theta.shape[2] - 2
    s = sigmoid(np.einsum("nkl,bl->nbk", B, z) + c[:, None, :])  # (N, Bz, K)
    ds = s * (1.0 - s)
    wh = zw[:, None] * h  # (Bz, K)
    out = np.empty_like(theta)
    # V_theta is MINUS the expectation of h_k s(u_k), h_k a_k s'(u_k) Z, h_k a_k s'(u_k).
    out[..., 0] = -np.einsum("bk,nbk->nk", wh, s)
    out[..., 1:L + 1] = -a[..., None] * np.einsum("bk,nbk,bl->nkl", wh, ds, z)
    out[..., L + 1] = -a * np.einsum("bk,nbk->nk", wh, ds)
    return out


def velocity(theta, omega, z, zw, x, xw) -> tuple[np.ndarray, np.ndarray]:
    """Both velocity fields ``(V_theta, V_omega)`` of MODEL.md section 2."""
    g = generator_output(theta, z)
    h = critic_gradient(omega, g)
    return generator_velocity(theta, z, zw, h), critic_velocity(omega, g, zw, x, xw)


def project_velocity(omega: np.ndarray, v: np.ndarray, clip: float) -> np.ndarray:
    """Tangent-cone projection onto ``Q = [-clip, clip]^{K+2}`` (MODEL.md section 2)."""
    out = v.copy()
    out[((omega >= clip) & (v > 0)) | ((omega <= -clip) & (v < 0))] = 0.0
    return out


# --------------------------------------------------------------------------------------
# the reference step runner: one Python iteration per step, one function per step rule
# --------------------------------------------------------------------------------------


def _vel(theta, omega, zT, zw, xT, xw):
    return velocity(theta, omega, np.ascontiguousarray(zT.T), zw, np.ascontiguousarray(xT.T), xw)


def _rms(y, h, v, sq, rho, eps):
    sq *= rho
    sq += (1.0 - rho) * v * v
    y += h * v / (np.sqrt(sq) + eps)


def _euler_like(r, s, Zs, Xs, rms=False):
    """Projected Euler (quadrature), simultaneous SGD and RMSProp (batch ``s``)."""
    th, om, c = r.theta, r.omega, r.clip
    z, x = (r.zT, r.xT) if Zs is None else (Zs[s, 0], Xs[s, 0])
    vt, vo = _vel(th, om, z, r.zw, x, r.xw)
    if rms:
        rho, eps = r.hyper["rho"], r.hyper["eps"]
        _rms(th, r.dt, vt, r.opt["theta_sq"], rho, eps)
        _rms(om, r.gdt, vo, r.opt["omega_sq"], rho, eps)
    else:
        th += r.dt * vt
        om += r.gdt * vo
    np.clip(om, -c, c, out=om)


def _heun(r, s, Zs, Xs):
    th, om, c = r.theta, r.omega, r.clip
    vt, vo = _vel(th, om, r.zT, r.zw, r.xT, r.xw)
    vo = project_velocity(om, vo, c)
    th2 = th + r.dt * vt
    om2 = np.clip(om + r.gdt * vo, -c, c)
    vt2, vo2 = _vel(th2, om2, r.zT, r.zw, r.xT, r.xw)
    vo2 = project_velocity(om2, vo2, c)
    th += 0.5 * r.dt * (vt + vt2)
    om += 0.5 * r.gdt * (vo + vo2)
    np.clip(om, -c, c, out=om)


def _sgd_alternating(r, s, Zs, Xs):
    th, om, c = r.theta, r.omega, r.clip
    n_critic = Xs.shape[1]
    for k in range(n_critic):
        _, vo = _vel(th, om, Zs[s, k], r.zw, Xs[s, k], r.xw)
        om += r.crit_dt * vo
        np.clip(om, -c, c, out=om)
    vt, _ = _vel(th, om, Zs[s, n_critic], r.zw, Xs[s, 0], r.xw)
    th += r.dt * vt


#: One function per step rule (``Scheme.rule``): ``rule(runner, s, Zs, Xs)`` takes step ``s``.
RULES = {
    "euler": _euler_like,
    "sgd": _euler_like,
    "rmsprop": lambda r, s, Zs, Xs: _euler_like(r, s, Zs, Xs, rms=True),
    "heun": _heun,
    "sgd_alt": _sgd_alternating,
}


class NumpyRunner(Runner):
    """The reference engine: the update rules of MODEL.md section 3, one step at a time."""

    def __init__(self, problem, state, scheme):
        super().__init__(problem, state, scheme)
        try:
            self._rule = RULES[self.rule]
        except KeyError:
            raise ValueError(f"the numpy engine has no step rule {self.rule!r}") from None

    def advance(self, n: int, Zs, Xs) -> int:
        for s in range(n):
            self._rule(self, s, Zs, Xs)
            if not (np.all(np.isfinite(self.theta)) and np.all(np.isfinite(self.omega))):
                return s
        return n
