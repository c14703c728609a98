"""Diagnostics of critic coagulation (MODEL.md section 4.3), re-exported by
:mod:`meanfield_gan.metrics`.

They measure how much of the critic measure sits on the boundary of the clipping box
``Q = [-clip, clip]^{K+2}`` (none without a box) and whether it has collapsed to a few points;
they scale to ``M = 1e5`` critic particles (k-d tree neighbour search, never an ``M x M``
matrix).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ._validation import clip_value, nonnegative

__all__ = ["coagulation", "coagulation_time", "coagulation_series"]


# --------------------------------------------------------------------------------------------
# coagulation of the critic at the boundary of Q (MODEL.md section 4.3)
# --------------------------------------------------------------------------------------------
def _check_omega(omega: Any, name: str = "omega") -> np.ndarray:
    arr = np.asarray(omega)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (M, K+2), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must contain at least one particle, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    # +0.0 turns -0.0 into 0.0, so that byte-wise row comparisons (np.unique) see them equal.
    return arr + 0.0


def _resolve_tol(tol: Any, clip: float) -> float:
    # (no box: tolerances relative to 1, and no particle is ever on a face)
    return 1e-6 * _scale(clip) if tol is None else nonnegative(tol, "tol")


def _scale(clip: float) -> float:
    return clip if math.isfinite(clip) else 1.0


def _unique_rows(x: np.ndarray) -> np.ndarray:
    return np.unique(x, axis=0)


def _count_clusters(points: np.ndarray, tol: float, k: int = 16) -> int:
    """Connected components of the graph linking distinct points at distance ``<= tol``.

    ``points`` must be duplicate-free: merged critic particles coincide exactly (MODEL.md
    section 4.3), and deduplicating first keeps a collapsed critic from costing anything.

    Listing every close pair (``cKDTree.query_pairs``) would cost memory quadratic in the
    size of a clump of distinct points narrower than ``tol`` (1e5 such points in 3-D have
    about 8e8 close pairs), so the graph is searched with bounded memory instead:

    1. Link every point to its ``k`` nearest neighbours within ``tol``. A point whose
       ``k``-th neighbour is within ``tol`` is "saturated": it may have more links than
       were listed. Every link with an unsaturated end is listed, so a link of the full
       graph can be missing only between two saturated points.
    2. Group the saturated points by the component found so far; two groups are merged
       when their closest pair is within ``tol`` (one k-d tree query per point of the
       smaller group; groups whose bounding boxes are more than ``tol`` apart are skipped).
       In a dense clump the nearest-neighbour graph is already nearly connected, so there
       are few groups and this step is cheap.
    """
    n = points.shape[0]
    if n <= 1 or tol == 0:
        return n
    centre = points.mean(axis=0)
    if 2.0 * np.sqrt(np.max(np.sum((points - centre) ** 2, axis=1))) <= tol:
        # Diameter <= tol: every pair is linked. Catches a critic that has all but
        # collapsed without any neighbour search.
        return 1
    k = min(k, n - 1)
    tree = cKDTree(points)
    dist, idx = tree.query(points, k=k + 1, distance_upper_bound=np.nextafter(tol, np.inf))
    close = dist <= tol
    rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
    n_comp, labels = connected_components(
        coo_matrix((np.ones(int(close.sum()), dtype=np.int8), (rows[close], idx[close])),
                   shape=(n, n)),
        directed=False,
    )
    saturated = np.flatnonzero(close[:, k])
    if saturated.size == 0:
        return int(n_comp)

    group_labels, group_of = np.unique(labels[saturated], return_inverse=True)
    n_groups = group_labels.size
    if n_groups == 1:
        return int(n_comp)
    order = np.argsort(group_of, kind="stable")
    sat_sorted = saturated[order]
    starts = np.searchsorted(group_of[order], np.arange(n_groups + 1))
    members = [sat_sorted[starts[g] : starts[g + 1]] for g in range(n_groups)]
    lo = np.stack([points[m].min(axis=0) for m in members])
    hi = np.stack([points[m].max(axis=0) for m in members])

    parent = np.arange(n_groups)

    def find(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    trees: dict[int, cKDTree] = {}
    bound = np.nextafter(tol, np.inf)
    merges = 0
    for ga in range(n_groups - 1):
        # Bounding boxes more than tol apart along some axis cannot hold a close pair.
        near = np.all((lo[ga + 1 :] - tol <= hi[ga]) & (lo[ga] - tol <= hi[ga + 1 :]), axis=1)
        for gb in ga + 1 + np.flatnonzero(near):
            ra, rb = find(ga), find(int(gb))
            if ra == rb:
                continue
            small, big = (ga, int(gb)) if len(members[ga]) <= len(members[gb]) else (int(gb), ga)
            if big not in trees:
                trees[big] = cKDTree(points[members[big]])
            d, _ = trees[big].query(points[members[small]], k=1, distance_upper_bound=bound)
            if np.any(d <= tol):
                parent[ra] = rb
                merges += 1
    return int(n_comp - merges)


def _effective_dimension(x: np.ndarray, rtol: float) -> int:
    if x.shape[0] < 2:
        return 0
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / x.shape[0]
    eig = np.linalg.eigvalsh(cov)
    top = eig[-1]
    if top <= 0:
        return 0
    return int(np.count_nonzero(eig > rtol * top))


def coagulation(
    omega: Any,
    clip: float,
    tol: float | None = None,
    *,
    atol: float | None = None,
    rank_rtol: float = 1e-8,
) -> dict[str, Any]:
    """How much of the critic measure sits on ``boundary(Q)`` and how collapsed it is.

    Parameters
    ----------
    omega : array_like, shape (M, K+2)
        Critic particles, clipped into ``Q = [-clip, clip]^{K+2}``.
    clip : float
        Half-width of the clipping box, ``> 0``; ``inf`` (or None) for a critic without a
        box: no particle is then on a face, and the default tolerances are relative to 1.
    tol : float, optional
        Linking distance for ``"n_clusters"``: particles at Euclidean distance ``<= tol``
        belong to the same cluster (and clusters are closed under chaining). Default
        ``1e-6 * clip``; ``0`` counts exactly coincident particles only.
    atol : float, optional
        A coordinate is on the boundary when ``|omega_l| >= clip - atol``. Default
        ``1e-12 * clip``: clipping puts particles exactly on the box, so equality is the
        usual case and the tolerance only absorbs rounding.
    rank_rtol : float, optional
        Relative eigenvalue threshold of ``"effective_dimension"``.

    Returns
    -------
    dict
        ``"boundary_fraction"`` (float): fraction of particles with at least one coordinate
        on the boundary. ``"corner_fraction"`` (float): fraction with every coordinate on
        the boundary (at a corner of ``Q``). ``"face_fractions"`` (ndarray ``(K+2, 2)``):
        per coordinate, the fraction at ``-clip`` (column 0) and at ``+clip`` (column 1).
        ``"n_distinct"`` (int): number of exactly distinct particle positions.
        ``"n_clusters"`` (int): connected components at linking distance ``tol``.
        ``"spread"`` (float): ``sqrt(mean_j |omega_j - mean|^2)``. ``"dirac_distance"``
        (float): ``W_2`` from ``nu_M`` to the nearest single Dirac; the nearest Dirac sits at
        the mean, so this equals ``"spread"`` (kept under both names for readability).
        ``"effective_dimension"`` (int): rank of the covariance (eigenvalues above
        ``rank_rtol`` times the largest), 0 for a single point. ``"tol"``, ``"clip"``,
        ``"n_particles"``: the inputs used.

    Raises
    ------
    ValueError
        If ``omega`` is not a finite non-empty 2-D array, ``clip <= 0`` or ``tol < 0``.

    Notes
    -----
    Cost is ``O(M log M)``: rows are deduplicated with :func:`numpy.unique` and close pairs
    found with :class:`scipy.spatial.cKDTree`, so ``M = 1e5`` takes well under a second.
    """
    c = clip_value(clip)
    x = _check_omega(omega)
    t = _resolve_tol(tol, c)
    a_tol = 1e-12 * _scale(c) if atol is None else nonnegative(atol, "atol")
    return _coagulation(x, c, t, a_tol, rank_rtol)


def _coagulation(x: np.ndarray, c: float, t: float, a_tol: float, rank_rtol: float) -> dict:
    lower = x <= -c + a_tol
    upper = x >= c - a_tol
    on_face = lower | upper
    unique = _unique_rows(x)
    spread = float(math.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1))))
    return {
        "boundary_fraction": float(np.mean(np.any(on_face, axis=1))),
        "corner_fraction": float(np.mean(np.all(on_face, axis=1))),
        "face_fractions": np.stack([lower.mean(axis=0), upper.mean(axis=0)], axis=1),
        "n_distinct": int(unique.shape[0]),
        "n_clusters": _count_clusters(unique, t),
        "spread": spread,
        "dirac_distance": spread,
        "effective_dimension": _effective_dimension(x, rank_rtol),
        "tol": t,
        "clip": c,
        "n_particles": int(x.shape[0]),
    }


def _check_series(times: Any, omegas: Any) -> tuple[np.ndarray, Sequence[Any]]:
    ts = np.asarray(times, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"times must be a non-empty 1-D array, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise ValueError("times contains non-finite values")
    if len(omegas) != ts.size:
        raise ValueError(
            f"omegas must hold one critic array per time: {len(omegas)} arrays for "
            f"{ts.size} times"
        )
    return ts, omegas


def _single_point(omega: Any, tol: float, name: str) -> bool:
    unique = _unique_rows(_check_omega(omega, name))
    return unique.shape[0] == 1 or _count_clusters(unique, tol) == 1


def coagulation_time(
    times: Any, omegas: Any, clip: float, tol: float | None = None
) -> float | None:
    """First recorded time at which the critic measure is a single point.

    Parameters
    ----------
    times : array_like, shape (T,)
        Recording times, in the order of ``omegas``.
    omegas : array_like, shape (T, M, K+2), or a sequence of T arrays (M, K+2)
        Critic particles at each time.
    clip : float
        Half-width of the clipping box, ``> 0`` (sets the default ``tol``).
    tol : float, optional
        Linking distance as in :func:`coagulation` (default ``1e-6 * clip``). With ``0`` the
        critic is a single point only when all particles coincide exactly.

    Returns
    -------
    float or None
        ``times[k]`` for the first ``k`` with one cluster, or ``None`` if there is none.

    Raises
    ------
    ValueError
        On mismatched lengths, a bad ``omega`` array, ``clip <= 0`` or ``tol < 0``.
    """
    c = clip_value(clip)
    t = _resolve_tol(tol, c)
    ts, oms = _check_series(times, omegas)
    for k in range(ts.size):
        if _single_point(oms[k], t, f"omegas[{k}]"):
            return float(ts[k])
    return None


def coagulation_series(
    times: Any, omegas: Any, clip: float, tol: float | None = None
) -> dict[str, Any]:
    """:func:`coagulation` over a recorded trajectory, as lists ready for JSON.

    Parameters
    ----------
    times : array_like, shape (T,)
        Recording times.
    omegas : array_like, shape (T, M, K+2), or a sequence of T arrays (M, K+2)
        Critic particles at each time.
    clip : float
        Half-width of the clipping box, ``> 0``.
    tol : float, optional
        Linking distance as in :func:`coagulation` (default ``1e-6 * clip``).

    Returns
    -------
    dict
        ``"times"``, ``"n_distinct"``, ``"n_clusters"``, ``"boundary_fraction"``,
        ``"corner_fraction"``, ``"spread"``, ``"effective_dimension"``: lists of length T;
        ``"t0"``: the first time with a single cluster (as :func:`coagulation_time`) or
        ``None``; ``"tol"``, ``"clip"``.

    Raises
    ------
    ValueError
        As :func:`coagulation_time`.
    """
    c = clip_value(clip)
    t = _resolve_tol(tol, c)
    ts, oms = _check_series(times, omegas)
    keys = ("n_distinct", "n_clusters", "boundary_fraction", "corner_fraction", "spread",
            "effective_dimension")
    out: dict[str, Any] = {"times": [float(v) for v in ts], **{k: [] for k in keys}}
    t0 = None
    for k in range(ts.size):
        diag = _coagulation(_check_omega(oms[k], f"omegas[{k}]"), c, t, 1e-12 * _scale(c), 1e-8)
        for key in keys:
            out[key].append(diag[key])
        if t0 is None and diag["n_clusters"] == 1:
            t0 = float(ts[k])
    out["t0"] = t0
    out["tol"] = t
    out["clip"] = c
    return out
