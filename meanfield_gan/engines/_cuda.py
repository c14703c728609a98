"""The CUDA engine: ``numba.cuda`` kernels for the velocity fields and the step loops.

Imported only when ``backend="cuda"`` is asked for (it imports ``numba.cuda``); see
:func:`velocity` and :func:`make_runner`.  Without a GPU the engine raises
:class:`CUDAUnavailableError` before doing any work; under ``NUMBA_ENABLE_CUDASIM=1`` numba's
CUDA simulator stands in for the GPU (slowly: it is for tests).

Design
------
* The per-pair maths (sigmoid, ``s'``, the pre-activation of a unit, clipping, the
  tangent-cone projection) comes from :func:`meanfield_gan.engines._scalar.build`, compiled here with
  ``cuda.jit(device=True)`` and a clamped ``math.exp``; the CPU engine compiles the same
  ``build`` with ``njit`` and ``exp_poly``, so the engines evaluate the same expressions.
* Generator particles live on the device as ``(N*K, L+2)`` rows ``(a_k, b_k, c_k)`` (the
  memory of ``theta (N, K, L+2)``), critic particles as ``(M, K+2)``.  They stay there across
  steps; :meth:`CudaRunner.particles` copies them back only when a snapshot is taken.
* A velocity evaluation is the CPU engine's three passes, each a sum over one axis of the
  (particle, node) plane: (1) ``g(z_b)``: over generator particles, per node; (2) the
  critic velocity (over nodes, per critic particle) and ``grad f(g(z_b))`` (over critic
  particles, per node); (3) the generator velocity (over nodes, per generator row).
  Every sum uses the same two-level scheme, never atomics: a block of ``T`` threads is an
  ``X x Y`` grid, ``x`` along the outputs and ``y`` along the summed axis; each thread sums a
  strided share of its block's chunk of the summed axis in registers, a shared-memory tree
  reduction over ``y`` gives the block's partial sum, and a second small kernel adds the
  chunks' partials in a fixed order (fused with the update of the step).  ``X`` is the
  number of outputs rounded up to a power of two (capped at ``T``), so a batch of one node
  still keeps a whole block busy (``Y = T``).  The number of chunks, hence the summation
  order, depends on the sizes and the block size only, not on the GPU model.
* Pass (2) evaluates the sigmoids of the critic at the generated points twice (once per
  summed axis) instead of storing an ``M x B`` array: ``M * Bz`` extra evaluations, beside
  the ``2 N K Bz + M (Bz + Bx)`` of the CPU engine.
* Each particle's velocity is computed by the same instruction sequence whatever its index,
  so coincident critic particles stay bitwise equal (MODEL.md section 4.3).
* float64 by default; ``dtype="float32"`` compiles every kernel with float32 constants and
  float32 scalar arguments, so no expression is promoted to float64 (checked on the LLVM IR
  by ``tests/test_cuda.py``).  Host arrays returned are always float64.
* The update of each scheme is applied element-wise by the kernel that finishes the
  reduction (``OP_*`` codes), mirroring ``_NumbaRunner``/``_NumpyRunner`` of
  :mod:`meanfield_gan.engines._numba` operation for operation.  A non-finite particle coordinate
  writes the step's index into a device flag, read back every ``check_every`` steps.
"""
from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from . import _scalar
from .base import Runner

__all__ = ["CUDAUnavailableError", "is_available", "unavailable_reason", "require_gpu",
           "velocity", "make_runner", "CudaRunner", "kernel_signatures", "sigmoid_count"]

#: Threads a kernel launch aims at (fixes the number of chunks of each sum from the sizes
#: alone: about two waves of an H100, a few on smaller GPUs).
TARGET_THREADS = 1 << 18
#: Most chunks a sum is split into (the grid's ``y`` extent).
MAX_CHUNKS = 1024
#: Static shared memory a block's reduction buffers may use.
SHARED_BYTES = 48 * 1024
#: Finish-kernel operations (the element-wise update applied once a velocity is reduced).
OP_STORE, OP_AXPY, OP_RMS, OP_HEUN1, OP_HEUN2 = 0, 1, 2, 3, 4

