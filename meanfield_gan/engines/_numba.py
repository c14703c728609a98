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
exponential of :mod:`meanfield_gan.engines._scalar`, which vectorises (no SVML here).

Sums over particles (``g`` and ``grad f``) go through per-chunk partials reduced in a fixed
order; the chunks depend on the (padded) particle count only, so results
do not depend on the number of threads, nor on whether a pass runs threaded.  Each particle's
own velocity is computed lane by lane with no cross-lane step, by the same instructions in
every lane, so coincident critic particles stay bitwise equal (MODEL.md section 4.3).

Threads: passes run as a ``prange`` over chunks when a velocity evaluation has at least
:data:`PARALLEL_MIN_WORK` sigmoids and :data:`PARALLEL_MIN_PARTICLES` particles on each
side, serially otherwise (a parallel region costs a few microseconds, more than small passes
take).  ``fastmath={'reassoc', 'nsz', 'contract'}`` lets
LLVM vectorise the reductions and fuse multiply-adds; the exponential
(:func:`meanfield_gan.engines._scalar.exp_inline`) is emitted as IR with ``contract`` only, so
it keeps its accuracy (3e-16) and is always inlined.  Work buffers are allocated once per
problem size (:class:`Workspace`), never per step.

Compilation: the njit functions here and in :mod:`._numba_kernels` are templates that read
compile-time constants (the step rule, threading, the dimension classes of K and L, the
penalty, the objective); a run compiles only the variants its values select
(:func:`compiled`, :mod:`._specialise`): about 12 s on two cores for a serial SGD run of
K = L = 1, cached on disk afterwards.  The public velocity (:func:`velocity_into`) is
:func:`run_steps` with the rule VELOCITY.  Flags and modes that vary inside a run (need the
generator's velocity, store or step) are runtime values, never literals, so each pass
compiles once per variant.
"""
from __future__ import annotations

import math
import os
import sys

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
from numba import njit  # noqa: E402

from ._numba_kernels import (  # noqa: E402
    _ADAM,
    _OPTS,
    _RMS,
    _STEP,
    _STORE,
    PAD,
    PARALLEL_MIN_PARTICLES,
    PARALLEL_MIN_WORK,
    _borrowed,
    _chunk_len,
    _clip,
    _pass1_ser,
    _pass2_ser,
    _pass3_ser,
    _pass_pen_ser,
    _project,
    n_chunks,
    sigmoid,  # (also re-exported: the benchmarks time it)
)
from ._specialise import Specialiser, call_announcing, dim_class  # noqa: E402
from .base import Runner  # noqa: E402

#: Scheme codes of :func:`run_steps` (VELOCITY: store the velocity fields, no step).
EULER, HEUN, SGD, SGD_ALT, RMSPROP, VELOCITY, ADAM, ADAM_ALT = range(8)
#: The step rule of each scheme (``Scheme.rule``) as a code of :func:`run_steps`.
RULES = {"euler": EULER, "heun": HEUN, "sgd": SGD, "sgd_alt": SGD_ALT, "rmsprop": RMSPROP,
         "adam": ADAM, "adam_alt": ADAM_ALT}
#: The objectives (``Problem.loss``) as codes of :func:`run_steps`.
LOSS_CODES = {"wasserstein": 0, "minimax": 1, "non_saturating": 2}
# What each rule's passes do with the velocities (Heun stores them and steps in run_steps).
_MODES = (_STEP, _STORE, _STEP, _STEP, _RMS, _STORE, _ADAM, _ADAM)

# Compile-time constants (see :mod:`._specialise`; with the kernels' KD and LD): the step rule,
# threaded passes, whether the gradient penalty's code is compiled, and the objective.  Each
# compiled function is a variant with a run's values (:func:`compiled`); these module values
# only make the templates valid code.
RULE = VELOCITY
PAR = False
PEN = True
LOSS = 0
# The passes a template calls: in a variant, the threaded or the serial ones as PAR says
# (:data:`_PASSES`, :mod:`._specialise`).
_pass1, _pass2, _pass3, _pass_pen = _pass1_ser, _pass2_ser, _pass3_ser, _pass_pen_ser
_PASSES = {f"_pass{p}": ("PAR", {True: f"_pass{p}_par", False: f"_pass{p}_ser"})
           for p in ("1", "2", "3", "_pen")}


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


@njit(inline="always")
def _sig(u):
    # s(u) for the objective weights: exact library exp in the stable branch (|u| up to 700
    # and beyond: s(-700) = 9.9e-305, not 0 or NaN); a handful of scalars per evaluation.
    if u >= 0.0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)


@njit(**_OPTS)
def _critic_at(om, pT, mreal, fpart, ubuf_f, fout):
    """``f(p_b)`` at the nodes ``pT (K, B)`` into ``fout (1, B)``: pass 1 on the critic (a
    critic is a generator with one output row, ``theta = omega[:, None, :]``; its pass 1 is
    the variant with ``LD = KD``, see :func:`compiled`)."""
    K2, Mp = om.shape
    om3 = om.reshape((1, K2, Mp))
    _pass1(fpart.shape[0], om3, pT, fpart, ubuf_f)
    _reduce(fpart, 1.0 / mreal, fout)


@njit(**_OPTS)
def _penalty(nreal, mreal, th, om, zpT, xpT, epsp, wpen, pen2, pen3, wone, ubuf_g, ubuf_c,
             acc_c, flags, hyp):
    """``pv = grad_omega dP/dnu`` (MODEL.md section 7) into ``pen2[3]``: the interpolates by
    pass 1 at ``zp``, ``grad f`` there by pass 2's generated side (unit weights, nothing
    stored or stepped), ``c = 2 (|grad f| - 1) grad f / |grad f|`` (0 where ``grad f = 0``),
    then the penalty pass."""
    gpT, xhT, cT, pv = pen2
    gpart_p, hpart_p = pen3
    cg = gpart_p.shape[0]
    cc = hpart_p.shape[0]
    _pass1(cg, th, zpT, gpart_p, ubuf_g)
    _reduce(gpart_p, 1.0 / nreal, gpT)
    K, P = xhT.shape
    for k in range(K):
        for p in range(P):
            xhT[k, p] = epsp[p] * xpT[k, p] + (1.0 - epsp[p]) * gpT[k, p]
    no = nreal < 0
    yes = nreal >= 0
    store = nreal * 0 + _STORE
    _pass2(cc, mreal, om, xhT, wone, xhT, wone, pv, hpart_p, ubuf_c, acc_c, yes, no,
           store, 0.0, 1.0, pv, hyp, flags, pv, 0.0)
    _reduce(hpart_p, 1.0 / mreal, cT)
    for p in range(P):
        nrm = 0.0
        for k in range(K):
            nrm += cT[k, p] * cT[k, p]
        nrm = math.sqrt(nrm)
        scale = 2.0 * (nrm - 1.0) / nrm if nrm > 0.0 else 0.0
        for k in range(K):
            cT[k, p] *= scale
    _pass_pen(cc, om, xhT, cT, wpen, pv, ubuf_c)


@njit(**_OPTS)
def _field(nreal, mreal, th, om, zT, zw, xT, xw, vt, vo, need_vt, need_vo, mode, dt, gdt, clip,
           sq_t, sq_o, hyp, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c, flags,
           fpart_g, fpart_x, ubuf_f, fg, fx, w1, w2, w3, zn, has_zn, lam, zpT, xpT, epsp,
           wpen, pen2, pen3, wone):
    """One velocity evaluation: store (``mode=_STORE``) or step with the fused updates.

    ``th (K, L+2, Np)`` and ``om (K+2, Mp)`` are the padded particle-layout arrays holding
    ``nreal`` and ``mreal`` particles.  ``LOSS`` is the objective's code (:data:`LOSS_CODES`):
    the non-linear objectives first evaluate ``f`` at the nodes (one more pass over the
    critic), then run the Wasserstein sums with the node weights ``w_b phi'(f_b)`` of
    MODEL.md section 7.  ``has_zn``: the generated points are offset by ``zn (K, Bz)``
    (instance noise).  ``lam != 0`` (critic updates only): the gradient penalty with
    interpolates ``eps xp + (1 - eps) g(zp)`` from ``zpT (L, P)``, ``xpT (K, P)``,
    ``epsp (P,)`` and weights ``wpen`` (work arrays ``wone`` of ones, ``pen2 = (gpT, xhT, cT, pv)``,
    ``pen3 = (gpart_p, hpart_p)``).  Returns False if a stepped coordinate became NaN/Inf.
    """
    cg = gpart.shape[0]
    cc = hpart.shape[0]
    _pass1(cg, th, zT, gpart, ubuf_g)
    _reduce(gpart, 1.0 / nreal, gT)
    if has_zn:
        for k in range(gT.shape[0]):
            for b in range(gT.shape[1]):
                gT[k, b] += zn[k, b]
    pv = pen2[3]
    lam_v = 0.0
    if PEN:  # (a compile-time constant: runs without a penalty never compile its passes)
        if lam != 0.0 and need_vo:
            # (hyp is passed through unused so that pass 2 keeps one signature: a second one
            # would compile the whole critic pass again)
            _penalty(nreal, mreal, th, om, zpT, xpT, epsp, wpen, pen2, pen3, wone, ubuf_g,
                     ubuf_c, acc_c, flags, hyp)
            lam_v = lam
    zc, xc, hsep = zw, xw, False
    if LOSS != 0:
        _critic_at(om, gT, mreal, fpart_g, ubuf_f, fg)
        for b in range(zw.shape[0]):
            w1[b] = zw[b] * _sig(-fg[0, b])  # phi_1' = s(-f)
            # phi_3' = s(-f) (minimax: the same weights) or s(f) (non-saturating)
            w3[b] = zw[b] * (_sig(-fg[0, b]) if LOSS == 1 else _sig(fg[0, b]))
        if need_vo:
            _critic_at(om, xT, mreal, fpart_x, ubuf_f, fx)
            for b in range(xw.shape[0]):
                w2[b] = xw[b] * _sig(fx[0, b])  # -phi_2' = s(f), the data side's minus sign
        zc, xc, hsep = w1, w2, LOSS == 2
        if hsep and need_vt:
            # grad f at the generated points with the generator's own weights, before the
            # critic moves (pass 2 with need_vo false stores no velocity and steps nothing)
            no = mode < 0
            _pass2(cc, mreal, om, gT, w3, xT, xc, vo, hpart, ubuf_c, acc_c, need_vt, no,
                   mode, gdt, clip, sq_o, hyp, flags, pv, 0.0)
    need_h = need_vt and not hsep
    _pass2(cc, mreal, om, gT, zc, xT, xc, vo, hpart, ubuf_c, acc_c, need_h, need_vo,
           mode, gdt, clip, sq_o, hyp, flags, pv, lam_v)
    ok = _flags_ok(flags, cc)
    if need_vt:
        # hpart carries the weights w_b already, so whT = w_b grad f(g(z_b)).
        _reduce(hpart, 1.0 / mreal, whT)
        _pass3(cg, nreal, th, zT, whT, vt, ubuf_g, acc_g, mode, dt, sq_t, hyp, flags)
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
    ``args()`` is passed after the fixed arguments of :func:`run_steps`; ``par`` (threaded
    passes) chooses the compiled variant.
    """

    def __init__(self, N: int, M: int, K: int, L: int, Bz: int, Bx: int,
                 parallel: bool | None = None, kind: int | None = None, P: int = 0):
        Np, Mp = padded(N), padded(M)
        cg, cc = n_chunks(Np), n_chunks(Mp)
        if parallel is None:
            work = 2 * N * K * Bz + M * (Bz + Bx)  # sigmoids per velocity evaluation
            # Decided by the size alone, never by the thread count: the serial and parallel
            # kernels may differ in the last bit, and a study must give the same numbers in a
            # 1-thread worker as in a 2-thread parent.
            parallel = work >= PARALLEL_MIN_WORK and min(N, M) >= PARALLEL_MIN_PARTICLES
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
        heun = kind == HEUN
        nopt = 1 if kind == RMSPROP else (2 if kind in (ADAM, ADAM_ALT) else 0)
        self.vt2, self.vo2 = np.zeros(st if heun else (0, 0, 0)), np.zeros(so if heun else (0, 0))
        self.th2, self.om2 = np.zeros(st if heun else (0, 0, 0)), np.zeros(so if heun else (0, 0))
        # optimiser state: P arrays side by side along the particle axis
        self.sq_t = np.zeros((K, L + 2, nopt * Np))
        self.sq_o = np.zeros((K + 2, nopt * Mp))
        # the non-linear objectives' f at the nodes and node weights (small: a few B)
        self.fpart_g = np.empty((cc, 1, Bz))
        self.fpart_x = np.empty((cc, 1, Bx))
        self.ubuf_f = np.empty((cc, nc))
        self.fg, self.fx = np.empty((1, Bz)), np.empty((1, Bx))
        self.w1, self.w2, self.w3 = np.empty(Bz), np.empty(Bx), np.empty(Bz)
        # the gradient penalty's work arrays (P triples; P = 0: never used, kept tiny)
        Pp = max(P, 1)
        self.pen2 = (np.empty((K, Pp)), np.empty((K, Pp)), np.empty((K, Pp)),
                     np.zeros((K + 2, Mp if P else 0)))
        self.pen3 = (np.empty((cg, K, Pp)), np.zeros((cc, K, Pp)))
        self.wone = np.ones(Pp)

    def args(self) -> tuple:
        return (self.th, self.om, self.vt, self.vo, self.vt2, self.vo2, self.th2, self.om2,
                self.sq_t, self.sq_o, self.gT, self.whT, self.gpart, self.hpart, self.ubuf_g,
                self.ubuf_c, self.acc_g, self.acc_c, self.flags, self.fpart_g, self.fpart_x,
                self.ubuf_f, self.fg, self.fx, self.w1, self.w2, self.w3, self.pen2, self.pen3,
                self.wone)


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


