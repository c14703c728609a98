"""Distances between particle measures and diagnostics of critic coagulation.

The theory (MODEL.md section 4) is stated in Wasserstein distances between empirical measures
``mu_N = (1/N) sum_i delta_theta_i`` and ``nu_M = (1/M) sum_j delta_omega_j``. A particle is a
point of ``R^{K(L+2)}`` (generator) or ``R^{K+2}`` (critic), so every distance here works on
flattened particle coordinates: a generator array ``theta`` of shape ``(N, K, L+2)`` is the
point cloud ``theta.reshape(N, -1)``.

Exact ``W_2`` between clouds of equal size is an assignment problem (Birkhoff), solved by
sorting in 1-D, by a k-d tree certificate when pairing ``a_i`` with ``b_i`` is optimal, or by
SciPy's ``linear_sum_assignment``; clouds of different sizes go to POT (``ot.emd2``, the
network simplex). The sliced and 1-D distances are POT's. The coagulation diagnostics of
:mod:`meanfield_gan.coagulation` are re-exported here (``mfg.metrics.coagulation``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ._validation import positive_int

__all__ = [
    "flatten_particles",
    "w2_squared",
    "coupling_squared",
    "sliced_w2_squared",
    "w1_1d",
    "w2_squared_1d",
    "pair_distance",
    "coagulation",
    "coagulation_time",
    "coagulation_series",
]

#: Default iteration cap of the network simplex: large enough for 5000-point clouds
#: (POT's own default, 1e5, stops short of the optimum there: measured for n = m = 5000, d = 3).
DEFAULT_NUM_ITERMAX = 10_000_000


def _pot():
    """Import POT on first use.

    ``import ot`` loads every array backend it finds (torch, jax, ...): 3.2 s against 0.8 s
    with them disabled, measured on this project's 2-core machine. Only the functions that
    need POT pay that, and POT's environment is left as the user set it: disabling its
    backends here would disable them for the rest of the process.
    """
    import ot

    return ot


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def flatten_particles(x: Any) -> np.ndarray:
    """Flatten each particle's coordinates into one row.

    Parameters
    ----------
    x : array_like, shape (n, ...)
        ``n`` particles; a particle may itself be an array, e.g. generator parameters
        ``theta`` of shape ``(N, K, L+2)``.

    Returns
    -------
    numpy.ndarray, shape (n, d)
        ``x.reshape(n, -1)``: ``d`` is the product of the trailing dimensions (1 for 1-D input).
    """
    arr = np.asarray(x)
    return arr.reshape(len(arr), -1)


def _point_cloud(x: Any, name: str) -> np.ndarray:
    """Validate ``x`` as ``n >= 1`` finite particles and return it as a float ``(n, d)`` array."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an array of particles, got a scalar")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one particle, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} particles have no coordinates, got shape {arr.shape}")
    arr = flatten_particles(arr.astype(np.float64, copy=False))
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _pair_of_clouds(a: Any, b: Any, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    xa = _point_cloud(a, name_a)
    xb = _point_cloud(b, name_b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same particle dimension, got "
            f"{xa.shape[1]} and {xb.shape[1]} (shapes {np.shape(a)} and {np.shape(b)})"
        )
    span = 2.0 * max(float(np.max(np.abs(xa))), float(np.max(np.abs(xb))))
    if not math.isfinite(span * span * xa.shape[1]):
        raise ValueError(f"{name_a} and {name_b} have coordinates up to {span / 2:.3g}: their "
                         "squared distances could overflow float64; rescale both clouds")
    return xa, xb


#: Entries per row block of the cost matrix: the block and its scratch row stay in cache.
_COST_BLOCK = 1 << 17


def _sq_euclidean_cost(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Matrix ``C[i, j] = |xa_i - xb_j|^2`` built from coordinate differences.

    ``ot.dist`` expands ``|a|^2 + |b|^2 - 2 a.b``, whose cancellation error is of order
    ``eps * |a|^2`` per entry: when two clouds are close (SGD against the PDE at large N,
    where ``d_2^2`` is the small quantity being measured) that error can swamp the
    distance. Summing squared differences one coordinate at a time is exact to rounding
    relative to the distance itself; filling the matrix by blocks of rows keeps the scratch
    array in cache. Entries are bit for bit those of :func:`_sq_distances`.
    """
    n, m = xa.shape[0], xb.shape[0]
    cost = np.empty((n, m))
    rows = max(1, _COST_BLOCK // m)
    scratch = np.empty((min(rows, n), m))
    yt = np.ascontiguousarray(xb.T)
    for s in range(0, n, rows):
        block = cost[s : s + rows]
        tmp = scratch[: block.shape[0]]
        np.subtract(xa[s : s + rows, 0, None], yt[0], out=block)
        np.multiply(block, block, out=block)
        for k in range(1, xa.shape[1]):
            np.subtract(xa[s : s + rows, k, None], yt[k], out=tmp)
            np.multiply(tmp, tmp, out=tmp)
            block += tmp
    return cost


def _sq_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``|x_i - y_i|^2`` row by row, bit for bit as the entries of :func:`_sq_euclidean_cost`."""
    diff = x[:, 0] - y[:, 0]
    out = diff * diff
    for k in range(1, x.shape[1]):
        diff = x[:, k] - y[:, k]
        out += diff * diff
    return out


# --------------------------------------------------------------------------------------------
# Wasserstein distances
# --------------------------------------------------------------------------------------------
#: Search radius ``sqrt(C_ii) (1 + _CERT_RTOL) + _CERT_ATOL`` of the certificate: 1e7 times the
#: rounding of a squared distance (tree or matrix), plus a floor for squares that underflow.
_CERT_RTOL, _CERT_ATOL = 1e-8, 1e-150
_CERT_PROBE = 64  # rows of C checked first, spread over the cloud


def _identity_is_optimal(xa: np.ndarray, xb: np.ndarray, own: np.ndarray) -> bool:
    """Whether pairing ``a_i`` with ``b_i`` is optimal for ``C = _sq_euclidean_cost(xa, xb)``.

    ``own = diag(C)``. If ``C_ii <= C_ij`` for all ``i, j``, then ``u_i = C_ii, v_j = 0`` is
    dual feasible (``u_i + v_j <= C_ij``) with value ``sum_i C_ii``, the identity's cost: by
    weak duality no permutation costs less (ties pass). A k-d tree on ``xb`` settles a row
    when its nearest point is ``b_i`` and its second nearest lies beyond the radius ``R_i``
    (every other ``C_ij`` then exceeds ``C_ii`` by far more than rounding); the ``b_j``
    within ``R_i`` of the other rows are compared exactly, ``C_ij`` computed as in ``C``.
    False (the caller solves the assignment) when some ``b_j`` is closer than ``b_i``, or
    too many rows need the exact comparison (clumps of coincident points).
    """
    n = xa.shape[0]
    probe = np.unique(np.linspace(0, n - 1, _CERT_PROBE).astype(np.intp))
    if n > 4 * _CERT_PROBE and np.any(_sq_euclidean_cost(xa[probe], xb).min(1) < own[probe]):
        return False  # unrelated clouds: a few exact rows of C answer at no cost
    rows = np.flatnonzero(own > 0)  # C_ii = 0 is <= any C_ij
    if rows.size == 0:
        return True
    own_dist = np.sqrt(own[rows])
    radius = own_dist * (1.0 + _CERT_RTOL) + _CERT_ATOL
    tree = cKDTree(xb)
    # The bound keeps the search for the second neighbour local: 80x faster in 12-D.
    dist, idx = tree.query(xa[rows], k=2, distance_upper_bound=float(radius.max()))
    if np.any(dist[:, 0] < own_dist * (1.0 - _CERT_RTOL)):
        return False
    unsettled = (idx[:, 0] != rows) | (dist[:, 1] <= radius)
    if not np.any(unsettled):
        return True
    check, r_check = rows[unsettled], radius[unsettled]
    if check.size > max(64, n // 8):
        return False
    if int(np.sum(tree.query_ball_point(xa[check], r_check, return_length=True))) > 16 * n:
        return False
    near = tree.query_ball_point(xa[check], r_check)
    i = np.repeat(check, [len(js) for js in near])
    j = np.concatenate([np.asarray(js, dtype=np.intp) for js in near])
    return bool(np.all(_sq_distances(xa[i], xb[j]) >= own[i]))


def _w2_squared_equal_sizes(xa: np.ndarray, xb: np.ndarray) -> float:
    n = xa.shape[0]
    if xa.shape[1] == 1:
        # On the line the monotone pairing is optimal for a convex cost (ties included).
        diff = np.sort(xa[:, 0]) - np.sort(xb[:, 0])
        return float(np.sum(diff * diff)) / n
    own = _sq_distances(xa, xb)
    if _identity_is_optimal(xa, xb, own):
        return float(np.sum(own)) / n
    cost = _sq_euclidean_cost(xa, xb)
    # Column, then row minima (a feasible dual) subtracted: same optimal permutations, and a
    # zero in every row to start from (4x faster at d = 12, n = 8192).
    cost -= cost.min(axis=0)
    cost -= cost.min(axis=1)[:, None]
    rows, cols = linear_sum_assignment(cost)
    return float(np.sum(_sq_distances(xa[rows], xb[cols]))) / n


def _w2_squared(xa: np.ndarray, xb: np.ndarray, num_itermax: int) -> float:
    n, m = xa.shape[0], xb.shape[0]
    if n == 1 or m == 1:
        # A Dirac on one side: the only coupling sends all mass to (or from) that point.
        return float(np.mean(_sq_euclidean_cost(xa, xb)))
    if n == m:
        return _w2_squared_equal_sizes(xa, xb)
    cost = _sq_euclidean_cost(xa, xb)
    wa, wb = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    with warnings.catch_warnings():
        # POT warns on non-convergence; the check below turns that into an error instead.
        warnings.simplefilter("ignore", UserWarning)
        value, log = _pot().emd2(wa, wb, cost, numItermax=int(num_itermax), log=True)
    if log.get("warning"):
        # An unconverged simplex returns a feasible but non-optimal cost: an upper bound
        # on W_2^2 that would silently bias a convergence-rate fit.
        raise RuntimeError(
            f"ot.emd2 did not reach the optimum for clouds of sizes {n} and {m} "
            f"({log['warning']}); raise num_itermax (now {num_itermax})"
        )
    return max(float(value), 0.0)


def w2_squared(a: Any, b: Any, *, num_itermax: int = DEFAULT_NUM_ITERMAX) -> float:
    """Exact squared 2-Wasserstein distance between two uniform point clouds.

    Solves the discrete optimal transport problem between ``(1/n) sum_i delta_{a_i}`` and
    ``(1/m) sum_j delta_{b_j}`` with squared-Euclidean cost: the value of ``ot.emd2`` on the
    matrix ``C[i, j] = |a_i - b_j|^2``, reached by the fastest exact route (Notes).

    Parameters
    ----------
    a : array_like, shape (n, d) or (n,) or (n, ...)
        First cloud. 1-D input is ``n`` points on the line; higher-rank input is ``n``
        particles whose coordinates are flattened (:func:`flatten_particles`), e.g. a
        generator array ``theta`` of shape ``(N, K, L+2)``.
    b : array_like, shape (m, d) or (m,) or (m, ...)
        Second cloud; ``m`` may differ from ``n``, the flattened dimension ``d`` may not.
    num_itermax : int, optional
        Iteration cap of POT's network simplex, used when ``n != m`` (and both exceed 1).
        The default suffices for ``n = m = 5000``.

    Returns
    -------
    float
        ``W_2^2`` (squared, not its square root).

    Raises
    ------
    ValueError
        If a cloud is empty, contains NaN/inf, has coordinates whose squared distances
        could overflow, or the two dimensions differ.
    RuntimeError
        If the simplex stops at ``num_itermax`` before reaching the optimum.

    Notes
    -----
    For ``n == m`` a permutation is among the optimal plans (Birkhoff): in 1-D the sorted
    pairing, in ``O(n log n)``; if pairing ``a_i`` with ``b_i`` is optimal, which a k-d tree
    proves in ``O(n log n)`` for nearly matched clouds (SGD particles against the Euler
    particles they started from), its cost, with no ``n x n`` matrix; otherwise
    ``scipy.optimize.linear_sum_assignment`` on the matrix (``8 n^2`` bytes, ``O(n^2)`` to
    ``O(n^3)`` time; ``benchmarks/bench_w2.py``). For ``n != m`` POT's network simplex
    (``n^2 log n`` to ``n^3``). :func:`coupling_squared` (an upper bound) and
    :func:`sliced_w2_squared` are cheaper.
    """
    xa, xb = _pair_of_clouds(a, b, "a", "b")
    return _w2_squared(xa, xb, positive_int(num_itermax, "num_itermax"))


def _coupling_squared(xa: np.ndarray, xb: np.ndarray, name_a: str, name_b: str) -> float:
    if xa.shape[0] != xb.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of particles for the natural "
            f"coupling, got {xa.shape[0]} and {xb.shape[0]}"
        )
    return float(np.mean(np.sum((xa - xb) ** 2, axis=1)))


def coupling_squared(a: Any, b: Any) -> float:
    """Squared cost of the natural coupling ``a_i <-> b_i``: an upper bound on ``W_2^2``.

    Parameters
    ----------
    a, b : array_like, shape (n, d) or (n,) or (n, ...)
        Two clouds with the same number of particles, the ``i``-th particle of one paired
        with the ``i``-th of the other (e.g. the SGD and Euler trajectories of the same
        initial particle). Higher-rank input is flattened per particle.

    Returns
    -------
    float
        ``(1/n) sum_i |a_i - b_i|^2``, which is ``>= w2_squared(a, b)``.

    Raises
    ------
    ValueError
        If the clouds are empty, non-finite, or differ in size or dimension.
    """
    xa, xb = _pair_of_clouds(a, b, "a", "b")
    return _coupling_squared(xa, xb, "a", "b")


def _sliced_w2_squared(xa: np.ndarray, xb: np.ndarray, n_projections: int, seed: int) -> float:
    # POT returns (mean over directions of W_2^2 of the projections)^(1/2); square it back.
    sw = _pot().sliced_wasserstein_distance(xa, xb, n_projections=n_projections, p=2, seed=seed)
    return float(sw) ** 2


def sliced_w2_squared(a: Any, b: Any, n_projections: int = 200, seed: int = 0) -> float:
    """Monte-Carlo sliced squared 2-Wasserstein distance (POT).

    ``SW_2^2(a, b) = E_u W_2^2(u . a, u . b)`` over directions ``u`` uniform on the unit
    sphere, estimated with ``n_projections`` random directions drawn from ``seed``.

    Parameters
    ----------
    a : array_like, shape (n, d) or (n,) or (n, ...)
        First cloud (flattened per particle as in :func:`w2_squared`).
    b : array_like, shape (m, d) or (m,) or (m, ...)
        Second cloud.
    n_projections : int, optional
        Number of random directions.
    seed : int, optional
        Seed of the directions: the same seed gives the same value.

    Returns
    -------
    float
        The estimate of ``SW_2^2``. It is at most ``W_2^2``; for a rigid shift by ``s`` its
        expectation is ``|s|^2 / d``.

    Raises
    ------
    ValueError
        On empty, non-finite or dimension-mismatched clouds, or ``n_projections < 1``.
    """
    xa, xb = _pair_of_clouds(a, b, "a", "b")
    return _sliced_w2_squared(xa, xb, positive_int(n_projections, "n_projections"), seed)


def _weighted_line(values: Any, weights: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(values, dtype=np.float64)
    if u.ndim != 1 or u.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if weights is None:
        return u, np.full(u.size, 1.0 / u.size)
    w = np.asarray(weights, dtype=np.float64)
    wname = f"{name.split('_')[0]}_weights"
    if w.shape != u.shape:
        raise ValueError(f"{wname} must have shape {u.shape} like {name}, got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{wname} must be finite, non-negative, with a positive sum")
    # POT integrates the quantile functions of the weights as given: normalise so that
    # unnormalised weights (counts, histogram heights) describe probability measures.
    return u, w / w.sum()


def _wasserstein_1d(u, v, u_weights, v_weights, p: int) -> float:
    uu, uw = _weighted_line(u, u_weights, "u_values")
    vv, vw = _weighted_line(v, v_weights, "v_values")
    # ot.wasserstein_1d returns W_p^p (the transport cost), not W_p.
    return max(float(_pot().wasserstein_1d(uu, vv, uw, vw, p=p)), 0.0)


def w1_1d(u: Any, v: Any, u_weights: Any = None, v_weights: Any = None) -> float:
    """1-Wasserstein distance between two weighted samples on the line.

    Parameters
    ----------
    u, v : array_like, shape (n,) and (m,)
        Support points.
    u_weights, v_weights : array_like, optional
        Non-negative weights (normalised to sum 1); uniform when omitted.

    Returns
    -------
    float
        ``W_1 = int_0^1 |F_u^{-1}(q) - F_v^{-1}(q)| dq``.

    Raises
    ------
    ValueError
        On empty, non-1-D or non-finite values, or invalid weights.
    """
    return _wasserstein_1d(u, v, u_weights, v_weights, p=1)


def w2_squared_1d(u: Any, v: Any, u_weights: Any = None, v_weights: Any = None) -> float:
    """Squared 2-Wasserstein distance between two weighted samples on the line.

    Parameters
    ----------
    u, v : array_like, shape (n,) and (m,)
        Support points.
    u_weights, v_weights : array_like, optional
        Non-negative weights (normalised to sum 1); uniform when omitted.

    Returns
    -------
    float
        ``W_2^2 = int_0^1 |F_u^{-1}(q) - F_v^{-1}(q)|^2 dq`` (squared). For uniform clouds it
        equals :func:`w2_squared` on the same points, at ``O(n log n)`` cost.

    Raises
    ------
    ValueError
        On empty, non-1-D or non-finite values, or invalid weights.
    """
    return _wasserstein_1d(u, v, u_weights, v_weights, p=2)


_PAIR_METHODS = ("exact", "coupling", "sliced")


def pair_distance(
    theta_a: Any,
    omega_a: Any,
    theta_b: Any,
    omega_b: Any,
    method: str = "exact",
    *,
    n_projections: int = 200,
    seed: int = 0,
    num_itermax: int = DEFAULT_NUM_ITERMAX,
) -> float:
    """Squared distance ``d_2^2`` between two generator/critic pairs (MODEL.md section 4.1).

    ``d_2^2((mu_a, nu_a), (mu_b, nu_b)) = W_2^2(mu_a, mu_b) + W_2^2(nu_a, nu_b)`` with the
    particles' flattened coordinates as points.

    Parameters
    ----------
    theta_a, theta_b : array_like, shape (N, K, L+2)
        Generator particles (any shape ``(N, ...)``; flattened per particle).
    omega_a, omega_b : array_like, shape (M, K+2)
        Critic particles.
    method : {"exact", "coupling", "sliced"}, optional
        ``"exact"``: :func:`w2_squared` on both measures; ``"coupling"``:
        :func:`coupling_squared` (an upper bound, needs particle ``i`` of ``a`` paired with
        particle ``i`` of ``b``); ``"sliced"``: :func:`sliced_w2_squared` (a lower bound for
        any set of directions, cheap for large clouds).
    n_projections, seed : int, optional
        Used by ``method="sliced"`` only.
    num_itermax : int, optional
        Used by ``method="exact"`` only.

    Returns
    -------
    float
        The sum of the generator and critic terms.

    Raises
    ------
    ValueError
        On an unknown ``method`` or invalid particle arrays (the message names the argument).
    """
    if method not in _PAIR_METHODS:
        raise ValueError(f"method must be one of {_PAIR_METHODS}, got {method!r}")
    ta, tb = _pair_of_clouds(theta_a, theta_b, "theta_a", "theta_b")
    oa, ob = _pair_of_clouds(omega_a, omega_b, "omega_a", "omega_b")
    if method == "exact":
        itermax = positive_int(num_itermax, "num_itermax")
        return _w2_squared(ta, tb, itermax) + _w2_squared(oa, ob, itermax)
    if method == "coupling":
        return _coupling_squared(ta, tb, "theta_a", "theta_b") + _coupling_squared(
            oa, ob, "omega_a", "omega_b"
        )
    n_proj = positive_int(n_projections, "n_projections")
    return _sliced_w2_squared(ta, tb, n_proj, seed) + _sliced_w2_squared(oa, ob, n_proj, seed)


# The coagulation diagnostics live in their own module; mfg.metrics.coagulation is the API.
from .coagulation import coagulation, coagulation_series, coagulation_time  # noqa: E402
