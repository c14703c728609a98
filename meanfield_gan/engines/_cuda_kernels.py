"""CUDA kernels of the GPU engine (see :mod:`meanfield_gan.engines._cuda` for the design).

Split from the driver-facing half of the engine, as :mod:`._numba_kernels` is from
:mod:`._numba`: here the device maths and the kernels of one ``(K, L, dtype, block size)``;
there the launch plans, one velocity evaluation, and the step runner.

Every sum over particles or nodes is a block-partial kernel (``*_part``: a block of ``T``
threads is an ``X x Y`` grid, ``x`` along the outputs and ``y`` along the summed axis, a
shared-memory tree over ``y``) followed by a small kernel that adds the chunks' partials in a
fixed order; no atomics.  Kernels take float scalars in the working precision, so float32
kernels contain no float64 arithmetic (``tests/test_cuda.py`` checks the compiled code).
"""
from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ._scalar import EXP_CLAMP, build

__all__ = ["DTYPES", "OP_STORE", "OP_AXPY", "OP_RMS", "OP_HEUN1", "OP_HEUN2", "OP_ADAM",
           "maths", "kernels", "kernel_signatures"]

#: Working precisions by name.
DTYPES = {"float64": np.float64, "float32": np.float32}
#: Finish-kernel operations (the element-wise update applied once a velocity is reduced).
OP_STORE, OP_AXPY, OP_RMS, OP_HEUN1, OP_HEUN2, OP_ADAM = 0, 1, 2, 3, 4, 5


@cache
def maths(dtype: str) -> SimpleNamespace:
    """The shared scalar maths, as CUDA device functions in the working precision."""
    f = DTYPES[dtype]
    # Clamp the exponent as the CPU's exp_poly does (there at +-708): the sigmoid is then 0
    # or 1 to working precision in the tails, and the simulator's math.exp cannot overflow.
    hi = f(EXP_CLAMP) if f is np.float64 else f(88.0)

    @cuda.jit(device=True)
    def exp(x):
        if x > hi:
            x = hi
        elif x < -hi:
            x = -hi
        return math.exp(x)

    return build(cuda.jit(device=True), exp, f(1))


