"""The Numba CPU engine: fused compiled passes and step loops (the NumPy reference is the truth).

One velocity evaluation is three passes over the particles, none forming an ``N x B`` array:

1. generator output ``g(z_b) = (1/N) sum_i sigma(z_b; theta_i)``,
2. one sweep over critic particles giving ``V_omega`` and the weighted critic gradient
   ``w_b grad f(g(z_b))`` at the same time,
3. ``V_theta``.

In a time step the updates are fused into passes 2 and 3 (each chunk of particles is updated
right after its velocities are computed: pass 2 reads ``omega_j`` only for particle ``j``,
pass 3 reads ``theta_i`` only for ``i``), with the NaN/Inf check of the new values; a
projected Euler or SGD step is three compiled loops and no other work.

**Layout.**  :func:`run_steps` copies the state once per call to a particle-major layout,
``theta`` as ``(K, L+2, Np)`` and ``omega`` as ``(K+2, Mp)``, zero-padded to ``Np``, ``Mp``
multiples of :data:`PAD` (a padded generator unit has ``a = 0`` and a padded critic unit
``alpha = 0``, so they add exact zeros to every sum, and no kernel stores or steps them).
The innermost loops run over particles, eight per AVX-512 vector, and the padding leaves no
scalar remainder.  Nodes are taken eight at a time (``_*_8`` kernels): one sweep over the
particles evaluates eight sigmoids per particle, so each particle's parameters and
accumulators cross the load/store units once per eight nodes and the loop holds eight
independent dependency chains.  Small ``K`` and ``L`` (1, 2) have their dot products written
out; other dimensions go through per-chunk buffers.  The sigmoid is the polynomial
exponential of :mod:`meanfield_gan._scalar`, which vectorises (no SVML here).

Sums over particles (``g`` and ``grad f``) go through per-chunk partials reduced in a fixed
order; the chunks depend on the (padded) particle count only, so results
do not depend on the number of threads, nor on whether a pass runs threaded.  Each particle's
own velocity is computed lane by lane with no cross-lane step, by the same instructions in
every lane, so coincident critic particles stay bitwise equal (MODEL.md section 4.3).

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

import math
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
#: Particle counts are padded to a multiple of this (the AVX-512 vector of float64).
PAD = 8
#: Scheme codes of :func:`run_steps` (VELOCITY: store both velocity fields, no step;
#: CRITIC_VELOCITY: the critic's only, without the generator pass).
EULER, HEUN, SGD, SGD_ALT, RMSPROP, VELOCITY, CRITIC_VELOCITY = 0, 1, 2, 3, 4, 5, 6
#: Steps (velocity evaluations) with fewer sigmoid evaluations than this run on one thread:
#: measured on 2 cores, SGD with batch 1 at N = M = 1e3 (4e3 sigmoids) is faster serially,
#: at N = M = 5e3 (2e4) threaded.
PARALLEL_MIN_WORK = 15_000

# What a pass does with a particle's velocity: store it, take an SGD/Euler step
# (y += h v, clipped to Q for the critic), or an RMSProp step.
_STORE, _STEP, _RMS = 0, 1, 2


def n_chunks(n: int) -> int:
    """Number of chunks of ``n`` (padded) particles: fixed by ``n``, so results ignore threads.

    Chunks of about :data:`CHUNK_SIZE` particles (long sweeps keep the vector units busy: on
    one core, 64-particle chunks ran 5-10 points below 256-particle ones), at least two when
    there are two vectors of particles (so two threads share small problems), at most
    :data:`MAX_CHUNKS`.
    """
    return max(min(2, n // PAD), min(MAX_CHUNKS, (n + CHUNK_SIZE - 1) // CHUNK_SIZE), 1)


def _chunk_len(n: int) -> int:
    """Largest chunk of :func:`_chunk` (``n`` a multiple of PAD)."""
    vectors = n // PAD
    nch = n_chunks(n)
    return -(-vectors // nch) * PAD


#: Target chunk size (particles); chunks are whole vectors of PAD particles.
CHUNK_SIZE = 256


@njit(inline="always")
def _chunk(n, nch, ch):
    # The n // PAD vectors of particles shared out as evenly as whole vectors allow (two
    # threads on four chunks of 1000 particles: 504 / 496 particles, not 512 / 488).
    vectors = n // PAD
    return (ch * vectors // nch) * PAD, ((ch + 1) * vectors // nch) * PAD


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
# kernels: innermost loops over particles, theta as (K, L+2, Np), omega as (K+2, Mp)
# ======================================================================================


# Blocks of eight nodes: one sweep over the particles evaluates eight nodes' sigmoids, so each
# particle's parameters and accumulators are loaded (and stored) once per eight nodes, and the
# loop body holds eight independent dependency chains (one sigmoid is a long chain of
# multiply-adds whose latency a short loop cannot hide).  Each kernel loops over the blocks
# itself (one call per chunk: a call per block cost 10 points of efficiency on sweeps of
# 64-100 particles).  The last block may run past B with zero nodes and weights, which add
# exact zeros (:func:`_block_nodes` decides).  Measured on one core (critic pass, K = 1,
# B = 100): one node per sweep 55% of the sigmoid throughput, four 70%, eight 74%; pass 3
# (L = 2): four 70%, eight 76%.  ``with_h`` and ``minus`` are always literal True/False, so
# Numba compiles each variant with the other branches pruned (a runtime sign cost 2-5
# points).  The particle index is unsigned: Numba then emits no negative-index wraparound,
# whose per-access select made LLVM give up vectorising loops that update four arrays
# ("unsafe indirect dependence").


@njit(inline="always")
def _wsd(u, w):
    """``w s(u)`` and ``w s'(u) = w s (1 - s)``."""
    s = sigmoid(u)
    ws = w * s
    return ws, ws * (1.0 - s)


