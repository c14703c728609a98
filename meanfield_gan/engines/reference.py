"""The readable NumPy reference of MODEL.md sections 1-2: the ground truth of every test.

Written for clarity, not speed: it forms the ``(N, B, K)`` and ``(B, M)`` arrays the fast
engines avoid. Inputs are assumed validated (see :mod:`meanfield_gan._validation`).
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit as sigmoid

from ..model.objectives import dphi, phi
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
    return float(zw @ critic_output(omega, generator_output(theta, z))
                 - xw @ critic_output(omega, x))


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


def _node_weights(loss, omega, gn, zw, x, xw):
    """Weights of the velocity sums under ``loss`` (MODEL.md section 7).

    Returns ``(wz, wx, wh)``: the critic velocity is ``sum_b wz_b grad sigma(gn_b) - sum_b wx_b
    grad sigma(x_b)`` (``wx = -xw phi_2'``) and the generator's uses ``wh_b = zw_b phi_3'``.
    The Wasserstein weights are the node weights themselves (no ``f`` needed).
    """
    if loss == "wasserstein":
        return zw, xw, zw
    d1, _, d3 = dphi(loss, critic_output(omega, gn))
    _, d2, _ = dphi(loss, critic_output(omega, x))
    return zw * d1, -(xw * d2), zw * d3


def penalty_velocity(omega, xh, wp) -> np.ndarray:
    """``grad_omega (dP/dnu)`` of the gradient penalty at every critic particle (MODEL.md 7).

    ``xh (P, K)`` are the interpolates ``eps X + (1 - eps) g(Z)`` (held fixed), ``wp (P,)``
    their weights.  With ``c = 2 (|grad f| - 1) grad f / |grad f|`` (0 where ``grad f = 0``):
    ``(s'(u) beta.c, alpha s''(u) (beta.c) xh + alpha s'(u) c, alpha s''(u) beta.c)``.
    """
    alpha, beta, gamma = _split_omega(omega)
    K = omega.shape[1] - 2
    gf = critic_gradient(omega, xh)  # (P, K)
    norm = np.sqrt(np.sum(gf * gf, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(norm[:, None] > 0, 2.0 * (norm - 1.0)[:, None] * gf / norm[:, None], 0.0)
    s = sigmoid(_preact(xh, beta, gamma))  # (P, M)
    ds = s * (1.0 - s)
    dds = ds * (1.0 - 2.0 * s)
    bc = np.zeros_like(s)  # beta_j . c_p, (P, M)
    for k in range(K):
        bc += c[:, k, None] * beta[None, :, k]
    out = np.empty_like(omega)
    out[:, 0] = _wsum(wp, ds * bc)
    out[:, 1:K + 1] = alpha[:, None] * (_wsum(wp, (dds * bc)[:, :, None] * xh[:, None, :])
                                        + _wsum(wp, ds[:, :, None] * c[:, None, :]))
    out[:, K + 1] = alpha * _wsum(wp, dds * bc)
    return out


def penalty_value(omega, xh, wp) -> float:
    """``P = sum_p wp_p (|grad f(xh_p)| - 1)^2``."""
    gf = critic_gradient(omega, xh)
    return float(wp @ (np.sqrt(np.sum(gf * gf, axis=1)) - 1.0) ** 2)


def interpolates(theta, zp, xp, eps) -> np.ndarray:
    """The penalty's points ``xh = eps X + (1 - eps) g(Z)``, shape ``(P, K)``."""
    return eps[:, None] * xp + (1.0 - eps[:, None]) * generator_output(theta, zp)


def velocity(theta, omega, z, zw, x, xw, loss: str = "wasserstein", z_noise=None,
             penalty=None) -> tuple[np.ndarray, np.ndarray]:
    """Both velocity fields ``(V_theta, V_omega)`` of MODEL.md sections 2 and 7.

    ``z_noise (Bz, K)`` offsets the generated points (instance noise as nodes); ``penalty``
    is ``(lam, (zp, xp, eps, wp))`` or None.
    """
    g = generator_output(theta, z)
    gn = g if z_noise is None else g + z_noise
    wz, wx, wh = _node_weights(loss, omega, gn, zw, x, xw)
    h = critic_gradient(omega, gn)
    vt = generator_velocity(theta, z, wh, h)
    vo = critic_velocity(omega, gn, wz, x, wx)
    if penalty is not None and penalty[0] != 0:
        lam, (zp, xp, eps, wp) = penalty
        vo -= lam * penalty_velocity(omega, interpolates(theta, zp, xp, eps), wp)
    return vt, vo


def objectives(theta, omega, z, zw, x, xw, loss: str = "wasserstein", z_noise=None,
               penalty=None) -> tuple[float, float]:
    """``(Psi_c, Psi_g)`` of MODEL.md section 7 with the given nodes."""
    g = generator_output(theta, z)
    gn = g if z_noise is None else g + z_noise
    p1, _, p3 = phi(loss, critic_output(omega, gn))
    _, p2, _ = phi(loss, critic_output(omega, x))
    psi_c = float(zw @ p1 + xw @ p2)
    if penalty is not None and penalty[0] != 0:
        lam, (zp, xp, eps, wp) = penalty
        psi_c -= lam * penalty_value(omega, interpolates(theta, zp, xp, eps), wp)
    return psi_c, float(zw @ p3)


def project_velocity(omega: np.ndarray, v: np.ndarray, clip: float) -> np.ndarray:
    """Tangent-cone projection onto ``Q = [-clip, clip]^{K+2}`` (MODEL.md section 2)."""
    out = v.copy()
    out[((omega >= clip) & (v > 0)) | ((omega <= -clip) & (v < 0))] = 0.0
    return out


# --------------------------------------------------------------------------------------
# the reference step runner: one Python iteration per step, one function per step rule
# --------------------------------------------------------------------------------------


def _rms(y, h, v, sq, rho, eps):
    sq *= rho
    sq += (1.0 - rho) * v * v
    y += h * v / (np.sqrt(sq) + eps)


def _adam(y, h, v, m, sq, k, b1, b2, eps):
    """Adam's update of MODEL.md section 7 at the ``k``-th update (``k >= 1``)."""
    m *= b1
    m += (1.0 - b1) * v
    sq *= b2
    sq += (1.0 - b2) * v * v
    y += h * (m / (1.0 - b1 ** k)) / (np.sqrt(sq / (1.0 - b2 ** k)) + eps)


def _update(r, part, y, h, v, k):
    """``y += h v`` under the scheme's optimiser (plain, RMSProp or Adam, update ``k``)."""
    if "rho" in r.hyper:
        _rms(y, h, v, r.opt[f"{part}_sq"], r.hyper["rho"], r.hyper["eps"])
    elif "beta1" in r.hyper:
        _adam(y, h, v, r.opt[f"{part}_m"], r.opt[f"{part}_v"], k, r.hyper["beta1"],
              r.hyper["beta2"], r.hyper["eps"])
    else:
        y += h * v


def _simultaneous(r, s, B):
    """Projected Euler (quadrature), simultaneous SGD, RMSProp and Adam (batch ``s``)."""
    th, om, c = r.theta, r.omega, r.clip
    vt, vo = r.velocity(th, om, B.nodes(s, 0, 0))
    k = r.step + s + 1
    if not r.frozen:
        _update(r, "theta", th, r.dt, vt, k)
    _update(r, "omega", om, r.gdt, vo, k)
    np.clip(om, -c, c, out=om)


def _heun(r, s, B):
    th, om, c = r.theta, r.omega, r.clip
    nodes = B.nodes(s, 0, 0)
    vt, vo = r.velocity(th, om, nodes)
    vo = project_velocity(om, vo, c)
    th2 = th + r.dt * vt
    om2 = np.clip(om + r.gdt * vo, -c, c)
    vt2, vo2 = r.velocity(th2, om2, nodes)
    vo2 = project_velocity(om2, vo2, c)
    th += 0.5 * r.dt * (vt + vt2)
    om += 0.5 * r.gdt * (vo + vo2)
    np.clip(om, -c, c, out=om)


def _alternating(r, s, B):
    """``n_critic`` critic updates of ``lr/M`` with fresh batches, then a generator update."""
    th, om, c = r.theta, r.omega, r.clip
    n_critic = r.scheme.n_critic
    step = r.step + s
    for k in range(n_critic):
        _, vo = r.velocity(th, om, B.nodes(s, k, k), generator=False)
        _update(r, "omega", om, r.crit_dt, vo, step * n_critic + k + 1)
        np.clip(om, -c, c, out=om)
    if not r.frozen:
        vt, _ = r.velocity(th, om, B.nodes(s, n_critic, 0), critic=False)
        _update(r, "theta", th, r.dt, vt, step + 1)


#: One function per step rule (``Scheme.rule``): ``rule(runner, s, batches)`` takes step ``s``.
RULES = {
    "euler": _simultaneous,
    "sgd": _simultaneous,
    "rmsprop": _simultaneous,
    "adam": _simultaneous,
    "heun": _heun,
    "sgd_alt": _alternating,
    "adam_alt": _alternating,
}


class NumpyRunner(Runner):
    """The reference engine: the update rules of MODEL.md sections 3 and 7, one step at a time."""

    def __init__(self, problem, state, scheme):
        super().__init__(problem, state, scheme)
        try:
            self._rule = RULES[self.rule]
        except KeyError:
            raise ValueError(f"the numpy engine has no step rule {self.rule!r}") from None

    def velocity(self, theta, omega, nodes, generator=True, critic=True):
        z, zw, x, xw, z_noise, penalty = nodes
        if not critic:
            penalty = None
        return velocity(theta, omega, z, zw, x, xw, self.loss, z_noise, penalty)

    def advance(self, n: int, Zs, Xs, extra=None) -> int:
        batches = self.batches(Zs, Xs, extra)
        for s in range(n):
            self._rule(self, s, batches)
            if not (np.all(np.isfinite(self.theta)) and np.all(np.isfinite(self.omega))):
                self.step += s
                return s
        self.step += n
        return n
