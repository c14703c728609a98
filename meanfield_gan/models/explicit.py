"""The explicit example of MODEL.md section 5: periodic orbits and their capture by clipping.

``K = L = 1``, target ``P_* = (delta_{-1} + delta_{+1}) / 2``, a step generator with one
parameter ``g`` and a ReLU critic ``D(x; omega) = max(omega x, 0)`` with ``omega in [-1, 1]``.
With the standard logistic latent CDF ``Phi``::

    Psi(omega, g) = (1/2 - Phi(g)) omega
    g'     = Phi'(g) omega
    omega' = gamma_c (1/2 - Phi(g))          (projected onto |omega| <= 1)

Since ``1/2 - Phi(g) = -tanh(g/2)/2`` and ``sinh(g) Phi'(g) = tanh(g/2)/2``,
``E(omega, g) = 2 cosh(g) + omega^2 / gamma_c`` is conserved by the unconstrained flow
(``dE/dt = omega tanh(g/2) - omega tanh(g/2) = 0``). With the constraint, an orbit with
``E > E* = 2 + 1/gamma_c`` reaches ``|omega| = 1``, slides along it to ``(+-1, 0)`` and then
follows the level set ``E = E*`` forever, so that ``max |g| = arccosh(1 + 1/(2 gamma_c))``.

Useful change of variable: with ``F(g) = 2 g + 2 sinh(g)`` (``F' = 1/Phi'``) and
``q = F(g)``, the flow is the separable Hamiltonian system ``q' = omega``,
``omega' = -gamma_c tanh(g(q)/2)/2``; on the sliding set ``omega = s = +-1`` it is solved
exactly by ``F(g(t)) = F(g(0)) + s t``. The constrained ``"rk4"`` scheme uses this: RK4 in the
interior, the boundary hit located inside a step by root finding on the RK4 sub-step, exact
sliding, and a return to the interior when ``g`` reaches 0 (where the unconstrained velocity
points back inside).

This module is the model: closed forms, integrators and orbit measurements.  The
``meanfield-gan toy`` study over it (``toy.json``, ``toy.h5``, ``toy.png``) is
:mod:`meanfield_gan.studies.toy`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq

from meanfield_gan._validation import positive, positive_int

__all__ = [
    "INTEGRATORS",
    "CLIP",
    "toy_velocity",
    "toy_energy",
    "predicted_limit",
    "check_run_args",
    "integrate",
    "orbit_period",
    "measure_limit",
]

#: Time-stepping schemes of :func:`integrate`.
INTEGRATORS = ("euler", "heun", "rk4", "verlet")

#: Critic box half-width of the example (omega in [-1, 1]).
CLIP = 1.0

# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------
def toy_velocity(
    g: ArrayLike, omega: ArrayLike, gamma_c: float, constrained: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity field ``(g', omega')`` of the explicit example.

    Parameters
    ----------
    g, omega : array_like
        Generator and critic parameters (broadcast together).
    gamma_c : float
        Critic time scale, > 0.
    constrained : bool
        Project ``omega'`` onto the tangent cone of ``[-1, 1]``: it is set to 0 where
        ``omega >= 1`` and ``omega' > 0`` or ``omega <= -1`` and ``omega' < 0``.

    Returns
    -------
    dg, domega : ndarray
        ``Phi'(g) omega`` and ``gamma_c (1/2 - Phi(g))`` (projected if ``constrained``).
    """
    gc = positive(gamma_c, "gamma_c")
    g = np.asarray(g, dtype=float)
    omega = np.asarray(omega, dtype=float)
    with np.errstate(over="ignore"):
        # Phi' = 1/(4 cosh^2(g/2)), 1/2 - Phi = -tanh(g/2)/2: no cancellation near g = 0.
        dg = 0.25 * omega / np.cosh(0.5 * g) ** 2
    domega = -0.5 * gc * np.tanh(0.5 * g) * np.ones_like(omega)
    if constrained:
        out = ((omega >= CLIP) & (domega > 0)) | ((omega <= -CLIP) & (domega < 0))
        domega = np.where(out, 0.0, domega)
    return dg, domega