@njit(inline="always")
def _block_nodes(B, dim):
    """How many of ``B`` nodes the blocked kernels take (the rest go one at a time).

    Whole blocks of eight, plus a padded last block when it would hold four nodes or more
    (padding costs at most four wasted sigmoids per particle; four single-node sweeps cost
    about as much).  None when ``dim`` (K or L) is above 2: no unrolled kernel.
    """
    if dim > 2:
        return 0
    r = B % 8
    return B - r + 8 if r >= 4 else B - r


@njit(inline="always")
def _get8(x, b):
    """``x[b .. b+7]``, zeros past the end of ``x`` (the padded last block)."""
    B = x.shape[0]
    return (x[b] if b < B else 0.0,
            x[b + 1] if b + 1 < B else 0.0,
            x[b + 2] if b + 2 < B else 0.0,
            x[b + 3] if b + 3 < B else 0.0,
            x[b + 4] if b + 4 < B else 0.0,
            x[b + 5] if b + 5 < B else 0.0,
            x[b + 6] if b + 6 < B else 0.0,
            x[b + 7] if b + 7 < B else 0.0)


@njit(inline="always")
def _put8(x, b, v0, v1, v2, v3, v4, v5, v6, v7):
    """``x[b + m] = v_m`` for the ``b + m`` inside ``x``."""
    B = x.shape[0]
    if b + 0 < B:
        x[b + 0] = v0
    if b + 1 < B:
        x[b + 1] = v1
    if b + 2 < B:
        x[b + 2] = v2
    if b + 3 < B:
        x[b + 3] = v3
    if b + 4 < B:
        x[b + 4] = v4
    if b + 5 < B:
        x[b + 5] = v5
    if b + 6 < B:
        x[b + 6] = v6
    if b + 7 < B:
        x[b + 7] = v7


