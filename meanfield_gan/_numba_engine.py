"""The Numba CPU engine: fused compiled passes and step loops (the NumPy reference is the truth).

One velocity evaluation is three passes over the particles, none forming an ``N x B`` array:

1. generator output ``g(z_b) = (1/N) sum_i sigma(z_b; theta_i)``,
2. one sweep over critic particles giving ``V_omega`` and the weighted critic gradient
   ``w_b grad f(g(z_b))`` at the same time,
3. ``V_theta``.

In a time step the updates are fused into passes 2 and 3 (each particle is updated right after
its velocity is computed: pass 2 reads ``omega_j`` only for particle ``j``, pass 3 reads
``theta_i`` only for ``i``), with the NaN/Inf check of the new values; a projected Euler or
SGD step is three compiled loops and no other work.

Two layouts of the same arithmetic:

* **node layout** (batches of at least :data:`SMALL_BATCH` nodes): particles stay as given,
  ``(N, K, L+2)`` and ``(M, K+2)``; nodes are passed transposed (``zT (L, B)``, ``xT (K, B)``) and
  the innermost loops run over nodes, so the sigmoid (the polynomial exponential of
  :mod:`meanfield_gan._scalar`) vectorises.  Small ``K`` and ``L`` (1, 2) get loops with the
  dot products written out, so one loop does the pre-activation, sigmoid and accumulations
  with no buffer traffic.
* **particle layout** (SGD with a small batch, e.g. 1): particles are transposed once per call
  of :func:`run_steps` to ``(K, L+2, N)`` and ``(K+2, M)`` and the innermost loops run over
  particles.

Sums over particles (``g`` and ``grad f``) go through per-chunk partials reduced in a fixed
order; the chunks depend on the particle count (and layout) only, so results do not depend on
the number of threads, nor on whether a pass runs threaded.  Chunk sizes are multiples of 32
so the particle-layout loops run whole vector iterations.  Each particle's own velocity is
computed by one instruction sequence whatever its index (in the particle layout, lane by lane
with no cross-lane step: SIMD lanes and the scalar tail give the same bits), so coincident
critic particles stay bitwise equal (MODEL.md section 4.3).

Threads: passes run as a ``prange`` over chunks when a velocity evaluation has at least
:data:`PARALLEL_MIN_WORK` sigmoids, serially otherwise (a parallel region costs a few
microseconds, more than small passes take).  ``fastmath={'reassoc', 'nsz', 'contract'}`` lets
LLVM vectorise the reductions and fuse multiply-adds; the exponential
(:func:`meanfield_gan._scalar.exp_inline`) is emitted as IR with ``contract`` only, so it keeps
its accuracy (3e-16) and is always inlined.  Work buffers are allocated once per problem size
(:class:`Workspace`), never per step.

Compilation: the public velocity (:func:`velocity_into`) runs :func:`run_steps` with the
VELOCITY code, so one entry point is compiled (about 40 s of CPU the first time, then cached);
flags and modes are passed as runtime values, never constants, so each pass compiles once.
"""
from __future__ import annotations

import os

# GNU OpenMP (Numba's "omp" threading layer here) spins for up to 300000 iterations at the end
# of every parallel region before sleeping.  When the cores are shared (other processes, or
# several workers of a study each with its own threads) a spinning thread holds a core its
# partner needs: a region measured ~8 ms instead of ~10 us.  Never spinning (passive) costs
# a sleep and wake-up per region instead: one Euler step at N = M = B = 1e3 took 3.5 ms against
# 2.05 ms on an idle 2-core VM.  A short spin (10000) gave 2.05 ms idle and 4.3 ms (as passive)
# with both cores busy elsewhere.  Read when libgomp loads (the first parallel call); a
# user's GOMP_SPINCOUNT or OMP_WAIT_POLICY wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from . import _scalar

_FAST = {"reassoc", "nsz", "contract"}
_OPTS = dict(cache=True, error_model="numpy", fastmath=_FAST)

# The exponential is emitted inline as IR (exact flags, always inlined: see exp_inline).
_S = _scalar.build(njit(inline="always", error_model="numpy"), _scalar.exp_inline)
sigmoid = _S.sigmoid
_clip = _S.clip
_project = _S.project

#: Particles are split into at most this many chunks for per-chunk partial sums.
MAX_CHUNKS = 32
#: Scheme codes of :func:`run_steps` (VELOCITY: store both velocity fields, no step).
EULER, HEUN, SGD, SGD_ALT, RMSPROP, VELOCITY = 0, 1, 2, 3, 4, 5
#: Batches with fewer nodes than this (latent and data) use the particle layout.
SMALL_BATCH = 8
#: Steps (velocity evaluations) with fewer sigmoid evaluations than this run on one thread:
#: measured on 2 cores, SGD with batch 1 at N = M = 1e3 (4e3 sigmoids) is faster serially,
#: at N = M = 5e3 (2e4) threaded.
PARALLEL_MIN_WORK = 15_000

# What a pass does with a particle's velocity: store it, take an SGD/Euler step
# (y += h v, clipped to Q for the critic), or an RMSProp step.
_STORE, _STEP, _RMS = 0, 1, 2


