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

This module is the ``meanfield-gan toy`` subcommand: it writes ``toy.json``, ``toy.h5`` and
``toy.png``.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq

from meanfield_gan._util import want_progress, write_study_outputs
from meanfield_gan.parallel import map_tasks

__all__ = [
    "SCHEMES",
    "DEFAULT_STARTS",
    "toy_velocity",
    "toy_energy",
    "predicted_limit",
    "integrate",
    "orbit_period",
    "measure_limit",
    "ToyStudy",
    "run_toy",
    "write_toy",
    "plot_toy",
    "configure_parser",
    "cli_main",
]

#: Time-stepping schemes of :func:`integrate`.
SCHEMES = ("euler", "heun", "rk4", "verlet")

#: Default initial conditions ``(g0, omega0)``: for gamma_c = 1 the first two lie outside the
#: limit orbit (E > E*) and the last two inside; for gamma_c = 10 only the last lies inside.
DEFAULT_STARTS: tuple[tuple[float, float], ...] = ((-2.0, 0.0), (1.0, -0.8), (0.5, 0.0), (0.15, 0.0))

# Critic box half-width of the example (omega in [-1, 1]).
_CLIP = 1.0


# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------
def _check_gamma_c(gamma_c: float) -> float:
    gc = float(gamma_c)
    if not (math.isfinite(gc) and gc > 0.0):
        raise ValueError(f"gamma_c: must be a positive finite number, got {gamma_c!r}")
    return gc


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
    gc = _check_gamma_c(gamma_c)
    g = np.asarray(g, dtype=float)
    omega = np.asarray(omega, dtype=float)
    with np.errstate(over="ignore"):
        # Phi' = 1/(4 cosh^2(g/2)), 1/2 - Phi = -tanh(g/2)/2: no cancellation near g = 0.
        dg = 0.25 * omega / np.cosh(0.5 * g) ** 2
    domega = -0.5 * gc * np.tanh(0.5 * g) * np.ones_like(omega)
    if constrained:
        out = ((omega >= _CLIP) & (domega > 0)) | ((omega <= -_CLIP) & (domega < 0))
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
    gc = _check_gamma_c(gamma_c)
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
    gc = _check_gamma_c(gamma_c)
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
    return _CLIP if w > _CLIP else (-_CLIP if w < -_CLIP else w)


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


def _first_exit(g: float, w: float, g1: float, w1: float, h: float, gc: float) -> tuple[float, float] | None:
    """First time in ``(0, h]`` at which the RK4 sub-step from ``(g, w)`` leaves ``|omega| <= 1``.

    A cubic Hermite interpolant of omega over the step flags candidate exits (it also catches a
    graze that leaves and re-enters within one step); each candidate is confirmed with RK4
    sub-steps and the crossing is located by Brent's method on ``tau -> omega(tau) -/+ 1``.
    Returns ``(tau, s)`` with ``s = +-1`` the side hit, or ``None``.
    """
    dw0, dw1 = _dw(g, gc), _dw(g1, gc)
    # |Hermite(tau)| <= max(|w|, |w1|) + (4/27) h (|dw0| + |dw1|): skip the check when safe.
    if max(abs(w), abs(w1)) + 0.15 * h * (abs(dw0) + abs(dw1)) <= _CLIP:
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
        if abs(p) > _CLIP:
            flagged, s = True, math.copysign(1.0, p)
            break
    if not flagged:
        return None

    def f(tau: float) -> float:
        return s * (w1 if tau == h else _rk4(g, w, tau, gc)[1]) - _CLIP

    lo = 0.0
    for tau in taus:
        if f(tau) > 0.0:
            if s * w - _CLIP >= 0.0:  # starting on the side hit: the exit is immediate
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
        s = 1.0 if w >= _CLIP else (-1.0 if w <= -_CLIP else 0.0)
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
def _check_run_args(
    g0: float, omega0: float, gamma_c: float, t_end: float, dt: float, scheme: str, constrained: bool
) -> tuple[float, float, float, float, float]:
    gc = _check_gamma_c(gamma_c)
    t_end, dt = float(t_end), float(dt)
    if not (math.isfinite(dt) and dt > 0.0):
        raise ValueError(f"dt: must be a positive finite number, got {dt!r}")
    if not (math.isfinite(t_end) and t_end > 0.0):
        raise ValueError(f"t_end: must be a positive finite number, got {t_end!r}")
    if scheme not in _STEPPERS:
        raise ValueError(f"scheme: unknown scheme {scheme!r} (use one of {', '.join(SCHEMES)})")
    g0, omega0 = float(g0), float(omega0)
    if not (math.isfinite(g0) and math.isfinite(omega0)):
        raise ValueError(f"start: (g0, omega0) must be finite, got ({g0!r}, {omega0!r})")
    if constrained and abs(omega0) > _CLIP:
        raise ValueError(f"start: omega0 must lie in [-1, 1] for the constrained flow, got {omega0!r}")
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
    g, w, gc, t_end, dt = _check_run_args(g0, omega0, gamma_c, t_end, dt, scheme, constrained)
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
    g0: float, omega0: float, gamma_c: float, dt: float = 0.01, n_periods: int = 3, max_steps: int = 10_000_000
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
    g, w, gc, _, dt = _check_run_args(g0, omega0, gamma_c, 1.0, dt, "rk4", False)
    if n_periods < 1:
        raise ValueError(f"n_periods: must be >= 1, got {n_periods!r}")
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
    gc = _check_gamma_c(gamma_c)
    if n_periods < 1:
        raise ValueError(f"n_periods: must be >= 1, got {n_periods!r}")
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


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------
@dataclass
class ToyTrajectory:
    """One constrained trajectory of the study and its measured limit orbit."""

    gamma_c: float
    g0: float
    omega0: float
    t: np.ndarray
    g: np.ndarray
    omega: np.ndarray
    energy: np.ndarray
    summary: dict[str, Any]


