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

import math
from types import SimpleNamespace
from typing import Callable

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # high bits of ln 2 (Cody-Waite range reduction)
LN2_LO = 1.90821492927058770002e-10
# exp(r) on |r| <= ln2/2 by its Taylor series to degree 13: truncation error < 1e-17.
_C = [1.0 / math.factorial(k) for k in range(14)]
C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13 = _C[2:]
# Past this |u| the sigmoid is 0 or 1 to double precision; clamping keeps 2^n representable.
EXP_CLAMP = 708.0


@intrinsic
def _pow2_int(typingctx, n):
    """``2.0**n`` for an int64 ``n`` in [-1022, 1023], by writing the exponent bits."""
    if not isinstance(n, types.Integer):
        return None
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        (val,) = args
        val = context.cast(builder, val, signature.args[0], types.int64)
        biased = builder.add(val, ir.Constant(ir.IntType(64), 1023))
        bits = builder.shl(biased, ir.Constant(ir.IntType(64), 52))
        return builder.bitcast(bits, ir.DoubleType())

    return sig, codegen


@njit(cache=True, error_model="numpy")
def exp_poly(x):
    """``exp(x)`` for float64 ``x``, clamped to ``[-708, 708]``; vectorisable."""
    x = min(max(x, -EXP_CLAMP), EXP_CLAMP)
    n = math.floor(x * LOG2E + 0.5)
    r = (x - n * LN2_HI) - n * LN2_LO
    p = C13
    p = p * r + C12
    p = p * r + C11
    p = p * r + C10
    p = p * r + C9
    p = p * r + C8
    p = p * r + C7
    p = p * r + C6
    p = p * r + C5
    p = p * r + C4
    p = p * r + C3
    p = p * r + C2
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _pow2_int(n)


def build(jit: Callable, exp: Callable) -> SimpleNamespace:
    """Compile the scalar maths with decorator ``jit`` and exponential ``exp``.

    Returns a namespace with ``sigmoid``, ``gen_preact`` and ``critic_preact``.
    """

    @jit
    def sigmoid(u):
        # s(u) = 1/(1+exp(-u)); exp is clamped/overflow-safe, so s is 0 or 1 in the tails.
        return 1.0 / (1.0 + exp(-u))

    @jit
    def gen_preact(theta, i, k, zT, b, L):
        # u_k = b_k . z + c_k for generator particle i (theta[i, k] = (a, b_k, c_k)).
        u = theta[i, k, L + 1]
        for l in range(L):
            u += theta[i, k, 1 + l] * zT[l, b]
        return u

    @jit
    def critic_preact(omega, j, xT, b, K):
        # u = beta . x + gamma for critic particle j (omega[j] = (alpha, beta, gamma)).
        u = omega[j, K + 1]
        for k in range(K):
            u += omega[j, 1 + k] * xT[k, b]
        return u

    return SimpleNamespace(sigmoid=sigmoid, gen_preact=gen_preact, critic_preact=critic_preact)
