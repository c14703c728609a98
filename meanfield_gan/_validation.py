"""Every input check of the package, once.

Each checker takes the value and the name it should be called by in the message (a parameter
name such as ``lr``, or a dotted config key such as ``scheme.lr``) and raises
:class:`ValueError` with one line that names it.  The public functions, the model objects and
the run configuration all call these, so a rule (say, what counts as a positive integer) has
one definition.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "positive", "nonnegative", "positive_int", "nonneg_int", "unit_interval", "clip_value",
    "finite_array", "check_particles", "check_nodes", "check_omega",
]


def positive(v: Any, name: str) -> float:
    """A finite float ``> 0``."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not math.isfinite(f) or f <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    return f


def nonnegative(v: Any, name: str) -> float:
    """A finite float ``>= 0``."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not math.isfinite(f) or f < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
    return f


def unit_interval(v: Any, name: str) -> float:
    """A float in ``[0, 1)`` (decay rates: RMSProp's rho, Adam's betas)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not (0.0 <= f < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    return f


def positive_int(v: Any, name: str) -> int:
    """An integer ``>= 1`` (an integral float is accepted; a bool is not)."""
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer))
                                   or (isinstance(v, float) and v.is_integer())):
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if int(v) < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if int(v) >= 2**63:  # (stored as int64: HDF5 attributes, NumPy seeds)
        raise ValueError(f"{name} must be < 2^63, got {v!r}")
    return int(v)


def nonneg_int(v: Any, name: str) -> int:
    """An integer ``>= 0``."""
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer))
                                   or (isinstance(v, float) and v.is_integer())) or int(v) < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if int(v) >= 2**63:  # (stored as int64: HDF5 attributes, NumPy seeds)
        raise ValueError(f"{name} must be < 2^63, got {v!r}")
    return int(v)


def clip_value(clip: Any, name: str = "clip") -> float:
    """The half-width of the box ``Q = [-clip, clip]^{K+2}``: ``> 0``, or ``inf``/``None`` for
    no box (returned as ``math.inf``)."""
    if clip is None:
        return math.inf
    try:
        f = float(clip)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0 or inf, got {clip!r}") from None
    if f == math.inf and not isinstance(clip, bool):
        return math.inf
    if isinstance(clip, bool) or not f > 0:  # (NaN fails too)
        raise ValueError(f"{name} must be > 0 (or inf for no box), got {clip!r}")
    return f


def finite_array(arr: Any, name: str, ndim: int) -> np.ndarray:
    """A real array of ``ndim`` dimensions with finite entries (not copied)."""
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real floating-point array, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values (NaN or Inf)")
    return a


def check_particles(theta: Any, omega: Any, K: int | None = None, L: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate generator ``theta (N, K, L+2)`` and critic ``omega (M, K+2)`` arrays.

    Returns float64 C-contiguous arrays and ``(K, L)``. Raises ValueError naming the argument.
    """
    theta = finite_array(theta, "theta", 3)
    omega = finite_array(omega, "omega", 2)
    N, Kt, L2 = theta.shape
    M, K2 = omega.shape
    if N < 1:
        raise ValueError("theta: need N >= 1 generator particles")
    if M < 1:
        raise ValueError("omega: need M >= 1 critic particles")
    if Kt < 1 or L2 < 3:
        raise ValueError(f"theta must have shape (N, K, L+2) with K >= 1, L >= 1; "
                         f"got {theta.shape}")
    if K2 != Kt + 2:
        raise ValueError(f"omega must have shape (M, K+2) = (M, {Kt + 2}) to match theta's "
                         f"K={Kt}; got {omega.shape}")
    if K is not None and Kt != K:
        raise ValueError(f"theta has K={Kt} but the problem has K={K}")
    if L is not None and L2 - 2 != L:
        raise ValueError(f"theta has L={L2 - 2} but the problem has L={L}")
    return (np.ascontiguousarray(theta, dtype=np.float64),
            np.ascontiguousarray(omega, dtype=np.float64), Kt, L2 - 2)


def check_omega(omega: Any, name: str = "omega") -> np.ndarray:
    """A critic array ``(M, K+2)`` with ``K >= 1`` and finite entries, as float64."""
    om = finite_array(omega, name, 2)
    if om.shape[0] < 1 or om.shape[1] < 3:
        raise ValueError(f"{name} must have shape (M, K+2) with M >= 1, K >= 1; got {om.shape}")
    return np.ascontiguousarray(om, dtype=np.float64)


def _nodes(p: Any, w: Any, name: str, dim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    p = finite_array(p, name, 2)
    w = finite_array(w, f"{name}_weights", 1)
    if p.shape[1] != dim or p.shape[0] < 1:
        raise ValueError(f"{name} must have shape (B{name}, {what}) = (B{name}, {dim}) with "
                         f"B{name} >= 1; got {p.shape}")
    if w.shape != (p.shape[0],):
        raise ValueError(f"{name}_weights must have shape ({p.shape[0]},) to match {name}; "
                         f"got {w.shape}")
    return (np.ascontiguousarray(p, dtype=np.float64), np.ascontiguousarray(w, dtype=np.float64))


def check_nodes(z: Any, z_weights: Any, x: Any, x_weights: Any, K: int, L: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate latent nodes ``z (Bz, L)``, data nodes ``x (Bx, K)`` and their weights."""
    z, zw = _nodes(z, z_weights, "z", L, "L")
    x, xw = _nodes(x, x_weights, "x", K, "K")
    return z, zw, x, xw