@dataclass
class ToyStudy:
    """Result of :func:`run_toy`.

    Attributes
    ----------
    runs : list of dict
        One JSON-ready record per ``gamma_c`` (see :func:`run_toy`).
    trajectories : list of list of ToyTrajectory
        ``trajectories[i][j]``: gamma_c number ``i``, start number ``j``.
    settings : dict
        The study's parameters.
    euler_spiral : dict
        The unconstrained explicit-Euler trajectory of the figure's small panel.
    """

    runs: list[dict[str, Any]]
    trajectories: list[list[ToyTrajectory]]
    settings: dict[str, Any]
    euler_spiral: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON summary written to ``toy.json`` (no trajectories)."""
        spiral = {k: v for k, v in self.euler_spiral.items() if not isinstance(v, np.ndarray)}
        return {"runs": self.runs, "settings": self.settings, "euler_spiral": spiral}


def _run_one(task: tuple[float, float, float, float, float, str, int]) -> ToyTrajectory:
    gc, g0, w0, t_end, dt, scheme, n_periods = task
    t, g, w = integrate(g0, w0, gc, t_end, dt, scheme=scheme, constrained=True)
    e = toy_energy(g, w, gc)
    summary = {
        "g0": g0,
        "omega0": w0,
        "initial_energy": float(e[0]),
        "outside_limit_orbit": bool(e[0] >= predicted_limit(gc)["limit_energy"] - 1e-12),
        "touched_boundary": bool(np.max(np.abs(w)) >= _CLIP),
        **measure_limit(t, g, w, gc, n_periods=n_periods),
    }
    return ToyTrajectory(gc, g0, w0, t, g, w, e, summary)


def _check_starts(starts: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    out = []
    for s in starts:
        if len(s) != 2:
            raise ValueError(f"starts: each start is a pair (g0, omega0), got {s!r}")
        g0, w0 = float(s[0]), float(s[1])
        if not (math.isfinite(g0) and math.isfinite(w0)):
            raise ValueError(f"starts: (g0, omega0) must be finite, got {s!r}")
        if abs(w0) > _CLIP:
            raise ValueError(f"starts: omega0 must lie in [-1, 1], got {s!r}")
        out.append((g0, w0))
    if not out:
        raise ValueError("starts: give at least one start")
    return out


def check_toy_args(
    gamma_cs: Sequence[float], starts: Sequence[Sequence[float]], t_end: float, dt: float, scheme: str, n_periods: int
) -> tuple[list[float], list[tuple[float, float]]]:
    """Validate the study's arguments; raise :class:`ValueError` naming the bad one."""
    gcs = [_check_gamma_c(g) for g in gamma_cs]
    if not gcs:
        raise ValueError("gamma_c: give at least one value")
    if len({_group_name(g) for g in gcs}) != len(gcs):
        raise ValueError(f"gamma_c: values must be distinct, got {list(gamma_cs)!r}")
    st = _check_starts(starts)
    _check_run_args(0.0, 0.0, gcs[0], t_end, dt, scheme, True)
    if int(n_periods) != n_periods or n_periods < 1:
        raise ValueError(f"n_periods: must be a positive integer, got {n_periods!r}")
    if dt > t_end:
        raise ValueError(f"dt: must not exceed t_end ({dt!r} > {t_end!r})")
    return gcs, st