def velocity_into(theta, omega, zT, zw, xT, xw, vt, vo, ws: Workspace, critic_only=False,
                  loss: str = "wasserstein", extras: tuple | None = None):
    """Both velocity fields of ``(theta, omega)`` into ``vt``, ``vo``; inputs unchanged.

    Runs :func:`run_steps` with the rule VELOCITY on the workspace ``ws`` (with
    ``critic_only``, ``vt`` is not computed: the generator's pass is skipped).
    """
    K = omega.shape[1] - 2
    L = theta.shape[2] - 2
    extras = extras or _no_extras(K, L)
    run = compiled("run_steps", rule=VELOCITY, par=ws.par, K=K, L=L, pen=extras[3] != 0,
                   loss=loss)
    call_announcing(run, "the velocity fields", theta, omega, 1, 0, zT, zw, xT, xw,
                    np.zeros((1, 1, L, 1)), np.zeros((1, 1, K, 1)), 0.0, 0.0, 0.0, 1.0,
                    _NO_HYPER, *extras, _NO_OPT_T, _NO_OPT_O, vt[:0] if critic_only else vt, vo,
                    *ws.args())


def energy(theta, omega, zT, zw, xT, xw) -> float:
    """``Psi = sum_b zw_b f(g(z_b)) - sum_b xw_b f(x_b)`` through the compiled velocity.

    The alpha-component of the critic velocity is ``V_alpha(omega_j) = sum_b zw_b
    s(u_j(g(z_b))) - sum_b xw_b s(u_j(x_b))``, so ``Psi = (1/M) sum_j alpha_j V_alpha(omega_j)``:
    passes 1 and 2 of a velocity evaluation (threaded, fused), then a correctly rounded sum
    (``math.fsum``) that no thread count or BLAS can change.
    """
    N, K, L2 = theta.shape
    M = omega.shape[0]
    ws = Workspace(N, M, K, L2 - 2, zT.shape[1], xT.shape[1])
    vt = np.empty_like(theta)
    vo = np.empty_like(omega)
    velocity_into(theta, omega, zT, zw, xT, xw, vt, vo, ws, critic_only=True)
    return math.fsum(omega[:, 0] * vo[:, 0]) / M


