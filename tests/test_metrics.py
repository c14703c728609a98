"""Tests of meanfield_gan.metrics: Wasserstein distances and critic coagulation diagnostics."""
from __future__ import annotations

import math
import os

import numpy as np
import ot
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist, pdist, squareform

from meanfield_gan import coagulation as _coag
from meanfield_gan import metrics


def _cloud(seed: int, n: int, d: int, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).normal(size=(n, d))


def _brute_clusters(x: np.ndarray, tol: float) -> int:
    """Naive reference: components of the full M x M 'distance <= tol' graph."""
    adj = squareform(pdist(x)) <= tol
    return int(connected_components(coo_matrix(adj), directed=False)[0])


# ------------------------------------------------------------------------------------------
# exact W_2
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 3, 7])
def test_w2_of_a_rigid_shift_is_the_shift_length_squared(d):
    # Any permutation costs (1/n) sum |a_i - a_s(i)|^2 + |s|^2 >= |s|^2: identity is optimal.
    a = _cloud(0, 60, d)
    s = np.linspace(0.3, -0.7, d)
    assert metrics.w2_squared(a, a + s) == pytest.approx(float(s @ s), rel=1e-10)


def test_w2_in_one_dimension_matches_the_sorted_formula():
    rng = np.random.default_rng(1)
    a = rng.normal(size=80)
    b = rng.standard_t(3, size=80) + 0.5
    expected = np.mean((np.sort(a) - np.sort(b)) ** 2)
    assert metrics.w2_squared(a, b) == pytest.approx(expected, rel=1e-10)
    assert metrics.w2_squared(a[:, None], b[:, None]) == pytest.approx(expected, rel=1e-10)


def test_w2_is_invariant_under_relabelling_particles():
    a, b = _cloud(2, 50, 3), _cloud(3, 50, 3) + 1.0
    rng = np.random.default_rng(4)
    base = metrics.w2_squared(a, b)
    permuted = metrics.w2_squared(a[rng.permutation(50)], b[rng.permutation(50)])
    assert permuted == pytest.approx(base, rel=1e-12)
    assert metrics.w2_squared(b, a) == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_w2_never_exceeds_the_natural_coupling(seed):
    a, b = _cloud(10 + seed, 40, 4), _cloud(20 + seed, 40, 4, scale=2.0)
    w2 = metrics.w2_squared(a, b)
    coupling = metrics.coupling_squared(a, b)
    assert coupling == pytest.approx(np.mean(np.sum((a - b) ** 2, axis=1)), rel=1e-14)
    # Independent random clouds: the identity pairing is far from optimal.
    assert 0 < w2 < coupling


def test_w2_between_clouds_of_different_sizes():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=17), rng.exponential(size=29)
    # On the line the quantile formula handles unequal sizes: it is the reference here.
    assert metrics.w2_squared(a, b) == pytest.approx(metrics.w2_squared_1d(a, b), rel=1e-10)
    # A cloud against itself with every point duplicated is the same measure.
    x = _cloud(6, 12, 3)
    assert metrics.w2_squared(x, np.concatenate([x, x[::-1]])) == pytest.approx(0, abs=1e-14)


def test_w2_against_a_single_dirac_is_the_mean_squared_distance():
    b = _cloud(7, 30, 2)
    p = np.array([[0.5, -1.0]])
    assert metrics.w2_squared(p, b) == pytest.approx(np.mean(np.sum((b - p) ** 2, axis=1)))


def test_w2_flattens_generator_particle_arrays():
    rng = np.random.default_rng(8)
    n, k, l_plus_2 = 25, 2, 4
    theta_a = rng.normal(size=(n, k, l_plus_2))
    theta_b = rng.normal(size=(n, k, l_plus_2))
    flat = metrics.w2_squared(theta_a.reshape(n, -1), theta_b.reshape(n, -1))
    assert metrics.w2_squared(theta_a, theta_b) == pytest.approx(flat, rel=1e-12)
    shift = rng.normal(size=(k, l_plus_2))
    assert metrics.w2_squared(theta_a, theta_a + shift) == pytest.approx(np.sum(shift**2))
    assert metrics.flatten_particles(theta_a).shape == (n, k * l_plus_2)