def run_toy(
    gamma_cs: Sequence[float] = (1.0, 10.0),
    starts: Sequence[Sequence[float]] = DEFAULT_STARTS,
    t_end: float = 120.0,
    dt: float = 0.05,
    scheme: str = "rk4",
    n_periods: int = 2,
    executor: Any = "serial",
    progress: bool | None = False,
) -> ToyStudy:
    """Integrate the constrained example for each ``gamma_c`` and start; measure the limit orbit.

    Parameters
    ----------
    gamma_cs : sequence of float
        Critic time scales, each > 0.
    starts : sequence of (g0, omega0)
        Initial conditions, ``|omega0| <= 1``, shared by every ``gamma_c``.
    t_end, dt : float
        Integration horizon and step (> 0). The default horizon covers the transient (hit,
        slide) and at least two limit periods for gamma_c >= 1 (the limit period is about 27
        for gamma_c = 1, 8 for gamma_c = 10).
    scheme : str
        A scheme of :func:`integrate`; ``"rk4"`` is the accurate event-located one.
    n_periods : int
        Trailing periods over which the limit orbit is measured.
    executor : Executor, "serial", "processes" or None
        Passed to :func:`meanfield_gan.parallel.map_tasks`. Each trajectory takes
        milliseconds, so ``"serial"`` is the sensible default.
    progress : bool or None
        Progress bar (``None``: only on a terminal).

    Returns
    -------
    ToyStudy
        ``runs[i]`` holds ``gamma_c``, ``limit_energy`` and ``max_abs_g`` (means over the
        starts with ``E >= E*``, the ones that must converge onto the limit orbit; None if
        there is none), ``predicted_limit_energy``, ``predicted_max_abs_g``, the absolute
        errors, the limit ``period`` and per-start summaries under ``"starts"``.
    """
    gcs, st = check_toy_args(gamma_cs, starts, t_end, dt, scheme, n_periods)
    tasks = [(gc, g0, w0, float(t_end), float(dt), scheme, int(n_periods)) for gc in gcs for (g0, w0) in st]
    results = map_tasks(_run_one, tasks, executor, progress=want_progress(progress), desc="toy")
    runs, trajectories = [], []
    for i, gc in enumerate(gcs):
        trajs = results[i * len(st) : (i + 1) * len(st)]
        trajectories.append(trajs)
        pred = predicted_limit(gc)
        outside = [tr.summary for tr in trajs if tr.summary["outside_limit_orbit"]]
        if outside:
            le = float(np.mean([s["limit_energy"] for s in outside]))
            mg = float(np.mean([s["max_abs_g"] for s in outside]))
            le_err = max(abs(s["limit_energy"] - pred["limit_energy"]) for s in outside)
            mg_err = max(abs(s["max_abs_g"] - pred["max_abs_g"]) for s in outside)
            periods = [s["period"] for s in outside if s["periods_in_window"] > 0]
            period = float(np.mean(periods)) if periods else None
        else:
            le = mg = le_err = mg_err = period = None
        runs.append(
            {
                "gamma_c": gc,
                "limit_energy": le,
                "max_abs_g": mg,
                "predicted_limit_energy": pred["limit_energy"],
                "predicted_max_abs_g": pred["max_abs_g"],
                "limit_energy_error": le_err,
                "max_abs_g_error": mg_err,
                "period": period,
                "n_converging_starts": len(outside),
                "starts": [tr.summary for tr in trajs],
            }
        )
    settings = {
        "gamma_c": gcs,
        "starts": [list(s) for s in st],
        "t_end": float(t_end),
        "dt": float(dt),
        "scheme": scheme,
        "constrained": True,
        "n_periods": int(n_periods),
        "latent": "logistic",
    }
    # The figure's small panel: explicit Euler without the constraint spirals outwards.
    sp_gc, sp_start, sp_dt = gcs[0], (0.5, 0.0), 0.25
    sp_t_end = 3.0 * orbit_period(*sp_start, sp_gc)
    ts, gs, ws = integrate(*sp_start, sp_gc, sp_t_end, sp_dt, scheme="euler", constrained=False)
    es = toy_energy(gs, ws, sp_gc)
    spiral = {
        "gamma_c": sp_gc,
        "start": list(sp_start),
        "dt": sp_dt,
        "t_end": sp_t_end,
        "scheme": "euler",
        "constrained": False,
        "initial_energy": float(es[0]),
        "final_energy": float(es[-1]),
        "t": ts,
        "g": gs,
        "omega": ws,
    }
    return ToyStudy(runs, trajectories, settings, spiral)