_NO_HYPER = np.array([0.0, 1.0, 0.0, 1.0, 1.0])


def _no_extras(K: int, L: int) -> tuple:
    """``En, has_zn, xsteps, lam, Zp, Xp, Ep, wpen`` of :func:`run_steps` for no noise and no
    penalty."""
    return (np.zeros((1, 1, K, 1)), False, False, 0.0, np.zeros((1, 1, L, 1)),
            np.zeros((1, 1, K, 1)), np.zeros((1, 1, 1)), np.ones(1))
_NO_OPT_T = np.zeros((0, 1, 1, 1))
_NO_OPT_O = np.zeros((0, 1, 1))


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


@njit(inline="always")
def _adam_k(hyp, k):
    # Adam's bias corrections 1/(1 - beta^k) for the k-th update (k >= 1)
    hyp[3] = 1.0 / (1.0 - hyp[0] ** k)
    hyp[4] = 1.0 / (1.0 - hyp[2] ** k)


@njit(**_OPTS)
def run_steps(theta, omega, n_steps, step0, zT, zw, xT, xw, Zs, Xs, dt, gdt, crit_dt, clip, hyp,
              En, has_zn, xsteps, lam, Zp, Xp, Ep, wpen, sq_t, sq_o, vt_out, vo_out, th, om,
              vt, vo, vt2, vo2, th2, om2, sqtS, sqoS, gT, whT, gpart, hpart, ubuf_g, ubuf_c,
              acc_g, acc_c, flags, fpart_g, fpart_x, ubuf_f, fg, fx, w1, w2, w3, pen2, pen3,
              wone):
    """Advance ``(theta, omega)`` in place by ``n_steps`` steps of the rule ``RULE``.

    A template: the compiled function is its variant for the run's constants
    (:func:`compiled`).  Deterministic schemes (EULER, HEUN) use the fixed quadrature ``zT,
    zw, xT, xw``; stochastic ones read step ``s``'s batches from ``Zs[s, slot]`` (shape
    ``(L, m)``) and ``Xs[s, slot]`` (``(K, m)``) with uniform weights ``zw``/``xw`` of length
    ``m``.  ``dt`` is the generator step, ``gdt = gamma_c dt`` the simultaneous critic step,
    ``crit_dt`` the step of each alternating critic update; ``hyp`` the optimiser's numbers
    (see :func:`_apply_row`); ``sq_t``, ``sq_o`` its state (RMSProp's running means, or Adam's
    two moments stacked along the particle axis), updated in place; ``step0`` the run's step
    before the first of these (Adam's bias corrections).  ``En, has_zn, xsteps`` are the
    instance noise: offsets ``En[s, slot]`` of the generated points, and with ``xsteps`` the
    deterministic schemes read their (noisy) data nodes from ``Xs[s, 0]``; ``lam, Zp, Xp, Ep,
    wpen`` the gradient penalty's weight and triples ``[s, slot]``.  Noise offsets and triples
    are per step, or fixed when their first axis has length 1.  ``dt < 0``: the generator is
    frozen (the critic trains alone: no generator velocity or step).  With RULE VELOCITY the
    velocity fields go to ``vt_out``, ``vo_out`` (the critic's only when ``vt_out`` has no
    particle) and nothing moves.

    The arguments from ``th`` on are :meth:`Workspace.args`: the state is copied to the padded
    particle layout, stepped there and copied back (also after a NaN/Inf stop).  The padding
    of every array stays zero: velocities are stored for real particles only, so Heun's stages
    and combination leave padded coordinates at 0.  Returns the number of steps taken (fewer
    if NaN/Inf appeared).
    """
    N = theta.shape[0]
    M = omega.shape[0]
    # (all work arrays borrowed: no reference counting below; see _borrowed)
    th, om, vt, vo, vt2, vo2, th2, om2, sqtS, sqoS = _borrowed(
        (th, om, vt, vo, vt2, vo2, th2, om2, sqtS, sqoS))
    gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c, flags, fpart_g, fpart_x = _borrowed(
        (gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c, flags, fpart_g, fpart_x))
    ubuf_f, fg, fx, w1, w2, w3, wone, pen2, pen3 = _borrowed(
        (ubuf_f, fg, fx, w1, w2, w3, wone, pen2, pen3))
    zT, zw, xT, xw, Zs, Xs, hyp, En, Zp, Xp, Ep, wpen = _borrowed(
        (zT, zw, xT, xw, Zs, Xs, hyp, En, Zp, Xp, Ep, wpen))
    _to_particle_layout(theta, omega, th, om)
    if RULE == VELOCITY:
        yes = n_steps >= -1  # not a literal (see below)
        need_vt = vt_out.shape[0] > 0
        store = n_steps * 0 + _STORE
        _field(N, M, th, om, zT, zw, xT, xw, vt, vo, need_vt, yes, store, 0.0, 0.0, 1.0, sqtS,
               sqoS, hyp, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c, flags, fpart_g,
               fpart_x, ubuf_f, fg, fx, w1, w2, w3, En[0, 0], has_zn, lam, Zp[0, 0], Xp[0, 0],
               Ep[0, 0], wpen, pen2, pen3, wone)
        _from_particle_layout(vt, vo, vt_out, vo_out)
        return 1
    if RULE == RMSPROP or RULE == ADAM or RULE == ADAM_ALT:  # the optimiser's moments
        _opt_to_layout(sq_t, sq_o, sqtS, sqoS)
    frozen = dt < 0.0  # (see NumbaRunner.advance: a frozen generator is passed as dt = -1)
    # Flags and modes as runtime values: a constant argument (True, _STEP) has a literal type,
    # and Numba would compile every pass once per combination of constants.
    yes = n_steps >= -1
    no = n_steps < -1
    gen = not frozen
    store = n_steps * 0 + _STORE
    mode = n_steps * 0 + _MODES[RULE]
    ne = En.shape[0] - 1
    npn = Zp.shape[0] - 1
    done = n_steps
    for s in range(n_steps):
        si = min(s, ne)
        pi = min(s, npn)
        if RULE == HEUN:
            x = Xs[s, 0] if xsteps else xT
            _field(N, M, th, om, zT, zw, x, xw, vt, vo, yes, yes, store, dt, gdt, clip,
                   sqtS, sqoS, hyp, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c,
                   flags, fpart_g, fpart_x, ubuf_f, fg, fx, w1, w2, w3, En[si, 0],
                   has_zn, lam, Zp[pi, 0], Xp[pi, 0], Ep[pi, 0], wpen, pen2, pen3, wone)
            _heun_stage(th, vt, th2, dt, clip, no, no)
            _heun_stage(om, vo, om2, gdt, clip, yes, yes)
            _field(N, M, th2, om2, zT, zw, x, xw, vt2, vo2, yes, yes, store, dt, gdt, clip,
                   sqtS, sqoS, hyp, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g, acc_c,
                   flags, fpart_g, fpart_x, ubuf_f, fg, fx, w1, w2, w3, En[si, 0],
                   has_zn, lam, Zp[pi, 0], Xp[pi, 0], Ep[pi, 0], wpen, pen2, pen3, wone)
            _heun_combine(th, 0.5 * dt, vt, th2, vt2, clip, no)
            _heun_combine(om, 0.5 * gdt, vo, om2, vo2, clip, yes)
            ok = _all_finite(th) and _all_finite(om)
        elif RULE == SGD_ALT or RULE == ADAM_ALT:
            # n_critic critic steps with fresh batches, then the generator
            n_critic = Xs.shape[1]
            ok = True
            for c in range(n_critic):
                if RULE == ADAM_ALT:
                    _adam_k(hyp, (step0 + s) * n_critic + c + 1)
                ok = _field(N, M, th, om, Zs[s, c], zw, Xs[s, c], xw, vt, vo, no, yes, mode,
                            dt, crit_dt, clip, sqtS, sqoS, hyp, gT, whT, gpart, hpart,
                            ubuf_g, ubuf_c, acc_g, acc_c, flags, fpart_g, fpart_x,
                            ubuf_f, fg, fx, w1, w2, w3, En[si, min(c, En.shape[1] - 1)],
                            has_zn, lam, Zp[pi, min(c, Zp.shape[1] - 1)],
                            Xp[pi, min(c, Xp.shape[1] - 1)], Ep[pi, min(c, Ep.shape[1] - 1)],
                            wpen, pen2, pen3, wone) and ok
            if RULE == ADAM_ALT:
                _adam_k(hyp, step0 + s + 1)
            if gen:
                ok = _field(N, M, th, om, Zs[s, n_critic], zw, Xs[s, 0], xw, vt, vo, yes, no,
                            mode, dt, crit_dt, clip, sqtS, sqoS, hyp, gT, whT, gpart, hpart,
                            ubuf_g, ubuf_c, acc_g, acc_c, flags, fpart_g, fpart_x, ubuf_f,
                            fg, fx, w1, w2, w3, En[si, min(n_critic, En.shape[1] - 1)], has_zn,
                            lam, Zp[pi, 0], Xp[pi, 0], Ep[pi, 0], wpen, pen2, pen3,
                            wone) and ok
        else:  # EULER, SGD, RMSPROP, ADAM: one simultaneous update per step
            if RULE == EULER:
                z = zT
                x = Xs[s, 0] if xsteps else xT
            else:
                z = Zs[s, 0]
                x = Xs[s, 0]
            if RULE == ADAM:
                _adam_k(hyp, step0 + s + 1)
            ok = _field(N, M, th, om, z, zw, x, xw, vt, vo, gen, yes, mode, dt, gdt, clip,
                        sqtS, sqoS, hyp, gT, whT, gpart, hpart, ubuf_g, ubuf_c, acc_g,
                        acc_c, flags, fpart_g, fpart_x, ubuf_f, fg, fx, w1, w2, w3,
                        En[si, 0], has_zn, lam, Zp[pi, 0], Xp[pi, 0], Ep[pi, 0], wpen, pen2,
                        pen3, wone)
        if not ok:
            done = s  # steps completed before the one that produced NaN/Inf
            break


    _from_particle_layout(th, om, theta, omega)
    if RULE == RMSPROP or RULE == ADAM or RULE == ADAM_ALT:
        _opt_from_layout(sqtS, sqoS, sq_t, sq_o)
    return done


