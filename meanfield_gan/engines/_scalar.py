"""Per-element maths of the model, written once and compiled for every engine.

:func:`build` compiles the scalar functions with a given decorator (``numba.njit`` for the
CPU engine, ``numba.cuda.jit(device=True)`` for the GPU engine) and exponential, so the CPU
and GPU kernels evaluate the same expressions and cannot drift apart.

The CPU engine uses :func:`exp_poly`, an inline polynomial exponential: the llvmlite on our
machines has no SVML, so ``math.exp`` in a loop is a scalar libm call that blocks
vectorisation, while this one is plain arithmetic plus an exponent bit-cast and vectorises.
Its relative error is below 2e-16 on the range the sigmoid uses.
"""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # high bits of ln 2 (Cody-Waite range reduction)
LN2_LO = 1.90821492927058770002e-10
# exp(r) on |r| <= ln2/2 by a degree-11 polynomial interpolating exp at the Chebyshev nodes
# (near-minimax): truncation error 4e-18 relative, two terms fewer than the Taylor series
# for the same accuracy. P0 = P1 = 1 exactly.
P2, P3, P4, P5 = 0.5000000000000019, 0.1666666666666668, 0.04166666666648809, 0.008333333333319601
P6, P7, P8 = 0.0013888888952314812, 0.00019841269890047143, 2.480148548228773e-05
P9, P10, P11 = 2.7557240918547625e-06, 2.763263965412376e-07, 2.511003761756205e-08
# Past this |u| the sigmoid is 0 or 1 to double precision; clamping keeps 2^n representable.
EXP_CLAMP = 708.0
# 1.5 * 2^52: y + _SHIFT rounds y to the nearest integer n and leaves 2^51 + n in the low
# mantissa bits, so n needs no float -> int conversion: adding the bias 1023 to those bits
# and shifting left by 52 pushes everything else out of the word, leaving the exponent
# field of 2^n (integer add and shift vectorise).
_SHIFT = 6755399441055744.0


@intrinsic
def exp_inline(typingctx, x):
    """:func:`exp_poly` emitted directly as LLVM IR at each call site (float64).

    Why IR: a jitted ``exp_poly`` is a function call that LLVM's inliner may leave alone in a
    large kernel (the loop then neither inlines nor vectorises), and inlining it at the Numba
    level would compile it with the caller's fast-math flags, whose reassociation undoes the
    Cody-Waite split and the rounding trick.  Here every instruction carries only
    ``contract`` (multiply-adds fuse into FMAs), whatever the caller's flags.
    """
    if not isinstance(x, types.Float):
        return None
    sig = types.float64(types.float64)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        i64 = ir.IntType(64)
        fl = ("contract",)

        def c(v):
            return ir.Constant(f64, v)

        def fma(a, b, d):  # a * b + d, fused where the target has FMA
            return builder.fadd(builder.fmul(a, b, flags=fl), d, flags=fl)

        v = context.cast(builder, args[0], signature.args[0], types.float64)
        # Clamp to [-708, 708]; ordered compares are false for NaN, so NaN passes through.
        v = builder.select(builder.fcmp_ordered("<", v, c(-EXP_CLAMP)), c(-EXP_CLAMP), v)
        v = builder.select(builder.fcmp_ordered(">", v, c(EXP_CLAMP)), c(EXP_CLAMP), v)
        t = fma(v, c(LOG2E), c(_SHIFT))
        n = builder.fsub(t, c(_SHIFT), flags=fl)
        r = fma(builder.fneg(n), c(LN2_HI), v)
        r = fma(builder.fneg(n), c(LN2_LO), r)
        p = c(P11)
        for coef in (P10, P9, P8, P7, P6, P5, P4, P3, P2, 1.0, 1.0):
            p = fma(p, r, c(coef))
        bits = builder.add(builder.bitcast(t, i64), ir.Constant(i64, 1023))
        scale = builder.bitcast(builder.shl(bits, ir.Constant(i64, 52)), f64)
        return builder.fmul(p, scale, flags=fl)

    return sig, codegen


