"""The Numba CPU engine: fused ``njit(parallel=True)`` kernels and compiled step loops.

Layout and design (see also :mod:`meanfield_gan._reference`, the ground truth):

* Quadrature/batch nodes are passed transposed, ``zT (L, B)`` and ``xT (K, B)``, so every
  innermost loop runs over the nodes ``b`` with unit stride and vectorises (the sigmoid uses
  the polynomial exponential of :mod:`meanfield_gan._scalar`).
* Three passes per velocity evaluation, none forming an ``N x B`` or ``M x B`` array:
  (1) generator output ``g(z_b)``, (2) critic velocity and ``grad f(g(z_b))`` in one sweep over
  critic particles, (3) generator velocity.  Sums over particles are accumulated per chunk of
  particles into ``(n_chunks, K, B)`` partials and reduced in a fixed order, so results do not
  depend on the number of threads.
* Each particle's velocity is computed by the same instruction sequence whatever its index,
  so two coincident critic particles stay bitwise equal (MODEL.md section 4.3).
* ``fastmath={'reassoc', 'nsz'}`` lets LLVM vectorise the reductions over nodes; the exponential
  keeps its own strict flags (it is a separate function), so it stays accurate to 2e-16.
* Step loops (:func:`run_steps`) stay in compiled code; all work buffers are allocated once per
  call, never per step.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _scalar

_FAST = {"reassoc", "nsz"}
_OPTS = dict(cache=True, error_model="numpy", fastmath=_FAST)

_S = _scalar.build(njit(inline="always", error_model="numpy"), _scalar.exp_poly)
sigmoid = _S.sigmoid

#: Particles are split into at most this many chunks for per-chunk partial sums.
MAX_CHUNKS = 32
#: Scheme codes of :func:`run_steps`.
EULER, HEUN, SGD, SGD_ALT, RMSPROP = 0, 1, 2, 3, 4


def n_chunks(n: int) -> int:
    """Number of particle chunks: fixed by ``n`` alone so results ignore the thread count."""
    return max(1, min(MAX_CHUNKS, (n + 63) // 64))


@njit(inline="always")
def _chunk(n, nch, ch):
    size = (n + nch - 1) // nch
    i0 = ch * size
    return i0, min(n, i0 + size)


@njit(parallel=True, **_OPTS)
def gen_output(theta, zT, gpart, ubuf, gT):
    """Pass 1: ``gT[k, b] = (1/N) sum_i a_ik s(b_ik . z_b + c_ik)``."""
    N, K, L2 = theta.shape
    L = L2 - 2
    Bz = zT.shape[1]
    nch = gpart.shape[0]
    for ch in prange(nch):
        i0, i1 = _chunk(N, nch, ch)
        part = gpart[ch]
        u = ubuf[ch]
        for k in range(K):
            for b in range(Bz):
                part[k, b] = 0.0
        for i in range(i0, i1):
            for k in range(K):
                a = theta[i, k, 0]
                c = theta[i, k, L + 1]
                for b in range(Bz):
                    u[b] = c
                for l in range(L):
                    bl = theta[i, k, 1 + l]
                    for b in range(Bz):
                        u[b] += bl * zT[l, b]
                for b in range(Bz):
                    part[k, b] += a * sigmoid(u[b])
    inv_n = 1.0 / N
    for k in range(K):
        for b in range(Bz):
            gT[k, b] = 0.0
        for ch in range(nch):
            for b in range(Bz):
                gT[k, b] += gpart[ch, k, b]
        for b in range(Bz):
            gT[k, b] *= inv_n


@njit(**_OPTS)
def _critic_side(omega, j, K, pT, pw, u, vb):
    """Accumulate ``E_p[s(u)]``, ``E_p[s'(u) p]`` (into ``vb``), ``E_p[s'(u)]`` for particle j.

    Leaves ``u[b] = w_b s'(u_b)`` for the caller (used for ``grad f``).
    """
    B = pT.shape[1]
    gamma = omega[j, K + 1]
    for b in range(B):
        u[b] = gamma
    for k in range(K):
        bk = omega[j, 1 + k]
        for b in range(B):
            u[b] += bk * pT[k, b]
    vs = 0.0
    vd = 0.0
    for b in range(B):
        s = sigmoid(u[b])
        vs += pw[b] * s
        d = pw[b] * (s * (1.0 - s))
        vd += d
        u[b] = d
    for k in range(K):
        acc = 0.0
        for b in range(B):
            acc += u[b] * pT[k, b]
        vb[k] = acc
    return vs, vd


@njit(parallel=True, **_OPTS)
def critic_pass(omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, need_vo, need_h):
    """Pass 2: critic velocity ``vo`` (if ``need_vo``) and partial sums of ``grad f(g(z_b))``.

    ``hpart[ch, k, b]`` receives ``sum_{j in chunk} alpha_j s'(u_jb) beta_jk`` (times 1, the
    ``1/M`` and quadrature weight are applied by :func:`_reduce_h`).  Because
    :func:`_critic_side` stores ``w_b s'(u_b)``, ``hpart`` holds the weighted sums directly.
    """
    M, K2 = omega.shape
    K = K2 - 2
    Bz = gT.shape[1]
    nch = hpart.shape[0]
    for ch in prange(nch):
        j0, j1 = _chunk(M, nch, ch)
        hp = hpart[ch]
        u = ubuf[ch]
        vb = vbuf[ch]
        if need_h:
            for k in range(K):
                for b in range(Bz):
                    hp[k, b] = 0.0
        for j in range(j0, j1):
            alpha = omega[j, 0]
            vs, vd = _critic_side(omega, j, K, gT, zw, u, vb)
            if need_h:
                for k in range(K):
                    coef = alpha * omega[j, 1 + k]
                    for b in range(Bz):
                        hp[k, b] += coef * u[b]
            if need_vo:
                for k in range(K):
                    vo[j, 1 + k] = vb[k]
                vs_x, vd_x = _critic_side(omega, j, K, xT, xw, u, vb)
                vo[j, 0] = vs - vs_x
                for k in range(K):
                    vo[j, 1 + k] = alpha * (vo[j, 1 + k] - vb[k])
                vo[j, K + 1] = alpha * (vd - vd_x)


@njit(**_OPTS)
def _reduce_h(hpart, M, whT):
    """``whT[k, b] = w_b grad f(g(z_b))_k`` from the per-chunk partials (fixed order)."""
    nch, K, Bz = hpart.shape
    inv_m = 1.0 / M
    for k in range(K):
        for b in range(Bz):
            whT[k, b] = 0.0
        for ch in range(nch):
            for b in range(Bz):
                whT[k, b] += hpart[ch, k, b]
        for b in range(Bz):
            whT[k, b] *= inv_m


@njit(parallel=True, **_OPTS)
def gen_velocity(theta, zT, whT, vt, ubuf):
    """Pass 3: ``vt = V_theta`` given ``whT[k, b] = w_b h_k(z_b)``."""
    N, K, L2 = theta.shape
    L = L2 - 2
    Bz = zT.shape[1]
    nch = ubuf.shape[0]
    for ch in prange(nch):
        i0, i1 = _chunk(N, nch, ch)
        u = ubuf[ch]
        for i in range(i0, i1):
            for k in range(K):
                a = theta[i, k, 0]
                c = theta[i, k, L + 1]
                for b in range(Bz):
                    u[b] = c
                for l in range(L):
                    bl = theta[i, k, 1 + l]
                    for b in range(Bz):
                        u[b] += bl * zT[l, b]
                va = 0.0
                vc = 0.0
                for b in range(Bz):
                    s = sigmoid(u[b])
                    w = whT[k, b]
                    va += w * s
                    d = w * (s * (1.0 - s))
                    vc += d
                    u[b] = d
                for l in range(L):
                    acc = 0.0
                    for b in range(Bz):
                        acc += u[b] * zT[l, b]
                    vt[i, k, 1 + l] = -a * acc
                vt[i, k, 0] = -va
                vt[i, k, L + 1] = -a * vc


class Workspace:
    """Preallocated buffers of one problem size (no allocation inside step loops)."""

    def __init__(self, N: int, M: int, K: int, L: int, Bz: int, Bx: int):
        cg, cc = n_chunks(N), n_chunks(M)
        B = max(Bz, Bx)
        self.gT = np.empty((K, Bz))
        self.whT = np.empty((K, Bz))
        self.gpart = np.empty((cg, K, Bz))
        self.hpart = np.empty((cc, K, Bz))
        self.ubuf_g = np.empty((cg, Bz))
        self.ubuf_c = np.empty((cc, B))
        self.vbuf = np.empty((cc, K))

    def args(self):
        return (self.gT, self.whT, self.gpart, self.hpart, self.ubuf_g, self.ubuf_c, self.vbuf)


@njit(**_OPTS)
def velocity_into(theta, omega, zT, zw, xT, xw, vt, vo, gT, whT, gpart, hpart, ubuf_g, ubuf_c,
                  vbuf, need_vt, need_vo):
    """Both velocity fields into ``vt``, ``vo`` (either may be skipped)."""
    gen_output(theta, zT, gpart, ubuf_g, gT)
    critic_pass(omega, gT, zw, xT, xw, vo, hpart, ubuf_c, vbuf, need_vo, need_vt)
    if need_vt:
        # hpart already carries the weights w_b (see critic_pass), so whT = w_b h(z_b).
        _reduce_h(hpart, omega.shape[0], whT)
        gen_velocity(theta, zT, whT, vt, ubuf_g)


@njit(parallel=True, **_OPTS)
def energy_kernel(theta, omega, zT, zw, xT, xw, gpart, ubuf_g, gT):
    """``Psi = sum_b zw_b f(g(z_b)) - sum_b xw_b f(x_b)``."""
    gen_output(theta, zT, gpart, ubuf_g, gT)
    M, K2 = omega.shape
    K = K2 - 2
    Bz = zT.shape[1]
    Bx = xT.shape[1]
    total = 0.0
    for j in prange(M):
        alpha = omega[j, 0]
        gamma = omega[j, K + 1]
        acc = 0.0
        for b in range(Bz):
            u = gamma
            for k in range(K):
                u += omega[j, 1 + k] * gT[k, b]
            acc += zw[b] * sigmoid(u)
        for b in range(Bx):
            u = gamma
            for k in range(K):
                u += omega[j, 1 + k] * xT[k, b]
            acc -= xw[b] * sigmoid(u)
        total += alpha * acc
    return total / M


@njit(parallel=True, **_OPTS)
def project_kernel(omega, v, clip, out):
    """Tangent-cone projection of ``v`` at ``omega`` onto ``[-clip, clip]^{K+2}``."""
    M, D = omega.shape
    for j in prange(M):
        for d in range(D):
            vv = v[j, d]
            w = omega[j, d]
            if (w >= clip and vv > 0.0) or (w <= -clip and vv < 0.0):
                vv = 0.0
            out[j, d] = vv


# --------------------------------------------------------------------------------------
# updates
# --------------------------------------------------------------------------------------


@njit(parallel=True, **_OPTS)
def _axpy(y, a, x):
    yf = y.reshape(-1)
    xf = x.reshape(-1)
    for i in prange(yf.size):
        yf[i] += a * xf[i]


@njit(parallel=True, **_OPTS)
def _axpy_clip(y, a, x, clip):
    yf = y.reshape(-1)
    xf = x.reshape(-1)
    for i in prange(yf.size):
        v = yf[i] + a * xf[i]
        yf[i] = min(max(v, -clip), clip)


@njit(parallel=True, **_OPTS)
def _rms_update(y, a, x, sq, rho, eps, clip, do_clip):
    # RMSProp: sq <- rho sq + (1 - rho) x^2;  y <- y + a x / (sqrt(sq) + eps)
    yf = y.reshape(-1)
    xf = x.reshape(-1)
    sf = sq.reshape(-1)
    for i in prange(yf.size):
        g = xf[i]
        s = rho * sf[i] + (1.0 - rho) * g * g
        sf[i] = s
        v = yf[i] + a * g / (np.sqrt(s) + eps)
        if do_clip:
            v = min(max(v, -clip), clip)
        yf[i] = v


@njit(**_OPTS)
def _heun_combine(y, y0, a, k1, k2, clip, do_clip):
    # y <- y0 + a (k1 + k2) (then clip)
    yf = y.reshape(-1)
    y0f = y0.reshape(-1)
    k1f = k1.reshape(-1)
    k2f = k2.reshape(-1)
    for i in range(yf.size):
        v = y0f[i] + a * (k1f[i] + k2f[i])
        if do_clip:
            v = min(max(v, -clip), clip)
        yf[i] = v


@njit(cache=True, error_model="numpy")
def _all_finite(y):
    # Strict IEEE (no fastmath) so NaN/Inf propagate: x*0 is NaN exactly when x is not finite.
    acc = 0.0
    yf = y.reshape(-1)
    for i in range(yf.size):
        acc += yf[i] * 0.0
    return acc == 0.0


@njit(**_OPTS)
def run_steps(kind, theta, omega, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip,
              rho, eps, sq_t, sq_o, vt, vo, vt2, vo2, th2, om2,
              gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf):
    """Advance ``(theta, omega)`` in place by ``n_steps`` steps of scheme ``kind``.

    Deterministic schemes (EULER, HEUN) use the fixed quadrature ``zT, zw, xT, xw``; stochastic
    ones read step ``s``'s batches from ``Zs[s, slot]`` (shape ``(L, m)``) and ``Xs[s, slot]``
    (``(K, m)``) with uniform weights ``zw``/``xw`` of length ``m``.  ``dt`` is the generator
    step, ``gdt = gamma_c dt`` the simultaneous critic step, ``crit_dt`` the step of each
    alternating critic update.  Returns the number of steps taken.
    """
    for s in range(n_steps):
        if kind == EULER or kind == SGD or kind == RMSPROP:
            if kind == EULER:
                z = zT
                x = xT
            else:
                z = Zs[s, 0]
                x = Xs[s, 0]
            velocity_into(theta, omega, z, zw, x, xw, vt, vo, gT, whT, gpart, hpart, ubuf_g,
                          ubuf_c, vbuf, True, True)
            if kind == RMSPROP:
                _rms_update(theta, dt, vt, sq_t, rho, eps, clip, False)
                _rms_update(omega, gdt, vo, sq_o, rho, eps, clip, True)
            else:
                _axpy(theta, dt, vt)
                _axpy_clip(omega, gdt, vo, clip)
        elif kind == HEUN:
            velocity_into(theta, omega, zT, zw, xT, xw, vt, vo, gT, whT, gpart, hpart, ubuf_g,
                          ubuf_c, vbuf, True, True)
            project_kernel(omega, vo, clip, vo)
            th2[...] = theta
            om2[...] = omega
            _axpy(th2, dt, vt)
            _axpy_clip(om2, gdt, vo, clip)
            velocity_into(th2, om2, zT, zw, xT, xw, vt2, vo2, gT, whT, gpart, hpart, ubuf_g,
                          ubuf_c, vbuf, True, True)
            project_kernel(om2, vo2, clip, vo2)
            _heun_combine(theta, theta, 0.5 * dt, vt, vt2, clip, False)
            _heun_combine(omega, omega, 0.5 * gdt, vo, vo2, clip, True)
        else:  # SGD_ALT: n_critic critic steps with fresh batches, then one generator step
            n_critic = Xs.shape[1]
            for c in range(n_critic):
                velocity_into(theta, omega, Zs[s, c], zw, Xs[s, c], xw, vt, vo, gT, whT, gpart,
                              hpart, ubuf_g, ubuf_c, vbuf, False, True)
                _axpy_clip(omega, crit_dt, vo, clip)
            velocity_into(theta, omega, Zs[s, n_critic], zw, Xs[s, 0], xw, vt, vo, gT, whT,
                          gpart, hpart, ubuf_g, ubuf_c, vbuf, True, False)
            _axpy(theta, dt, vt)
        if not (_all_finite(theta) and _all_finite(omega)):
            return s  # steps completed before the one that produced NaN/Inf
    return n_steps
