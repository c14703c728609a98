"""The bimodal Gaussian GAN with interval discriminators (MODEL.md section 6).

After J. Li, A. Madry, J. Peebles, L. Schmidt, *On the limitations of first-order approximation
in GAN dynamics*, ICML 2018 (arXiv:1706.09884). The target is
``G_{mu*} = N(mu*_1, 1)/2 + N(mu*_2, 1)/2``, the generators ``G_mu`` have the same form, and a
discriminator is the indicator of two intervals ``D = 1_{[l_1, r_1] U [l_2, r_2]}``. The game is

    L(mu, l, r) = E_{x ~ G_{mu*}} D(x) + E_{x ~ G_mu} (1 - D(x))
                = 1 + int D(x) (p_{mu*}(x) - p_mu(x)) dx,

which the generator descends and the discriminator ascends. ``max_D L = 1 + d_TV``, attained by
``D = 1{p_{mu*} > p_mu}``; ``p_{mu*} - p_mu`` has at most three zeros, so that set is a union of
at most two intervals.

Ends in any order
-----------------
The paper's discriminators have ordered ends ``l_1 <= r_1 <= l_2 <= r_2``; first-order steps do
not keep that order. Here the four ends are sorted, ``e_1 <= e_2 <= e_3 <= e_4``, and
``D = 1_{[e_1, e_2] U [e_3, e_4]}``: the set of points with an odd number of ends at or below
them. It is the paper's discriminator whenever the ends are ordered, and for any ends it makes
``L`` a continuous, piecewise smooth function of all four (ends that cross exchange roles
instead of making ``D`` jump); an interval whose two ends meet is empty. Then

    L = 1 + sum_j s_j F(x_j),   F = CDF_{mu*} - CDF_mu,   s_j = -1 (+1) if end x_j has an even
                                                           (odd) number of ends below it,

with ``dL/dx_j = s_j f(x_j)``, ``f = p_{mu*} - p_mu``, and
``dL/dmu_i = (1/2) sum_j s_j phi(x_j - mu_i)``. Unbounded ends of the optimal discriminator are
capped at ``+-ENDS_CAP``, where every Gaussian CDF of the model is 0 or 1 to double precision.

The optimal discriminator of the original GAN game (MODEL.md 7), ``D* = p_{mu*} / (p_{mu*} +
p_mu)``, turns the game into ``-log 4 + 2 JSD(G_{mu*}, G_mu)``; a third dynamics,
``"jsd"``, descends that Jensen-Shannon divergence, ``mu <- mu - eta grad_mu JSD``, beside the
interval (total-variation) dynamics. JSD and its gradient are integrals over the line, computed
by composite Gauss-Legendre quadrature (error below 1e-13 for means in a window of width 30).

Everything is vectorised: arrays of shape ``(..., 2)`` hold any number of runs.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, ndtr, roots_legendre

from meanfield_gan._validation import nonneg_int, positive

__all__ = [
    "ENDS_CAP",
    "CONVERGED",
    "COLLAPSED",
    "OTHER",
    "OUTCOMES",
    "DYNAMICS",
    "mixture_density",
    "mixture_cdf",
    "loss",
    "loss_grad",
    "density_crossings",
    "optimal_discriminator",
    "tv_distance",
    "mixture_log_density",
    "density_discriminator",
    "js_divergence",
    "minimax_value",
    "js_gradient",
    "optimal_step",
    "first_order_step",
    "js_step",
    "BimodalRun",
    "run_dynamics",
    "classify",
]

#: Finite stand-in for an infinite interval end of the optimal discriminator.
ENDS_CAP = 1.0e4

#: Outcome codes of :func:`classify`.
CONVERGED, COLLAPSED, OTHER = 0, 1, 2
#: Outcome names, indexed by code.
OUTCOMES = ("converged", "collapsed", "other")
#: The two dynamics of MODEL.md section 6, and the optimal-discriminator dynamics of the
#: original GAN game (gradient descent on the Jensen-Shannon divergence).
DYNAMICS = ("optimal", "first_order", "jsd")

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Crossings of the densities are searched within this many standard deviations of the outermost
# mean: beyond it every component has mass < 1e-32, so a crossing there cannot change L or d_TV.
_WINDOW = 12.0
# Root polishing: bisections to shrink a bracket of width <= 12 + spread + 12 to ~1/2, then at
# most this many safeguarded Newton steps (quadratic convergence: 6 reach double precision).
_BISECT_ITERS = 6
_NEWTON_ITERS = 30
_XTOL = 1e-12


# --------------------------------------------------------------------------------------------
# densities, L and its gradients
# --------------------------------------------------------------------------------------------


def _phi(u: np.ndarray) -> np.ndarray:
    return _INV_SQRT_2PI * np.exp(-0.5 * u * u)


def _as_means(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 0 or a.shape[-1] != 2:
        raise ValueError(f"{name}: expected an array of shape (..., 2), got shape {a.shape}")
    return a


def mixture_density(x: ArrayLike, means: ArrayLike) -> np.ndarray:
    """Density of ``N(m_1, 1)/2 + N(m_2, 1)/2`` at ``x``.

    Parameters
    ----------
    x : array_like
        Points, broadcast against ``means[..., 0]``.
    means : array_like, shape (..., 2)
        The two component means.

    Returns
    -------
    ndarray
        The density values.
    """
    m = _as_means(means, "means")
    x = np.asarray(x, dtype=float)
    return 0.5 * (_phi(x - m[..., 0]) + _phi(x - m[..., 1]))


def mixture_cdf(x: ArrayLike, means: ArrayLike) -> np.ndarray:
    """Distribution function of ``N(m_1, 1)/2 + N(m_2, 1)/2`` at ``x``.

    See :func:`mixture_density`.
    """
    m = _as_means(means, "means")
    x = np.asarray(x, dtype=float)
    return 0.5 * (ndtr(x - m[..., 0]) + ndtr(x - m[..., 1]))


def _ends(l: ArrayLike, r: ArrayLike) -> np.ndarray:
    l = _as_means(l, "l")
    r = _as_means(r, "r")
    l, r = np.broadcast_arrays(l, r)
    # raw end order (l1, r1, l2, r2): the order the gradient is returned in
    return np.stack([l[..., 0], r[..., 0], l[..., 1], r[..., 1]], axis=-1)


def _end_signs(ends: np.ndarray) -> np.ndarray:
    """``s_j``: -1 for an end with an even 0-based rank among the four (a left end), else +1."""
    order = np.argsort(ends, axis=-1, kind="stable")
    rank = np.argsort(order, axis=-1, kind="stable")
    return np.where(rank % 2 == 0, -1.0, 1.0)


def _split_ends(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([g[..., 0], g[..., 2]], -1), np.stack([g[..., 1], g[..., 3]], -1)


def loss(mu: ArrayLike, l: ArrayLike, r: ArrayLike, target: ArrayLike) -> np.ndarray:
    """The game value ``L(mu, l, r)`` of MODEL.md section 6, in closed form.

    Parameters
    ----------
    mu : array_like, shape (..., 2)
        Generator means.
    l, r : array_like, shape (..., 2)
        Interval ends ``(l_1, l_2)`` and ``(r_1, r_2)``; any order (see the module docstring:
        the four ends are sorted and ``D = 1_{[e_1, e_2] U [e_3, e_4]}``).
    target : array_like, shape (..., 2)
        Target means ``mu*``.

    Returns
    -------
    ndarray, shape (...)
        ``E_{G_{mu*}} D + E_{G_mu} (1 - D)``, in ``[0, 2]``.
    """
    mu = _as_means(mu, "mu")
    target = _as_means(target, "target")
    x = _ends(l, r)
    s = _end_signs(x)
    F = mixture_cdf(x, target[..., None, :]) - mixture_cdf(x, mu[..., None, :])
    return 1.0 + np.sum(s * F, axis=-1)


def loss_grad(
    mu: ArrayLike, l: ArrayLike, r: ArrayLike, target: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`loss` with respect to ``mu``, ``l`` and ``r``.

    Exact wherever no two ends coincide (``L`` is smooth there).

    Returns
    -------
    grad_mu, grad_l, grad_r : ndarray, shape (..., 2)
        ``dL/dmu_i = (1/2) sum_j s_j phi(x_j - mu_i)`` and ``dL/dx_j = s_j (p_{mu*} - p_mu)(x_j)``.
    """
    mu = _as_means(mu, "mu")
    target = _as_means(target, "target")
    x = _ends(l, r)
    s = _end_signs(x)
    g_mu, g_x = _grad_ends(mu, x, s, target)
    g_l, g_r = _split_ends(g_x)
    return g_mu, g_l, g_r