_DTYPES = {"float64": np.float64, "float32": np.float32}


class CUDAUnavailableError(ValueError):
    """``backend="cuda"`` was asked for on a machine without a usable CUDA GPU."""


def unavailable_reason() -> str | None:
    """Why the engine cannot run here, or ``None`` if it can.

    It needs a CUDA device (``numba.cuda.is_available()``; the simulator under
    ``NUMBA_ENABLE_CUDASIM=1`` counts as one) and, on a real device, libNVVM and libdevice
    (from the CUDA toolkit), which numba compiles kernels with.
    """
    try:
        if not cuda.is_available():
            return "no CUDA device was found (numba.cuda.is_available() is False)"
    except Exception as exc:  # a broken driver counts as no GPU
        return f"numba.cuda failed to initialise ({type(exc).__name__}: {exc})"
    if numba.config.ENABLE_CUDASIM:
        return None
    try:
        from numba.cuda.cudadrv import nvvm
    except ImportError:  # another numba.cuda layout: let the first compile say it
        return None
    if not nvvm.is_available():
        return ("a CUDA device was found but not libNVVM, which numba compiles kernels with "
                "(install the CUDA toolkit and set CUDA_HOME, or pip install numba-cuda[cu12])")
    return None


def is_available() -> bool:
    """Whether the engine can run: a usable CUDA GPU, or the simulator."""
    return unavailable_reason() is None


def require_gpu() -> None:
    """Raise :class:`CUDAUnavailableError` unless :func:`is_available`."""
    why = unavailable_reason()
    if why is not None:
        raise CUDAUnavailableError(f"backend 'cuda' needs a CUDA GPU: {why}; "
                                   "use backend='numba'")


#: Engine options and their defaults (see :func:`make_runner`).
OPTIONS = {"dtype": "float64", "threads_per_block": 256, "min_terms": 16, "check_every": 32}