def toy_energy(g: ArrayLike, omega: ArrayLike, gamma_c: float) -> np.ndarray:
    """Conserved energy ``E(omega, g) = 2 cosh(g) + omega^2 / gamma_c`` of the unconstrained flow.

    Parameters
    ----------
    g, omega : array_like
        Generator and critic parameters (broadcast together).
    gamma_c : float
        Critic time scale, > 0.

    Returns
    -------
    ndarray
        The energy, same shape as the broadcast inputs.
    """
    gc = positive(gamma_c, "gamma_c")
    g = np.asarray(g, dtype=float)
    omega = np.asarray(omega, dtype=float)
    return 2.0 * np.cosh(g) + omega**2 / gc


def predicted_limit(gamma_c: float) -> dict[str, float]:
    """Closed-form limit orbit of the constrained flow (for starts with ``E > E*``).

    Parameters
    ----------
    gamma_c : float
        Critic time scale, > 0.

    Returns
    -------
    dict
        ``limit_energy = 2 + 1/gamma_c`` (the level set through ``(+-1, 0)``) and
        ``max_abs_g = arccosh(1 + 1/(2 gamma_c))`` (where that level set meets ``omega = 0``).
    """
    gc = positive(gamma_c, "gamma_c")
    return {"limit_energy": 2.0 + 1.0 / gc, "max_abs_g": math.acosh(1.0 + 0.5 / gc)}


# --------------------------------------------------------------------------------------------
# Scalar kernels (plain floats: a 2-D ODE is fastest without array overhead)
# --------------------------------------------------------------------------------------------
def _dg(g: float, w: float) -> float:
    c = math.cosh(0.5 * g) if abs(g) < 1400.0 else math.inf
    return 0.25 * w / (c * c)


def _dw(g: float, gc: float) -> float:
    return -0.5 * gc * math.tanh(0.5 * g)


def _clip(w: float) -> float:
    return CLIP if w > CLIP else (-CLIP if w < -CLIP else w)


def _F(g: float) -> float:
    """``F(g) = 2 g + 2 sinh g``: the primitive of ``1/Phi'``, the canonical coordinate."""
    return 2.0 * g + 2.0 * math.sinh(g)


def _F_inv(q: float, guess: float) -> float:
    """Invert the odd increasing ``F`` by Newton (F' >= 4; F convex for g > 0, concave below)."""
    g = guess
    for _ in range(100):
        step = (_F(g) - q) / (2.0 + 2.0 * math.cosh(g))
        g -= step
        if abs(step) <= 1e-15 * (1.0 + abs(g)):
            break
    return g


def _rk4(g: float, w: float, h: float, gc: float) -> tuple[float, float]:
    k1g, k1w = _dg(g, w), _dw(g, gc)
    g2, w2 = g + 0.5 * h * k1g, w + 0.5 * h * k1w
    k2g, k2w = _dg(g2, w2), _dw(g2, gc)
    g3, w3 = g + 0.5 * h * k2g, w + 0.5 * h * k2w
    k3g, k3w = _dg(g3, w3), _dw(g3, gc)
    g4, w4 = g + h * k3g, w + h * k3w
    k4g, k4w = _dg(g4, w4), _dw(g4, gc)
    return (
        g + h / 6.0 * (k1g + 2.0 * k2g + 2.0 * k3g + k4g),
        w + h / 6.0 * (k1w + 2.0 * k2w + 2.0 * k3w + k4w),
    )


def _step_euler(g: float, w: float, h: float, gc: float, constrained: bool) -> tuple[float, float]:
    g1, w1 = g + h * _dg(g, w), w + h * _dw(g, gc)
    return g1, (_clip(w1) if constrained else w1)


def _step_heun(g: float, w: float, h: float, gc: float, constrained: bool) -> tuple[float, float]:
    k1g, k1w = _dg(g, w), _dw(g, gc)
    gp, wp = g + h * k1g, w + h * k1w
    if constrained:
        wp = _clip(wp)
    g1 = g + 0.5 * h * (k1g + _dg(gp, wp))
    w1 = w + 0.5 * h * (k1w + _dw(gp, gc))
    return g1, (_clip(w1) if constrained else w1)