@njit(**_OPTS)
def _opt_to_layout(sq_t, sq_o, sqtS, sqoS):
    """Optimiser state ``(P, N, K, L+2)``/``(P, M, K+2)`` (``P`` arrays: RMSProp 1, Adam 2) to
    the particle layout, array ``p`` at particle offset ``p Np`` (``p Mp``)."""
    Np = sqtS.shape[2] // sq_t.shape[0]
    Mp = sqoS.shape[1] // sq_o.shape[0]
    for p in range(sq_t.shape[0]):
        _to_particle_layout(sq_t[p], sq_o[p], sqtS[:, :, p * Np:(p + 1) * Np],
                            sqoS[:, p * Mp:(p + 1) * Mp])


@njit(**_OPTS)
def _opt_from_layout(sqtS, sqoS, sq_t, sq_o):
    Np = sqtS.shape[2] // sq_t.shape[0]
    Mp = sqoS.shape[1] // sq_o.shape[0]
    for p in range(sq_t.shape[0]):
        _from_particle_layout(sqtS[:, :, p * Np:(p + 1) * Np], sqoS[:, p * Mp:(p + 1) * Mp],
                              sq_t[p], sq_o[p])


_SPECIALISER: Specialiser | None = None


def compiled(name: str, *, rule: int = VELOCITY, par: bool = False, K: int = 1, L: int = 1,
             pen: bool = False, loss: str = "wasserstein"):
    """The compiled variant of the template ``name`` (:func:`run_steps`, a pass, ...) for a
    step rule (a code of :data:`RULES`, or VELOCITY), threaded passes or not, the dimensions
    ``K``, ``L``, the gradient penalty present or not and the objective.

    Only that variant's code is compiled, on its first call (or loaded from Numba's cache).
    """
    global _SPECIALISER
    if _SPECIALISER is None:
        mods = [sys.modules[n_chunks.__module__], sys.modules[__name__]]
        scalar = sys.modules[sigmoid.py_func.__module__]
        # (the critic evaluated as a one-output generator runs pass 1 with LD = KD; the
        # sigmoid and the box maths inlined everywhere come from _scalar)
        _SPECIALISER = Specialiser(mods, remap={"_critic_at": {"LD": "KD"}}, choices=_PASSES,
                                   sources=[m.__file__ for m in mods + [scalar]])
    return _SPECIALISER.get(name, RULE=rule, PAR=bool(par), KD=dim_class(K), LD=dim_class(L),
                            PEN=bool(pen), LOSS=LOSS_CODES[loss])