def _check_options(options: dict) -> dict:
    """Validate the engine options (``simulate(..., dtype=..., threads_per_block=...)``)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) for backend 'cuda': {', '.join(unknown)}; "
                         f"expected some of {', '.join(OPTIONS)}")
    o = {**OPTIONS, **options}
    dtype, threads_per_block = o["dtype"], o["threads_per_block"]
    min_terms, check_every = o["min_terms"], o["check_every"]
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float64' or 'float32'; got {dtype!r}")
    def whole(v) -> bool:
        try:
            return not isinstance(v, bool) and int(v) == v
        except (TypeError, ValueError):
            return False

    tpb = threads_per_block
    if not (whole(tpb) and 1 <= tpb <= 1024 and not int(tpb) & (int(tpb) - 1)):
        raise ValueError(f"threads_per_block must be a power of two in [1, 1024]; got {tpb!r}")
    for key, v in (("min_terms", min_terms), ("check_every", check_every)):
        if not (whole(v) and v >= 1):
            raise ValueError(f"{key} must be a positive integer; got {v!r}")
    return dict(dtype=name, tpb=int(tpb), min_terms=int(min_terms), check_every=int(check_every))


def sigmoid_count(N: int, M: int, K: int, Bz: int, Bx: int) -> tuple[int, int]:
    """Sigmoid evaluations of one velocity evaluation: ``(model, executed by this engine)``.

    ``model = 2 N K Bz + M (Bz + Bx)`` (what the CPU engine evaluates); this engine evaluates
    ``M Bz`` more (see the module notes).
    """
    model = 2 * N * K * Bz + M * (Bz + Bx)
    return model, model + M * Bz


# --------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _maths(dtype: str) -> SimpleNamespace:
    """The shared scalar maths, as CUDA device functions in the working precision."""
    f = _DTYPES[dtype]
    # Clamp the exponent as the CPU's exp_poly does (there at +-708): the sigmoid is then 0
    # or 1 to working precision in the tails, and the simulator's math.exp cannot overflow.
    hi = f(_scalar.EXP_CLAMP) if f is np.float64 else f(88.0)

    @cuda.jit(device=True)
    def exp(x):
        if x > hi:
            x = hi
        elif x < -hi:
            x = -hi
        return math.exp(x)

    return _scalar.build(cuda.jit(device=True), exp, f(1))


@lru_cache(maxsize=None)
def _kernels(K: int, L: int, dtype: str, TPB: int) -> SimpleNamespace:
    """Compile (lazily, per argument types) the kernels of one ``(K, L, dtype, block size)``.

    ``K``, ``L`` and ``TPB`` are compile-time constants: register accumulators and the
    shared-memory tree buffers have fixed sizes.
    """
    S = _maths(dtype)
    sigmoid, dsigmoid, unit_preact = S.sigmoid, S.dsigmoid, S.unit_preact
    clip, project = S.clip, S.project
    nbt = numba.from_dtype(np.dtype(dtype))
    zero = _DTYPES[dtype](0)

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
    def finish(part, P, y, y2, v1, sq, op, sign, h, hh, cl, do_clip, rho, omr, eps, flag,
               step):
        """Reduce the chunks' partials to the velocity ``v`` of row ``r`` of the particles
        ``P`` and apply operation ``op`` to the row (one thread per row, so the factor
        ``P[r, 0]`` is read before an in-place update changes it):

        * ``OP_STORE``: ``y = v``;
        * ``OP_AXPY``:  ``y = y + h v`` (clipped to ``[-cl, cl]`` if ``do_clip``);
        * ``OP_RMS``:   ``sq = rho sq + (1 - rho) v^2``, ``y = y + h v / (sqrt(sq) + eps)``;
        * ``OP_HEUN1``: ``v1 = Pr(v)``, ``y2 = y + h v1`` (Heun's predictor);
        * ``OP_HEUN2``: ``y = y + hh (v1 + Pr(v))`` (corrector; ``P`` is the predictor point),

        where ``Pr`` is the tangent-cone projection at ``P`` when ``do_clip`` (critic).  A
        non-finite new ``y`` records ``step`` in ``flag[0]`` unless an earlier step did.
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
                    q = rho * sq[r, c] + omr * v * v
                    sq[r, c] = q
                    yn = y[r, c] + h * v / (math.sqrt(q) + eps)
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
                           h_part=h_part, crit_vel_part=crit_vel_part,
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
        "h_part": (A2, A2, A1, i64, A3, i64, i64),
        "crit_vel_part": (A2, A2, A2, A3, i64, i64),
        "gen_vel_part": (A2, A2, A2, A3, i64, i64),
        "finish": (A3, A2, A2, A2, A2, A2, i64, t, t, t, t, i64, t, t, t, numba.int64[::1],
                   i64),
    }


# --------------------------------------------------------------------------------------
# launch plans and one velocity evaluation
# --------------------------------------------------------------------------------------