@njit(**_OPTS)
def _po_8(n, a, c, b0, b1, z0, z1, out, nblk, two):
    """Pass 1 for nodes ``b < nblk``: ``out[b] = sum_i a_i s(c_i + b0_i z0_b + b1_i z1_b)``.

    ``two`` (a literal): L = 2; for L = 1 the second weight and coordinate are absent.
    """
    for b in range(0, nblk, 8):
        q0, q1, q2, q3, q4, q5, q6, q7 = _get8(z0, b)
        if two:
            r0, r1, r2, r3, r4, r5, r6, r7 = _get8(z1, b)
        else:
            r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = 0.0
        g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = 0.0
        for i in range(np.uint64(n)):
            ai = a[i]
            ci = c[i]
            bi = b0[i]
            di = 0.0
            if two:
                di = b1[i]
            g0 += ai * sigmoid(ci + bi * q0 + di * r0)
            g1 += ai * sigmoid(ci + bi * q1 + di * r1)
            g2 += ai * sigmoid(ci + bi * q2 + di * r2)
            g3 += ai * sigmoid(ci + bi * q3 + di * r3)
            g4 += ai * sigmoid(ci + bi * q4 + di * r4)
            g5 += ai * sigmoid(ci + bi * q5 + di * r5)
            g6 += ai * sigmoid(ci + bi * q6 + di * r6)
            g7 += ai * sigmoid(ci + bi * q7 + di * r7)
        _put8(out, b, g0, g1, g2, g3, g4, g5, g6, g7)


@njit(**_OPTS)
def _sums_8(n, gam, alp, b0, b1, p0, p1, w, a0, aK, a1, a2, hp, nblk, two, with_h, minus):
    """A velocity's sums over nodes ``b < nblk``, units ``s(gam_i + b0_i p0_b + b1_i p1_b)``.

    ``a0``, ``aK``, ``a1`` (and ``a2`` when ``two``) gain (``minus``: lose) ``sum_b w s``,
    ``sum_b w s'``, ``sum_b w s' p0_b`` (and ``sum_b w s' p1_b``); with ``with_h``,
    ``hp[0, b] = sum_i alp_i b0_i w_b s'_ib`` (and ``hp[1, b]`` with ``b1``).  The same
    kernel serves one side of the critic velocity (units ``omega_j``, points ``g(z_b)`` or
    ``x_b``, dimension K; the generated side builds the critic gradient ``hp``) and the
    generator velocity (units ``theta_ik``, points ``z_b``, dimension L, weights
    ``w_b h_k(z_b)``).  ``two`` (dimension 2), ``with_h`` and ``minus`` are literal booleans:
    each variant compiles alone, the other branches pruned.
    """
    for b in range(0, nblk, 8):
        q0, q1, q2, q3, q4, q5, q6, q7 = _get8(p0, b)
        w0, w1, w2, w3, w4, w5, w6, w7 = _get8(w, b)
        if two:
            r0, r1, r2, r3, r4, r5, r6, r7 = _get8(p1, b)
        else:
            r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = 0.0
        h0 = h1 = h2 = h3 = h4 = h5 = h6 = h7 = 0.0
        k0 = k1 = k2 = k3 = k4 = k5 = k6 = k7 = 0.0
        for i in range(np.uint64(n)):
            g = gam[i]
            bi = b0[i]
            ci = 0.0
            if two:
                ci = b1[i]
            ws0, d0 = _wsd(g + bi * q0 + ci * r0, w0)
            ws1, d1 = _wsd(g + bi * q1 + ci * r1, w1)
            ws2, d2 = _wsd(g + bi * q2 + ci * r2, w2)
            ws3, d3 = _wsd(g + bi * q3 + ci * r3, w3)
            ws4, d4 = _wsd(g + bi * q4 + ci * r4, w4)
            ws5, d5 = _wsd(g + bi * q5 + ci * r5, w5)
            ws6, d6 = _wsd(g + bi * q6 + ci * r6, w6)
            ws7, d7 = _wsd(g + bi * q7 + ci * r7, w7)
            S = ((ws0 + ws1) + (ws2 + ws3)) + ((ws4 + ws5) + (ws6 + ws7))
            D = ((d0 + d1) + (d2 + d3)) + ((d4 + d5) + (d6 + d7))
            P = (((d0 * q0 + d1 * q1) + (d2 * q2 + d3 * q3))
                 + ((d4 * q4 + d5 * q5) + (d6 * q6 + d7 * q7)))
            Q = (((d0 * r0 + d1 * r1) + (d2 * r2 + d3 * r3))
                 + ((d4 * r4 + d5 * r5) + (d6 * r6 + d7 * r7)))
            if minus:
                a0[i] -= S
                aK[i] -= D
                a1[i] -= P
                if two:
                    a2[i] -= Q
            else:
                a0[i] += S
                aK[i] += D
                a1[i] += P
                if two:
                    a2[i] += Q
            if with_h:
                ab = alp[i] * bi
                h0 += ab * d0
                h1 += ab * d1
                h2 += ab * d2
                h3 += ab * d3
                h4 += ab * d4
                h5 += ab * d5
                h6 += ab * d6
                h7 += ab * d7
                if two:
                    ac = alp[i] * ci
                    k0 += ac * d0
                    k1 += ac * d1
                    k2 += ac * d2
                    k3 += ac * d3
                    k4 += ac * d4
                    k5 += ac * d5
                    k6 += ac * d6
                    k7 += ac * d7
        if with_h:
            _put8(hp[0], b, h0, h1, h2, h3, h4, h5, h6, h7)
            if two:
                _put8(hp[1], b, k0, k1, k2, k3, k4, k5, k6, k7)