@cache
def kernels(K: int, L: int, dtype: str, TPB: int) -> SimpleNamespace:
    """Compile (lazily, per argument types) the kernels of one ``(K, L, dtype, block size)``.

    ``K``, ``L`` and ``TPB`` are compile-time constants: register accumulators and the
    shared-memory tree buffers have fixed sizes.  ``kernels(1, K, ...)`` are the critic's
    output kernels (a critic is a generator with one output row and latent dimension ``K``).
    """
    S = maths(dtype)
    sigmoid, dsigmoid, d2sigmoid = S.sigmoid, S.dsigmoid, S.d2sigmoid
    sigmoid_stable, unit_preact = S.sigmoid_stable, S.unit_preact
    clip, project = S.clip, S.project
    nbt = numba.from_dtype(np.dtype(dtype))
    zero = DTYPES[dtype](0)
    one = DTYPES[dtype](1)
    two = DTYPES[dtype](2)
    K2 = K + 2  # a critic particle's width (array shapes must be closure constants)

    @cuda.jit(device=True)
    def tree(sh, W, X, tid):
        # Sum sh[:, tid] over the threads with the same tid % X into tid < X: halve the
        # active y-range per round (X, TPB powers of two, tid = ty * X + tx).
        stride = TPB // 2
        while stride >= X:
            cuda.syncthreads()
            if tid < stride:
                for w in range(W):
                    sh[w, tid] += sh[w, tid + stride]
            stride //= 2

    @cuda.jit
    def gen_out_part(th, zT, part, X, per):
        """``part[ch, k, b] = sum_{i in chunk ch} a_ik s(u_ikb)`` (pass 1, before 1/N)."""
        tid = cuda.threadIdx.x
        tx = tid % X
        ty = tid // X
        Y = TPB // X
        b = cuda.blockIdx.x * X + tx
        ch = cuda.blockIdx.y
        Bz = zT.shape[1]
        N = th.shape[0] // K
        acc = cuda.local.array(K, nbt)
        for k in range(K):
            acc[k] = zero
        if b < Bz:
            i0 = ch * per
            i1 = i0 + per
            if i1 > N:
                i1 = N
            for i in range(i0 + ty, i1, Y):
                for k in range(K):
                    r = i * K + k
                    acc[k] += th[r, 0] * sigmoid(unit_preact(th, r, zT, b, L))
        sh = cuda.shared.array((K, TPB), nbt)
        for k in range(K):
            sh[k, tid] = acc[k]
        tree(sh, K, X, tid)
        if tid < X and b < Bz:
            for k in range(K):
                part[ch, k, b] = sh[k, tid]

    @cuda.jit
    def reduce_nodes(part, scale, src, out):
        """``out[k, b] = scale * sum_ch part[ch, k, b]`` for ``b < Bp``; beyond, copy ``src``.

        Gives ``g(z_b)`` in the first ``Bz`` columns of the node array and the data nodes in
        the rest; with ``out`` of width ``Bp`` it reduces ``grad f`` (``src`` unused).
        """
        e = cuda.grid(1)
        Bo = out.shape[1]
        if e < K * Bo:
            k = e // Bo
            b = e % Bo
            Bp = part.shape[2]
            if b < Bp:
                s = zero
                for ch in range(part.shape[0]):
                    s += part[ch, k, b]
                out[k, b] = s * scale
            else:
                out[k, b] = src[k, b - Bp]

    @cuda.jit
    def shift_nodes(PT, sigma, E):
        """``PT[k, b] += sigma E[k, b]`` for the first ``E.shape[1]`` nodes (instance noise:
        generated points only for SGD, whose noisy data come from the host; generated and
        clean data nodes of a deterministic scheme's tensor quadrature)."""
        e = cuda.grid(1)
        Be = E.shape[1]
        if e < K * Be:
            k = e // Be
            b = e % Be
            PT[k, b] += sigma * E[k, b]

    @cuda.jit
    def obj_weights(fT, zw, xw, loss, pw, hw):
        """The node weights of a non-linear objective (MODEL.md section 7) from ``f`` at the
        nodes ``fT (1, Bz + Bx)``: ``pw = (zw s(-f_g), -xw s(f_x))`` for the critic velocity
        (the data side subtracted) and ``hw = zw phi_3'(f_g)`` for ``grad f`` in the
        generator's velocity (``s(-f)``: ``loss`` 1, minimax; ``s(f)``: 2, non-saturating)."""
        b = cuda.grid(1)
        Bz = zw.shape[0]
        if b < Bz:
            f = fT[0, b]
            w1 = zw[b] * sigmoid_stable(-f)
            pw[b] = w1
            if loss == 1:
                hw[b] = w1
            else:
                hw[b] = zw[b] * sigmoid_stable(f)
        elif b < Bz + xw.shape[0]:
            pw[b] = -(xw[b - Bz] * sigmoid_stable(fT[0, b]))

    @cuda.jit
    def h_part(om, PT, pw, Bz, part, X, per):
        """``part[ch, k, b] = sum_{j in ch} alpha_j beta_jk w_b s'(u_jb)`` at ``g(z_b)``."""
        tid = cuda.threadIdx.x
        tx = tid % X
        ty = tid // X
        Y = TPB // X
        b = cuda.blockIdx.x * X + tx
        ch = cuda.blockIdx.y
        M = om.shape[0]
        acc = cuda.local.array(K, nbt)
        for k in range(K):
            acc[k] = zero
        if b < Bz:
            w = pw[b]
            j0 = ch * per
            j1 = j0 + per
            if j1 > M:
                j1 = M
            for j in range(j0 + ty, j1, Y):
                d = w * dsigmoid(sigmoid(unit_preact(om, j, PT, b, K)))
                alpha = om[j, 0]
                for k in range(K):
                    acc[k] += (alpha * om[j, 1 + k]) * d
        sh = cuda.shared.array((K, TPB), nbt)
        for k in range(K):
            sh[k, tid] = acc[k]
        tree(sh, K, X, tid)
        if tid < X and b < Bz:
            for k in range(K):
                part[ch, k, b] = sh[k, tid]

    @cuda.jit
    def penalty_points(part, scale, xpT, epsp, xhT):
        """The penalty's interpolates ``xh = eps x + (1 - eps) g(z)`` with ``g(z_p) = scale *
        sum_ch part[ch, k, p]`` (pass 1 at the triples' latent points)."""
        e = cuda.grid(1)
        P = xhT.shape[1]
        if e < K * P:
            k = e // P
            p = e % P
            s = zero
            for ch in range(part.shape[0]):
                s += part[ch, k, p]
            eps = epsp[p]
            xhT[k, p] = eps * xpT[k, p] + (one - eps) * (s * scale)

    @cuda.jit
    def penalty_dirs(part, scale, cT):
        """``c = 2 (|grad f| - 1) grad f / |grad f|`` (0 where ``grad f = 0``) at each
        interpolate, with ``grad f = scale * sum_ch part[ch, :, p]`` (one thread per node)."""
        p = cuda.grid(1)
        if p < cT.shape[1]:
            nrm = zero
            for k in range(K):
                s = zero
                for ch in range(part.shape[0]):
                    s += part[ch, k, p]
                g = s * scale
                cT[k, p] = g
                nrm += g * g
            nrm = math.sqrt(nrm)
            sc = zero
            if nrm > zero:
                sc = two * (nrm - one) / nrm
            for k in range(K):
                cT[k, p] = cT[k, p] * sc

    @cuda.jit
    def pen_part(om, xhT, cT, wp, part, X, per):
        """``part[ch, j] = sum_{p in ch} w_p (s' (beta.c), s'' (beta.c) xh + s' c,
        s'' (beta.c))`` at the interpolates: ``grad_omega dP/dnu`` before the factor alpha
        of its beta and gamma parts (MODEL.md section 7)."""
        tid = cuda.threadIdx.x
        tx = tid % X
        ty = tid // X
        Y = TPB // X
        r = cuda.blockIdx.x * X + tx
        ch = cuda.blockIdx.y
        M = om.shape[0]
        P = xhT.shape[1]
        acc = cuda.local.array(K2, nbt)
        for c in range(K2):
            acc[c] = zero
        if r < M:
            p0 = ch * per
            p1 = p0 + per
            if p1 > P:
                p1 = P
            for p in range(p0 + ty, p1, Y):
                s = sigmoid(unit_preact(om, r, xhT, p, K))
                ds = dsigmoid(s)
                bc = zero
                for k in range(K):
                    bc += om[r, 1 + k] * cT[k, p]
                wb = wp[p] * bc
                dw = d2sigmoid(s) * wb
                acc[0] += ds * wb
                acc[K + 1] += dw
                ws = wp[p] * ds
                for k in range(K):
                    acc[1 + k] += dw * xhT[k, p] + ws * cT[k, p]
        sh = cuda.shared.array((K2, TPB), nbt)
        for c in range(K2):
            sh[c, tid] = acc[c]
        tree(sh, K2, X, tid)
        if tid < X and r < M:
            for c in range(K2):
                part[ch, r, c] = sh[c, tid]

    def unit_sums_part(D):
        """A kernel for units of dimension ``D`` (rows of ``P``: amplitude, ``D`` weights, bias)
        over a chunk of nodes ``PT (D, B)`` with weights ``W[r % W.shape[0], b]``:
        ``part[ch, r] = (sum w s, sum w s' p_1..D, sum w s')``.  Critic particles over the
        signed weights ``(zw, -xw)`` (one row; before the factor alpha) and generator rows
        ``r = (i, k)`` over ``w_b h_k(z_b)`` (K rows; before -1 and -a) are the same sums."""
        WD = D + 2

        @cuda.jit
        def kernel(P, PT, W, part, X, per):
            tid = cuda.threadIdx.x
            tx = tid % X
            ty = tid // X
            Y = TPB // X
            r = cuda.blockIdx.x * X + tx
            ch = cuda.blockIdx.y
            R = P.shape[0]
            Bt = PT.shape[1]
            acc = cuda.local.array(WD, nbt)
            for c in range(WD):
                acc[c] = zero
            if r < R:
                wr = r % W.shape[0]
                b0 = ch * per
                b1 = b0 + per
                if b1 > Bt:
                    b1 = Bt
                for b in range(b0 + ty, b1, Y):
                    w = W[wr, b]
                    s = sigmoid(unit_preact(P, r, PT, b, D))
                    acc[0] += w * s
                    d = w * dsigmoid(s)
                    acc[D + 1] += d
                    for k in range(D):
                        acc[1 + k] += d * PT[k, b]
            sh = cuda.shared.array((WD, TPB), nbt)
            for c in range(WD):
                sh[c, tid] = acc[c]
            tree(sh, WD, X, tid)
            if tid < X and r < R:
                for c in range(WD):
                    part[ch, r, c] = sh[c, tid]

        return kernel

    crit_vel_part = unit_sums_part(K)
    gen_vel_part = unit_sums_part(L)

    @cuda.jit
    def finish(part, pp, lam, P, y, y2, v1, sq, sq2, op, sign, h, hh, cl, do_clip, r1, q1,
               r2, q2, c1, c2, eps, flag, step):
        """Reduce the chunks' partials to the velocity ``v`` of row ``r`` of the particles
        ``P`` and apply operation ``op`` to the row (one thread per row, so the factor
        ``P[r, 0]`` is read before an in-place update changes it):

        * ``OP_STORE``: ``y = v``;
        * ``OP_AXPY``:  ``y = y + h v`` (clipped to ``[-cl, cl]`` if ``do_clip``);
        * ``OP_RMS``:   ``sq = r1 sq + q1 v^2``, ``y = y + h v / (sqrt(sq) + eps)``
          (``r1 = rho``, ``q1 = 1 - rho``);
        * ``OP_ADAM``:  ``sq = r1 sq + q1 v``, ``sq2 = r2 sq2 + q2 v^2``,
          ``y = y + h (sq c1) / (sqrt(sq2 c2) + eps)`` (``r1, r2`` the betas, ``q = 1 - r``,
          ``c1, c2`` the bias corrections ``1 / (1 - beta^k)`` of the ``k``-th update);
        * ``OP_HEUN1``: ``v1 = Pr(v)``, ``y2 = y + h v1`` (Heun's predictor);
        * ``OP_HEUN2``: ``y = y + hh (v1 + Pr(v))`` (corrector; ``P`` is the predictor point),

        where ``Pr`` is the tangent-cone projection at ``P`` when ``do_clip`` (critic).  With
        ``lam != 0`` (critic) the gradient penalty's partials ``pp`` (from ``pen_part``) are
        reduced too and ``lam grad_omega dP/dnu`` is subtracted from ``v``.  A non-finite new
        ``y`` records ``step`` in ``flag[0]`` unless an earlier step did.
        """
        r = cuda.grid(1)
        R = P.shape[0]
        W = P.shape[1]
        if r >= R:
            return
        amp = P[r, 0]  # alpha_j (critic) or a_ik (generator) at the evaluation point
        bad = False
        for c in range(W):
            s = zero
            for ch in range(part.shape[0]):
                s += part[ch, r, c]
            if c == 0:
                v = sign * s
            else:
                v = sign * (amp * s)
            if lam != zero:
                t = zero
                for ch in range(pp.shape[0]):
                    t += pp[ch, r, c]
                if c == 0:
                    v -= lam * t
                else:
                    v -= lam * (amp * t)
            if op == OP_STORE:
                y[r, c] = v
            elif op == OP_HEUN1:
                if do_clip:
                    v = project(P[r, c], v, cl)
                v1[r, c] = v
                yn = y[r, c] + h * v
                if do_clip:
                    yn = clip(yn, cl)
                y2[r, c] = yn
            else:
                if op == OP_AXPY:
                    yn = y[r, c] + h * v
                elif op == OP_RMS:
                    q = r1 * sq[r, c] + q1 * v * v
                    sq[r, c] = q
                    yn = y[r, c] + h * v / (math.sqrt(q) + eps)
                elif op == OP_ADAM:
                    m = r1 * sq[r, c] + q1 * v
                    q = r2 * sq2[r, c] + q2 * v * v
                    sq[r, c] = m
                    sq2[r, c] = q
                    yn = y[r, c] + h * (m * c1) / (math.sqrt(q * c2) + eps)
                else:  # OP_HEUN2
                    if do_clip:
                        v = project(P[r, c], v, cl)
                    yn = y[r, c] + hh * (v1[r, c] + v)
                if do_clip:
                    yn = clip(yn, cl)
                y[r, c] = yn
                if not math.isfinite(yn):
                    bad = True
        if bad and flag[0] < 0:  # every writer in one step writes the same index
            flag[0] = step

    return SimpleNamespace(gen_out_part=gen_out_part, reduce_nodes=reduce_nodes,
                           shift_nodes=shift_nodes, obj_weights=obj_weights, h_part=h_part,
                           penalty_points=penalty_points, penalty_dirs=penalty_dirs,
                           pen_part=pen_part, crit_vel_part=crit_vel_part,
                           gen_vel_part=gen_vel_part, finish=finish)