def _grad_ends(mu: np.ndarray, x: np.ndarray, s: np.ndarray, target: np.ndarray):
    """(dL/dmu (..., 2), dL/dx (..., 4)) for raw ends ``x`` with signs ``s``."""
    pm = _phi(x[..., :, None] - mu[..., None, :])  # (..., 4, 2)
    pt = _phi(x[..., :, None] - target[..., None, :])
    g_mu = 0.5 * np.sum(s[..., :, None] * pm, axis=-2)
    g_x = s * 0.5 * (pt.sum(-1) - pm.sum(-1))
    return g_mu, g_x


# --------------------------------------------------------------------------------------------
# the optimal discriminator
# --------------------------------------------------------------------------------------------
#
# p_{mu*} - p_mu has the sign of the exponential sum E(x) = sum_i c_i exp(lam_i x - lam_i^2/2)
# (lam = the four means, c = +1 for target, -1 for generator means). With lam sorted, Rolle's
# theorem applied to E(x) exp(-lam_1 x) shows the zeros of E are separated by those of
# E_3(x) = sum_i c_i (lam_i - lam_1) exp(lam_i x - lam_i^2/2), whose zeros are in turn separated
# by the (at most one, explicit) zero of E_2 = sum_i c_i (lam_i - lam_1)(lam_i - lam_2) exp(...).
# So the at most two zeros of E_3 and the at most three zeros of E come from bisection on
# brackets on which the function is monotone: every sign change is found, none twice, with no
# grid to miss close pairs. Sums are evaluated relative to their largest term (log-sum-exp), so
# only signs matter and nothing underflows however far apart the means are.