@njit(**_OPTS)
def _part_gen_output(ch, nch, th, zT, gpart, ubuf):
    """Chunk ``ch`` of pass 1: ``gpart[ch, k, b] = sum_{i in chunk} a_ik s(u_ikb)``."""
    K, L2, N = th.shape
    L = L2 - 2
    i0, i1 = _chunk(N, nch, ch)
    n = i1 - i0
    u = ubuf[ch]
    B = zT.shape[1]
    nblk = _block_nodes(B, L)
    for k in range(K):
        a = th[k, 0, i0:i1]
        c = th[k, L + 1, i0:i1]
        b0 = th[k, 1, i0:i1]
        b1 = th[k, min(2, L), i0:i1]
        if L == 1:
            _po_8(n, a, c, b0, b1, zT[0], zT[0], gpart[ch, k], nblk, False)
        elif L == 2:
            _po_8(n, a, c, b0, b1, zT[0], zT[1], gpart[ch, k], nblk, True)
        for b in range(min(nblk, B), B):
            acc = 0.0
            if L == 1:
                z0 = zT[0, b]
                for i in range(n):
                    acc += a[i] * sigmoid(c[i] + b0[i] * z0)
            elif L == 2:
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


# One node at a time (the last B % 8 < 4 nodes, and batches under four nodes): the sums of
# :func:`_sums_8` for one node, ``sign`` +1 or -1; the ``h`` versions also return the
# critic-gradient partial sums.  Pass 3 uses _pc1/_pc2 with sign +1.


@njit(**_OPTS)
def _pc1(n, gam, b0, p0, w, sign, a0, aK, a1):
    for i in range(np.uint64(n)):
        s = sigmoid(gam[i] + b0[i] * p0)
        ws = w * s
        d = ws * (1.0 - s)
        a0[i] += sign * ws
        aK[i] += sign * d
        a1[i] += sign * (d * p0)