def _pow2ceil(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _plan(n_out: int, n_sum: int, tpb: int, min_terms: int) -> tuple[int, int, int, int]:
    """Launch shape of a sum over ``n_sum`` terms for each of ``n_out`` outputs.

    Returns ``(X, per, n_chunks, blocks_x)``: ``X`` threads along the outputs per block,
    ``per`` terms per chunk, ``n_chunks`` chunks (grid ``y``) and ``blocks_x`` (grid ``x``).
    Chunks are added until about :data:`TARGET_THREADS` threads run, while each thread
    still sums at least ``min_terms`` terms: a function of the sizes only.
    """
    X = min(tpb, _pow2ceil(n_out))
    Y = tpb // X
    bx = -(-n_out // X)
    most = max(1, -(-n_sum // (Y * min_terms)))
    want = max(1, -(-TARGET_THREADS // (bx * tpb)))
    nch = max(1, min(most, want, MAX_CHUNKS))
    per = -(-n_sum // nch)
    nch = -(-n_sum // per)
    return X, per, nch, bx


class _Field:
    """Kernels, launch plans and work buffers for the velocity fields of one problem size.

    Generator particles are passed as ``(N*K, L+2)`` device arrays, critic particles as
    ``(M, K+2)``, latent nodes as ``zT (L, Bz)`` and data nodes as ``xT (K, Bx)``.
    """

    def __init__(self, N: int, M: int, K: int, L: int, Bz: int, Bx: int, dtype: str,
                 tpb: int, min_terms: int, clip: float):
        self.N, self.M, self.K, self.L, self.Bz, self.Bx = N, M, K, L, Bz, Bx
        self.dtype = dtype
        self.f = _DTYPES[dtype]
        # The tree buffers (widest: max(K, L) + 2 values per thread) must fit in the 48 KB of
        # static shared memory a block may use: halve the block until they do.
        width = max(K, L) + 2
        while tpb > 32 and width * tpb * np.dtype(self.f).itemsize > SHARED_BYTES:
            tpb //= 2
        self.tpb = tpb
        k = _kernels(K, L, dtype, tpb)
        f = self.f
        dev = lambda *shape: cuda.device_array(shape, dtype=f)  # noqa: E731
        # (kernel, grid, X, per) for each sum, and its partials.  Kernels are configured at
        # each launch: the simulator's kernel[grid, block] reconfigures a shared object.
        X, per, nch, bx = _plan(Bz, N, tpb, min_terms)
        self._go = (k.gen_out_part, (bx, nch), X, per)
        self.gpart = dev(nch, K, Bz)
        X, per, nch, bx = _plan(Bz, M, tpb, min_terms)
        self._h = (k.h_part, (bx, nch), X, per)
        self.hpart = dev(nch, K, Bz)
        X, per, nch, bx = _plan(M, Bz + Bx, tpb, min_terms)
        self._cv = (k.crit_vel_part, (bx, nch), X, per)
        self.cpart = dev(nch, M, K + 2)
        X, per, nch, bx = _plan(N * K, Bz, tpb, min_terms)
        self._gv = (k.gen_vel_part, (bx, nch), X, per)
        self.gvpart = dev(nch, N * K, L + 2)
        blocks = lambda n: -(-n // tpb)  # noqa: E731
        self._red = k.reduce_nodes
        self._g_nodes = blocks(K * (Bz + Bx))
        self._g_h = blocks(K * Bz)
        self._fin = k.finish
        self._g_crit = blocks(M)
        self._g_gen = blocks(N * K)
        self.PT = dev(K, Bz + Bx)   # g(z_b) then the data nodes
        self.pw = dev(Bz + Bx)      # their signed weights (zw, -xw)
        self.pw_row = self.pw.reshape(1, Bz + Bx)  # the same memory, as one row of weights
        self.whT = dev(K, Bz)       # w_b grad f(g(z_b))
        self.clip = f(clip)         # the box's half-width in the working precision
        self.inv_n = f(1.0 / N)
        self.inv_m = f(1.0 / M)
        self._one, self._mone = f(1.0), f(-1.0)  # signs: V_omega = +sum, V_theta = -sum
        self.dummy = dev(1, 1)
        self.flag = cuda.to_device(np.full(1, -1, dtype=np.int64))

    def set_weights(self, zw: np.ndarray, xw: np.ndarray) -> None:
        """Node weights: ``z`` weights, then minus the ``x`` weights (``Psi``'s signs)."""
        self.pw.copy_to_device(np.concatenate([zw, -xw]).astype(self.f))

    def evaluate(self, th, om, zT, xT, crit=None, gen=None, step: int = 0) -> None:
        """Velocities at ``(th, om)`` with nodes ``zT``, ``xT``, finished by ``crit``/``gen``.

        ``crit`` and ``gen`` are ``None`` (that field is not needed) or tuples
        ``(op, y, y2, v1, sq, h, hh, do_clip, rho, omr, eps)`` for :func:`finish`.  The
        critic's update may change ``om`` in place: ``grad f`` is reduced before it.
        """
        tpb = self.tpb
        kern, grid, X, per = self._go
        kern[grid, tpb](th, zT, self.gpart, X, per)
        self._red[self._g_nodes, tpb](self.gpart, self.inv_n, xT, self.PT)
        if gen is not None:
            kern, grid, X, per = self._h
            kern[grid, tpb](om, self.PT, self.pw, self.Bz, self.hpart, X, per)
            self._red[self._g_h, tpb](self.hpart, self.inv_m, self.whT, self.whT)
        if crit is not None:
            kern, grid, X, per = self._cv
            kern[grid, tpb](om, self.PT, self.pw_row, self.cpart, X, per)
            self._finish(self._g_crit, self.cpart, om, self._one, crit, step)
        if gen is not None:
            kern, grid, X, per = self._gv
            kern[grid, tpb](th, zT, self.whT, self.gvpart, X, per)
            self._finish(self._g_gen, self.gvpart, th, self._mone, gen, step)

    def _finish(self, grid, part, P, sign, spec, step):
        op, y, y2, v1, sq, h, hh, do_clip, rho, omr, eps = spec
        self._fin[grid, self.tpb](part, P, y, y2, v1, sq, op, sign, h, hh, self.clip, do_clip,
                                  rho, omr, eps, self.flag, step)


def velocity(theta: np.ndarray, omega: np.ndarray, z: np.ndarray, zw: np.ndarray,
             x: np.ndarray, xw: np.ndarray, **options) -> tuple[np.ndarray, np.ndarray]:
    """``(V_theta, V_omega)`` on the GPU (inputs validated float64 arrays, as in ``core``).

    ``options`` are the engine options of :func:`make_runner` (``dtype``, ...).  Returns
    float64 host arrays shaped like ``theta`` and ``omega``.
    """
    require_gpu()
    o = _check_options(options)
    N, K, L2 = theta.shape
    M = omega.shape[0]
    L = L2 - 2
    # clip = 1 is a placeholder: OP_STORE neither clips nor projects.
    fld = _Field(N, M, K, L, len(zw), len(xw), o["dtype"], o["tpb"], o["min_terms"], 1.0)
    f = fld.f
    fld.set_weights(zw, xw)
    th = cuda.to_device(theta.reshape(N * K, L2).astype(f))
    om = cuda.to_device(omega.astype(f))
    zT = cuda.to_device(np.ascontiguousarray(z.T, dtype=f))
    xT = cuda.to_device(np.ascontiguousarray(x.T, dtype=f))
    vt = cuda.device_array_like(th)
    vo = cuda.device_array_like(om)
    z0 = f(0)
    store = lambda out: (OP_STORE, out, fld.dummy, fld.dummy, fld.dummy,  # noqa: E731
                         z0, z0, 0, z0, z0, z0)
    fld.evaluate(th, om, zT, xT, crit=store(vo), gen=store(vt))
    return (vt.copy_to_host().reshape(theta.shape).astype(np.float64),
            vo.copy_to_host().astype(np.float64))


# --------------------------------------------------------------------------------------
# the step runner of simulate()
# --------------------------------------------------------------------------------------


class CudaRunner(Runner):
    """Advances a state on the GPU with the update rules of ``_NumbaRunner``.

    Set-up (scales, quadrature, batch weights, RMSProp state) is :class:`~meanfield_gan.engines.base.Runner`'s; the
    particles, the optimiser state and the quadrature are copied to the device once.
    ``advance(n, Zs, Xs)`` copies the block of SGD batches ``Zs (n, slots, L, m)``,
    ``Xs (n, slots, K, m)`` to the device once and runs ``n`` steps without synchronising,
    except to read the NaN/Inf flag every ``check_every`` steps (so after a NaN/Inf up to
    ``check_every - 1`` further steps run on the device before it stops; it reports the
    first bad step exactly).  ``options``: see :func:`make_runner`.
    """

    def __init__(self, problem, state, scheme, **options):
        require_gpu()
        o = _check_options(options)
        super().__init__(problem, state, scheme)
        if self.rule not in RULES:
            raise ValueError(f"the cuda engine has no step rule {self.rule!r}")
        if (problem.loss != "wasserstein" or problem.instance_noise > 0
                or problem.gradient_penalty > 0):
            raise ValueError("the cuda engine has the wasserstein objective without noise or "
                             "penalty only so far")
        self.rho = self.hyper.get("rho", 0.0)
        self.eps = self.hyper.get("eps", 1.0)
        self.sq_t, self.sq_o = self.opt.get("theta_sq"), self.opt.get("omega_sq")
        N, M, K, L = state.N, state.M, problem.K, problem.L
        self.shape = (N, K, L + 2)
        B = scheme.batch_size if scheme.stochastic else None
        Bz = B if B else self.zT.shape[1]
        Bx = B if B else self.xT.shape[1]
        fld = self.field = _Field(N, M, K, L, Bz, Bx, o["dtype"], o["tpb"], o["min_terms"],
                                  self.clip)
        f = self.f = fld.f
        self.check_every = o["check_every"]
        fld.set_weights(self.zw, self.xw)
        to = lambda a: cuda.to_device(np.ascontiguousarray(a, dtype=f))  # noqa: E731
        self.d_th = to(self.theta.reshape(N * K, L + 2))
        self.d_om = to(self.omega)
        self.d_zT = to(self.zT)
        self.d_xT = to(self.xT)
        d = fld.dummy
        if self.rule == "rmsprop":
            self.d_sqt = to(self.sq_t.reshape(N * K, L + 2))
            self.d_sqo = to(self.sq_o)
        else:
            self.d_sqt = self.d_sqo = d
        # The device holds the state from here on: drop the host copies, which would go stale.
        self.theta = self.omega = self.sq_t = self.sq_o = self.opt = None
        if self.rule == "heun":
            self.d_th2 = cuda.device_array_like(self.d_th)
            self.d_om2 = cuda.device_array_like(self.d_om)
            self.d_v1t = cuda.device_array_like(self.d_th)
            self.d_v1o = cuda.device_array_like(self.d_om)
        self._done = 0  # steps taken by this runner (the flag records absolute indices)
        self._bad = -1
        z0 = f(0)
        rho, omr, eps = f(self.rho), f(1.0 - self.rho), f(self.eps)
        dt, gdt, cdt = f(self.dt), f(self.gdt), f(self.crit_dt)
        # finish() specs: (op, y, y2, v1, sq, h, hh, do_clip, rho, omr, eps)
        if self.rule == "rmsprop":
            self._crit = (OP_RMS, self.d_om, d, d, self.d_sqo, gdt, z0, 1, rho, omr, eps)
            self._gen = (OP_RMS, self.d_th, d, d, self.d_sqt, dt, z0, 0, rho, omr, eps)
        elif self.rule == "heun":
            self._crit1 = (OP_HEUN1, self.d_om, self.d_om2, self.d_v1o, d, gdt, z0, 1, z0, z0, z0)
            self._gen1 = (OP_HEUN1, self.d_th, self.d_th2, self.d_v1t, d, dt, z0, 0, z0, z0, z0)
            self._crit2 = (OP_HEUN2, self.d_om, d, self.d_v1o, d, z0, f(0.5 * self.gdt), 1, z0,
                           z0, z0)
            self._gen2 = (OP_HEUN2, self.d_th, d, self.d_v1t, d, z0, f(0.5 * self.dt), 0, z0,
                          z0, z0)
        elif self.rule == "sgd_alt":
            self._crit = (OP_AXPY, self.d_om, d, d, d, cdt, z0, 1, z0, z0, z0)
            self._gen = (OP_AXPY, self.d_th, d, d, d, dt, z0, 0, z0, z0, z0)
        else:  # EULER, SGD: theta += dt v_theta;  omega = clip(omega + gamma_c dt v_omega)
            self._crit = (OP_AXPY, self.d_om, d, d, d, gdt, z0, 1, z0, z0, z0)
            self._gen = (OP_AXPY, self.d_th, d, d, d, dt, z0, 0, z0, z0, z0)

    def _step(self, s: int, dZ, dX, step: int) -> None:
        RULES[self.rule](self, s, dZ, dX, step)

    def _euler(self, s, dZ, dX, step):
        self.field.evaluate(self.d_th, self.d_om, self.d_zT, self.d_xT, self._crit, self._gen,
                            step)

    def _sgd(self, s, dZ, dX, step):  # simultaneous SGD and RMSProp
        self.field.evaluate(self.d_th, self.d_om, dZ[s, 0], dX[s, 0], self._crit, self._gen, step)

    def _heun(self, s, dZ, dX, step):
        fld = self.field
        fld.evaluate(self.d_th, self.d_om, self.d_zT, self.d_xT, self._crit1, self._gen1, step)
        fld.evaluate(self.d_th2, self.d_om2, self.d_zT, self.d_xT, self._crit2, self._gen2, step)

    def _sgd_alternating(self, s, dZ, dX, step):
        # n_critic critic steps with fresh batches, then one generator step
        n_critic = dX.shape[1]
        for c in range(n_critic):
            self.field.evaluate(self.d_th, self.d_om, dZ[s, c], dX[s, c], crit=self._crit,
                                step=step)
        self.field.evaluate(self.d_th, self.d_om, dZ[s, n_critic], dX[s, 0], gen=self._gen,
                            step=step)

    def advance(self, n: int, Zs: np.ndarray | None, Xs: np.ndarray | None,
                extra: dict | None = None) -> int:
        """Take ``n`` steps; return ``n``, or the steps completed before a NaN/Inf appeared."""
        if self._bad >= 0:
            return 0
        dZ = dX = None
        if self.scheme.stochastic:
            dZ = cuda.to_device(np.ascontiguousarray(Zs[:n], dtype=self.f))
            dX = cuda.to_device(np.ascontiguousarray(Xs[:n], dtype=self.f))
        s = 0
        while s < n:
            stop = min(n, s + self.check_every)
            for t in range(s, stop):
                self._step(t, dZ, dX, self._done + t)
            s = stop
            bad = int(self.field.flag.copy_to_host()[0])
            if bad >= 0:
                self._bad = bad
                return bad - self._done
        self._done += n
        return n

    def particles(self) -> tuple[np.ndarray, np.ndarray]:
        """The particles as float64 host arrays (copied from the device)."""
        return (self.d_th.copy_to_host().reshape(self.shape).astype(np.float64),
                self.d_om.copy_to_host().astype(np.float64))

    def opt_state(self) -> dict[str, np.ndarray]:
        if self.rule == "rmsprop":
            return {"theta_sq": self.d_sqt.copy_to_host().reshape(self.shape).astype(np.float64),
                    "omega_sq": self.d_sqo.copy_to_host().astype(np.float64)}
        return {}


#: One method per step rule (``Scheme.rule``); the update itself is the ``finish`` spec.
RULES = {"euler": CudaRunner._euler, "sgd": CudaRunner._sgd, "rmsprop": CudaRunner._sgd,
         "heun": CudaRunner._heun, "sgd_alt": CudaRunner._sgd_alternating}


def make_runner(problem, state, scheme, **options) -> CudaRunner:
    """The step runner of ``simulate(..., backend="cuda", **options)``.

    Options: ``dtype`` (``"float64"``, default, or ``"float32"``), ``threads_per_block``
    (a power of two, default 256), ``min_terms`` (fewest terms a thread sums before a sum is
    split into more chunks, default 16), ``check_every`` (steps between reads of the NaN/Inf
    flag, default 32).
    """
    return CudaRunner(problem, state, scheme, **options)