def _sorted_terms(mu: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The four means sorted, (R, 4), with their signs c (+1 target, -1 generator)."""
    lam = np.concatenate([target, mu], axis=-1).reshape(-1, 4)
    if not np.all(np.isfinite(lam)):
        raise ValueError("mu: means must be finite")
    c = np.broadcast_to(np.array([1.0, 1.0, -1.0, -1.0]), lam.shape)
    order = np.argsort(lam, axis=-1, kind="stable")
    return np.take_along_axis(lam, order, -1), np.take_along_axis(c, order, -1)


def _level_terms(lam: np.ndarray, c: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """log-magnitudes and signs of the coefficients of E (level 0), E_3 (1) or E_2 (2)."""
    logmag = np.log(np.abs(c))
    sgn = np.sign(c)
    with np.errstate(divide="ignore"):
        for j in range(level):
            d = lam - lam[..., j : j + 1]
            logmag = logmag + np.log(np.abs(d))
            sgn = sgn * np.sign(d)
    return logmag, sgn


def _expsum(
    logmag: np.ndarray, sgn: np.ndarray, lam: np.ndarray, x: np.ndarray, deriv: bool = False
):
    """``G(x) = sum_i sgn_i exp(logmag_i - (x - lam_i)^2 / 2)`` over its largest term; x is (R, P).

    ``G`` is the level's exponential sum times ``exp(-x^2/2)`` (same zeros): the Gaussian form
    keeps the difference of two terms with nearly equal means accurate near those means. Terms
    are sorted by mean and added in adjacent pairs first, so nearly equal terms cancel before
    smaller ones are added. With ``deriv``, also ``G'`` over the same largest term (so
    ``G / G'`` is exact).
    """
    # four explicit terms: numpy reductions over a length-4 axis are several times slower
    d = [x - lam[:, i : i + 1] for i in range(4)]
    e = [logmag[:, i : i + 1] - 0.5 * d[i] * d[i] for i in range(4)]
    m = np.maximum(np.maximum(e[0], e[1]), np.maximum(e[2], e[3]))
    m[~np.isfinite(m)] = 0.0
    t = [sgn[:, i : i + 1] * np.exp(e[i] - m) for i in range(4)]
    g = (t[0] + t[1]) + (t[2] + t[3])
    if not deriv:
        return g
    return g, -((t[0] * d[0] + t[1] * d[1]) + (t[2] * d[2] + t[3] * d[3]))


def _roots_on_pieces(
    logmag: np.ndarray, sgn: np.ndarray, lam: np.ndarray, bounds: np.ndarray
) -> np.ndarray:
    """Zeros of an exponential sum, one per monotone piece ``[bounds_k, bounds_k+1]``.

    A few bisections on the sign (the function spans hundreds of orders of magnitude over a
    wide bracket), then Newton steps kept inside the shrinking bracket (bisection where Newton
    would leave it), until the step is below ``_XTOL`` (relative). Returns (R, P) zeros (NaN where a
    piece has no sign change), sorted, NaN last.
    """
    a = bounds[:, :-1]
    b = bounds[:, 1:]
    fa = _expsum(logmag, sgn, lam, a) >= 0.0
    fb = _expsum(logmag, sgn, lam, b) >= 0.0
    has = fa != fb
    roots = np.full(a.shape, np.nan)
    # work on the pieces that hold a zero only, one per row: (n, 1) brackets
    run, piece = np.nonzero(has)
    if run.size == 0:
        return roots
    lm, sg, la = logmag[run], sgn[run], lam[run]
    a, b, fa = a[run, piece][:, None], b[run, piece][:, None], fa[run, piece][:, None]
    for _ in range(_BISECT_ITERS):
        m = 0.5 * (a + b)
        left = (_expsum(lm, sg, la, m) >= 0.0) == fa  # the sign change is in [m, b]
        a = np.where(left, m, a)
        b = np.where(left, b, m)
    x = 0.5 * (a + b)
    # Each zero is frozen once its own Newton step is below tolerance, so it does not depend on
    # which other runs share the batch (a study gives the same numbers however it is chunked).
    active = np.ones(x.shape, dtype=bool)
    for _ in range(_NEWTON_ITERS):
        g, dg = _expsum(lm, sg, la, x, deriv=True)
        # shrink the bracket to the side of x that still holds the sign change
        left = (g >= 0.0) == fa
        a = np.where(active & left, x, a)
        b = np.where(active & ~left, x, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = x - g / dg
        inside = np.isfinite(xn) & (xn >= a) & (xn <= b)
        xn = np.where(inside, xn, 0.5 * (a + b))
        done = (np.abs(xn - x) <= _XTOL * (1.0 + np.abs(x))) | (g == 0.0)
        x = np.where(active, xn, x)
        active &= ~done
        if not active.any():
            break
    roots[run, piece] = x[:, 0]
    return np.sort(roots, axis=-1)


def _crossings(mu: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crossings (R, 3) and whether ``p_{mu*} >= p_mu`` left of all of them (R,)."""
    lam, c = _sorted_terms(mu, target)
    lo = lam[:, :1] - _WINDOW
    hi = lam[:, -1:] + _WINDOW

    # E_2 has at most one zero, explicit: d3 exp(-(x-lam3)^2/2) + d4 exp(-(x-lam4)^2/2) = 0
    lm2, sg2 = _level_terms(lam, c, 2)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z2 = ((lm2[:, 2] - lm2[:, 3] - 0.5 * (lam[:, 2] ** 2 - lam[:, 3] ** 2))
              / (lam[:, 3] - lam[:, 2]))
    ok = (sg2[:, 2] * sg2[:, 3] < 0) & np.isfinite(z2) & (z2 > lo[:, 0]) & (z2 < hi[:, 0])
    z2 = np.where(ok, z2, hi[:, 0])
    bounds3 = np.concatenate([lo, z2[:, None], hi], axis=1)

    lm3, sg3 = _level_terms(lam, c, 1)
    z3 = _roots_on_pieces(lm3, sg3, lam, bounds3)  # (R, 2)
    z3 = np.where(np.isnan(z3), hi, z3)
    bounds4 = np.concatenate([lo, z3, hi], axis=1)

    lm4, sg4 = _level_terms(lam, c, 0)
    z4 = _roots_on_pieces(lm4, sg4, lam, bounds4)  # (R, 3)
    pos0 = _expsum(lm4, sg4, lam, lo)[:, 0] >= 0.0
    return z4, pos0


def density_crossings(mu: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Points where ``p_{mu*}`` and ``p_mu`` cross (change sign of their difference).

    Parameters
    ----------
    mu, target : array_like, shape (..., 2)
        Generator and target means.

    Returns
    -------
    ndarray, shape (..., 3)
        The (at most three) crossings in increasing order, padded with NaN. Crossings more than
        12 standard deviations beyond the outermost mean are ignored (they carry no mass).
        Touching points without a sign change are not crossings.
    """
    mu = _as_means(mu, "mu")
    target = _as_means(target, "target")
    mu, target = np.broadcast_arrays(mu, target)
    z, _ = _crossings(mu, target)
    return z.reshape(mu.shape[:-1] + (3,))


def optimal_discriminator(mu: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The maximiser over discriminators of ``L(mu, ., .)``: ``D = 1{p_{mu*} >= p_mu}``.

    Parameters
    ----------
    mu, target : array_like, shape (..., 2)
        Generator and target means.

    Returns
    -------
    l, r : ndarray, shape (..., 2)
        Ordered ends ``l_1 <= r_1 <= l_2 <= r_2``; unbounded ends are ``-+ENDS_CAP``, an unused
        interval is empty (``l_2 = r_2 = ENDS_CAP``). When ``mu = mu*`` (up to order) every
        discriminator is optimal and the whole line is returned.
    """
    mu = _as_means(mu, "mu")
    target = _as_means(target, "target")
    mu, target = np.broadcast_arrays(mu, target)
    z, pos0 = _crossings(mu, target)
    R = z.shape[0]
    # segments [B_k, B_k+1] alternate in sign, the first one with the sign left of every crossing
    B = np.concatenate(
        [np.full((R, 1), -ENDS_CAP), np.where(np.isnan(z), ENDS_CAP, z), np.full((R, 2), ENDS_CAP)],
        axis=1,
    )
    idx = np.where(pos0, 0, 1)[:, None] + np.arange(4)
    e = np.take_along_axis(B, idx, axis=1).reshape(mu.shape[:-1] + (4,))
    return e[..., [0, 2]], e[..., [1, 3]]


def tv_distance(mu: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Total variation distance ``d_TV(G_{mu*}, G_mu) = max_D L(mu, D) - 1``, in closed form.

    Returns
    -------
    ndarray, shape (...)
        ``sum over the optimal intervals I of G_{mu*}(I) - G_mu(I)``.
    """
    l, r = optimal_discriminator(mu, target)
    return loss(mu, l, r, target) - 1.0


# --------------------------------------------------------------------------------------------
# the original GAN game: D* = p/(p+q) and the Jensen-Shannon divergence (MODEL.md 7)
# --------------------------------------------------------------------------------------------
_LOG2 = math.log(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# Composite Gauss-Legendre on [min mean - margin, max mean + margin]: every component has mass
# < 1e-23 beyond 10 standard deviations; panels at most 1 wide with 12 nodes each resolve the
# integrands' transitions near the density crossings (error < 1e-13 against adaptive quadrature).
_GL_MARGIN = 10.0
_GL_WIDTH = 1.0
_GL_ORDER = 12


def mixture_log_density(x: ArrayLike, means: ArrayLike) -> np.ndarray:
    """``log`` of the density of ``N(m_1, 1)/2 + N(m_2, 1)/2`` at ``x``, finite everywhere.

    Parameters
    ----------
    x : array_like
        Points, broadcast against ``means[..., 0]``.
    means : array_like, shape (..., 2)

    Returns
    -------
    ndarray
    """
    m = _as_means(means, "means")
    x = np.asarray(x, dtype=float)
    a, b = x - m[..., 0], x - m[..., 1]
    return np.logaddexp(-0.5 * a * a, -0.5 * b * b) - _LOG2 - _LOG_SQRT_2PI


def density_discriminator(x: ArrayLike, mu: ArrayLike, target: ArrayLike) -> np.ndarray:
    """The optimal discriminator of the original GAN game, ``D*(x) = p(x) / (p(x) + q(x))``.

    ``p`` is the target's density, ``q`` the generator's: ``D*`` maximises
    ``E_{G_{mu*}} log D + E_{G_mu} log(1 - D)`` pointwise (MODEL.md 7). Evaluated as
    ``s(log p - log q)``, so it is accurate in the tails where both densities underflow.

    Parameters
    ----------
    x : array_like
        Points, broadcast against the means' leading axes.
    mu, target : array_like, shape (..., 2)
        Generator and target means.

    Returns
    -------
    ndarray
        Values in ``[0, 1]``.
    """
    return expit(mixture_log_density(x, target) - mixture_log_density(x, mu))


def _line_rule(mu: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights ``(R, Q)`` of the composite Gauss-Legendre rule of each run."""
    lam = np.concatenate([target, mu], axis=-1).reshape(-1, 4)
    if not np.all(np.isfinite(lam)):
        raise ValueError("mu: means must be finite")
    lo = lam.min(axis=1) - _GL_MARGIN
    span = lam.max(axis=1) + _GL_MARGIN - lo
    # one panel count for the whole batch (vectorised), so each run's panels are <= 1 wide
    P = int(math.ceil(float(span.max()) / _GL_WIDTH))
    u, w = roots_legendre(_GL_ORDER)
    h = span / P  # (R,)
    centres = lo[:, None] + h[:, None] * (np.arange(P) + 0.5)  # (R, P)
    x = (centres[:, :, None] + 0.5 * h[:, None, None] * u).reshape(len(lo), -1)
    wt = np.broadcast_to(0.5 * h[:, None, None] * w, (len(lo), P, _GL_ORDER)).reshape(len(lo), -1)
    return x, wt


def _js_terms(mu, target):
    """Nodes, weights and ``log p``, ``log q``, ``log m`` on them (flattened runs)."""
    mu = _as_means(mu, "mu")
    target = _as_means(target, "target")
    mu, target = np.broadcast_arrays(mu, target)
    shape = mu.shape[:-1]
    m2, t2 = mu.reshape(-1, 2), target.reshape(-1, 2)
    x, w = _line_rule(m2, t2)
    lq = mixture_log_density(x, m2[:, None, :])
    lp = mixture_log_density(x, t2[:, None, :])
    lm = np.logaddexp(lp, lq) - _LOG2
    return shape, m2, x, w, lp, lq, lm


def js_divergence(mu: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Jensen-Shannon divergence ``JSD(G_{mu*}, G_mu)`` in nats, in ``[0, log 2]``.

    ``JSD = KL(p | m)/2 + KL(q | m)/2`` with ``m = (p + q)/2``, by composite Gauss-Legendre
    quadrature over the line.

    Parameters
    ----------
    mu, target : array_like, shape (..., 2)
        Generator and target means.

    Returns
    -------
    ndarray, shape (...)
    """
    shape, _, _, w, lp, lq, lm = _js_terms(mu, target)
    val = 0.5 * np.sum(w * (np.exp(lp) * (lp - lm) + np.exp(lq) * (lq - lm)), axis=-1)
    return val.reshape(shape)


def minimax_value(mu: ArrayLike, target: ArrayLike) -> np.ndarray:
    """``max_D E_{G_{mu*}} log D + E_{G_mu} log(1 - D)``, attained by :func:`density_discriminator`.

    Computed as the value of ``D* = p/(p+q)`` (its own integrand, not through the JSD), so
    ``minimax_value = -log 4 + 2 js_divergence`` is a check of both.

    Returns
    -------
    ndarray, shape (...)
        In ``[-log 4, 0]``.
    """
    shape, _, _, w, lp, lq, lm = _js_terms(mu, target)
    lpq = lm + _LOG2  # log(p + q)
    val = np.sum(w * (np.exp(lp) * (lp - lpq) + np.exp(lq) * (lq - lpq)), axis=-1)
    return val.reshape(shape)


def js_gradient(mu: ArrayLike, target: ArrayLike) -> np.ndarray:
    """``grad_mu JSD(G_{mu*}, G_mu)``.

    The terms of ``dm/dmu`` cancel (``int dq/dmu = 0``), leaving
    ``dJSD/dmu_i = (1/2) int dq/dmu_i log(q/m) = (1/4) int (x - mu_i) phi(x - mu_i) log(q/m) dx``:
    by the envelope theorem, half the gradient of the GAN value at the fixed ``D*``.

    Returns
    -------
    ndarray, shape (..., 2)
    """
    shape, m2, x, w, _, lq, lm = _js_terms(mu, target)
    d = x[:, None, :] - m2[:, :, None]  # (R, 2, Q)
    dens = np.exp(-0.5 * d * d - _LOG_SQRT_2PI)
    g = 0.25 * np.sum(w[:, None, :] * d * dens * (lq - lm)[:, None, :], axis=-1)
    return g.reshape(shape + (2,))


# --------------------------------------------------------------------------------------------
# the dynamics
# --------------------------------------------------------------------------------------------


def optimal_step(
    mu: ArrayLike, target: ArrayLike, lr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the optimal-discriminator dynamics.

    ``(l, r) = argmax L(mu, ., .)``, then ``mu <- mu - lr grad_mu L(mu, l, r)`` (a gradient step
    on ``d_TV``, by the envelope theorem).

    Returns
    -------
    mu, l, r : ndarray
        The new generator means and the discriminator used for the step.
    """
    mu = _as_means(mu, "mu")
    l, r = optimal_discriminator(mu, target)
    g_mu, _, _ = loss_grad(mu, l, r, target)
    return mu - lr * g_mu, l, r


def js_step(mu: ArrayLike, target: ArrayLike, lr: float) -> np.ndarray:
    """One step of the Jensen-Shannon dynamics: the discriminator is ``D* = p/(p+q)`` exactly,
    then ``mu <- mu - lr grad_mu JSD`` (:func:`js_gradient`).

    Returns
    -------
    ndarray
        The new generator means.
    """
    mu = _as_means(mu, "mu")
    return mu - lr * js_gradient(mu, target)


def first_order_step(
    mu: ArrayLike,
    l: ArrayLike,
    r: ArrayLike,
    target: ArrayLike,
    lr: float,
    unrolled: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One simultaneous gradient step of generator and discriminator.

    ``mu <- mu - lr grad_mu L``, ``(l, r) <- (l, r) + lr grad_{l,r} L``, all gradients at the
    current state. With ``unrolled = k > 0`` the generator instead descends the unrolled loss
    ``L(mu, D_k(mu))`` (Metz et al., ICLR 2017), ``D_k`` being ``k`` gradient-ascent steps of the
    discriminator from its current state, differentiated through those steps in closed form;
    the discriminator update is unchanged. ``unrolled = 0`` is the plain first-order dynamics.

    Returns
    -------
    mu, l, r : ndarray
        The new state.
    """
    mu = _as_means(mu, "mu")
    target = _as_means(target, "target")
    x = _ends(l, r)
    s = _end_signs(x)
    g_mu, g_x = _grad_ends(mu, x, s, target)
    if unrolled > 0:
        g_mu = _unrolled_grad_mu(mu, x, target, lr, unrolled)
    new_l, new_r = _split_ends(x + lr * g_x)
    return mu - lr * g_mu, new_l, new_r


def _unrolled_grad_mu(
    mu: np.ndarray, x: np.ndarray, target: np.ndarray, lr: float, k: int
) -> np.ndarray:
    """d/dmu L(mu, x_k(mu)), x_{j+1} = x_j + lr s_j f(x_j; mu), through the k steps."""
    J = np.zeros(x.shape + (2,))  # dx_j/dmu, (..., 4, 2)
    for _ in range(k):
        s = _end_signs(x)
        dm = x[..., :, None] - mu[..., None, :]  # (..., 4, 2)
        dt = x[..., :, None] - target[..., None, :]
        pm, pt = _phi(dm), _phi(dt)
        f = 0.5 * (pt.sum(-1) - pm.sum(-1))
        fprime = 0.5 * (-(dt * pt).sum(-1) + (dm * pm).sum(-1))
        df_dmu = -0.5 * dm * pm  # d f(x_j) / d mu_i
        J = J + lr * (s[..., None] * fprime[..., None] * J + s[..., None] * df_dmu)
        x = x + lr * s * f
    s = _end_signs(x)
    g_mu, g_x = _grad_ends(mu, x, s, target)
    return g_mu + np.einsum("...j,...ji->...i", g_x, J)


@dataclass(frozen=True)
class BimodalRun:
    """Final state (and optional trajectory) of a batch of runs of one dynamics.

    Attributes
    ----------
    mu, l, r : ndarray, shape (R, 2)
        Final generator means and discriminator ends (for ``"optimal"`` and ``"jsd"``: the
        optimal interval discriminator at the final means).
    trajectory : ndarray or None
        Generator means every ``record_every`` steps, shape (T, R, 2), when recorded.
    """

    mu: np.ndarray
    l: np.ndarray
    r: np.ndarray
    trajectory: np.ndarray | None = None


def run_dynamics(
    dynamics: str,
    mu0: ArrayLike,
    target: ArrayLike,
    *,
    lr: float,
    steps: int,
    l0: ArrayLike | None = None,
    r0: ArrayLike | None = None,
    unrolled: int = 0,
    record_every: int = 0,
    callback: Callable[[int], None] | None = None,
) -> BimodalRun:
    """Run one of the two dynamics for many initial conditions at once.

    Parameters
    ----------
    dynamics : {"optimal", "first_order", "jsd"}
        Optimal interval discriminator (a gradient descent on ``d_TV``), first-order
        (simultaneous, optionally unrolled) dynamics, or the optimal discriminator
        ``D* = p/(p+q)`` of the original GAN game (a gradient descent on the JSD).
    mu0 : array_like, shape (R, 2) or (2,)
        Initial generator means.
    target : array_like, shape (2,) or (R, 2)
        Target means ``mu*``.
    lr : float
        Step size ``eta`` (generator and discriminator).
    steps : int
        Number of steps.
    l0, r0 : array_like, shape (R, 2), optional
        Initial interval ends; required for ``"first_order"``, ignored otherwise.
    unrolled : int
        Unrolled discriminator steps in the first-order generator update (0: none).
    record_every : int
        Record the generator means every this many steps (0: do not record).
    callback : callable, optional
        Called with the step index after each step.

    Returns
    -------
    BimodalRun
    """
    if dynamics not in DYNAMICS:
        raise ValueError(f"dynamics: must be one of {DYNAMICS}, got {dynamics!r}")
    lr = positive(lr, "lr")
    steps = nonneg_int(steps, "steps")
    unrolled = nonneg_int(unrolled, "unrolled")
    record_every = nonneg_int(record_every, "record_every")
    mu = np.array(_as_means(mu0, "mu0"), dtype=float)
    target = _as_means(target, "target")
    if dynamics == "first_order":
        if l0 is None or r0 is None:
            raise ValueError("l0: first-order dynamics need initial interval ends l0 and r0")
        l = np.array(np.broadcast_to(_as_means(l0, "l0"), mu.shape), dtype=float)
        r = np.array(np.broadcast_to(_as_means(r0, "r0"), mu.shape), dtype=float)
    else:
        l, r = optimal_discriminator(mu, target)
    traj = [mu.copy()] if record_every else None
    for k in range(int(steps)):
        if dynamics == "optimal":
            mu, l, r = optimal_step(mu, target, lr)
        elif dynamics == "jsd":
            mu = js_step(mu, target, lr)
        else:
            mu, l, r = first_order_step(mu, l, r, target, lr, int(unrolled))
        if traj is not None and (k + 1) % record_every == 0:
            traj.append(mu.copy())
        if callback is not None:
            callback(k)
    if dynamics != "first_order":
        # for "jsd" these intervals are not used by the dynamics: they are the optimal interval
        # discriminator at the final means, kept so that every run reports the same fields
        l, r = optimal_discriminator(mu, target)
    return BimodalRun(mu=mu, l=l, r=r, trajectory=None if traj is None else np.stack(traj))


# --------------------------------------------------------------------------------------------
# outcomes
# --------------------------------------------------------------------------------------------


def classify(
    mu: ArrayLike, target: ArrayLike, tol: float = 0.1, collapse_tol: float | None = None
) -> np.ndarray:
    """Outcome code of each end state.

    Parameters
    ----------
    mu : array_like, shape (..., 2)
        Final generator means.
    target : array_like, shape (2,) or (..., 2)
        Target means ``mu*``.
    tol : float
        ``CONVERGED`` when ``max_i |mu_i - mu*_pi(i)| <= tol`` for ``pi`` the identity or the swap.
    collapse_tol : float, optional
        ``COLLAPSED`` when both generator means are within ``collapse_tol`` of the same target
        mode (default: ``tol``).

    Returns
    -------
    ndarray of int8
        ``CONVERGED`` (0), ``COLLAPSED`` (1) or ``OTHER`` (2: oscillating, stalled, elsewhere).
    """
    mu = _as_means(mu, "mu")
    target = _as_means(target, "target")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: must be positive and finite, got {tol}")
    ctol = tol if collapse_tol is None else collapse_tol
    if not (math.isfinite(ctol) and ctol > 0):
        raise ValueError(f"collapse_tol: must be positive and finite, got {collapse_tol}")
    d_id = np.maximum(np.abs(mu[..., 0] - target[..., 0]), np.abs(mu[..., 1] - target[..., 1]))
    d_sw = np.maximum(np.abs(mu[..., 0] - target[..., 1]), np.abs(mu[..., 1] - target[..., 0]))
    conv = np.minimum(d_id, d_sw) <= tol
    at0 = np.maximum(np.abs(mu[..., 0] - target[..., 0]), np.abs(mu[..., 1] - target[..., 0]))
    at1 = np.maximum(np.abs(mu[..., 0] - target[..., 1]), np.abs(mu[..., 1] - target[..., 1]))
    coll = np.minimum(at0, at1) <= ctol
    code = np.where(conv, CONVERGED, np.where(coll, COLLAPSED, OTHER))
    return np.asarray(code, dtype=np.int8)