@njit(**_OPTS)
def _pc1h(n, gam, alp, b0, p0, w, sign, a0, aK, a1):
    h0 = 0.0
    for i in range(np.uint64(n)):
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
    for i in range(np.uint64(n)):
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
    for i in range(np.uint64(n)):
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
    B = pT.shape[1]
    nblk = _block_nodes(B, K)
    # (the data side is the only one with sign -1, and it never needs h)
    p0 = pT[0]
    p1 = pT[min(1, K - 1)]
    if K == 1 and with_h:
        _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, False, True, False)
    elif K == 1 and sign > 0:
        _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, False, False, False)
    elif K == 1:
        _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, False, False, True)
    elif K == 2 and with_h:
        _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, True, True, False)
    elif K == 2 and sign > 0:
        _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, True, False, False)
    elif K == 2:
        _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, True, False, True)
    for b in range(min(nblk, B), B):
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
def _part_critic(ch, nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf, need_h, need_vo,
                 mode, hstep, clip, sq, rho, eps, flags):
    """Chunk ``ch`` of pass 2: critic velocities and the ``grad f`` partial sums.

    ``hpart[ch, k, b] = sum_{j in chunk} alpha_j beta_jk zw_b s'(u_jb)`` (with ``need_h``).
    ``mode`` ``_STORE`` writes ``V_omega`` into ``vo``; ``_STEP``/``_RMS`` update ``om`` (clipped
    to Q) in place instead, once the chunk's ``grad f`` partials are taken, and set
    ``flags[ch] = 0`` if a new value is not finite.  Only the first ``mreal`` particles are
    stored or updated (the rest are the zero padding).
    """
    K2, M = om.shape
    j0, j1 = _chunk(M, nch, ch)
    n = j1 - j0
    nr = max(0, min(j1, mreal) - j0)
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
            vo[d, j0:j0 + nr] = acc[d, :nr]
        else:
            # (sq is a dummy unless mode is RMSProp: hand _apply_row a valid row instead)
            sqr = sq[d, j0:j0 + nr] if mode == _RMS else acc[d, :nr]
            chk += _apply_row(acc[d, :nr], om[d, j0:j0 + nr], sqr, mode, hstep, rho, eps, clip,
                              True)
    if not chk == 0.0:
        flags[ch] = 0


@njit(**_OPTS)
def _part_gen_velocity(ch, nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho, eps,
                       flags):
    """Chunk ``ch`` of pass 3: ``V_theta`` given ``whT[k, b] = w_b h_k(z_b)``, stored or stepped
    (as in :func:`_part_critic`; only the first ``nreal`` particles)."""
    K, L2, N = th.shape
    L = L2 - 2
    i0, i1 = _chunk(N, nch, ch)
    n = i1 - i0
    nr = max(0, min(i1, nreal) - i0)
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
        B = zT.shape[1]
        nblk = _block_nodes(B, L)
        if L == 1:
            _sums_8(n, c, a, b0, b1, zT[0], zT[0], whT[k], va, vc, v0, v1, acc, nblk, False,
                    False, False)
        elif L == 2:
            _sums_8(n, c, a, b0, b1, zT[0], zT[1], whT[k], va, vc, v0, v1, acc, nblk, True,
                    False, False)
        for b in range(min(nblk, B), B):
            w = whT[k, b]
            # L = 1, 2: one fused loop (the operations of the buffered version below).
            if L == 1:
                _pc1(n, c, b0, zT[0, b], w, 1.0, va, vc, v0)
                continue
            if L == 2:
                _pc2(n, c, b0, b1, zT[0, b], zT[1, b], w, 1.0, va, vc, v0, v1)
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
                vt[k, d, i0:i0 + nr] = acc[d, :nr]
            else:
                sqr = sq[k, d, i0:i0 + nr] if mode == _RMS else acc[d, :nr]
                chk += _apply_row(acc[d, :nr], th[k, d, i0:i0 + nr], sqr, mode, hstep, rho, eps,
                                  0.0, False)
    if not chk == 0.0:
        flags[ch] = 0


# ======================================================================================
# passes: the same chunk bodies run threaded (prange) or serially, with identical results
# (the chunk index is cast to int64: prange's index type differs from range's, and each
# type would compile its own copy of every kernel)
# ======================================================================================


@njit(parallel=True, **_OPTS)
def _pass1_par(nch, th, zT, gpart, ubuf):
    for ch in prange(nch):
        _part_gen_output(np.int64(ch), nch, th, zT, gpart, ubuf)


@njit(**_OPTS)
def _pass1_ser(nch, th, zT, gpart, ubuf):
    for ch in range(nch):
        _part_gen_output(np.int64(ch), nch, th, zT, gpart, ubuf)


@njit(parallel=True, **_OPTS)
def _pass2_par(nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf, need_h, need_vo, mode,
               hstep, clip, sq, rho, eps, flags):
    for ch in prange(nch):
        _part_critic(np.int64(ch), nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf,
                     need_h, need_vo, mode, hstep, clip, sq, rho, eps, flags)


@njit(**_OPTS)
def _pass2_ser(nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf, need_h, need_vo, mode,
               hstep, clip, sq, rho, eps, flags):
    for ch in range(nch):
        _part_critic(np.int64(ch), nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf,
                     need_h, need_vo, mode, hstep, clip, sq, rho, eps, flags)


