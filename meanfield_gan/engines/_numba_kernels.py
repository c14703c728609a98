"""Numba kernels of the CPU engine: per-chunk passes over particles (see :mod:`._numba`).

Split from the driver-facing half of the engine (:mod:`meanfield_gan.engines._numba`) so each
reads on its own: here the node blocks, the fused chunk bodies and the threaded/serial passes;
there the velocity evaluation, the workspace, the layouts and the step loops.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._scalar import build, exp_inline

_FAST = {"reassoc", "nsz", "contract"}
_OPTS = dict(cache=True, error_model="numpy", fastmath=_FAST)

# The exponential is emitted inline as IR (exact flags, always inlined: see exp_inline).
_S = build(njit(inline="always", error_model="numpy"), exp_inline)
sigmoid = _S.sigmoid
_clip = _S.clip
_project = _S.project

#: Particles are split into at most this many chunks for per-chunk partial sums.
MAX_CHUNKS = 32
#: Particle counts are padded to a multiple of this (the AVX-512 vector of float64).
PAD = 8
#: Velocity evaluations (steps) with fewer sigmoid evaluations than this, or with fewer
#: particles than :data:`PARALLEL_MIN_PARTICLES` on either side, run on one thread.  Measured
#: on 2 cores (us per evaluation, serial / threaded): SGD with batch 1, K = L = 1, at
#: N = M = 1e3 (4e3 sigmoids) 7.3 / 7.0, at 2e3 13.9 / 9.9, K = L = 2 at 1e3 (6e3) 11.7 / 9.5;
#: a store-mode velocity on 256 nodes, K = L = 1, at N = M = 16 (1.6e4) 32 / 31, 32: 39 / 35,
#: 64: 53 / 41, and K = L = 2 at 16: 42 / 51, 64 (9.8e4): 75 / 77 (two chunks of a few dozen
#: particles are too short a sweep for a thread each).
PARALLEL_MIN_WORK = 6_000
#: See :data:`PARALLEL_MIN_WORK`.
PARALLEL_MIN_PARTICLES = 64

# What a pass does with a particle's velocity: store it, take an SGD/Euler step
# (y += h v, clipped to Q for the critic), an RMSProp or an Adam step.
_STORE, _STEP, _RMS, _ADAM = 0, 1, 2, 3

# Compile-time constants (see :mod:`._specialise`): the dimension classes of K and L (1, 2:
# unrolled kernels; 0: K or L above 2, buffered general loops).  Every compiled kernel is a
# variant with the run's values; these module values only make the templates valid code.
KD = 0
LD = 0


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
def _apply_row(v, y, sq, sq2, mode, h, hyp, clip, do_clip):
    """Update the coordinates ``y`` (a row of particles) with velocities ``v``, vectorised.

    ``mode`` ``_STEP``: ``y += h v``; ``_RMS``: RMSProp with running mean ``sq`` and
    ``hyp = (hyp, ...)``; ``_ADAM``: Adam with moments ``sq`` (first) and ``sq2``
    (second) and ``hyp = (beta1, eps, beta2, 1/(1 - beta1^k), 1/(1 - beta2^k))``.  Returns a
    value that is 0 if every new coordinate is finite and NaN otherwise (``y * 0`` is NaN
    exactly for NaN/Inf ``y``: the fast-math flags here have no ``nnan``).
    """
    chk = 0.0
    n = v.shape[0]
    if mode == _RMS:
        rho = hyp[0]
        eps = hyp[1]
        for i in range(n):
            s = rho * sq[i] + (1.0 - rho) * v[i] * v[i]
            sq[i] = s
            yn = y[i] + h * v[i] / (np.sqrt(s) + eps)
            if do_clip:
                yn = _clip(yn, clip)
            y[i] = yn
            chk += yn * 0.0
    elif mode == _ADAM:
        b1 = hyp[0]
        eps = hyp[1]
        b2 = hyp[2]
        c1 = hyp[3]
        c2 = hyp[4]
        for i in range(n):
            m = b1 * sq[i] + (1.0 - b1) * v[i]
            s = b2 * sq2[i] + (1.0 - b2) * v[i] * v[i]
            sq[i] = m
            sq2[i] = s
            yn = y[i] + h * (m * c1) / (np.sqrt(s * c2) + eps)
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


def _borrowed_value(context, builder, ty, value):
    if isinstance(ty, types.BaseTuple):
        items = [_borrowed_value(context, builder, t, builder.extract_value(value, i))
                 for i, t in enumerate(ty)]
        return context.make_tuple(builder, ty, items)
    src = context.make_array(ty)(context, builder, value=value)
    dst = context.make_array(ty)(context, builder)
    for field in ("nitems", "itemsize", "data", "shape", "strides"):
        setattr(dst, field, getattr(src, field))
    dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
    dst.parent = cgutils.get_null_value(dst.parent.type)
    return dst._getvalue()


def _arrays_only(ty):
    return isinstance(ty, types.Array) or (
        isinstance(ty, types.BaseTuple) and all(_arrays_only(t) for t in ty))


@intrinsic
def _borrowed(typingctx, arrays):
    """``arrays`` (an array, or nested tuples of arrays) without reference counts: views
    with a null meminfo, for use while the caller holds the originals.

    Every view Numba makes of a counted array (``om[1, i0:i1]``, ``acc[d]``, ...) costs an
    atomic increment and decrement of the shared count; an SGD step of batch 1 at
    N = M = 1e3 makes several hundred, and they took about half of its time (perf: 33% of a
    run's samples in ``NRT_incref``/``NRT_decref``).  Views of a borrowed array are borrowed
    too, and Numba skips the count of a null meminfo.
    """
    if not _arrays_only(arrays):
        return None

    def codegen(context, builder, sig, args):
        return _borrowed_value(context, builder, arrays, args[0])

    return arrays(arrays), codegen


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
def _block_nodes(B):
    """How many of ``B`` nodes the blocked kernels take (the rest go one at a time).

    Whole blocks of eight, plus a padded last block when it would hold four nodes or more
    (padding costs at most four wasted sigmoids per particle; four single-node sweeps cost
    about as much).  Only for dimensions 1 and 2 (the general kernels take no blocks).
    """
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
    nblk = _block_nodes(B) if LD else 0
    for k in range(K):
        a = th[k, 0, i0:i1]
        c = th[k, L + 1, i0:i1]
        b0 = th[k, 1, i0:i1]
        b1 = th[k, min(2, L), i0:i1]
        if LD == 1:
            _po_8(n, a, c, b0, b1, zT[0], zT[0], gpart[ch, k], nblk, False)
        elif LD == 2:
            _po_8(n, a, c, b0, b1, zT[0], zT[1], gpart[ch, k], nblk, True)
        for b in range(min(nblk, B), B):
            acc = 0.0
            if LD == 1:
                z0 = zT[0, b]
                for i in range(n):
                    acc += a[i] * sigmoid(c[i] + b0[i] * z0)
            elif LD == 2:
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
    nblk = _block_nodes(B) if KD else 0
    # (the data side is the only one with sign -1, and it never needs h)
    p0 = pT[0]
    p1 = pT[min(1, K - 1)]
    if KD == 1:
        if with_h:
            _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, False, True, False)
        elif sign > 0:
            _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, False, False,
                    False)
        else:
            _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, False, False, True)
    elif KD == 2:
        if with_h:
            _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, True, True, False)
        elif sign > 0:
            _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, True, False, False)
        else:
            _sums_8(n, gam, alp, b0, b1, p0, p1, pw, a0, aK, a1, a2, hp, nblk, True, False, True)
    for b in range(min(nblk, B), B):
        w = pw[b]
        # K = 1, 2: one fused loop (the operations of the buffered version below, in order).
        if KD == 1:
            if with_h:
                hp[0, b] = _pc1h(n, gam, alp, b0, pT[0, b], w, sign, a0, aK, a1)
            else:
                _pc1(n, gam, b0, pT[0, b], w, sign, a0, aK, a1)
            continue
        if KD == 2:
            if with_h:
                hp[0, b], hp[1, b] = _pc2h(n, gam, alp, b0, b1, pT[0, b], pT[1, b], w, sign,
                                           a0, aK, a1, a2)
            else:
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
                 mode, hstep, clip, sq, hyp, flags, pv, lam):
    """Chunk ``ch`` of pass 2: critic velocities and the ``grad f`` partial sums.

    ``hpart[ch, k, b] = sum_{j in chunk} alpha_j beta_jk zw_b s'(u_jb)`` (with ``need_h``).
    ``mode`` ``_STORE`` writes ``V_omega`` into ``vo``; ``_STEP``/``_RMS`` update ``om`` (clipped
    to Q) in place instead, once the chunk's ``grad f`` partials are taken, and set
    ``flags[ch] = 0`` if a new value is not finite.  Only the first ``mreal`` particles are
    stored or updated (the rest are the zero padding).  With ``lam != 0`` the gradient
    penalty's ``lam grad_omega dP/dnu`` (``pv``, from :func:`_part_penalty`) is subtracted.
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
    if lam != 0.0:
        for d in range(K2):
            ad = acc[d]
            pd = pv[d, j0:j1]
            for i in range(n):
                ad[i] -= lam * pd[i]
    chk = 0.0
    for d in range(K2):
        if mode == _STORE:
            # (an element loop: a slice assignment compiles numpy's shape-mismatch error
            # formatting, seconds of a cold start)
            vd = vo[d]
            ad = acc[d]
            for i in range(nr):
                vd[j0 + i] = ad[i]
        else:
            # (sq is a dummy unless the mode keeps moments: hand _apply_row a valid row
            # instead; Adam's second moments sit after the first, at offset Mp)
            sqr = sq[d, j0:j0 + nr] if mode >= _RMS else acc[d, :nr]
            sq2 = sq[d, M + j0:M + j0 + nr] if mode == _ADAM else sqr
            chk += _apply_row(acc[d, :nr], om[d, j0:j0 + nr], sqr, sq2, mode, hstep, hyp, clip,
                              True)
    if not chk == 0.0:
        flags[ch] = 0


@njit(**_OPTS)
def _part_gen_velocity(ch, nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, hyp,
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
        nblk = _block_nodes(B) if LD else 0
        if LD == 1:
            _sums_8(n, c, a, b0, b1, zT[0], zT[0], whT[k], va, vc, v0, v1, acc, nblk, False,
                    False, False)
        elif LD == 2:
            _sums_8(n, c, a, b0, b1, zT[0], zT[1], whT[k], va, vc, v0, v1, acc, nblk, True,
                    False, False)
        for b in range(min(nblk, B), B):
            w = whT[k, b]
            # L = 1, 2: one fused loop (the operations of the buffered version below).
            if LD == 1:
                _pc1(n, c, b0, zT[0, b], w, 1.0, va, vc, v0)
                continue
            if LD == 2:
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
                vd = vt[k, d]
                ad = acc[d]
                for i in range(nr):
                    vd[i0 + i] = ad[i]
            else:
                sqr = sq[k, d, i0:i0 + nr] if mode >= _RMS else acc[d, :nr]
                sq2 = sq[k, d, N + i0:N + i0 + nr] if mode == _ADAM else sqr
                chk += _apply_row(acc[d, :nr], th[k, d, i0:i0 + nr], sqr, sq2, mode, hstep, hyp,
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
               hstep, clip, sq, hyp, flags, pv, lam):
    for ch in prange(nch):
        _part_critic(np.int64(ch), nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf,
                     need_h, need_vo, mode, hstep, clip, sq, hyp, flags, pv, lam)


@njit(**_OPTS)
def _pass2_ser(nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf, need_h, need_vo, mode,
               hstep, clip, sq, hyp, flags, pv, lam):
    for ch in range(nch):
        _part_critic(np.int64(ch), nch, mreal, om, gT, zw, xT, xw, vo, hpart, ubuf, accbuf,
                     need_h, need_vo, mode, hstep, clip, sq, hyp, flags, pv, lam)


@njit(parallel=True, **_OPTS)
def _pass3_par(nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, hyp, flags):
    for ch in prange(nch):
        _part_gen_velocity(np.int64(ch), nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode,
                           hstep, sq, hyp, flags)


@njit(**_OPTS)
def _pass3_ser(nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode, hstep, sq, hyp, flags):
    for ch in range(nch):
        _part_gen_velocity(np.int64(ch), nch, nreal, th, zT, whT, vt, ubuf, accbuf, mode,
                           hstep, sq, hyp, flags)


# ======================================================================================
# the gradient penalty (MODEL.md section 7): grad_omega dP/dnu at every critic particle
# ======================================================================================


@njit(**_OPTS)
def _part_penalty(ch, nch, om, xhT, cT, wp, pv, ubuf):
    """Chunk ``ch``: ``pv = grad_omega (dP/dnu)`` with interpolates ``xhT (K, P)``, the
    penalty's ``c(xh) = 2 (|grad f| - 1) n`` as ``cT (K, P)`` and weights ``wp``:
    ``(s' (beta.c), alpha s'' (beta.c) xh + alpha s' c, alpha s'' (beta.c))``, summed over
    the ``P`` nodes particle by particle (vectorised over particles)."""
    K2, M = om.shape
    K = K2 - 2
    j0, j1 = _chunk(M, nch, ch)
    n = j1 - j0
    u = ubuf[ch, 0]
    bc = ubuf[ch, 1]
    alp = om[0, j0:j1]
    gam = om[K + 1, j0:j1]
    for d in range(K2):
        pv[d, j0:j1] = 0.0
    for p in range(xhT.shape[1]):
        w = wp[p]
        for i in range(np.uint64(n)):
            u[i] = gam[i]
            bc[i] = 0.0
        for k in range(K):
            bk = om[1 + k, j0:j1]
            xk = xhT[k, p]
            ck = cT[k, p]
            for i in range(np.uint64(n)):
                u[i] += bk[i] * xk
                bc[i] += bk[i] * ck
        pa = pv[0, j0:j1]
        pg = pv[K + 1, j0:j1]
        for i in range(np.uint64(n)):
            s = sigmoid(u[i])
            ds = s * (1.0 - s)
            dds = ds * (1.0 - 2.0 * s)
            wb = w * bc[i]
            pa[i] += ds * wb
            pg[i] += dds * wb
            u[i] = dds * wb  # reuse: w s'' (beta.c) for the beta part
            bc[i] = w * ds  # and w s'
        for k in range(K):
            pk = pv[1 + k, j0:j1]
            xk = xhT[k, p]
            ck = cT[k, p]
            for i in range(np.uint64(n)):
                pk[i] += u[i] * xk + bc[i] * ck
    for d in range(1, K2):
        pd = pv[d, j0:j1]
        for i in range(np.uint64(n)):
            pd[i] = alp[i] * pd[i]


@njit(parallel=True, **_OPTS)
def _pass_pen_par(nch, om, xhT, cT, wp, pv, ubuf):
    for ch in prange(nch):
        _part_penalty(np.int64(ch), nch, om, xhT, cT, wp, pv, ubuf)


@njit(**_OPTS)
def _pass_pen_ser(nch, om, xhT, cT, wp, pv, ubuf):
    for ch in range(nch):
        _part_penalty(np.int64(ch), nch, om, xhT, cT, wp, pv, ubuf)