def test_w2_resolves_tiny_distances_between_far_from_origin_clouds():
    # |a|^2 + |b|^2 - 2ab would lose ~1e-10 here to cancellation, 100x the distance itself.
    a = 1e3 + _cloud(9, 30, 3)
    s = np.array([1e-6, -2e-6, 0.5e-6])
    assert metrics.w2_squared(a, a + s) == pytest.approx(float(s @ s), rel=1e-6)


def test_w2_raises_when_the_simplex_stops_early():
    # Unequal sizes: the network simplex (equal sizes never reach it).
    a, b = _cloud(11, 200, 3), _cloud(12, 210, 3)
    with pytest.raises(RuntimeError, match="num_itermax"):
        metrics.w2_squared(a, b, num_itermax=10)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((0, 2)), np.zeros((3, 2)), "^a must contain at least one particle"),
        (np.zeros((3, 2)), np.zeros((3, 3)), "a and b must have the same particle dimension"),
        (np.array([[0.0, np.nan]]), np.zeros((3, 2)), "^a contains non-finite"),
        (np.zeros((3, 2)), np.array([[np.inf, 0.0]]), "^b contains non-finite"),
        (np.zeros((3, 2)), 1.0, "^b must be an array of particles"),
        (np.full((3, 2), 1e200), np.zeros((3, 2)), "^a and b have coordinates .* overflow"),
    ],
)
def test_w2_validates_its_inputs(a, b, match):
    with pytest.raises(ValueError, match=match):
        metrics.w2_squared(a, b)


def test_coupling_needs_equal_sizes_and_num_itermax_positive():
    with pytest.raises(ValueError, match="same number of particles"):
        metrics.coupling_squared(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="num_itermax"):
        metrics.w2_squared(np.zeros((3, 2)), np.ones((3, 2)), num_itermax=0)