@njit(parallel=True, **_OPTS)
def _pass3_par(nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho, eps, flags):
    for ch in prange(nch):
        _part_gen_velocity(np.int64(ch), nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode,
                           hstep, sq, rho, eps, flags)


@njit(**_OPTS)
def _pass3_ser(nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, rho, eps, flags):
    for ch in range(nch):
        _part_gen_velocity(np.int64(ch), nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode,
                           hstep, sq, rho, eps, flags)


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
def _field(nreal, mreal, th, om, zT, zw, xT, xw, vt, vo, need_vt, need_vo, mode, dt, gdt, clip,
           sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c, flags,
           par):
    """One velocity evaluation: store (``mode=_STORE``) or step with the fused updates.

    ``th (K, L+2, Np)`` and ``om (K+2, Mp)`` are the padded particle-layout arrays holding
    ``nreal`` and ``mreal`` particles.  Returns False if a stepped coordinate became NaN/Inf.
    """
    cg = gpart.shape[0]
    cc = hpart.shape[0]
    if par:
        _pass1_par(cg, th, zT, gpart, ubuf_g)
    else:
        _pass1_ser(cg, th, zT, gpart, ubuf_g)
    _reduce(gpart, 1.0 / nreal, gT)
    if par:
        _pass2_par(cc, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf_c, acc_c, need_vt, need_vo,
                   mode, gdt, clip, sq_o, rho, eps, flags)
    else:
        _pass2_ser(cc, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf_c, acc_c, need_vt, need_vo,
                   mode, gdt, clip, sq_o, rho, eps, flags)
    ok = _flags_ok(flags, cc)
    if need_vt:
        # hpart carries the weights w_b already, so whT = w_b grad f(g(z_b)).
        _reduce(hpart, 1.0 / mreal, whT)
        if par:
            _pass3_par(cg, nreal, th, zT, whT, vt, ubuf_g, acc_g, mode, dt, sq_t, rho, eps,
                       flags)
        else:
            _pass3_ser(cg, nreal, th, zT, whT, vt, ubuf_g, acc_g, mode, dt, sq_t, rho, eps,
                       flags)
        ok = _flags_ok(flags, cg) and ok
    return ok


# ======================================================================================
# workspace
# ======================================================================================