class NumbaRunner(Runner):
    """Advances a state with the compiled step loop (:func:`run_steps`), in chunks of steps.

    Instance noise and the gradient penalty are prepared here, per block of steps, as the
    arrays :func:`run_steps` reads: the deterministic schemes' tensor noise nodes (scaled by
    ``sigma_n`` at each step when it is annealed) and fixed penalty triples; the SGD draws of
    the driver's own streams, scaled and paired with their batches.
    """

    def __init__(self, problem, state, scheme):
        super().__init__(problem, state, scheme)
        try:
            self.code = RULES[self.rule]
        except KeyError:
            raise ValueError(f"the numba engine has no step rule {self.rule!r}") from None
        K, L = problem.K, problem.L
        self.noise = problem.instance_noise > 0
        self.lam = problem.gradient_penalty
        self._extras = list(_no_extras(K, L))
        # (the clean data nodes of the noise tensor: xT is rewritten at each block's sigma)
        self._x0 = self.xT.copy()
        P = 0
        if self.lam > 0:
            if scheme.stochastic:
                P = scheme.batch_size
                self._extras[7] = np.full(P, 1.0 / P)
            else:
                zp, xp, eps, wp = self._penalty_nodes
                P = len(wp)
                self._extras[3:8] = [self.lam, np.ascontiguousarray(zp.T)[None, None],
                                     np.ascontiguousarray(xp.T)[None, None], eps[None, None],
                                     wp]
        Bz, Bx = self.node_counts(scheme)
        self.ws = Workspace(state.N, state.M, K, L, Bz, Bx, kind=self.code, P=P)
        self._run = compiled("run_steps", rule=self.code, par=self.ws.par, K=K, L=L,
                             pen=self.lam > 0, loss=problem.loss)
        self._what = f"{self.rule} with the {problem.loss} objective"
        self._dummy_Z = np.zeros((1, 1, L, 1))
        self._dummy_X = np.zeros((1, 1, K, 1))
        h = self.hyper
        if "beta1" in h:
            self.hyp = np.array([h["beta1"], h["eps"], h["beta2"], 1.0, 1.0])
        else:
            self.hyp = np.array([h.get("rho", 0.0), h.get("eps", 1.0), 0.0, 1.0, 1.0])
        # the optimiser's arrays stacked as run_steps takes them (copied back after each call)
        names = scheme.opt_keys
        self._opt_t = np.stack([self.opt[f"theta_{k}"] for k in names]) if names else _NO_OPT_T
        self._opt_o = np.stack([self.opt[f"omega_{k}"] for k in names]) if names else _NO_OPT_O

    def _sigmas(self, n: int) -> np.ndarray:
        """``sigma_n`` at each of the next ``n`` steps."""
        p = self.problem
        return np.array([p.noise_at((self.step + s) * self.dt) for s in range(n)])

    def _block_extras(self, n, Zs, Xs, extra):
        """``(Xs, En, has_zn, xsteps, lam, Zp, Xp, Ep, wpen)`` for the next ``n`` steps."""
        En, has_zn, xsteps, lam, Zp, Xp, Ep, wpen = self._extras
        if self.noise:
            sig = self._sigmas(n)
            has_zn = True
            if Zs is None:
                if self.problem.noise_anneal is None:
                    En = (sig[0] * self.ezT)[None, None]
                    self.xT = np.ascontiguousarray(self._x0 + sig[0] * self.exT)
                else:
                    xsteps = True
                    En = sig[:, None, None, None] * self.ezT[None, None]
                    Xs = self._x0[None, None] + sig[:, None, None, None] * self.exT[None, None]
            else:
                En = sig[:, None, None, None] * extra["gen_noise"]
                Xn = Xs + sig[:, None, None, None] * extra["data_noise"]
        if self.lam > 0 and Zs is not None:
            # the batch's own pairs (X^r, Z^r) with their fresh eps (clean data)
            lam, Zp, Xp, Ep = self.lam, Zs, Xs, extra["eps"]
        if self.noise and Zs is not None:
            Xs = Xn
        return Xs, En, has_zn, xsteps, lam, Zp, Xp, Ep, wpen

    def advance(self, n: int, Zs: np.ndarray | None, Xs: np.ndarray | None,
                extra: dict | None = None) -> int:
        Xs, *ex = self._block_extras(n, Zs, Xs, extra or {})
        done = int(call_announcing(
            self._run, self._what, self.theta, self.omega, n, self.step, self.zT, self.zw,
            self.xT, self.xw,
            self._dummy_Z if Zs is None else Zs, self._dummy_X if Xs is None else Xs,
            -1.0 if self.frozen else self.dt, self.gdt, self.crit_dt, self.clip, self.hyp,
            *ex,
            self._opt_t, self._opt_o, self.theta, self.omega, *self.ws.args()))
        for p, k in enumerate(self.scheme.opt_keys):
            self.opt[f"theta_{k}"][...] = self._opt_t[p]
            self.opt[f"omega_{k}"][...] = self._opt_o[p]
        self.step += done
        return done