def _step_verlet(g: float, w: float, h: float, gc: float, constrained: bool) -> tuple[float, float]:
    # Stormer-Verlet in the canonical pair (q = F(g), omega): symplectic, so E oscillates
    # by O(h^2) without drift. Projected by clipping omega after each kick.
    wh = w + 0.5 * h * _dw(g, gc)
    if constrained:
        wh = _clip(wh)
    g1 = _F_inv(_F(g) + h * wh, g)
    w1 = wh + 0.5 * h * _dw(g1, gc)
    return g1, (_clip(w1) if constrained else w1)


def _first_exit(
    g: float, w: float, g1: float, w1: float, h: float, gc: float
) -> tuple[float, float] | None:
    """First time in ``(0, h]`` at which the RK4 sub-step from ``(g, w)`` leaves ``|omega| <= 1``.

    A cubic Hermite interpolant of omega over the step flags candidate exits (it also catches a
    graze that leaves and re-enters within one step); each candidate is confirmed with RK4
    sub-steps and the crossing is located by Brent's method on ``tau -> omega(tau) -/+ 1``.
    Returns ``(tau, s)`` with ``s = +-1`` the side hit, or ``None``.
    """
    dw0, dw1 = _dw(g, gc), _dw(g1, gc)
    # |Hermite(tau)| <= max(|w|, |w1|) + (4/27) h (|dw0| + |dw1|): skip the check when safe.
    if max(abs(w), abs(w1)) + 0.15 * h * (abs(dw0) + abs(dw1)) <= CLIP:
        return None
    m = 8
    taus = [h * k / m for k in range(1, m + 1)]
    flagged = False
    s = 1.0
    for tau in taus:
        x = tau / h
        h00, h10 = 2 * x**3 - 3 * x**2 + 1, x**3 - 2 * x**2 + x
        h01, h11 = -2 * x**3 + 3 * x**2, x**3 - x**2
        p = h00 * w + h10 * h * dw0 + h01 * w1 + h11 * h * dw1
        if abs(p) > CLIP:
            flagged, s = True, math.copysign(1.0, p)
            break
    if not flagged:
        return None

    def f(tau: float) -> float:
        return s * (w1 if tau == h else _rk4(g, w, tau, gc)[1]) - CLIP

    lo = 0.0
    for tau in taus:
        if f(tau) > 0.0:
            if s * w - CLIP >= 0.0:  # starting on the side hit: the exit is immediate
                return 0.0, s
            return brentq(f, lo, tau, xtol=1e-15, rtol=1e-15, maxiter=200), s
        lo = tau
    return None


def _step_rk4_projected(g: float, w: float, h: float, gc: float) -> tuple[float, float]:
    """One step of the event-located projected RK4 scheme (see the module docstring)."""
    left = h
    for _ in range(16):  # a handful of mode switches per step at most
        if left <= 0.0:
            return g, w
        s = 1.0 if w >= CLIP else (-1.0 if w <= -CLIP else 0.0)
        if s != 0.0 and s * g < 0.0:
            # Sliding: the unconstrained omega' points outwards, only g moves, exactly.
            w = s
            t_exit = abs(_F(g))  # time for F(g) = F(g0) + s t to reach F(0) = 0
            if t_exit > left:
                return _F_inv(_F(g) + s * left, g), w
            g, left = 0.0, left - t_exit
            continue
        g1, w1 = _rk4(g, w, left, gc)
        ev = _first_exit(g, w, g1, w1, left, gc)
        if ev is None:
            return g1, _clip(w1)
        tau, s = ev
        if tau > 0.0:
            g, _ = _rk4(g, w, tau, gc)
        w = s
        left -= tau
        if tau == 0.0 and s * g >= 0.0:  # pragma: no cover - rounding at the tangency point
            g1, w1 = _rk4(g, w, left, gc)
            return g1, _clip(w1)
    # Fallback (never reached in practice): finish with a clipped RK4 step.
    g1, w1 = _rk4(g, w, left, gc)  # pragma: no cover
    return g1, _clip(w1)  # pragma: no cover


def _step_rk4(g: float, w: float, h: float, gc: float, constrained: bool) -> tuple[float, float]:
    if constrained:
        return _step_rk4_projected(g, w, h, gc)
    return _rk4(g, w, h, gc)


_STEPPERS = {"euler": _step_euler, "heun": _step_heun, "rk4": _step_rk4, "verlet": _step_verlet}