# ------------------------------------------------------------------------------------------
# exact W_2 against ot.emd2: every route (sorting, identity certificate, assignment, POT)
# ------------------------------------------------------------------------------------------
def _emd2(a, b) -> float:
    """ot.emd2 on an accurately computed squared-distance matrix (cdist sums squared
    differences; ot.dist's |a|^2 + |b|^2 - 2ab would lose nearly matched clouds to rounding)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    cost = cdist(a, b, "sqeuclidean")
    wa, wb = np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b))
    return float(ot.emd2(wa, wb, cost, numItermax=10_000_000))


def _assert_emd2(a, b):
    value, expected = metrics.w2_squared(a, b), _emd2(a, b)
    assert value == pytest.approx(expected, rel=1e-12, abs=0.0)
    return value


@pytest.fixture
def no_cost_matrix(monkeypatch):
    """Fail if the n x n cost matrix is built: the route must be sorting or the certificate
    (which may compute up to 64 rows of it)."""
    build = metrics._sq_euclidean_cost

    def refuse(xa, xb):
        assert xa.shape[0] <= 64, "the dense cost matrix was built"
        return build(xa, xb)
    monkeypatch.setattr(metrics, "_sq_euclidean_cost", refuse)


@pytest.fixture
def pot_calls(monkeypatch):
    """Count the imports of POT through metrics._pot (every POT route goes through it)."""
    calls = []

    def counting():
        calls.append(1)
        return ot
    monkeypatch.setattr(metrics, "_pot", counting)
    return calls


@pytest.mark.parametrize("d", [1, 2, 3, 12])
@pytest.mark.parametrize("n", [2, 3, 57, 300])
def test_w2_matches_emd2_on_independent_clouds(d, n, pot_calls):
    rng = np.random.default_rng(1000 * d + n)
    a = rng.normal(size=(n, d))
    b = rng.standard_t(4, size=(n, d)) * 1.5 + 0.2
    value = _assert_emd2(a, b)
    if n > 3:
        assert value < metrics.coupling_squared(a, b)  # the identity is not optimal here
    assert pot_calls == []  # equal sizes never need POT


@pytest.mark.parametrize("d", [1, 3, 12])
@pytest.mark.parametrize("noise", [1e-3, 1e-9])
def test_w2_of_nearly_matched_clouds_is_certified_without_the_matrix(d, noise, no_cost_matrix):
    rng = np.random.default_rng(30 + d)
    a = 2.0 + rng.normal(size=(400, d))
    b = a + noise * rng.normal(size=(400, d))
    value = _assert_emd2(a, b)
    if d > 1:  # the certificate's answer is the identity's cost
        assert value == pytest.approx(np.mean(np.sum((a - b) ** 2, axis=1)), rel=1e-14)


@pytest.mark.parametrize("d", [2, 3, 12])
@pytest.mark.parametrize("noise", [1e-3, 1e-7])
def test_w2_of_nearly_matched_clouds_in_another_order(d, noise):
    # Same clouds, b shuffled: the certificate fails fast and the assignment solver recovers
    # the hidden pairing, although its reduced costs of order |a|^2 round at 1e-16 |a|^2,
    # a millionth of the matched costs when noise = 1e-7.
    rng = np.random.default_rng(40 + d)
    a = 3.0 + rng.normal(size=(300, d))
    perm = rng.permutation(300)
    b = (a + noise * rng.normal(size=a.shape))[perm]
    value = _assert_emd2(a, b)
    assert value == pytest.approx(metrics.coupling_squared(a[perm], b), rel=1e-12)


def _degenerate_clouds(d):
    rng = np.random.default_rng(50 + d)
    few = rng.normal(size=(4, d))
    pts = rng.normal(size=(20, d))
    p, q = rng.normal(size=(2, d))
    return {
        "repeated points": (few[rng.integers(0, 4, 30)], few[rng.integers(0, 4, 30)] + 0.1),
        "repeated against distinct": (few[rng.integers(0, 4, 30)], rng.normal(size=(30, d))),
        "same repeated points": (few[np.arange(30) % 4], few[np.arange(30) % 4]),
        "same points in another order": (pts, pts[rng.permutation(20)]),
        "some coincident points": (pts, np.concatenate([pts[:10], rng.normal(size=(10, d))])),
        "all points equal": (np.tile(p, (25, 1)), np.tile(q, (25, 1))),
        "all points equal, same point": (np.tile(p, (25, 1)), np.tile(p, (25, 1))),
        "one point": (p[None], q[None]),
        "one point, same point": (p[None], p[None]),
        "two points": (pts[:2], pts[2:4]),
        "two points swapped": (pts[:2], pts[1::-1] + 1e-6),
        "two equal points": (np.tile(p, (2, 1)), pts[:2]),
        "integer grid with many ties": (rng.integers(0, 3, (40, d)).astype(float),
                                        rng.integers(0, 3, (40, d)).astype(float)),
    }


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("case", list(_degenerate_clouds(1)))
def test_w2_matches_emd2_on_degenerate_clouds(d, case):
    a, b = _degenerate_clouds(d)[case]
    value = _assert_emd2(a, b)
    if case in ("same repeated points", "same points in another order",
                "all points equal, same point", "one point, same point"):
        assert value == 0.0
    if case.startswith("all points equal") or case.startswith("one point"):
        assert value == pytest.approx(np.sum((a[0] - b[0]) ** 2), rel=1e-15)
    if d == 1:  # 1-D input as a flat array is the same cloud
        assert metrics.w2_squared(a[:, 0], b[:, 0]) == value


def test_unequal_sizes_still_go_through_pot(pot_calls):
    rng = np.random.default_rng(60)
    for d in (1, 3):
        a, b = rng.normal(size=(37, d)), rng.normal(size=(52, d)) + 0.5
        _assert_emd2(a, b)
    assert len(pot_calls) == 2


def test_certificate_rejects_a_near_tie_that_breaks_the_identity():
    # Each a_i's nearest point is b_i up to 2e-10 relative, inside the k-d tree margin, so
    # the exact comparison decides: swapping saves 2e-9 of 82, 2.4e-11 relative.
    a = np.array([[0.0, 0.0], [10.0, 0.0]])
    b = np.array([[1.0, 0.0], [1.0 - 1e-9, 0.0]])
    identity = metrics.coupling_squared(a, b)
    value = _assert_emd2(a, b)
    assert value < identity * (1 - 1e-11)
    own = metrics._sq_distances(a, b)
    assert not metrics._identity_is_optimal(a, b, own)


def test_certificate_settles_exact_ties_without_the_matrix(no_cost_matrix):
    # b_0 = b_1: both rows tie, so both go to the exact comparison, which passes.
    a = np.array([[0.0, 0.0, 0.0], [0.0, 1e-3, 0.0], [5.0, 5.0, 5.0]])
    b = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.5]])
    assert _assert_emd2(a, b) == pytest.approx((1 + (1 + 1e-6) + 0.25) / 3, rel=1e-15)


@pytest.mark.parametrize("seed", range(40))
def test_certificate_agrees_with_the_brute_force_dual_check(seed):
    # Small grids give exact ties and equidistant points; the certificate must answer
    # "identity optimal by the row-minimum dual" exactly as the full matrix does (no size
    # cap is reached below 16 points), and never claim optimality that is not there.
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 17)), int(rng.integers(2, 5))
    a = rng.integers(-2, 3, size=(n, d)).astype(float)
    b = a + rng.integers(-1, 2, size=(n, d)) * rng.choice([0.5, 1.0, 2.0])
    cost = metrics._sq_euclidean_cost(a, b)
    brute = bool(np.all(np.diag(cost) <= cost.min(axis=1)))
    own = metrics._sq_distances(a, b)
    assert metrics._identity_is_optimal(a, b, own) == brute
    if brute:
        assert metrics.w2_squared(a, b) == pytest.approx(np.mean(own), rel=1e-15)
    _assert_emd2(a, b)


def test_row_distances_are_bitwise_the_matrix_entries(monkeypatch):
    # The certificate compares C_ij from _sq_distances with C_ii exactly: the two must be
    # the same floating-point numbers as the matrix that emd2 / the assignment would see.
    monkeypatch.setattr(metrics, "_COST_BLOCK", 7 * 23)  # several row blocks, a short last one
    rng = np.random.default_rng(70)
    a = 1e3 + rng.normal(size=(45, 5)) * rng.uniform(1e-6, 1, size=5)
    b = a + rng.normal(size=(45, 5)) * 1e-4
    cost = metrics._sq_euclidean_cost(a, b)
    np.testing.assert_array_equal(np.diag(cost), metrics._sq_distances(a, b))
    i, j = rng.integers(0, 45, size=(2, 200))
    np.testing.assert_array_equal(cost[i, j], metrics._sq_distances(a[i], b[j]))
    np.testing.assert_allclose(cost, cdist(a, b, "sqeuclidean"), rtol=1e-12, atol=0)


def test_pot_functions_leave_the_environment_alone(monkeypatch):
    # POT reads these when it is imported: setting them would disable its torch/jax
    # backends for the user's own POT calls later in the process.
    for backend in ("PYTORCH", "JAX", "TENSORFLOW", "CUPY"):
        monkeypatch.delenv(f"POT_BACKEND_DISABLE_{backend}", raising=False)
    before = dict(os.environ)
    rng = np.random.default_rng(80)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(25, 3))
    metrics.w2_squared(a, b)
    metrics.sliced_w2_squared(a, b, n_projections=10)
    metrics.w1_1d(a[:, 0], b[:, 0])
    assert dict(os.environ) == before


# ------------------------------------------------------------------------------------------
# sliced and 1-D distances
# ------------------------------------------------------------------------------------------
def test_sliced_w2_of_a_shift_averages_the_projected_shift():
    # Each direction u sees a 1-D shift by u.s, so SW_2^2 = mean_u (u.s)^2 -> |s|^2 / d.
    d = 3
    a = _cloud(13, 100, d)
    s = np.array([1.0, -2.0, 0.5])
    value = metrics.sliced_w2_squared(a, a + s, n_projections=4000, seed=1)
    assert value == pytest.approx(float(s @ s) / d, rel=0.05)


def test_sliced_w2_is_deterministic_and_below_exact_w2():
    a, b = _cloud(14, 60, 4), _cloud(15, 60, 4, scale=1.5) + 0.3
    first = metrics.sliced_w2_squared(a, b, n_projections=100, seed=3)
    assert metrics.sliced_w2_squared(a, b, n_projections=100, seed=3) == first
    assert metrics.sliced_w2_squared(a, b, n_projections=100, seed=4) != first
    # Projection is 1-Lipschitz, so every projected W_2^2 is at most the full one.
    assert 0 < first <= metrics.w2_squared(a, b)
    with pytest.raises(ValueError, match="n_projections"):
        metrics.sliced_w2_squared(a, b, n_projections=0)


def test_one_dimensional_distances_between_diracs_and_weighted_samples():
    assert metrics.w1_1d([0.0], [3.0]) == pytest.approx(3.0)
    assert metrics.w2_squared_1d([0.0], [3.0]) == pytest.approx(9.0)
    # Mass 3/4 at 1 must move to 0; weights are normalised (1, 3) -> (1/4, 3/4).
    assert metrics.w1_1d([0.0, 1.0], [0.0], u_weights=[1, 3]) == pytest.approx(0.75)
    assert metrics.w2_squared_1d([0.0, 1.0], [0.0], u_weights=[1, 3]) == pytest.approx(0.75)
    # Two Diracs against two Diracs: the monotone coupling.
    assert metrics.w1_1d([0.0, 10.0], [1.0, 12.0]) == pytest.approx(1.5)


def test_w2_squared_1d_agrees_with_exact_w2_on_uniform_clouds():
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=23), rng.uniform(-1, 3, size=23)
    assert metrics.w2_squared_1d(a, b) == pytest.approx(metrics.w2_squared(a, b), rel=1e-10)


def test_one_dimensional_validation():
    with pytest.raises(ValueError, match="u_values must be a non-empty 1-D"):
        metrics.w1_1d(np.zeros((2, 2)), [0.0])
    with pytest.raises(ValueError, match="v_weights"):
        metrics.w2_squared_1d([0.0], [1.0, 2.0], v_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="u_weights must have shape"):
        metrics.w1_1d([0.0, 1.0], [1.0], u_weights=[1.0])


# ------------------------------------------------------------------------------------------
# the pair distance d_2^2
# ------------------------------------------------------------------------------------------
def test_pair_distance_adds_generator_and_critic_terms():
    rng = np.random.default_rng(17)
    theta_a, theta_b = rng.normal(size=(2, 30, 2, 3))
    omega_a, omega_b = rng.uniform(-1, 1, size=(2, 20, 4))
    exact = metrics.pair_distance(theta_a, omega_a, theta_b, omega_b)
    expected = metrics.w2_squared(theta_a.reshape(30, -1), theta_b.reshape(30, -1))
    expected += metrics.w2_squared(omega_a, omega_b)
    assert exact == pytest.approx(expected, rel=1e-12)
    coupling = metrics.pair_distance(theta_a, omega_a, theta_b, omega_b, method="coupling")
    sliced = metrics.pair_distance(theta_a, omega_a, theta_b, omega_b, method="sliced")
    assert sliced <= exact <= coupling
    with pytest.raises(ValueError, match="method"):
        metrics.pair_distance(theta_a, omega_a, theta_b, omega_b, method="sinkhorn")
    with pytest.raises(ValueError, match="omega_a and omega_b"):
        metrics.pair_distance(theta_a, omega_a, theta_b, omega_b[:, :3])


# ------------------------------------------------------------------------------------------
# coagulation
# ------------------------------------------------------------------------------------------
def test_all_particles_at_one_corner():
    clip = 2.0
    corner = np.array([clip, -clip, clip, -clip])
    diag = metrics.coagulation(np.tile(corner, (50, 1)), clip)
    assert diag["corner_fraction"] == 1.0
    assert diag["boundary_fraction"] == 1.0
    assert diag["n_clusters"] == 1
    assert diag["n_distinct"] == 1
    assert diag["spread"] == 0.0
    assert diag["dirac_distance"] == 0.0
    assert diag["effective_dimension"] == 0
    np.testing.assert_array_equal(diag["face_fractions"], [[0, 1], [1, 0], [0, 1], [1, 0]])


def test_interior_particles_touch_no_face():
    rng = np.random.default_rng(18)
    omega = rng.uniform(-0.5, 0.5, size=(200, 3))
    diag = metrics.coagulation(omega, clip=1.0)
    assert diag["boundary_fraction"] == 0.0
    assert diag["corner_fraction"] == 0.0
    assert diag["n_distinct"] == 200
    assert diag["n_clusters"] == 200
    assert diag["effective_dimension"] == 3
    assert np.all(diag["face_fractions"] == 0)


def test_two_tight_clusters_of_distinct_particles():
    rng = np.random.default_rng(19)
    centres = np.array([[0.2, -0.3, 0.1], [-0.4, 0.5, 0.0]])
    omega = centres[np.arange(40) % 2] + 1e-9 * rng.normal(size=(40, 3))
    diag = metrics.coagulation(omega, clip=1.0)  # default tol 1e-6 links each cluster
    assert diag["n_distinct"] == 40
    assert diag["n_clusters"] == 2
    assert diag["effective_dimension"] == 1  # two points span a line
    # Half the mass at each of two points: the nearest Dirac sits at the midpoint.
    half = 0.5 * np.linalg.norm(centres[0] - centres[1])
    assert diag["spread"] == pytest.approx(half, rel=1e-6)
    assert metrics.coagulation(omega, clip=1.0, tol=0)["n_clusters"] == 40


def test_mixed_configuration_fractions():
    clip = 1.0
    rng = np.random.default_rng(20)
    corner = np.tile([1.0, 1.0, -1.0], (10, 1))
    face = rng.uniform(-0.5, 0.5, size=(5, 3))
    face[:, 1] = -clip
    interior = rng.uniform(-0.5, 0.5, size=(5, 3))
    omega = np.concatenate([corner, face, interior])
    diag = metrics.coagulation(omega, clip)
    assert diag["boundary_fraction"] == pytest.approx(0.75)
    assert diag["corner_fraction"] == pytest.approx(0.5)
    assert diag["n_distinct"] == 11
    assert diag["n_clusters"] == 11
    np.testing.assert_allclose(diag["face_fractions"], [[0, 0.5], [0.25, 0.5], [0.5, 0]])


def test_boundary_tolerance_and_signed_zeros():
    clip = 1.0
    omega = np.array([[clip - 1e-14, 0.0], [clip - 1e-9, -0.0], [0.3, 0.0]])
    diag = metrics.coagulation(omega, clip)
    assert diag["boundary_fraction"] == pytest.approx(1 / 3)
    # Only the first row is within the default atol = 1e-12 * clip of the face.
    assert metrics.coagulation(np.array([[0.0, 0.5], [-0.0, 0.5]]), clip)["n_distinct"] == 1


def test_dirac_distance_is_w2_to_the_mean():
    omega = np.random.default_rng(21).uniform(-1, 1, size=(40, 4))
    diag = metrics.coagulation(omega, clip=1.0)
    to_mean = math.sqrt(metrics.w2_squared(omega, omega.mean(axis=0, keepdims=True)))
    assert diag["dirac_distance"] == pytest.approx(to_mean, rel=1e-12)
    assert diag["spread"] == diag["dirac_distance"]


def test_clusters_chain_through_close_neighbours():
    tol = 1e-3
    line = np.zeros((30, 3))
    line[:, 0] = 0.6 * tol * np.arange(30)  # ends 17 tol apart, linked step by step
    assert metrics.coagulation(line, clip=1.0, tol=tol)["n_clusters"] == 1
    line[:, 0] = 1.5 * tol * np.arange(30)
    assert metrics.coagulation(line, clip=1.0, tol=tol)["n_clusters"] == 30


@pytest.mark.parametrize("seed", range(6))
def test_cluster_count_matches_the_naive_all_pairs_graph(seed):
    # Dense clumps (hundreds of distinct particles within a few tol) exercise the
    # saturated-neighbour path; scattered points exercise the sparse one.
    rng = np.random.default_rng(100 + seed)
    tol = 0.05
    centres = rng.uniform(-1, 1, size=(rng.integers(2, 6), 3))
    which = rng.integers(0, len(centres), size=400)
    omega = centres[which] + rng.normal(size=(400, 3)) * rng.choice([0.01, 0.03, 0.08])
    omega = np.concatenate([omega, rng.uniform(-1, 1, size=(100, 3))])
    omega = np.clip(omega, -1, 1)
    unique = np.unique(omega, axis=0)
    expected = _brute_clusters(unique, tol)
    assert metrics.coagulation(omega, clip=1.0, tol=tol)["n_clusters"] == expected
    # With 1 or 2 neighbours per point the nearest-neighbour graph alone misses links
    # (checked: it over-counts on these data); the saturated-group pass must restore them.
    for k in (1, 2):
        assert _coag._count_clusters(unique, tol, k=k) == expected


def test_coagulation_validates_inputs():
    with pytest.raises(ValueError, match="clip must be > 0"):
        metrics.coagulation(np.zeros((3, 3)), clip=0.0)
    with pytest.raises(ValueError, match="clip must be > 0"):
        metrics.coagulation(np.zeros((3, 3)), clip=-1.0)
    with pytest.raises(ValueError, match="atol"):
        metrics.coagulation(np.zeros((3, 3)), clip=1.0, atol=-1e-9)
    with pytest.raises(ValueError, match="omega must have shape"):
        metrics.coagulation(np.zeros(3), clip=1.0)
    with pytest.raises(ValueError, match="omega contains non-finite"):
        metrics.coagulation(np.array([[0.0, np.nan, 0.0]]), clip=1.0)
    with pytest.raises(ValueError, match="tol"):
        metrics.coagulation(np.zeros((3, 3)), clip=1.0, tol=-1.0)


def _merging_series(clip: float = 1.0):
    """Critic particles sliding to a corner; within 1e-9 at step 3, identical from step 4."""
    rng = np.random.default_rng(22)
    start = rng.uniform(-0.5, 0.5, size=(20, 3))
    corner = np.array([clip, -clip, clip])
    times = np.linspace(0.0, 2.5, 6)
    weights = [0.0, 0.5, 0.9, 1.0 - 1e-9, 1.0, 1.0]
    omegas = np.stack([(1 - w) * start + w * corner for w in weights])
    omegas[4:] = corner  # exactly merged, as clipping leaves them
    return times, omegas


def test_coagulation_time_finds_the_first_merge():
    times, omegas = _merging_series()
    assert metrics.coagulation_time(times, omegas, clip=1.0) == times[3]
    assert metrics.coagulation_time(times, omegas, clip=1.0, tol=0) == times[4]
    assert metrics.coagulation_time(times[:3], omegas[:3], clip=1.0) is None
    assert metrics.coagulation_time(times, list(omegas), clip=1.0) == times[3]


def test_coagulation_series_lists_the_diagnostics():
    times, omegas = _merging_series()
    series = metrics.coagulation_series(times, omegas, clip=1.0)
    assert series["times"] == list(times)
    assert series["n_distinct"] == [20, 20, 20, 20, 1, 1]
    assert series["n_clusters"] == [20, 20, 20, 1, 1, 1]
    assert series["boundary_fraction"] == [0, 0, 0, 0, 1, 1]
    assert series["corner_fraction"][-1] == 1.0
    assert series["spread"][0] > series["spread"][1] > series["spread"][2] > 0
    assert series["spread"][-1] == 0.0
    assert series["t0"] == times[3]
    with pytest.raises(ValueError, match="one critic array per time"):
        metrics.coagulation_series(times[:-1], omegas, clip=1.0)
    bad = omegas.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"omegas\[2\]"):
        metrics.coagulation_time(times, bad, clip=1.0)


def test_coagulation_without_a_box():
    """``clip = inf``: no faces, clusters and spread as usual."""
    om = np.array([[0.0, 1e3, -2.0], [0.0, 1e3, -2.0], [5.0, 0.0, 0.0]])
    d = metrics.coagulation(om, clip=np.inf)
    assert d["boundary_fraction"] == 0.0 and d["corner_fraction"] == 0.0
    assert d["n_distinct"] == 2 and d["n_clusters"] == 2
    s = metrics.coagulation_series([0.0, 1.0], [om, om[:2]], clip=None)
    assert s["n_clusters"] == [2, 1] and s["t0"] == 1.0