def generator_output(theta, z) -> np.ndarray:
    """``g_mu(z_b)``, shape ``(B, K)``, by pass 1 of a velocity evaluation (validated inputs)."""
    N, K, L2 = theta.shape
    Np = padded(N)
    th = np.zeros((K, L2, Np))
    th[:, :, :N] = theta.transpose(1, 2, 0)
    zT = np.ascontiguousarray(z.T)
    B = zT.shape[1]
    cg = n_chunks(Np)
    gpart = np.empty((cg, K, B))
    ubuf = np.empty((cg, _chunk_len(Np)))
    par = N * K * B >= PARALLEL_MIN_WORK and N >= PARALLEL_MIN_PARTICLES
    pass1 = compiled("_pass1_par" if par else "_pass1_ser", L=L2 - 2)
    call_announcing(pass1, "the generator output", cg, th, zT, gpart, ubuf)
    gT = np.empty((K, B))
    compiled("_reduce")(gpart, 1.0 / N, gT)
    return np.ascontiguousarray(gT.T)


def velocity(theta, omega, z, zw, x, xw, loss: str = "wasserstein", z_noise=None,
             penalty=None) -> tuple[np.ndarray, np.ndarray]:
    """Both velocity fields (validated inputs, nodes as rows ``(B, L)``, ``(B, K)``)."""
    N, K, L2 = theta.shape
    extras = list(_no_extras(K, L2 - 2))
    if z_noise is not None:
        extras[0:2] = [np.ascontiguousarray(z_noise.T)[None, None], True]
    P = 0
    if penalty is not None and penalty[0] != 0:
        lam, (zp, xp, eps, wp) = penalty
        P = len(wp)
        extras[3:8] = [lam, np.ascontiguousarray(zp.T)[None, None],
                       np.ascontiguousarray(xp.T)[None, None], eps[None, None], wp]
    ws = Workspace(N, omega.shape[0], K, L2 - 2, len(zw), len(xw), P=P)
    vt = np.empty_like(theta)
    vo = np.empty_like(omega)
    velocity_into(theta, omega, np.ascontiguousarray(z.T), zw, np.ascontiguousarray(x.T), xw,
                  vt, vo, ws, loss=loss, extras=tuple(extras))
    return vt, vo