def padded(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`PAD`."""
    return (n + PAD - 1) // PAD * PAD


class Workspace:
    """Preallocated buffers of one problem size (no allocation inside step loops).

    Holds the particle-layout copies of the state, zero-padded to :func:`padded` counts (the
    padding stays zero: no kernel writes it), the velocity arrays in that layout (and Heun's or
    RMSProp's work arrays when ``kind`` is HEUN or RMSPROP), and the per-chunk partial sums.
    ``args()`` is passed after the fixed arguments of :func:`run_steps`; it ends with the
    threading choice.
    """

    def __init__(self, N: int, M: int, K: int, L: int, Bz: int, Bx: int,
                 parallel: bool | None = None, kind: int | None = None):
        Np, Mp = padded(N), padded(M)
        cg, cc = n_chunks(Np), n_chunks(Mp)
        if parallel is None:
            work = 2 * N * K * Bz + M * (Bz + Bx)  # sigmoids per velocity evaluation
            # Decided by the size alone, never by the thread count: the serial and parallel
            # kernels may differ in the last bit, and a study must give the same numbers in a
            # 1-thread worker as in a 2-thread parent.
            parallel = work >= PARALLEL_MIN_WORK
        self.par = bool(parallel)
        ng, nc = _chunk_len(Np), _chunk_len(Mp)
        self.gT = np.empty((K, Bz))
        self.whT = np.empty((K, Bz))
        self.gpart = np.empty((cg, K, Bz))
        self.hpart = np.zeros((cc, K, Bz))
        self.flags = np.ones(max(cg, cc), dtype=np.int64)
        self.ubuf_g = np.empty((cg, ng))
        self.ubuf_c = np.empty((cc, 2, nc))
        self.acc_g = np.empty((cg, L + 2, ng))
        self.acc_c = np.empty((cc, K + 2, nc))
        # particle layout: state and velocities; Heun's second stage and RMSProp's sums only
        # for those schemes (``kind``), empty arrays of the same dimensions otherwise
        st, so = (K, L + 2, Np), (K + 2, Mp)
        self.th, self.om = np.zeros(st), np.zeros(so)
        self.vt, self.vo = np.zeros(st), np.zeros(so)
        heun, rms = kind == HEUN, kind == RMSPROP
        self.vt2, self.vo2 = np.zeros(st if heun else (0, 0, 0)), np.zeros(so if heun else (0, 0))
        self.th2, self.om2 = np.zeros(st if heun else (0, 0, 0)), np.zeros(so if heun else (0, 0))
        self.sq_t, self.sq_o = np.zeros(st if rms else (0, 0, 0)), np.zeros(so if rms else (0, 0))

    def args(self) -> tuple:
        return (self.th, self.om, self.vt, self.vo, self.vt2, self.vo2, self.th2, self.om2,
                self.sq_t, self.sq_o, self.gT, self.whT, self.gpart, self.hpart, self.ubuf_g,
                self.ubuf_c, self.acc_g, self.acc_c, self.flags, self.par)


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


def velocity_into(theta, omega, zT, zw, xT, xw, vt, vo, *ws_args, critic_only=False):
    """Both velocity fields of ``(theta, omega)`` into ``vt``, ``vo``; inputs unchanged.

    ``ws_args`` is ``Workspace(...).args()``.  Runs :func:`run_steps` with the VELOCITY code
    (CRITIC_VELOCITY with ``critic_only``: ``vt`` is then not computed), so the public
    ``velocity`` and ``simulate`` share one compiled entry point (half the first-compile time
    of two).
    """
    K = omega.shape[1] - 2
    L = theta.shape[2] - 2
    kind = CRITIC_VELOCITY if critic_only else VELOCITY
    run_steps(kind, theta, omega, 1, zT, zw, xT, xw, np.zeros((1, 1, L, 1)),
              np.zeros((1, 1, K, 1)), 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, theta, omega, vt, vo,
              *ws_args)


def energy(theta, omega, zT, zw, xT, xw) -> float:
    """``Psi = sum_b zw_b f(g(z_b)) - sum_b xw_b f(x_b)`` through the compiled velocity.

    The alpha-component of the critic velocity is ``V_alpha(omega_j) = sum_b zw_b
    s(u_j(g(z_b))) - sum_b xw_b s(u_j(x_b))``, so ``Psi = (1/M) sum_j alpha_j V_alpha(omega_j)``:
    passes 1 and 2 of a velocity evaluation (threaded, fused, compiled once for both), then a
    correctly rounded sum (``math.fsum``) that no thread count or BLAS can change.
    """
    N, K, L2 = theta.shape
    M = omega.shape[0]
    ws = Workspace(N, M, K, L2 - 2, zT.shape[1], xT.shape[1])
    vt = np.empty_like(theta)
    vo = np.empty_like(omega)
    velocity_into(theta, omega, zT, zw, xT, xw, vt, vo, *ws.args(), critic_only=True)
    return math.fsum(omega[:, 0] * vo[:, 0]) / M


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
def _steps(kind, N, M, th, om, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip, rho,
           eps, sq_t, sq_o, vt, vo, vt2, vo2, th2, om2, gT, whT, gpart, hpart, ubuf_g, ubuf_c,
           acc_g, acc_c, flags, par):
    """The step loop on the padded particle-layout arrays; returns the number of finite steps.

    The padding of every array stays zero: velocities are stored for real particles only, so
    Heun's stages and combination leave padded coordinates at 0.
    """
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
            ok = _field(N, M, th, om, z, zw, x, xw, vt, vo, yes, yes, mode, dt, gdt, clip,
                        sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g,
                        acc_c, flags, par)
        elif kind == HEUN:
            _field(N, M, th, om, zT, zw, xT, xw, vt, vo, yes, yes, store, dt, gdt, clip,
                   sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c,
                   flags, par)
            _heun_stage(th, vt, th2, dt, clip, no, no)
            _heun_stage(om, vo, om2, gdt, clip, yes, yes)
            _field(N, M, th2, om2, zT, zw, xT, xw, vt2, vo2, yes, yes, store, dt, gdt, clip,
                   sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c,
                   flags, par)
            _heun_combine(th, 0.5 * dt, vt, th2, vt2, clip, no)
            _heun_combine(om, 0.5 * gdt, vo, om2, vo2, clip, yes)
            ok = _all_finite(th) and _all_finite(om)
        else:  # SGD_ALT: n_critic critic steps with fresh batches, then one generator step
            n_critic = Xs.shape[1]
            ok = True
            for c in range(n_critic):
                ok = _field(N, M, th, om, Zs[s, c], zw, Xs[s, c], xw, vt, vo, no, yes, step,
                            dt, crit_dt, clip, sq_t, sq_o, rho, eps, gT, whT, gpart, hpart,
                            ubuf_g, ubuf_c, acc_g, acc_c, flags, par) and ok
            ok = _field(N, M, th, om, Zs[s, n_critic], zw, Xs[s, 0], xw, vt, vo, yes, no, step,
                        dt, crit_dt, clip, sq_t, sq_o, rho, eps, gT, whT, gpart, hpart, ubuf_g,
                        ubuf_c, acc_g, acc_c, flags, par) and ok
        if not ok:
            return s  # steps completed before the one that produced NaN/Inf
    return n_steps


@njit(**_OPTS)
def run_steps(kind, theta, omega, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip,
              rho, eps, sq_t, sq_o, vt_out, vo_out, th, om, vt, vo, vt2, vo2, th2, om2, sqtS,
              sqoS, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c, flags, par):
    """Advance ``(theta, omega)`` in place by ``n_steps`` steps of scheme ``kind``.

    Deterministic schemes (EULER, HEUN) use the fixed quadrature ``zT, zw, xT, xw``; stochastic
    ones read step ``s``'s batches from ``Zs[s, slot]`` (shape ``(L, m)``) and ``Xs[s, slot]``
    (``(K, m)``) with uniform weights ``zw``/``xw`` of length ``m``.  ``dt`` is the generator
    step, ``gdt = gamma_c dt`` the simultaneous critic step, ``crit_dt`` the step of each
    alternating critic update; ``sq_t``, ``sq_o`` are RMSProp's running means (updated in
    place).  With kind VELOCITY both velocity fields go to ``vt_out``, ``vo_out`` (with
    CRITIC_VELOCITY only ``vo_out``) and nothing moves.  The arguments from ``th`` on are
    :meth:`Workspace.args`: the state is copied to the padded particle layout, stepped there
    and copied back (also after a NaN/Inf stop).
    Returns the number of steps taken (fewer if NaN/Inf appeared).
    """
    N = theta.shape[0]
    M = omega.shape[0]
    _to_particle_layout(theta, omega, th, om)
    if kind == VELOCITY or kind == CRITIC_VELOCITY:
        yes = n_steps >= -1  # not literals (see _steps)
        need_vt = kind == VELOCITY
        store = kind * 0 + _STORE
        _field(N, M, th, om, zT, zw, xT, xw, vt, vo, need_vt, yes, store, 0.0, 0.0, 1.0, sqtS,
               sqoS, 0.0, 1.0, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c, flags, par)
        _from_particle_layout(vt, vo, vt_out, vo_out)
        return 1
    if kind == RMSPROP:
        _to_particle_layout(sq_t, sq_o, sqtS, sqoS)
    done = _steps(kind, N, M, th, om, n_steps, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip,
                  rho, eps, sqtS, sqoS, vt, vo, vt2, vo2, th2, om2, gT, whT, gpart, hpart,
                  ubuf_g, ubuf_c, acc_g, acc_c, flags, par)
    _from_particle_layout(th, om, theta, omega)
    if kind == RMSPROP:
        _from_particle_layout(sqtS, sqoS, sq_t, sq_o)
    return done