def kernel_signatures(dtype: str = "float64") -> dict[str, tuple]:
    """The numba argument types every kernel is launched with (all arrays C-contiguous).

    For checks that compile the kernels without a GPU (``numba.cuda.compiler.compile_cuda``)
    and inspect their typing, e.g. that float32 kernels contain no float64 arithmetic.
    """
    t = numba.from_dtype(np.dtype(dtype))
    A1, A2, A3 = t[::1], t[:, ::1], t[:, :, ::1]
    i64 = numba.int64
    return {
        "gen_out_part": (A2, A2, A3, i64, i64),
        "reduce_nodes": (A3, t, A2, A2),
        "shift_nodes": (A2, t, A2),
        "obj_weights": (A2, A1, A1, i64, A1, A1),
        "h_part": (A2, A2, A1, i64, A3, i64, i64),
        "penalty_points": (A3, t, A2, A1, A2),
        "penalty_dirs": (A3, t, A2),
        "pen_part": (A2, A2, A2, A1, A3, i64, i64),
        "crit_vel_part": (A2, A2, A2, A3, i64, i64),
        "gen_vel_part": (A2, A2, A2, A3, i64, i64),
        "finish": (A3, A3, t, A2, A2, A2, A2, A2, A2, i64, t, t, t, t, i64, t, t, t, t, t, t,
                   t, numba.int64[::1], i64),
    }