def _group_name(gc: float) -> str:
    return f"gamma_c_{gc:.12g}"


def write_toy(study: ToyStudy, outdir: str | os.PathLike) -> dict[str, Path]:
    """Write ``toy.json``, ``toy.h5`` and ``toy.png`` into ``outdir``.

    Parameters
    ----------
    study : ToyStudy
        The result of :func:`run_toy`.
    outdir : path
        Output folder (created if needed).

    Returns
    -------
    dict
        Paths under the keys ``"json"``, ``"h5"``, ``"png"``.

    Notes
    -----
    ``toy.h5`` has one group per gamma_c (``gamma_c_<value>``) holding ``t`` (T,), ``g``,
    ``omega``, ``energy`` (n_starts, T) and the starts ``g0``, ``omega0`` (n_starts,); its
    attributes are the run's measured and predicted values and the settings. The root's
    ``unconstrained_euler`` group holds the figure's spiral.
    """

    def fill(f):
        f.attrs["model"] = "MODEL.md section 5: step generator, ReLU critic, logistic latent"
        for key, val in study.settings.items():
            if key not in ("starts", "gamma_c"):
                f.attrs[key] = val
        for run, trajs in zip(study.runs, study.trajectories):
            grp = f.create_group(_group_name(run["gamma_c"]))
            grp.create_dataset("t", data=trajs[0].t)
            for name in ("g", "omega", "energy"):
                grp.create_dataset(name, data=np.stack([getattr(tr, name) for tr in trajs]))
            grp.create_dataset("g0", data=np.array([tr.g0 for tr in trajs]))
            grp.create_dataset("omega0", data=np.array([tr.omega0 for tr in trajs]))
            for name in ("limit_energy", "max_abs_g", "initial_energy"):
                grp.create_dataset(f"start_{name}", data=np.array([tr.summary[name] for tr in trajs]))
            for key, val in run.items():
                if key != "starts":
                    grp.attrs[key] = np.nan if val is None else val
        sp = f.create_group("unconstrained_euler")
        for name in ("t", "g", "omega"):
            sp.create_dataset(name, data=study.euler_spiral[name])
        for key, val in study.euler_spiral.items():
            if not isinstance(val, np.ndarray):
                sp.attrs[key] = val

    paths = write_study_outputs(outdir, "toy", "meanfield_gan.studies.toy", study.to_json(),
                                fill, lambda png: plot_toy(study, png))
    return paths