@njit(cache=True, error_model="numpy")
def exp_poly(x):
    """``exp(x)`` for float64 ``x``, clamped to ``[-708, 708]``; vectorisable.

    ``x`` is reduced to ``r = x - n ln2`` (``n`` nearest to ``x / ln2``, by the ``_SHIFT``
    rounding trick, Cody-Waite split of ``ln 2``); ``exp(r)`` is the degree-11 polynomial
    above, scaled by ``2^n`` written into the exponent bits.  Relative error below 3e-16
    (about one ulp).  The arithmetic is :func:`exp_inline`.
    """
    return exp_inline(x)


def build(jit: Callable, exp: Callable, one: float = 1.0) -> SimpleNamespace:
    """Compile the scalar maths with decorator ``jit`` and exponential ``exp``.

    Parameters
    ----------
    jit : callable
        Decorator, e.g. ``numba.njit(inline="always")`` or ``numba.cuda.jit(device=True)``.
    exp : callable
        Exponential used by the sigmoid (``exp_poly`` on the CPU, ``math.exp`` on the GPU).
    one : float
        The constant 1 in the working precision: ``numpy.float32(1)`` keeps float32 GPU
        kernels free of float64 literals (a Python ``1.0`` would promote every expression it
        touches to float64). The default, a Python float, gives the float64 maths.

    Returns
    -------
    SimpleNamespace
        ``sigmoid(u)``, ``dsigmoid(s)`` (``s (1 - s)`` from ``s = sigmoid(u)``),
        ``d2sigmoid(s)`` (``s'' = s' (1 - 2 s)``), ``sigmoid_stable(u)`` (the objectives'
        weights), ``unit_preact(P, r, xT, b, D)``, ``clip(v, c)``, ``project(w, v, c)``.
        They use no ``min``/``max`` builtins: numba's CUDA target cannot type them (their
        overload takes ``*args``).
    """
    zero = one - one  # 0 in the working precision

    @jit
    def sigmoid(u):
        # s(u) = 1/(1+exp(-u)); exp is clamped/overflow-safe, so s is 0 or 1 in the tails.
        return one / (one + exp(-u))

    @jit
    def dsigmoid(s):
        # s'(u) written through s = s(u): the engines evaluate the exponential once per pair.
        return s * (one - s)

    @jit
    def d2sigmoid(s):
        # s''(u) = s'(u) (1 - 2 s(u)), the gradient penalty's second derivative.
        return s * (one - s) * (one - (one + one) * s)

    @jit
    def sigmoid_stable(u):
        # s(u) with exp of a non-positive argument only: relative accuracy in both tails
        # (s(-700) = 9.9e-305, not 0), for the few objective weights s(+-f) per node.
        if u >= zero:
            return one / (one + exp(-u))
        e = exp(u)
        return e / (one + e)

    @jit
    def unit_preact(P, r, xT, b, D):
        # A unit is a row (amplitude, weights (D), bias): u = weights . x_b + bias.  Critic
        # particles are rows of omega (D = K); generator rows (i, k) are rows of theta viewed
        # as (N*K, L+2) (D = L).
        u = P[r, D + 1]
        for d in range(D):
            u += P[r, 1 + d] * xT[d, b]
        return u

    @jit
    def clip(v, c):
        # Coordinate-wise projection onto [-c, c]; NaN passes through (as numpy.clip).
        if v > c:
            return c
        if v < -c:
            return -c
        return v

    @jit
    def project(w, v, c):
        # One coordinate of the tangent-cone projection at w (MODEL.md section 2).
        if (w >= c and v > zero) or (w <= -c and v < zero):
            return zero
        return v

    return SimpleNamespace(sigmoid=sigmoid, dsigmoid=dsigmoid, d2sigmoid=d2sigmoid,
                           sigmoid_stable=sigmoid_stable, unit_preact=unit_preact,
                           clip=clip, project=project)