# --------------------------------------------------------------------------------------------
# Integrators
# --------------------------------------------------------------------------------------------
def check_run_args(
    g0: float,
    omega0: float,
    gamma_c: float,
    t_end: float,
    dt: float,
    scheme: str = "rk4",
    constrained: bool = True,
) -> tuple[float, float, float, float, float]:
    """Validate the arguments of :func:`integrate` before any step is taken.

    Parameters
    ----------
    g0, omega0, gamma_c, t_end, dt, scheme, constrained
        As in :func:`integrate`.

    Returns
    -------
    g0, omega0, gamma_c, t_end, dt : float
        The validated values as floats.

    Raises
    ------
    ValueError
        One line naming the first bad argument.
    """
    gc = positive(gamma_c, "gamma_c")
    dt = positive(dt, "dt")
    t_end = positive(t_end, "t_end")
    if scheme not in _STEPPERS:
        raise ValueError(f"scheme: unknown scheme {scheme!r} (use one of {', '.join(INTEGRATORS)})")
    g0, omega0 = float(g0), float(omega0)
    if not (math.isfinite(g0) and math.isfinite(omega0)):
        raise ValueError(f"start: (g0, omega0) must be finite, got ({g0!r}, {omega0!r})")
    if constrained and abs(omega0) > CLIP:
        raise ValueError(
            f"start: omega0 must lie in [-1, 1] for the constrained flow, got {omega0!r}")
    return g0, omega0, gc, t_end, dt