def n_chunks(n: int, particle_layout: bool = False) -> int:
    """Number of particle chunks: fixed by ``n`` (and the layout) so results ignore threads.

    Chunks hold at least 64 particles, 256 in the particle layout, where a chunk's loops are
    only a few operations per particle and a chunk's fixed costs would show.
    """
    size = 256 if particle_layout else 64
    return max(1, min(MAX_CHUNKS, (n + size - 1) // size))


def _chunk_len(n: int, particle_layout: bool = False) -> int:
    """Largest chunk of :func:`_chunk` (sizes rounded up to CHUNK_ALIGN)."""
    nch = n_chunks(n, particle_layout)
    size = (n + nch - 1) // nch
    return min(n, (size + CHUNK_ALIGN - 1) // CHUNK_ALIGN * CHUNK_ALIGN)


#: Chunk sizes are rounded up to a multiple of this, so that loops over the particles of a
#: chunk (particle layout) run whole vector iterations (8 lanes, unrolled 4 times) and leave
#: at most one scalar tail per pass.
CHUNK_ALIGN = 32


@njit(inline="always")
def _chunk(n, nch, ch):
    size = (n + nch - 1) // nch
    size = (size + CHUNK_ALIGN - 1) // CHUNK_ALIGN * CHUNK_ALIGN
    i0 = min(n, ch * size)
    return i0, min(n, i0 + size)


@njit(inline="always")
def _finite(v):
    # v - v is 0 for finite v and NaN for NaN/Inf (fastmath here has no nnan/ninf flags).
    return v - v == 0.0


@njit(inline="always")
def _update(y, v, h, sq, rho, eps, mode, clip, do_clip):
    """New value of one coordinate ``y`` (and its RMSProp state) for velocity ``v``."""
    s = sq
    if mode == _RMS:
        s = rho * sq + (1.0 - rho) * v * v
        y = y + h * v / (np.sqrt(s) + eps)
    else:
        y = y + h * v
    if do_clip:
        y = _clip(y, clip)
    return y, s


@njit(**_OPTS)
def _apply_row(v, y, sq, mode, h, rho, eps, clip, do_clip):
    """Update the coordinates ``y`` (a row of particles) with velocities ``v``, vectorised.

    Returns a value that is 0 if every new coordinate is finite and NaN otherwise
    (``y * 0`` is NaN exactly for NaN/Inf ``y``: the fast-math flags here have no ``nnan``).
    """
    chk = 0.0
    n = v.shape[0]
    if mode == _RMS:
        for i in range(n):
            s = rho * sq[i] + (1.0 - rho) * v[i] * v[i]
            sq[i] = s
            yn = y[i] + h * v[i] / (np.sqrt(s) + eps)
            if do_clip:
                yn = _clip(yn, clip)
            y[i] = yn
            chk += yn * 0.0
    elif do_clip:
        for i in range(n):
            yn = _clip(y[i] + h * v[i], clip)
            y[i] = yn
            chk += yn * 0.0
    else:
        for i in range(n):
            yn = y[i] + h * v[i]
            y[i] = yn
            chk += yn * 0.0
    return chk


# ======================================================================================
# node layout: innermost loops over quadrature / batch nodes
# ======================================================================================


@njit(**_OPTS)
def _node_gen_output(ch, nch, theta, zT, gpart, ubuf):
    """Chunk ``ch`` of pass 1: ``gpart[ch, k, b] = sum_{i in chunk} a_ik s(u_ikb)``."""
    N, K, L2 = theta.shape
    L = L2 - 2
    Bz = zT.shape[1]
    i0, i1 = _chunk(N, nch, ch)
    part = gpart[ch]
    u = ubuf[ch]
    for k in range(K):
        for b in range(Bz):
            part[k, b] = 0.0
    z0 = zT[0]
    z1 = zT[min(1, L - 1)]
    for i in range(i0, i1):
        for k in range(K):
            a = theta[i, k, 0]
            c = theta[i, k, L + 1]
            pk = part[k]
            if L == 1:
                b0 = theta[i, k, 1]
                for b in range(Bz):
                    pk[b] += a * sigmoid(c + b0 * z0[b])
            elif L == 2:
                b0 = theta[i, k, 1]
                b1 = theta[i, k, 2]
                for b in range(Bz):
                    pk[b] += a * sigmoid(c + b0 * z0[b] + b1 * z1[b])
            else:
                for b in range(Bz):
                    u[b] = c
                for l in range(L):
                    bl = theta[i, k, 1 + l]
                    zl = zT[l]
                    for b in range(Bz):
                        u[b] += bl * zl[b]
                for b in range(Bz):
                    pk[b] += a * sigmoid(u[b])


@njit(**_OPTS)
def _side1(gamma, b0, p0, w):
    """``sum_b w s``, ``sum_b w s'``, ``sum_b w s' p0`` for one critic unit, K = 1."""
    vs = 0.0
    vd = 0.0
    v0 = 0.0
    for b in range(p0.shape[0]):
        s = sigmoid(gamma + b0 * p0[b])
        ws = w[b] * s
        d = ws * (1.0 - s)
        vs += ws
        vd += d
        v0 += d * p0[b]
    return vs, vd, v0


@njit(**_OPTS)
def _side1h(gamma, b0, p0, w, h0, c0):
    """:func:`_side1` plus ``h0[b] += c0 w_b s'(u_b)`` (the critic-gradient partial sums)."""
    vs = 0.0
    vd = 0.0
    v0 = 0.0
    for b in range(p0.shape[0]):
        s = sigmoid(gamma + b0 * p0[b])
        ws = w[b] * s
        d = ws * (1.0 - s)
        vs += ws
        vd += d
        v0 += d * p0[b]
        h0[b] += c0 * d
    return vs, vd, v0


@njit(**_OPTS)
def _side2(gamma, b0, b1, p0, p1, w):
    vs = 0.0
    vd = 0.0
    v0 = 0.0
    v1 = 0.0
    for b in range(p0.shape[0]):
        s = sigmoid(gamma + b0 * p0[b] + b1 * p1[b])
        ws = w[b] * s
        d = ws * (1.0 - s)
        vs += ws
        vd += d
        v0 += d * p0[b]
        v1 += d * p1[b]
    return vs, vd, v0, v1


@njit(**_OPTS)
def _side2h(gamma, b0, b1, p0, p1, w, h0, h1, c0, c1):
    vs = 0.0
    vd = 0.0
    v0 = 0.0
    v1 = 0.0
    for b in range(p0.shape[0]):
        s = sigmoid(gamma + b0 * p0[b] + b1 * p1[b])
        ws = w[b] * s
        d = ws * (1.0 - s)
        vs += ws
        vd += d
        v0 += d * p0[b]
        v1 += d * p1[b]
        h0[b] += c0 * d
        h1[b] += c1 * d
    return vs, vd, v0, v1


@njit(**_OPTS)
def _side_any(omega, j, pT, w, u, vb, hp, with_h):
    """Any K, through a pre-activation buffer ``u``: returns ``(sum w s, sum w s')``.

    ``vb[k] = sum_b w s' p_kb``; with ``with_h``, ``hp[k, b] += alpha beta_k w_b s'``.
    """
    K = pT.shape[0]
    B = pT.shape[1]
    gamma = omega[j, K + 1]
    for b in range(B):
        u[b] = gamma
    for k in range(K):
        bk = omega[j, 1 + k]
        pk = pT[k]
        for b in range(B):
            u[b] += bk * pk[b]
    vs = 0.0
    vd = 0.0
    for b in range(B):
        s = sigmoid(u[b])
        ws = w[b] * s
        d = ws * (1.0 - s)
        vs += ws
        vd += d
        u[b] = d
    for k in range(K):
        pk = pT[k]
        acc = 0.0
        for b in range(B):
            acc += u[b] * pk[b]
        vb[k] = acc
    if with_h:
        alpha = omega[j, 0]
        for k in range(K):
            ck = alpha * omega[j, 1 + k]
            hk = hp[k]
            for b in range(B):
                hk[b] += ck * u[b]
    return vs, vd


@njit(**_OPTS)
def _node_critic(ch, nch, omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, need_h, need_vo,
                 mode, hstep, clip, sq, rho, eps, flags):
    """Chunk ``ch`` of pass 2 (node layout): critic velocities and ``grad f`` partials.

    ``mode`` ``_STORE`` writes ``V_omega`` into ``vo``; ``_STEP``/``_RMS`` update ``omega``
    (clipped to Q) in place instead, once particle ``j``'s contribution to ``grad f`` is
    taken, and set ``flags[ch] = 0`` if a new value is not finite.
    """
    M, K2 = omega.shape
    K = K2 - 2
    j0, j1 = _chunk(M, nch, ch)
    hp = hpart[ch]
    u = ubuf[ch, 0]
    vb = vbuf[ch]
    if need_h:
        for k in range(K):
            for b in range(hp.shape[1]):
                hp[k, b] = 0.0
    ok = True
    g0 = gT[0]
    g1 = gT[min(1, K - 1)]
    h0 = hp[0]
    h1 = hp[min(1, K - 1)]
    x0 = xT[0]
    x1 = xT[min(1, K - 1)]
    for j in range(j0, j1):
        alpha = omega[j, 0]
        gamma = omega[j, K + 1]
        # z side (with the grad f partials) ...
        if K == 1:
            b0 = omega[j, 1]
            if need_h:
                vs, vd, vb[0] = _side1h(gamma, b0, g0, zw, h0, alpha * b0)
            else:
                vs, vd, vb[0] = _side1(gamma, b0, g0, zw)
        elif K == 2:
            b0 = omega[j, 1]
            b1 = omega[j, 2]
            if need_h:
                vs, vd, vb[0], vb[1] = _side2h(gamma, b0, b1, g0, g1, zw, h0, h1,
                                               alpha * b0, alpha * b1)
            else:
                vs, vd, vb[0], vb[1] = _side2(gamma, b0, b1, g0, g1, zw)
        else:
            vs, vd = _side_any(omega, j, gT, zw, u, vb[:K], hp, need_h)
        if not need_vo:
            continue
        # ... minus the x side.
        if K == 1:
            xs, xd, vb[K] = _side1(gamma, omega[j, 1], x0, xw)
        elif K == 2:
            xs, xd, vb[K], vb[K + 1] = _side2(gamma, omega[j, 1], omega[j, 2], x0, x1, xw)
        else:
            xs, xd = _side_any(omega, j, xT, xw, u, vb[K:], hp, j < 0)  # False, not literal
        for d in range(K2):
            if d == 0:
                v = vs - xs
            elif d == K + 1:
                v = alpha * (vd - xd)
            else:
                v = alpha * (vb[d - 1] - vb[K + d - 1])
            if mode == _STORE:
                vo[j, d] = v
            else:
                y, s = _update(omega[j, d], v, hstep, sq[j, d], rho, eps, mode, clip, True)
                omega[j, d] = y
                if mode == _RMS:
                    sq[j, d] = s
                ok = ok and _finite(y)
    if not ok:
        flags[ch] = 0


@njit(**_OPTS)
def _node_gen_velocity(ch, nch, theta, zT, whT, vt, ubuf, mode, hstep, sq, rho, eps, flags):
    """Chunk ``ch`` of pass 3 (node layout): ``V_theta`` given ``whT[k, b] = w_b h_k(z_b)``."""
    N, K, L2 = theta.shape
    L = L2 - 2
    i0, i1 = _chunk(N, nch, ch)
    u = ubuf[ch]
    Bz = zT.shape[1]
    z0 = zT[0]
    z1 = zT[min(1, L - 1)]
    ok = True
    for i in range(i0, i1):
        for k in range(K):
            a = theta[i, k, 0]
            c = theta[i, k, L + 1]
            wk = whT[k]
            va = 0.0
            vc = 0.0
            if L == 1:
                b0 = theta[i, k, 1]
                v0 = 0.0
                for b in range(Bz):
                    s = sigmoid(c + b0 * z0[b])
                    ws = wk[b] * s
                    d = ws * (1.0 - s)
                    va += ws
                    vc += d
                    v0 += d * z0[b]
                u[0] = v0
            elif L == 2:
                b0 = theta[i, k, 1]
                b1 = theta[i, k, 2]
                v0 = 0.0
                v1 = 0.0
                for b in range(Bz):
                    s = sigmoid(c + b0 * z0[b] + b1 * z1[b])
                    ws = wk[b] * s
                    d = ws * (1.0 - s)
                    va += ws
                    vc += d
                    v0 += d * z0[b]
                    v1 += d * z1[b]
                u[0] = v0
                u[1] = v1
            else:
                for b in range(Bz):
                    u[b] = c
                for l in range(L):
                    bl = theta[i, k, 1 + l]
                    zl = zT[l]
                    for b in range(Bz):
                        u[b] += bl * zl[b]
                for b in range(Bz):
                    s = sigmoid(u[b])
                    ws = wk[b] * s
                    d = ws * (1.0 - s)
                    va += ws
                    vc += d
                    u[b] = d
                for l in range(L):
                    zl = zT[l]
                    acc = 0.0
                    for b in range(Bz):
                        acc += u[b] * zl[b]
                    u[Bz + l] = acc
                for l in range(L):
                    u[l] = u[Bz + l]
            # V_theta is MINUS the expectation (MODEL.md section 2); u[:L] holds the B parts.
            for d in range(L2):
                if d == 0:
                    v = -va
                elif d == L + 1:
                    v = -a * vc
                else:
                    v = -a * u[d - 1]
                if mode == _STORE:
                    vt[i, k, d] = v
                else:
                    y, s2 = _update(theta[i, k, d], v, hstep, sq[i, k, d], rho, eps, mode,
                                    0.0, False)
                    theta[i, k, d] = y
                    if mode == _RMS:
                        sq[i, k, d] = s2
                    ok = ok and _finite(y)
    if not ok:
        flags[ch] = 0


# ======================================================================================
# particle layout: innermost loops over particles, theta as (K, L+2, N), omega as (K+2, M)
# ======================================================================================


@njit(**_OPTS)
def _part_gen_output(ch, nch, th, zT, gpart, ubuf):
    """Chunk ``ch`` of pass 1 in the particle layout."""
    K, L2, N = th.shape
    L = L2 - 2
    i0, i1 = _chunk(N, nch, ch)
    n = i1 - i0
    u = ubuf[ch]
    for k in range(K):
        a = th[k, 0, i0:i1]
        c = th[k, L + 1, i0:i1]
        for b in range(zT.shape[1]):
            acc = 0.0
            if L == 1:
                b0 = th[k, 1, i0:i1]
                z0 = zT[0, b]
                for i in range(n):
                    acc += a[i] * sigmoid(c[i] + b0[i] * z0)
            elif L == 2:
                b0 = th[k, 1, i0:i1]
                b1 = th[k, 2, i0:i1]
                z0 = zT[0, b]
                z1 = zT[1, b]
                for i in range(n):
                    acc += a[i] * sigmoid(c[i] + b0[i] * z0 + b1[i] * z1)
            else:
                for i in range(n):
                    u[i] = c[i]
                for l in range(L):
                    bl = th[k, 1 + l, i0:i1]
                    zl = zT[l, b]
                    for i in range(n):
                        u[i] += bl[i] * zl
                for i in range(n):
                    acc += a[i] * sigmoid(u[i])
            gpart[ch, k, b] = acc


@njit(**_OPTS)
def _pc1(n, gam, b0, p0, w, sign, a0, aK, a1):
    for i in range(n):
        s = sigmoid(gam[i] + b0[i] * p0)
        ws = w * s
        d = ws * (1.0 - s)
        a0[i] += sign * ws
        aK[i] += sign * d
        a1[i] += sign * (d * p0)


@njit(**_OPTS)
def _pc1h(n, gam, alp, b0, p0, w, sign, a0, aK, a1):
    h0 = 0.0
    for i in range(n):
        s = sigmoid(gam[i] + b0[i] * p0)
        ws = w * s
        d = ws * (1.0 - s)
        a0[i] += sign * ws
        aK[i] += sign * d
        a1[i] += sign * (d * p0)
        h0 += alp[i] * b0[i] * d
    return h0


@njit(**_OPTS)
def _pc2(n, gam, b0, b1, p0, p1, w, sign, a0, aK, a1, a2):
    for i in range(n):
        s = sigmoid(gam[i] + b0[i] * p0 + b1[i] * p1)
        ws = w * s
        d = ws * (1.0 - s)
        a0[i] += sign * ws
        aK[i] += sign * d
        a1[i] += sign * (d * p0)
        a2[i] += sign * (d * p1)


@njit(**_OPTS)
def _pc2h(n, gam, alp, b0, b1, p0, p1, w, sign, a0, aK, a1, a2):
    h0 = 0.0
    h1 = 0.0
    for i in range(n):
        s = sigmoid(gam[i] + b0[i] * p0 + b1[i] * p1)
        ws = w * s
        d = ws * (1.0 - s)
        a0[i] += sign * ws
        aK[i] += sign * d
        a1[i] += sign * (d * p0)
        a2[i] += sign * (d * p1)
        h0 += alp[i] * b0[i] * d
        h1 += alp[i] * b1[i] * d
    return h0, h1


@njit(**_OPTS)
def _pg1(n, c, b0, z0, w, va, vc, v0):
    for i in range(n):
        s = sigmoid(c[i] + b0[i] * z0)
        ws = w * s
        d = ws * (1.0 - s)
        va[i] += ws
        vc[i] += d
        v0[i] += d * z0


@njit(**_OPTS)
def _pg2(n, c, b0, b1, z0, z1, w, va, vc, v0, v1):
    for i in range(n):
        s = sigmoid(c[i] + b0[i] * z0 + b1[i] * z1)
        ws = w * s
        d = ws * (1.0 - s)
        va[i] += ws
        vc[i] += d
        v0[i] += d * z0
        v1[i] += d * z1


@njit(**_OPTS)
def _part_critic_side(om, i0, n, pT, pw, sign, acc, u, dbuf, hp, with_h):
    """Accumulate one side of ``V_omega`` (``sign`` +1: g(z), -1: data) particle by particle.

    ``acc[0] += sign sum w s``, ``acc[1 + k] += sign sum w s' p_k``, ``acc[K+1] += sign sum w s'``
    (times ``alpha`` later); with ``with_h``, ``hp[k, b] = sum_j alpha_j beta_jk w_b s'_jb``.
    """
    K = pT.shape[0]
    gam = om[K + 1, i0:i0 + n]
    alp = om[0, i0:i0 + n]
    a0 = acc[0]
    aK = acc[K + 1]
    b0 = om[1, i0:i0 + n]
    b1 = om[min(2, K), i0:i0 + n]
    a1 = acc[1]
    a2 = acc[min(2, K)]
    for b in range(pT.shape[1]):
        w = pw[b]
        # K = 1, 2: one fused loop (the operations of the buffered version below, in order).
        if K == 1 and with_h:
            hp[0, b] = _pc1h(n, gam, alp, b0, pT[0, b], w, sign, a0, aK, a1)
            continue
        if K == 1:
            _pc1(n, gam, b0, pT[0, b], w, sign, a0, aK, a1)
            continue
        if K == 2 and with_h:
            hp[0, b], hp[1, b] = _pc2h(n, gam, alp, b0, b1, pT[0, b], pT[1, b], w, sign, a0,
                                       aK, a1, a2)
            continue
        if K == 2:
            _pc2(n, gam, b0, b1, pT[0, b], pT[1, b], w, sign, a0, aK, a1, a2)
            continue
        for i in range(n):
            u[i] = gam[i]
        for k in range(K):
            bk = om[1 + k, i0:i0 + n]
            p = pT[k, b]
            for i in range(n):
                u[i] += bk[i] * p
        for i in range(n):
            s = sigmoid(u[i])
            ws = w * s
            d = ws * (1.0 - s)
            a0[i] += sign * ws
            aK[i] += sign * d
            dbuf[i] = d
        for k in range(K):
            ak = acc[1 + k]
            p = pT[k, b]
            for i in range(n):
                ak[i] += sign * (dbuf[i] * p)
        if with_h:
            for k in range(K):
                bk = om[1 + k, i0:i0 + n]
                hk = 0.0
                for i in range(n):
                    hk += alp[i] * bk[i] * dbuf[i]
                hp[k, b] = hk


@njit(**_OPTS)
def _part_critic(ch, nch, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf, need_h, need_vo,
                 mode, hstep, clip, sq, rho, eps, flags):
    """Chunk ``ch`` of pass 2 in the particle layout (see :func:`_node_critic`)."""
    K2, M = om.shape
    K = K2 - 2
    j0, j1 = _chunk(M, nch, ch)
    n = j1 - j0
    acc = accbuf[ch]
    u = ubuf[ch, 0]
    dbuf = ubuf[ch, 1]
    for d in range(K2):
        acc[d, :n] = 0.0
    _part_critic_side(om, j0, n, gT, zw, 1.0, acc, u, dbuf, hpart[ch], need_h)
    if not need_vo:
        return
    _part_critic_side(om, j0, n, xT, xw, -1.0, acc, u, dbuf, hpart[ch], n < 0)  # False
    # Velocities first (beta and gamma parts scale with alpha), then the updates.
    alp = om[0, j0:j1]
    for d in range(1, K2):
        ad = acc[d]
        for i in range(n):
            ad[i] = alp[i] * ad[i]
    chk = 0.0
    for d in range(K2):
        if mode == _STORE:
            vo[d, j0:j1] = acc[d, :n]
        else:
            # (sq is a dummy unless mode is RMSProp: hand _apply_row a valid row instead)
            sqr = sq[d, j0:j1] if mode == _RMS else acc[d, :n]
            chk += _apply_row(acc[d, :n], om[d, j0:j1], sqr, mode, hstep, rho, eps, clip, True)
    if not chk == 0.0:
        flags[ch] = 0


@njit(**_OPTS)
def _part_gen_velocity(ch, nch, th, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho, eps,
                       flags):
    """Chunk ``ch`` of pass 3 in the particle layout."""
    K, L2, N = th.shape
    L = L2 - 2
    i0, i1 = _chunk(N, nch, ch)
    n = i1 - i0
    u = ubuf[ch]
    acc = accbuf[ch]
    chk = 0.0
    for k in range(K):
        for d in range(L2):
            acc[d, :n] = 0.0
        a = th[k, 0, i0:i1]
        c = th[k, L + 1, i0:i1]
        va = acc[0]
        vc = acc[L + 1]
        b0 = th[k, 1, i0:i1]
        b1 = th[k, min(2, L), i0:i1]
        v0 = acc[1]
        v1 = acc[min(2, L)]
        for b in range(zT.shape[1]):
            w = whT[k, b]
            # L = 1, 2: one fused loop (the operations of the buffered version below).
            if L == 1:
                _pg1(n, c, b0, zT[0, b], w, va, vc, v0)
                continue
            if L == 2:
                _pg2(n, c, b0, b1, zT[0, b], zT[1, b], w, va, vc, v0, v1)
                continue
            for i in range(n):
                u[i] = c[i]
            for l in range(L):
                bl = th[k, 1 + l, i0:i1]
                zl = zT[l, b]
                for i in range(n):
                    u[i] += bl[i] * zl
            for i in range(n):
                s = sigmoid(u[i])
                ws = w * s
                d = ws * (1.0 - s)
                va[i] += ws
                vc[i] += d
                u[i] = d
            for l in range(L):
                vl = acc[1 + l]
                zl = zT[l, b]
                for i in range(n):
                    vl[i] += u[i] * zl
        # Velocities first (MINUS the expectations; B and c parts scale with a), then updates.
        for i in range(n):
            va[i] = -va[i]
        for d in range(1, L2):
            ad = acc[d]
            for i in range(n):
                ad[i] = -a[i] * ad[i]
        for d in range(L2):
            if mode == _STORE:
                vt[k, d, i0:i1] = acc[d, :n]
            else:
                sqr = sq[k, d, i0:i1] if mode == _RMS else acc[d, :n]
                chk += _apply_row(acc[d, :n], th[k, d, i0:i1], sqr, mode, hstep, rho, eps, 0.0,
                                  False)
    if not chk == 0.0:
        flags[ch] = 0


# ======================================================================================
# passes: the same chunk bodies run threaded (prange) or serially, with identical results
# (the chunk index is cast to int64: prange's index type differs from range's, and each
# type would compile its own copy of every kernel)
# ======================================================================================


@njit(**_OPTS)
def _pass1_chunk(ch, nch, soa, theta, zT, gpart, ubuf):
    if soa:
        _part_gen_output(ch, nch, theta, zT, gpart, ubuf)
    else:
        _node_gen_output(ch, nch, theta, zT, gpart, ubuf)


@njit(parallel=True, **_OPTS)
def _pass1_par(nch, soa, theta, zT, gpart, ubuf):
    for ch in prange(nch):
        _pass1_chunk(np.int64(ch), nch, soa, theta, zT, gpart, ubuf)


@njit(**_OPTS)
def _pass1_ser(nch, soa, theta, zT, gpart, ubuf):
    for ch in range(nch):
        _pass1_chunk(np.int64(ch), nch, soa, theta, zT, gpart, ubuf)


@njit(**_OPTS)
def _pass2_chunk(ch, nch, soa, omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, accbuf, need_h,
                 need_vo, mode, hstep, clip, sq, rho, eps, flags):
    if soa:
        _part_critic(ch, nch, omega, gT, zw, xT, xw, vo, hpart, ubuf, accbuf, need_h,
                     need_vo, mode, hstep, clip, sq, rho, eps, flags)
    else:
        _node_critic(ch, nch, omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, need_h,
                     need_vo, mode, hstep, clip, sq, rho, eps, flags)


@njit(parallel=True, **_OPTS)
def _pass2_par(nch, soa, omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, accbuf, need_h,
               need_vo, mode, hstep, clip, sq, rho, eps, flags):
    for ch in prange(nch):
        _pass2_chunk(np.int64(ch), nch, soa, omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, accbuf,
                     need_h, need_vo, mode, hstep, clip, sq, rho, eps, flags)


@njit(**_OPTS)
def _pass2_ser(nch, soa, omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, accbuf, need_h,
               need_vo, mode, hstep, clip, sq, rho, eps, flags):
    for ch in range(nch):
        _pass2_chunk(np.int64(ch), nch, soa, omega, gT, zw, xT, xw, vo, hpart, ubuf, vbuf, accbuf,
                     need_h, need_vo, mode, hstep, clip, sq, rho, eps, flags)


@njit(**_OPTS)
def _pass3_chunk(ch, nch, soa, theta, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho, eps,
                 flags):
    if soa:
        _part_gen_velocity(ch, nch, theta, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho,
                           eps, flags)
    else:
        _node_gen_velocity(ch, nch, theta, zT, whT, vt, ubuf, mode, hstep, sq, rho, eps,
                           flags)


@njit(parallel=True, **_OPTS)
def _pass3_par(nch, soa, theta, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho, eps, flags):
    for ch in prange(nch):
        _pass3_chunk(np.int64(ch), nch, soa, theta, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho,
                     eps, flags)


@njit(**_OPTS)
def _pass3_ser(nch, soa, theta, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho, eps, flags):
    for ch in range(nch):
        _pass3_chunk(np.int64(ch), nch, soa, theta, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho,
                     eps, flags)


@njit(**_OPTS)
def _reduce(part, scale, out):
    """``out = scale * sum_ch part[ch]``, summed in chunk order (thread-count independent)."""
    nch, K, B = part.shape
    for k in range(K):
        o = out[k]
        for b in range(B):
            o[b] = part[0, k, b]
        for ch in range(1, nch):
            p = part[ch, k]
            for b in range(B):
                o[b] += p[b]
        for b in range(B):
            o[b] *= scale


@njit(**_OPTS)
def _flags_ok(flags, n):
    ok = True
    for ch in range(n):
        ok = ok and flags[ch] != 0
        flags[ch] = 1
    return ok


@njit(**_OPTS)
def _field(theta, omega, zT, zw, xT, xw, vt, vo, need_vt, need_vo, mode, dt, gdt, clip, sq_t,
           sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf, acc_g, acc_c, flags,
           soa, par):
    """One velocity evaluation: store (``mode=_STORE``) or step with the fused updates.

    In the particle layout ``theta``/``omega`` (and ``vt``, ``vo``, ``sq_*``) are the transposed
    arrays.  Returns False if a stepped coordinate became NaN/Inf.
    """
    if soa:
        N = theta.shape[2]
        M = omega.shape[1]
    else:
        N = theta.shape[0]
        M = omega.shape[0]
    cg = gpart.shape[0]
    cc = hpart.shape[0]
    if par:
        _pass1_par(cg, soa, theta, zT, gpart, ubuf_g)
    else:
        _pass1_ser(cg, soa, theta, zT, gpart, ubuf_g)
    _reduce(gpart, 1.0 / N, gT)
    if par:
        _pass2_par(cc, soa, omega, gT, zw, xT, xw, vo, hpart, ubuf_c, vbuf, acc_c, need_vt,
                   need_vo, mode, gdt, clip, sq_o, rho, eps, flags)
    else:
        _pass2_ser(cc, soa, omega, gT, zw, xT, xw, vo, hpart, ubuf_c, vbuf, acc_c, need_vt,
                   need_vo, mode, gdt, clip, sq_o, rho, eps, flags)
    ok = _flags_ok(flags, cc)
    if need_vt:
        # hpart carries the weights w_b already, so whT = w_b grad f(g(z_b)).
        _reduce(hpart, 1.0 / M, whT)
        if par:
            _pass3_par(cg, soa, theta, zT, whT, vt, ubuf_g, acc_g, mode, dt, sq_t, rho, eps,
                       flags)
        else:
            _pass3_ser(cg, soa, theta, zT, whT, vt, ubuf_g, acc_g, mode, dt, sq_t, rho, eps,
                       flags)
        ok = _flags_ok(flags, cg) and ok
    return ok


# ======================================================================================
# workspace and public kernels
# ======================================================================================


def use_particle_layout(Bz: int, Bx: int) -> bool:
    """Whether batches this small run in the particle layout."""
    return max(Bz, Bx) < SMALL_BATCH


class Workspace:
    """Preallocated buffers of one problem size (no allocation inside step loops).

    ``args()`` is passed after the fixed arguments of :func:`velocity_into` and
    :func:`run_steps`; it ends with the layout and threading choices.
    """

    def __init__(self, N: int, M: int, K: int, L: int, Bz: int, Bx: int,
                 parallel: bool | None = None):
        B = max(Bz, Bx)
        self.soa = use_particle_layout(Bz, Bx)
        cg, cc = n_chunks(N, self.soa), n_chunks(M, self.soa)
        if parallel is None:
            work = 2 * N * K * Bz + M * (Bz + Bx)  # sigmoids per velocity evaluation
            # Decided by the size alone, never by the thread count: the serial and parallel
            # kernels may differ in the last bit, and a study must give the same numbers in a
            # 1-thread worker as in a 2-thread parent.
            parallel = work >= PARALLEL_MIN_WORK
        self.par = bool(parallel)
        ng, nc = _chunk_len(N, self.soa), _chunk_len(M, self.soa)
        self.gT = np.empty((K, Bz))
        self.whT = np.empty((K, Bz))
        self.gpart = np.empty((cg, K, Bz))
        self.hpart = np.zeros((cc, K, Bz))
        self.flags = np.ones(max(cg, cc), dtype=np.int64)
        if self.soa:
            self.ubuf_g = np.empty((cg, ng))
            self.ubuf_c = np.empty((cc, 2, nc))
            self.vbuf = np.empty((1, 1))
            self.acc_g = np.empty((cg, L + 2, ng))
            self.acc_c = np.empty((cc, K + 2, nc))
            self.thS = np.empty((K, L + 2, N))
            self.omS = np.empty((K + 2, M))
        else:
            # pass 3 keeps its L sums at u[Bz:Bz+L] (any L) or u[:L] (L <= 2)
            self.ubuf_g = np.empty((cg, Bz + L))
            self.ubuf_c = np.empty((cc, 1, B))
            self.vbuf = np.empty((cc, 2 * K))
            self.acc_g = np.empty((1, 1, 1))
            self.acc_c = np.empty((1, 1, 1))
            self.thS = np.empty((1, 1, 1))
            self.omS = np.empty((1, 1))

    def args(self) -> tuple:
        return (self.gT, self.whT, self.gpart, self.hpart, self.ubuf_g, self.ubuf_c, self.vbuf,
                self.acc_g, self.acc_c, self.thS, self.omS, self.flags, self.soa, self.par)


@njit(**_OPTS)
def _to_particle_layout(theta, omega, thS, omS):
    N, K, L2 = theta.shape
    for i in range(N):
        for k in range(K):
            for d in range(L2):
                thS[k, d, i] = theta[i, k, d]
    for j in range(omega.shape[0]):
        for d in range(omega.shape[1]):
            omS[d, j] = omega[j, d]


@njit(**_OPTS)
def _from_particle_layout(thS, omS, theta, omega):
    N, K, L2 = theta.shape
    for i in range(N):
        for k in range(K):
            for d in range(L2):
                theta[i, k, d] = thS[k, d, i]
    for j in range(omega.shape[0]):
        for d in range(omega.shape[1]):
            omega[j, d] = omS[d, j]


def velocity_into(theta, omega, zT, zw, xT, xw, vt, vo, gT, whT, gpart, hpart, ubuf_g, ubuf_c,
                  vbuf, acc_g, acc_c, thS, omS, flags, soa, par, need_vt=True, need_vo=True):
    """Both velocity fields of ``(theta, omega)`` into ``vt``, ``vo``; inputs unchanged.

    Runs :func:`run_steps` with the VELOCITY code, so the public ``velocity`` and ``simulate``
    share one compiled entry point (half the first-compile time of two).  Both fields are
    always computed (``need_vt``/``need_vo`` are accepted for the call signature).
    """
    K = omega.shape[1] - 2
    L = theta.shape[2] - 2
    dZ = np.zeros((1, 1, L, 1))
    dX = np.zeros((1, 1, K, 1))
    run_steps(VELOCITY, theta, omega, 1, zT, zw, xT, xw, dZ, dX, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0,
              np.zeros((1, 1, 1)), np.zeros((1, 1)), vt, vo, vt, vo, vt, vo, gT, whT, gpart,
              hpart, ubuf_g, ubuf_c, vbuf, acc_g, acc_c, thS, omS, flags, soa, par)


@njit(parallel=True, **_OPTS)
def energy_kernel(theta, omega, zT, zw, xT, xw, gpart, ubuf_g, gT):
    """``Psi = sum_b zw_b f(g(z_b)) - sum_b xw_b f(x_b)`` (node layout, ``gpart (cg, K, Bz)``)."""
    N = theta.shape[0]
    cg = gpart.shape[0]
    for ch in prange(cg):
        _node_gen_output(ch, cg, theta, zT, gpart, ubuf_g)
    _reduce(gpart, 1.0 / N, gT)
    M, K2 = omega.shape
    K = K2 - 2
    total = 0.0
    for j in prange(M):
        alpha = omega[j, 0]
        gamma = omega[j, K + 1]
        acc = 0.0
        for b in range(zT.shape[1]):
            u = gamma
            for k in range(K):
                u += omega[j, 1 + k] * gT[k, b]
            acc += zw[b] * sigmoid(u)
        for b in range(xT.shape[1]):
            u = gamma
            for k in range(K):
                u += omega[j, 1 + k] * xT[k, b]
            acc -= xw[b] * sigmoid(u)
        total += alpha * acc
    return total / M


# ======================================================================================
# the step loop
# ======================================================================================


@njit(cache=True, error_model="numpy")
def _all_finite(y):
    # Strict IEEE (no fastmath) so NaN/Inf propagate: x*0 is NaN exactly when x is not finite.
    acc = 0.0
    yf = y.reshape(-1)
    for i in range(yf.size):
        acc += yf[i] * 0.0
    return acc == 0.0


@njit(**_OPTS)
def _heun_stage(y, v, y_out, h, clip, do_clip, do_project):
    """``v <- Proj v`` (critic) and ``y_out = y + h v`` (clipped for the critic)."""
    yf = y.reshape(-1)
    vf = v.reshape(-1)
    of = y_out.reshape(-1)
    for i in range(yf.size):
        vv = vf[i]
        if do_project:
            vv = _project(yf[i], vv, clip)
            vf[i] = vv
        w = yf[i] + h * vv
        if do_clip:
            w = _clip(w, clip)
        of[i] = w


@njit(**_OPTS)
def _heun_combine(y, h, k1, y2, k2, clip, do_clip):
    """``y <- y + h (k1 + Proj_{y2} k2)`` (then clip)."""
    yf = y.reshape(-1)
    k1f = k1.reshape(-1)
    k2f = k2.reshape(-1)
    y2f = y2.reshape(-1)
    for i in range(yf.size):
        b = k2f[i]
        if do_clip:
            b = _project(y2f[i], b, clip)
        v = yf[i] + h * (k1f[i] + b)
        if do_clip:
            v = _clip(v, clip)
        yf[i] = v


@njit(**_OPTS)
def _steps(kind, theta, omega, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip, rho,
           eps, sq_t, sq_o, vt, vo, vt2, vo2, th2, om2, gT, whT, gpart, hpart, ubuf_g, ubuf_c,
           vbuf, acc_g, acc_c, flags, soa, par):
    """The step loop on arrays of one layout; returns the number of finite steps taken."""
    # Flags and modes as runtime values: a constant argument (True, _STEP) has a literal type,
    # and Numba would compile every pass once per combination of constants (minutes, uncached).
    yes = n_steps >= -1
    no = n_steps < -1
    store = kind * 0 + _STORE
    step = kind * 0 + _STEP
    mode = kind * 0 + (_RMS if kind == RMSPROP else _STEP)
    for s in range(n_steps):
        if kind == EULER or kind == SGD or kind == RMSPROP:
            if kind == EULER:
                z = zT
                x = xT
            else:
                z = Zs[s, 0]
                x = Xs[s, 0]
            ok = _field(theta, omega, z, zw, x, xw, vt, vo, yes, yes, mode, dt, gdt, clip,
                        sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf,
                        acc_g, acc_c, flags, soa, par)
        elif kind == HEUN:
            _field(theta, omega, zT, zw, xT, xw, vt, vo, yes, yes, store, dt, gdt, clip,
                   sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf, acc_g,
                   acc_c, flags, soa, par)
            _heun_stage(theta, vt, th2, dt, clip, no, no)
            _heun_stage(omega, vo, om2, gdt, clip, yes, yes)
            _field(th2, om2, zT, zw, xT, xw, vt2, vo2, yes, yes, store, dt, gdt, clip,
                   sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf, acc_g,
                   acc_c, flags, soa, par)
            _heun_combine(theta, 0.5 * dt, vt, th2, vt2, clip, no)
            _heun_combine(omega, 0.5 * gdt, vo, om2, vo2, clip, yes)
            ok = _all_finite(theta) and _all_finite(omega)
        else:  # SGD_ALT: n_critic critic steps with fresh batches, then one generator step
            n_critic = Xs.shape[1]
            ok = True
            for c in range(n_critic):
                ok = _field(theta, omega, Zs[s, c], zw, Xs[s, c], xw, vt, vo, no, yes,
                            step, dt, crit_dt, clip, sq_t, sq_o, rho, eps, gT, whT, gpart,
                            hpart, ubuf_g, ubuf_c, vbuf, acc_g, acc_c, flags, soa, par) and ok
            ok = _field(theta, omega, Zs[s, n_critic], zw, Xs[s, 0], xw, vt, vo, yes, no,
                        step, dt, crit_dt, clip, sq_t, sq_o, rho, eps, gT, whT, gpart, hpart,
                        ubuf_g, ubuf_c, vbuf, acc_g, acc_c, flags, soa, par) and ok
        if not ok:
            return s  # steps completed before the one that produced NaN/Inf
    return n_steps


@njit(**_OPTS)
def run_steps(kind, theta, omega, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip,
              rho, eps, sq_t, sq_o, vt, vo, vt2, vo2, th2, om2,
              gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf, acc_g, acc_c, thS, omS, flags,
              soa, par):
    """Advance ``(theta, omega)`` in place by ``n_steps`` steps of scheme ``kind``.

    Deterministic schemes (EULER, HEUN) use the fixed quadrature ``zT, zw, xT, xw``; stochastic
    ones read step ``s``'s batches from ``Zs[s, slot]`` (shape ``(L, m)``) and ``Xs[s, slot]``
    (``(K, m)``) with uniform weights ``zw``/``xw`` of length ``m``.  ``dt`` is the generator
    step, ``gdt = gamma_c dt`` the simultaneous critic step, ``crit_dt`` the step of each
    alternating critic update.  ``vt, vo, vt2, vo2, th2, om2`` are Heun's work arrays (shaped
    like the particles).  Returns the number of steps taken (fewer if NaN/Inf appeared).
    """
    if kind == VELOCITY:
        yes = n_steps >= -1  # not literals (see _steps)
        store = kind * 0 + _STORE
        if soa:
            N, K, L2 = theta.shape
            M = omega.shape[0]
            _to_particle_layout(theta, omega, thS, omS)
            vtS = np.empty((K, L2, N))
            voS = np.empty((K + 2, M))
            _field(thS, omS, zT, zw, xT, xw, vtS, voS, yes, yes, store, 0.0, 0.0, 1.0, sq_t,
                   sq_o, 0.0, 1.0, gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf, acc_g, acc_c,
                   flags, soa, par)
            _from_particle_layout(vtS, voS, vt, vo)
        else:
            _field(theta, omega, zT, zw, xT, xw, vt, vo, yes, yes, store, 0.0, 0.0, 1.0, sq_t,
                   sq_o, 0.0, 1.0, gT, whT, gpart, hpart, ubuf_g, ubuf_c, vbuf, acc_g, acc_c,
                   flags, soa, par)
        return 1
    if not soa:
        return _steps(kind, theta, omega, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt,
                      clip, rho, eps, sq_t, sq_o, vt, vo, vt2, vo2, th2, om2, gT, whT, gpart,
                      hpart, ubuf_g, ubuf_c, vbuf, acc_g, acc_c, flags, soa, par)
    # Particle layout: transpose in, step, transpose out (also after a NaN/Inf stop).  Every
    # (N, K, L+2) work array is used as (K, L+2, N) through a reshape: same size, and the
    # element-wise Heun updates do not care about the order.
    N, K, L2 = theta.shape
    M = omega.shape[0]
    _to_particle_layout(theta, omega, thS, omS)
    st = (K, L2, N)
    so = (K + 2, M)
    sqtS = sq_t
    sqoS = sq_o
    if kind == RMSPROP:
        sqtS = np.empty(st)
        sqoS = np.empty(so)
        _to_particle_layout(sq_t, sq_o, sqtS, sqoS)
    vtS = vt.reshape(st)
    voS = vo.reshape(so)
    if kind == HEUN:
        vt2S, vo2S, th2S, om2S = vt2.reshape(st), vo2.reshape(so), th2.reshape(st), om2.reshape(so)
    else:  # unused work arrays
        vt2S, vo2S, th2S, om2S = vtS, voS, vtS, voS
    done = _steps(kind, thS, omS, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip, rho,
                  eps, sqtS, sqoS, vtS, voS, vt2S, vo2S, th2S, om2S, gT, whT, gpart, hpart,
                  ubuf_g, ubuf_c, vbuf, acc_g, acc_c, flags, soa, par)
    _from_particle_layout(thS, omS, theta, omega)
    if kind == RMSPROP:
        _from_particle_layout(sqtS, sqoS, sq_t, sq_o)
    return done
