"""The CUDA engine: ``numba.cuda`` kernels for the velocity fields and the step loops.

Imported only when ``backend="cuda"`` is asked for (it imports ``numba.cuda``); see
:func:`velocity` and :func:`make_runner`.  Without a GPU the engine raises
:class:`CUDAUnavailableError` before doing any work; under ``NUMBA_ENABLE_CUDASIM=1`` numba's
CUDA simulator stands in for the GPU (slowly: it is for tests).  The kernels are in
:mod:`meanfield_gan.engines._cuda_kernels`.

Design
------
* The per-pair maths (sigmoid, ``s'``, ``s''``, the pre-activation of a unit, clipping, the
  tangent-cone projection) comes from :func:`meanfield_gan.engines._scalar.build`, compiled
  with ``cuda.jit(device=True)`` and a clamped ``math.exp``; the CPU engine compiles the same
  ``build`` with ``njit`` and ``exp_poly``, so the engines evaluate the same expressions.
* Generator particles live on the device as ``(N*K, L+2)`` rows ``(a_k, b_k, c_k)`` (the
  memory of ``theta (N, K, L+2)``), critic particles as ``(M, K+2)``, and so does the
  optimiser state (RMSProp's running means, Adam's moments).  They stay there across steps;
  :meth:`CudaRunner.particles` copies them back only when a snapshot is taken.
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
  the ``2 N K Bz + M (Bz + Bx)`` of the CPU engine.  Since ``grad f`` has a pass of its own,
  it takes its own node weights for free: the non-saturating generator's ``phi_3'`` needs
  no extra pass here.
* Objectives (MODEL.md section 7): ``minimax`` and ``non_saturating`` first evaluate ``f``
  at every node (pass 1 applied to the critic, which is a generator with one output row),
  then a kernel turns ``f`` into the node weights ``zw s(-f_g)``, ``xw s(f_x)`` (critic) and
  ``zw phi_3'(f_g)`` (``grad f``), with a sigmoid accurate in both tails.
* Instance noise: offsets added to the generated points after pass 1 (and, for the
  deterministic schemes' tensor Gauss-Hermite nodes, to the clean data nodes, scaled by
  ``sigma_n`` of the step); SGD's noisy data batches are formed on the host with the
  driver's draws, as the CPU engines do.  The gradient penalty adds, before a critic update,
  pass 1 at the triples' latent points (interpolates), ``grad f`` there, the directions
  ``c`` and one more block-partial sum over the triples per critic particle; the finishing
  kernel subtracts ``lam grad_omega dP/dnu``.
* Each particle's velocity is computed by the same instruction sequence whatever its index,
  so coincident critic particles stay bitwise equal (MODEL.md section 4.3).
* float64 by default; ``dtype="float32"`` compiles every kernel with float32 constants and
  float32 scalar arguments, so no expression is promoted to float64 (checked on the LLVM IR
  by ``tests/test_cuda.py``).  Host arrays returned are always float64.
* The update of each scheme (plain, RMSProp, Adam, Heun's stages) is applied element-wise
  by the kernel that finishes the reduction (``OP_*`` codes), mirroring
  :class:`~meanfield_gan.engines._numba.NumbaRunner` and
  :class:`~meanfield_gan.engines.reference.NumpyRunner` operation for operation.  A
  non-finite particle coordinate writes the step's index into a device flag, read back every
  ``check_every`` steps.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda

from ..model.objectives import LOSSES, check_loss
from ._cuda_kernels import DTYPES as _DTYPES
from ._cuda_kernels import OP_ADAM, OP_AXPY, OP_HEUN1, OP_HEUN2, OP_RMS, OP_STORE, kernel_signatures
from ._cuda_kernels import kernels as _kernels
from ._cuda_kernels import maths as _maths  # noqa: F401  (the benchmark's sigmoid bound)
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
#: The objectives (``Problem.loss``) as the kernels' codes (MODEL.md section 7).
LOSS_CODES = {name: code for code, name in enumerate(LOSSES)}


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


def sigmoid_count(N: int, M: int, K: int, Bz: int, Bx: int,
                  loss: str = "wasserstein") -> tuple[int, int]:
    """Sigmoid evaluations of one velocity evaluation: ``(model, executed by this engine)``.

    ``model`` is what the CPU engine evaluates: ``2 N K Bz + M (Bz + Bx)`` for the
    Wasserstein objective, plus ``M (Bz + Bx)`` for ``f`` at the nodes under the non-linear
    objectives, plus ``M Bz`` for the non-saturating generator's own ``grad f`` pass.  This
    engine always evaluates ``grad f`` in a pass of its own (see the module notes):
    ``2 N K Bz + M (Bz + Bx) + M Bz``, plus ``M (Bz + Bx)`` under a non-linear objective.
    """
    code = LOSS_CODES[check_loss(loss)]
    model = 2 * N * K * Bz + M * (Bz + Bx)
    executed = model + M * Bz
    if code:
        model += M * (Bz + Bx) + (M * Bz if code == 2 else 0)
        executed += M * (Bz + Bx)
    return model, executed


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



class _Update(NamedTuple):
    """What the finishing kernel does with a reduced velocity (see ``finish`` in
    :mod:`._cuda_kernels`): operation, target rows and scalars in the working precision."""

    op: int
    y: object
    y2: object
    v1: object
    sq: object
    sq2: object
    h: float
    hh: float
    do_clip: int
    r1: float
    q1: float
    r2: float
    q2: float
    c1: float
    c2: float
    eps: float


class _Field:
    """Kernels, launch plans and work buffers for the velocity fields of one problem size.

    Generator particles are passed as ``(N*K, L+2)`` device arrays, critic particles as
    ``(M, K+2)``, latent nodes as ``zT (L, Bz)`` and data nodes as ``xT (K, Bx)``.  ``loss``
    is an objective code (:data:`LOSS_CODES`); ``P > 0`` triples of the gradient penalty of
    weight ``lam`` are evaluated before each critic update.
    """

    def __init__(self, N: int, M: int, K: int, L: int, Bz: int, Bx: int, dtype: str,
                 tpb: int, min_terms: int, clip: float, loss: int = 0, P: int = 0,
                 lam: float = 0.0):
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
        blocks = lambda n: -(-n // tpb)  # noqa: E731
        self._blocks = blocks
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
        self._k = k
        self._g_nodes = blocks(K * (Bz + Bx))
        self._g_h = blocks(K * Bz)
        self._g_crit = blocks(M)
        self._g_gen = blocks(N * K)
        self.PT = dev(K, Bz + Bx)   # g(z_b) then the data nodes
        self.pw = dev(Bz + Bx)      # their signed weights (zw, -xw), or the objective's
        self.pw_row = self.pw.reshape(1, Bz + Bx)  # the same memory, as one row of weights
        self.hw = self.pw           # the weights of grad f (Wasserstein: the first Bz of pw)
        self.whT = dev(K, Bz)       # w_b grad f(g(z_b))
        self.clip = f(clip)         # the box's half-width in the working precision
        self.inv_n = f(1.0 / N)
        self.inv_m = f(1.0 / M)
        self.zero = f(0)
        self._one, self._mone = f(1.0), f(-1.0)  # signs: V_omega = +sum, V_theta = -sum
        self.dummy = dev(1, 1)
        self.dummy3 = dev(1, 1, 1)
        self.flag = cuda.to_device(np.full(1, -1, dtype=np.int64))
        self.loss = int(loss)
        if self.loss:
            # f at every node by pass 1 on the critic (kernels of one output row, dimension K)
            kf = _kernels(1, K, dtype, tpb)
            X, per, nch, bx = _plan(Bz + Bx, M, tpb, min_terms)
            self._fo = (kf.gen_out_part, (bx, nch), X, per)
            self._fred = kf.reduce_nodes
            self.fpart = dev(nch, 1, Bz + Bx)
            self.fT = dev(1, Bz + Bx)
            self.hw = dev(Bz)
            self.zw, self.xw = dev(Bz), dev(Bx)
        self.P = int(P)
        self.lam = f(lam) if P else self.zero
        if self.P:
            X, per, nch, bx = _plan(P, N, tpb, min_terms)
            self._gp = (k.gen_out_part, (bx, nch), X, per)
            self.gpart_p = dev(nch, K, P)
            X, per, nch, bx = _plan(P, M, tpb, min_terms)
            self._hp = (k.h_part, (bx, nch), X, per)
            self.hpart_p = dev(nch, K, P)
            X, per, nch, bx = _plan(M, P, tpb, min_terms)
            self._pp = (k.pen_part, (bx, nch), X, per)
            self.ppart = dev(nch, M, K + 2)
            self.xhT, self.cT = dev(K, P), dev(K, P)
            self.wone = cuda.to_device(np.ones(P, dtype=f))

    def set_weights(self, zw: np.ndarray, xw: np.ndarray) -> None:
        """Node weights: ``z`` weights, then minus the ``x`` weights (``Psi``'s signs)."""
        self.pw.copy_to_device(np.concatenate([zw, -xw]).astype(self.f))
        if self.loss:
            self.zw.copy_to_device(np.asarray(zw, dtype=self.f))
            self.xw.copy_to_device(np.asarray(xw, dtype=self.f))

    def update(self, op: int, y, h: float = 0.0, *, y2=None, v1=None, sq=None, sq2=None,
               hh: float = 0.0, do_clip: bool = False, r1: float = 0.0, r2: float = 0.0,
               eps: float = 1.0) -> _Update:
        """A finishing operation; scalars are cast to the working precision (``q = 1 - r``)."""
        f, d = self.f, self.dummy
        return _Update(op, y, d if y2 is None else y2, d if v1 is None else v1,
                       d if sq is None else sq, d if sq2 is None else sq2, f(h), f(hh),
                       int(do_clip), f(r1), f(1.0 - r1), f(r2), f(1.0 - r2), f(1.0), f(1.0),
                       f(eps))

    def evaluate(self, th, om, zT, xT, crit: _Update | None = None, gen: _Update | None = None,
                 step: int = 0, noise=None, pen=None) -> None:
        """Velocities at ``(th, om)`` with nodes ``zT``, ``xT``, finished by ``crit``/``gen``.

        ``crit`` and ``gen`` are ``None`` (that field is not needed) or the :class:`_Update`
        that finishes it.  ``noise = (E, sigma)`` adds ``sigma E`` to the first
        ``E.shape[1]`` columns of the node array (generated points, then data nodes);
        ``pen = (zpT, xpT, epsp, wp)`` are the penalty's triples (used for the critic only).
        The critic's update may change ``om`` in place: everything that reads the critic
        (``f``, ``grad f``, the penalty) runs before it.
        """
        tpb, k = self.tpb, self._k
        kern, grid, X, per = self._go
        kern[grid, tpb](th, zT, self.gpart, X, per)
        k.reduce_nodes[self._g_nodes, tpb](self.gpart, self.inv_n, xT, self.PT)
        if noise is not None:
            E, sigma = noise
            k.shift_nodes[self._blocks(self.K * E.shape[1]), tpb](self.PT, sigma, E)
        if self.loss:
            kern, grid, X, per = self._fo
            kern[grid, tpb](om, self.PT, self.fpart, X, per)
            self._fred[self._blocks(self.Bz + self.Bx), tpb](self.fpart, self.inv_m, self.fT,
                                                             self.fT)
            k.obj_weights[self._blocks(self.Bz + self.Bx), tpb](
                self.fT, self.zw, self.xw, self.loss, self.pw, self.hw)
        if gen is not None:
            kern, grid, X, per = self._h
            kern[grid, tpb](om, self.PT, self.hw, self.Bz, self.hpart, X, per)
            k.reduce_nodes[self._g_h, tpb](self.hpart, self.inv_m, self.whT, self.whT)
        lam, pp = self.zero, self.dummy3
        if crit is not None and pen is not None and self.P:
            self._penalty(th, om, *pen)
            lam, pp = self.lam, self.ppart
        if crit is not None:
            kern, grid, X, per = self._cv
            kern[grid, tpb](om, self.PT, self.pw_row, self.cpart, X, per)
            self._finish(self._g_crit, self.cpart, pp, lam, om, self._one, crit, step)
        if gen is not None:
            kern, grid, X, per = self._gv
            kern[grid, tpb](th, zT, self.whT, self.gvpart, X, per)
            self._finish(self._g_gen, self.gvpart, self.dummy3, self.zero, th, self._mone, gen,
                         step)

    def _penalty(self, th, om, zpT, xpT, epsp, wp) -> None:
        """``grad_omega dP/dnu`` into :attr:`ppart` (before alpha): interpolates by pass 1 at
        ``zp``, ``grad f`` there (unit weights), the directions ``c``, then the sum over the
        triples per critic particle."""
        tpb, k, P = self.tpb, self._k, self.P
        kern, grid, X, per = self._gp
        kern[grid, tpb](th, zpT, self.gpart_p, X, per)
        k.penalty_points[self._blocks(self.K * P), tpb](self.gpart_p, self.inv_n, xpT, epsp,
                                                         self.xhT)
        kern, grid, X, per = self._hp
        kern[grid, tpb](om, self.xhT, self.wone, P, self.hpart_p, X, per)
        k.penalty_dirs[self._blocks(P), tpb](self.hpart_p, self.inv_m, self.cT)
        kern, grid, X, per = self._pp
        kern[grid, tpb](om, self.xhT, self.cT, wp, self.ppart, X, per)

    def _finish(self, grid, part, pp, lam, P, sign, u: _Update, step: int) -> None:
        self._k.finish[grid, self.tpb](part, pp, lam, P, u.y, u.y2, u.v1, u.sq, u.sq2, u.op,
                                       sign, u.h, u.hh, self.clip, u.do_clip, u.r1, u.q1, u.r2,
                                       u.q2, u.c1, u.c2, u.eps, self.flag, step)


def velocity(theta: np.ndarray, omega: np.ndarray, z: np.ndarray, zw: np.ndarray,
             x: np.ndarray, xw: np.ndarray, loss: str = "wasserstein",
             z_noise: np.ndarray | None = None, penalty=None,
             **options) -> tuple[np.ndarray, np.ndarray]:
    """``(V_theta, V_omega)`` on the GPU (inputs validated float64 arrays, as in ``core``).

    ``loss``, ``z_noise (Bz, K)`` and ``penalty = (lam, (zp, xp, eps, wp))`` as in
    :func:`meanfield_gan.velocity`; ``options`` are the engine options of
    :func:`make_runner` (``dtype``, ...).  Returns float64 host arrays shaped like ``theta``
    and ``omega``.
    """
    require_gpu()
    o = _check_options(options)
    code = LOSS_CODES[check_loss(loss)]
    N, K, L2 = theta.shape
    M = omega.shape[0]
    L = L2 - 2
    lam, P = 0.0, 0
    if penalty is not None and penalty[0] != 0:
        lam, (zp, xp, eps, wp) = penalty
        P = len(wp)
    # clip = 1 is a placeholder: OP_STORE neither clips nor projects.
    fld = _Field(N, M, K, L, len(zw), len(xw), o["dtype"], o["tpb"], o["min_terms"], 1.0,
                 loss=code, P=P, lam=lam)
    f = fld.f
    to = lambda a: cuda.to_device(np.ascontiguousarray(a, dtype=f))  # noqa: E731
    fld.set_weights(zw, xw)
    th = to(theta.reshape(N * K, L2))
    om = to(omega)
    zT, xT = to(z.T), to(x.T)
    noise = None if z_noise is None else (to(z_noise.T), f(1.0))
    pen = (to(zp.T), to(xp.T), to(eps), to(wp)) if P else None
    vt = cuda.device_array_like(th)
    vo = cuda.device_array_like(om)
    fld.evaluate(th, om, zT, xT, crit=fld.update(OP_STORE, vo), gen=fld.update(OP_STORE, vt),
                 noise=noise, pen=pen)
    return (vt.copy_to_host().reshape(theta.shape).astype(np.float64),
            vo.copy_to_host().astype(np.float64))


# --------------------------------------------------------------------------------------
# the step runner of simulate()
# --------------------------------------------------------------------------------------


class CudaRunner(Runner):
    """Advances a state on the GPU with the update rules of the CPU runners.

    Set-up (scales, quadrature, batch weights, optimiser state, penalty triples and noise
    nodes) is :class:`~meanfield_gan.engines.base.Runner`'s; the particles, the optimiser
    state and the quadrature are copied to the device once.  ``advance(n, Zs, Xs, extra)``
    copies the block of SGD batches ``Zs (n, slots, L, m)``, ``Xs (n, slots, K, m)`` (noisy
    data formed on the host when there is instance noise) and the driver's noise and penalty
    draws ``extra`` to the device once and runs ``n`` steps without synchronising, except to
    read the NaN/Inf flag every ``check_every`` steps (so after a NaN/Inf up to
    ``check_every - 1`` further steps run on the device before it stops; it reports the
    first bad step exactly).  ``options``: see :func:`make_runner`.
    """

    def __init__(self, problem, state, scheme, **options):
        require_gpu()
        o = _check_options(options)
        super().__init__(problem, state, scheme)
        if self.rule not in RULES:
            raise ValueError(f"the cuda engine has no step rule {self.rule!r}")
        N, M, K, L = state.N, state.M, problem.K, problem.L
        self.shape = (N, K, L + 2)
        self.noise = problem.instance_noise > 0
        self.pen_lam = problem.gradient_penalty
        E = None
        if self.ezT is not None:
            # the base's noise tensor (MODEL.md 7): E holds the unit offsets of every column
            E = np.concatenate([self.ezT, self.exT], axis=1)
        Bz, Bx = self.node_counts(scheme)
        P = 0
        if self.pen_lam > 0:
            P = scheme.batch_size if scheme.stochastic else len(self._penalty_nodes[3])
        fld = self.field = _Field(N, M, K, L, Bz, Bx, o["dtype"], o["tpb"], o["min_terms"],
                                  self.clip, loss=LOSS_CODES[problem.loss], P=P, lam=self.pen_lam)
        f = self.f = fld.f
        self.check_every = o["check_every"]
        fld.set_weights(self.zw, self.xw)
        self._to = to = lambda a: cuda.to_device(np.ascontiguousarray(a, dtype=f))  # noqa: E731
        self.d_th = to(self.theta.reshape(N * K, L + 2))
        self.d_om = to(self.omega)
        self.d_zT = to(self.zT)
        self.d_xT = to(self.xT)
        self.d_E = None if E is None else to(E)
        self._pen = None
        if P and not scheme.stochastic:
            zp, xp, eps, wp = self._penalty_nodes
            self._pen = (to(zp.T), to(xp.T), to(eps), to(wp))
        elif P:
            self.d_wp = to(np.full(P, 1.0 / P))
        self.d_opt = {key: to(v.reshape(N * K, L + 2) if key.startswith("theta_") else v)
                      for key, v in self.opt.items()}
        # The device holds the state from here on: drop the host copies, which would go stale.
        self.theta = self.omega = self.opt = None
        self._done = 0  # steps taken by this runner (the flag records these indices)
        self._bad = -1
        self._specs(scheme)

    def _specs(self, scheme) -> None:
        """The finishing operations of each evaluation of a step (see :class:`_Update`)."""
        fld, h = self.field, self.hyper
        dt, gdt = self.dt, self.gdt
        ot = [self.d_opt.get(f"theta_{k}") for k in scheme.opt_keys] + [None, None]
        oo = [self.d_opt.get(f"omega_{k}") for k in scheme.opt_keys] + [None, None]
        self.adam = "beta1" in h
        if self.rule == "heun":
            self.d_th2 = cuda.device_array_like(self.d_th)
            self.d_om2 = cuda.device_array_like(self.d_om)
            v1t = cuda.device_array_like(self.d_th)
            v1o = cuda.device_array_like(self.d_om)
            self._crit1 = fld.update(OP_HEUN1, self.d_om, gdt, y2=self.d_om2, v1=v1o,
                                     do_clip=True)
            self._gen1 = fld.update(OP_HEUN1, self.d_th, dt, y2=self.d_th2, v1=v1t)
            self._crit2 = fld.update(OP_HEUN2, self.d_om, v1=v1o, hh=0.5 * gdt, do_clip=True)
            self._gen2 = fld.update(OP_HEUN2, self.d_th, v1=v1t, hh=0.5 * dt)
            return
        # alternating rules: each critic update is a step of lr/M; simultaneous: gamma_c dt
        ch = self.crit_dt if self.rule in ("sgd_alt", "adam_alt") else gdt
        if "rho" in h:
            kw = dict(r1=h["rho"], eps=h["eps"])
            op = OP_RMS
        elif self.adam:
            kw = dict(r1=h["beta1"], r2=h["beta2"], eps=h["eps"])
            op = OP_ADAM
        else:
            kw, op = {}, OP_AXPY
        self._crit = fld.update(op, self.d_om, ch, sq=oo[0], sq2=oo[1], do_clip=True, **kw)
        self._gen = fld.update(op, self.d_th, dt, sq=ot[0], sq2=ot[1], **kw)

    def _at(self, u: _Update, k: int) -> _Update:
        """``u`` at Adam's ``k``-th update (its bias corrections ``1 / (1 - beta^k)``)."""
        if not self.adam:
            return u
        h, f = self.hyper, self.f
        return u._replace(c1=f(1.0 / (1.0 - h["beta1"] ** k)),
                          c2=f(1.0 / (1.0 - h["beta2"] ** k)))

    def _nodes(self, blk, t: int, zslot: int, xslot: int):
        """``(zT, xT, noise, pen)`` of an evaluation at step ``t`` of the block (see
        :meth:`_Field.evaluate`): the quadrature of a deterministic scheme (noise offsets
        scaled by the step's ``sigma_n``, fixed penalty triples), or the SGD batches of the
        slots (noise drawn and scaled on the host; the penalty on the batch's own clean
        pairs with their ``eps``)."""
        if blk.Z is None:
            noise = (self.d_E, self.f(blk.sig[t])) if self.noise else None
            return self.d_zT, self.d_xT, noise, self._pen
        zT = blk.Z[t, zslot]
        noise = (blk.En[t, zslot], self.field._one) if self.noise else None
        pen = None
        if self.pen_lam > 0:
            pen = (zT, blk.Xc[t, xslot], blk.Eps[t, xslot], self.d_wp)
        return zT, blk.X[t, xslot], noise, pen

    def _simultaneous(self, t, blk, step):  # projected Euler, SGD, RMSProp, Adam
        zT, xT, noise, pen = self._nodes(blk, t, 0, 0)
        k = self.step + t + 1
        gen = None if self.frozen else self._at(self._gen, k)
        self.field.evaluate(self.d_th, self.d_om, zT, xT, self._at(self._crit, k), gen, step,
                            noise, pen)

    def _heun(self, t, blk, step):
        fld = self.field
        zT, xT, noise, pen = self._nodes(blk, t, 0, 0)
        fld.evaluate(self.d_th, self.d_om, zT, xT, self._crit1, self._gen1, step, noise, pen)
        fld.evaluate(self.d_th2, self.d_om2, zT, xT, self._crit2, self._gen2, step, noise, pen)

    def _alternating(self, t, blk, step):
        # n_critic critic updates with fresh batches, then one generator update
        n_critic = self.scheme.n_critic
        run_step = self.step + t
        for c in range(n_critic):
            zT, xT, noise, pen = self._nodes(blk, t, c, c)
            self.field.evaluate(self.d_th, self.d_om, zT, xT,
                                crit=self._at(self._crit, run_step * n_critic + c + 1),
                                step=step, noise=noise, pen=pen)
        if not self.frozen:
            zT, xT, noise, _ = self._nodes(blk, t, n_critic, 0)
            self.field.evaluate(self.d_th, self.d_om, zT, xT,
                                gen=self._at(self._gen, run_step + 1), step=step, noise=noise)

    def _block(self, n: int, Zs, Xs, extra: dict) -> SimpleNamespace:
        """The device arrays of a block of ``n`` steps (batches, noise, penalty draws)."""
        blk = SimpleNamespace(Z=None, X=None, Xc=None, En=None, Eps=None, sig=None)
        p = self.problem
        if self.noise:
            blk.sig = np.array([p.noise_at((self.step + s) * self.dt) for s in range(n)])
        if not self.scheme.stochastic:
            return blk
        need = (["gen_noise", "data_noise"] if self.noise else []) + (
            ["eps"] if self.pen_lam > 0 else [])
        missing = [key for key in need if key not in extra]
        if missing:
            raise ValueError(f"advance: instance noise and the gradient penalty need the "
                             f"driver's draws; missing {', '.join(missing)}")
        to = self._to
        blk.Z = to(Zs[:n])
        if self.noise:
            sig = blk.sig[:, None, None, None]
            blk.X = to(Xs[:n] + sig * extra["data_noise"][:n])
            blk.En = to(sig * extra["gen_noise"][:n])
        else:
            blk.X = to(Xs[:n])
        if self.pen_lam > 0:
            # the penalty's pairs are the clean batches (MODEL.md section 7)
            blk.Xc = to(Xs[:n]) if self.noise else blk.X
            blk.Eps = to(extra["eps"][:n])
        return blk

    def advance(self, n: int, Zs: np.ndarray | None, Xs: np.ndarray | None,
                extra: dict | None = None) -> int:
        """Take ``n`` steps; return ``n``, or the steps completed before a NaN/Inf appeared."""
        if self._bad >= 0:
            return 0
        blk = self._block(n, Zs, Xs, extra or {})
        rule = RULES[self.rule]
        s = 0
        while s < n:
            stop = min(n, s + self.check_every)
            for t in range(s, stop):
                rule(self, t, blk, self._done + t)
            s = stop
            bad = int(self.field.flag.copy_to_host()[0])
            if bad >= 0:
                self._bad = bad
                done = bad - self._done
                self.step += done
                return done
        self._done += n
        self.step += n
        return n

    def particles(self) -> tuple[np.ndarray, np.ndarray]:
        """The particles as float64 host arrays (copied from the device)."""
        return (self.d_th.copy_to_host().reshape(self.shape).astype(np.float64),
                self.d_om.copy_to_host().astype(np.float64))

    def opt_state(self) -> dict[str, np.ndarray]:
        """The optimiser state as float64 host arrays (``theta_sq``, or ``theta_m``,
        ``theta_v``, ``omega_m``, ``omega_v`` for Adam; copied from the device)."""
        return {key: (v.copy_to_host().reshape(self.shape) if key.startswith("theta_")
                      else v.copy_to_host()).astype(np.float64)
                for key, v in self.d_opt.items()}


#: One method per step rule (``Scheme.rule``); the update itself is the finishing
#: :class:`_Update` of each evaluation.
RULES = {"euler": CudaRunner._simultaneous, "sgd": CudaRunner._simultaneous,
         "rmsprop": CudaRunner._simultaneous, "adam": CudaRunner._simultaneous,
         "heun": CudaRunner._heun, "sgd_alt": CudaRunner._alternating,
         "adam_alt": CudaRunner._alternating}


def make_runner(problem, state, scheme, **options) -> CudaRunner:
    """The step runner of ``simulate(..., backend="cuda", **options)``.

    Options: ``dtype`` (``"float64"``, default, or ``"float32"``), ``threads_per_block``
    (a power of two, default 256), ``min_terms`` (fewest terms a thread sums before a sum is
    split into more chunks, default 16), ``check_every`` (steps between reads of the NaN/Inf
    flag, default 32).
    """
    return CudaRunner(problem, state, scheme, **options)