def integrate(
    g0: float,
    omega0: float,
    gamma_c: float,
    t_end: float,
    dt: float,
    scheme: str = "rk4",
    constrained: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate the explicit example from ``(g0, omega0)`` on ``[0, t_end]``.

    Parameters
    ----------
    g0, omega0 : float
        Initial generator and critic parameters (``|omega0| <= 1`` when ``constrained``).
    gamma_c : float
        Critic time scale, > 0.
    t_end : float
        Final time, > 0. The grid is ``0, dt, 2 dt, ...`` with a shorter last step so that it
        ends exactly at ``t_end``.
    dt : float
        Time step, > 0.
    scheme : {"euler", "heun", "rk4", "verlet"}
        ``"euler"``: (projected) forward Euler, omega clipped to ``[-1, 1]`` after each step.
        ``"heun"``: (projected) Heun, clipping after predictor and corrector.
        ``"rk4"``: classical RK4 without the constraint; with it, RK4 in the interior plus an
        event-located treatment of the boundary (hit time by root finding inside the step,
        exact sliding ``F(g(t)) = F(g0) + s t`` along ``omega = s``, departure when ``g``
        reaches 0), accurate to the RK4 order away from the events.
        ``"verlet"``: Stormer-Verlet in the canonical coordinates ``(F(g), omega)``
        (symplectic; clipped after each kick when constrained).
    constrained : bool
        Project the critic velocity onto the tangent cone of ``[-1, 1]``.

    Returns
    -------
    t, g, omega : ndarray
        Times (``n + 1``) and the trajectory at those times.

    Raises
    ------
    ValueError
        On non-positive ``gamma_c``, ``dt`` or ``t_end``, an unknown scheme, or
        ``|omega0| > 1`` with ``constrained``.
    """
    g, w, gc, t_end, dt = check_run_args(g0, omega0, gamma_c, t_end, dt, scheme, constrained)
    step = _STEPPERS[scheme]
    n = max(1, math.ceil(t_end / dt - 1e-9))
    t = np.arange(n + 1, dtype=float) * dt
    t[-1] = t_end
    gs = np.empty(n + 1)
    ws = np.empty(n + 1)
    gs[0], ws[0] = g, w
    for k in range(n):
        g, w = step(g, w, t[k + 1] - t[k], gc, constrained)
        gs[k + 1], ws[k + 1] = g, w
    return t, gs, ws


def _upward_crossings(t: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Times where ``g`` crosses 0 upwards, linearly interpolated.

    At ``g = 0`` the flow has ``g'' = Phi''(0) g' omega + Phi'(0) omega' = 0``, so the linear
    interpolation error is third order in the sampling step.
    """
    k = np.nonzero((g[:-1] < 0.0) & (g[1:] >= 0.0))[0]
    frac = -g[k] / (g[k + 1] - g[k])
    return t[k] + frac * (t[k + 1] - t[k])


def orbit_period(
    g0: float,
    omega0: float,
    gamma_c: float,
    dt: float = 0.01,
    n_periods: int = 3,
    max_steps: int = 10_000_000,
) -> float:
    """Period of the unconstrained (closed) orbit through ``(g0, omega0)``.

    Integrates with RK4 and averages the spacing of upward zero crossings of ``g``.

    Parameters
    ----------
    g0, omega0 : float
        A point of the orbit.
    gamma_c : float
        Critic time scale, > 0.
    dt : float
        RK4 step.
    n_periods : int
        Number of periods averaged.
    max_steps : int
        Safety cap on the number of steps.

    Returns
    -------
    float
        The period. At the fixed point ``(0, 0)`` the small-amplitude limit
        ``8 pi / sqrt(gamma_c)`` (linearisation ``g'' = -gamma_c g / 16``).
    """
    g, w, gc, _, dt = check_run_args(g0, omega0, gamma_c, 1.0, dt, "rk4", False)
    n_periods = positive_int(n_periods, "n_periods")
    max_steps = positive_int(max_steps, "max_steps")
    if g == 0.0 and w == 0.0:
        return 8.0 * math.pi / math.sqrt(gc)
    crossings: list[float] = []
    t = 0.0
    for _ in range(max_steps):
        g1, w1 = _rk4(g, w, dt, gc)
        if g < 0.0 <= g1:
            crossings.append(t + dt * (-g / (g1 - g)))
            if len(crossings) == n_periods + 1:
                return (crossings[-1] - crossings[0]) / n_periods
        g, w, t = g1, w1, t + dt
    raise ValueError("orbit_period: no closed orbit found within max_steps")  # pragma: no cover


def _peak(y: np.ndarray) -> float:
    """Maximum of sampled data refined by a parabola through the top sample and its neighbours."""
    k = int(np.argmax(y))
    if 0 < k < len(y) - 1:
        a, b, c = y[k - 1], y[k], y[k + 1]
        den = a - 2.0 * b + c
        if den < 0.0:
            return float(b - 0.125 * (a - c) ** 2 / den)
    return float(y[k])


def measure_limit(
    t: np.ndarray, g: np.ndarray, omega: np.ndarray, gamma_c: float, n_periods: int = 2
) -> dict[str, Any]:
    """Measure the orbit a trajectory has settled on, over its last ``n_periods`` periods.

    The window runs between the last ``n_periods + 1`` upward zero crossings of ``g`` (one
    full turn each). If the trajectory has fewer crossings, the last half of it is used and
    ``periods_in_window`` is 0: the result is then not a settled orbit.

    Parameters
    ----------
    t, g, omega : ndarray
        A trajectory from :func:`integrate`.
    gamma_c : float
        Critic time scale, > 0.
    n_periods : int
        Number of trailing periods measured.

    Returns
    -------
    dict
        ``limit_energy`` (mean energy over the window), ``energy_spread`` (max - min there),
        ``max_abs_g`` (max |g| there, refined by parabolic interpolation), ``period`` (mean
        spacing of the crossings, or None), ``periods_in_window``, ``window_start``.
    """
    gc = positive(gamma_c, "gamma_c")
    n_periods = positive_int(n_periods, "n_periods")
    t, g, omega = (np.asarray(a, dtype=float) for a in (t, g, omega))
    tc = _upward_crossings(t, g)
    if len(tc) >= n_periods + 1:
        t0, t1 = tc[-(n_periods + 1)], tc[-1]
        period: float | None = float((t1 - t0) / n_periods)
        periods = n_periods
    else:
        t0, t1 = t[len(t) // 2], t[-1]
        period = float(np.mean(np.diff(tc))) if len(tc) >= 2 else None
        periods = 0
    sel = (t >= t0) & (t <= t1)
    e = toy_energy(g[sel], omega[sel], gc)
    # The window starts/ends at g = 0, so the extrema of |g| are interior samples.
    return {
        "limit_energy": float(np.mean(e)),
        "energy_spread": float(np.max(e) - np.min(e)),
        "max_abs_g": max(_peak(g[sel]), _peak(-g[sel])),
        "period": period,
        "periods_in_window": periods,
        "window_start": float(t0),
    }