def plot_toy(study: ToyStudy, path: str | os.PathLike) -> Path:
    """Phase portraits: level sets of ``E``, the band ``|omega| <= 1``, the limit orbit, trajectories.

    One large panel per gamma_c (up to the first two), plus a small panel with the
    unconstrained explicit-Euler spiral.

    Parameters
    ----------
    study : ToyStudy
        The result of :func:`run_toy`.
    path : path
        PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = min(2, len(study.runs))
    # A Figure on an Agg canvas, not pyplot: no global backend switch (a notebook's inline
    # plots keep working) and nothing left open.
    fig = Figure(figsize=(4.6 * n + 3.4, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(1, n + 1, width_ratios=[1.0] * n + [0.7], wspace=0.28)
    for i in range(n):
        run, trajs = study.runs[i], study.trajectories[i]
        gc = run["gamma_c"]
        ax = fig.add_subplot(gs[0, i])
        gmax = max(2.2, 1.1 * max(float(np.max(np.abs(tr.g))) for tr in trajs))
        G, W = np.meshgrid(np.linspace(-gmax, gmax, 301), np.linspace(-1.5, 1.5, 241))
        E = toy_energy(G, W, gc)
        estar = run["predicted_limit_energy"]
        levels = np.linspace(2.0, float(np.max(E)), 18)[1:]
        ax.contour(G, W, E, levels=levels, colors="0.6", linewidths=0.6)
        ax.axhspan(1.0, 1.6, color="0.85", zorder=0)
        ax.axhspan(-1.6, -1.0, color="0.85", zorder=0)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(-1.0, color="k", lw=0.8)
        # Wide and translucent, under the trajectories that settle onto it.
        ax.contour(G, W, E, levels=[estar], colors="crimson", linewidths=5.0, alpha=0.35, zorder=3)
        ax.plot([], [], color="crimson", lw=5.0, alpha=0.35, label="limit orbit E = E*")
        for j, tr in enumerate(trajs):
            ax.plot(tr.g, tr.omega, lw=1.0, color=f"C{j}", zorder=4,
                    label=f"start ({tr.g0:g}, {tr.omega0:g}), E0={tr.summary['initial_energy']:.2f}")
            ax.plot([tr.g0], [tr.omega0], "o", ms=4, color=f"C{j}", zorder=5)
        ax.set_xlim(-gmax, gmax)
        ax.set_ylim(-1.5, 1.5)
        ax.set_xlabel("generator g")
        if i == 0:
            ax.set_ylabel("critic omega")
        ax.set_title(f"gamma_c = {gc:g}: E* = {estar:.3f}, max|g| = {run['predicted_max_abs_g']:.3f}", fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
    ax = fig.add_subplot(gs[0, n])
    sp = study.euler_spiral
    gc = sp["gamma_c"]
    ax.plot(sp["g"], sp["omega"], lw=0.8, color="C3", label=f"explicit Euler, dt={sp['dt']:g}")
    r = 1.1 * max(float(np.max(np.abs(sp["g"]))), 0.5)
    wr = 1.1 * max(float(np.max(np.abs(sp["omega"]))), 0.5)
    G, W = np.meshgrid(np.linspace(-r, r, 201), np.linspace(-wr, wr, 201))
    ax.contour(G, W, toy_energy(G, W, gc), levels=[sp["initial_energy"]], colors="k", linewidths=1.0,
               linestyles="--")
    ax.plot([], [], "k--", lw=1.0, label="exact orbit")
    ax.set_title(f"no constraint, gamma_c = {gc:g}\nE: {sp['initial_energy']:.3f} -> {sp['final_energy']:.3f}",
                 fontsize=9)
    ax.set_xlabel("g")
    ax.set_ylabel("omega (unbounded)")
    ax.legend(fontsize=6, loc="lower left")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``meanfield-gan toy`` arguments to ``parser``."""
    parser.add_argument("--gamma-c", type=float, nargs="+", default=[1.0, 10.0], metavar="G",
                        help="critic time scales (default: 1 10)")
    parser.add_argument("--start", type=float, nargs=2, action="append", metavar=("G0", "OMEGA0"),
                        help="initial condition, repeatable (default: the module's DEFAULT_STARTS)")
    parser.add_argument("--t-end", type=float, default=120.0, help="integration horizon (default: 120)")
    parser.add_argument("--dt", type=float, default=0.05, help="time step (default: 0.05)")
    parser.add_argument("--scheme", choices=SCHEMES, default="rk4", help="time stepping (default: rk4)")
    parser.add_argument("--n-periods", type=int, default=2,
                        help="trailing periods over which the limit orbit is measured (default: 2)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")


def cli_main(args: argparse.Namespace) -> int:
    """Run the study and write ``OUTDIR/toy.{json,h5,png}``; print paths and measured numbers."""
    starts = args.start if args.start else DEFAULT_STARTS
    # Validate everything before the output folder is created, so bad input writes nothing.
    check_toy_args(args.gamma_c, starts, args.t_end, args.dt, args.scheme, args.n_periods)
    study = run_toy(args.gamma_c, starts, args.t_end, args.dt, args.scheme, args.n_periods, progress=None)
    paths = write_toy(study, args.output)
    for run in study.runs:
        if run["limit_energy"] is None:
            print(f"gamma_c = {run['gamma_c']:g}: no start with E >= E* = {run['predicted_limit_energy']:.6f}")
            continue
        print(
            f"gamma_c = {run['gamma_c']:g}: limit energy {run['limit_energy']:.6f} "
            f"(predicted {run['predicted_limit_energy']:.6f}), max|g| {run['max_abs_g']:.6f} "
            f"(predicted {run['predicted_max_abs_g']:.6f})"
        )
    for key in ("json", "h5", "png"):
        print(f"wrote {paths[key]}")
    return 0
