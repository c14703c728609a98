"""The velocity fields of MODEL.md section 2: gradient identities, engines, projection."""
from __future__ import annotations

import numpy as np
import pytest

import meanfield_gan as mfg

DIMS = [(1, 1), (2, 1), (1, 3), (3, 2)]


def _energy(theta, omega, quad):
    return mfg.energy(theta, omega, *quad, backend="numpy")


@pytest.mark.parametrize("K,L", DIMS)
def test_velocities_are_scaled_gradients_of_the_energy(backend, make_config, K, L):
    """``V_theta(theta_i) = -N dPsi/dtheta_i`` and ``V_omega(omega_j) = M dPsi/domega_j``.

    Central differences of the NumPy energy in every coordinate of every particle; critic
    particles stay inside Q (Psi is smooth in omega everywhere, the box plays no role here).
    """
    N, M = 4, 3
    theta, omega, *quad = make_config(10 * K + L, K, L, N, M, Bz=7, Bx=5, boundary=False)
    v_theta, v_omega = mfg.velocity(theta, omega, *quad, backend=backend)
    h = 1e-5
    fd_theta = np.empty_like(theta)
    for idx in np.ndindex(theta.shape):
        tp, tm = theta.copy(), theta.copy()
        tp[idx] += h
        tm[idx] -= h
        fd_theta[idx] = (_energy(tp, omega, quad) - _energy(tm, omega, quad)) / (2 * h)
    fd_omega = np.empty_like(omega)
    for idx in np.ndindex(omega.shape):
        op, om = omega.copy(), omega.copy()
        op[idx] += h
        om[idx] -= h
        fd_omega[idx] = (_energy(theta, op, quad) - _energy(theta, om, quad)) / (2 * h)
    # Truncation error ~h^2 and rounding ~1e-16/h, times N or M: far below 1e-7.
    np.testing.assert_allclose(v_theta, -N * fd_theta, rtol=0, atol=1e-7)
    np.testing.assert_allclose(v_omega, M * fd_omega, rtol=0, atol=1e-7)
    # The identity is not trivially satisfied by zeros.
    assert np.abs(v_theta).max() > 1e-3 and np.abs(v_omega).max() > 1e-3


@pytest.mark.parametrize("K,L", DIMS)
@pytest.mark.parametrize("N,M,Bz,Bx", [(1, 1, 1, 1), (5, 7, 9, 4), (130, 67, 33, 70)])
def test_engine_velocity_matches_reference(engine, make_config, K, L, N, M, Bz, Bx):
    """Fast engines equal the NumPy reference to 1e-12 (sizes cross the particle chunks)."""
    theta, omega, *quad = make_config(N + M + K, K, L, N, M, Bz, Bx)
    ref_t, ref_o = mfg.velocity(theta, omega, *quad, backend="numpy")
    v_t, v_o = mfg.velocity(theta, omega, *quad, backend=engine)
    assert v_t.shape == theta.shape and v_o.shape == omega.shape
    np.testing.assert_allclose(v_t, ref_t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v_o, ref_o, rtol=0, atol=1e-12)


@pytest.mark.parametrize("K,L", [(1, 1), (2, 2), (1, 2), (2, 1)])
@pytest.mark.parametrize("B", [3, 4, 7, 8, 11, 12, 16, 21])
def test_numba_node_blocks_match_reference(make_config, K, L, B):
    """The Numba kernels take nodes in blocks of eight, the last one zero-padded when four or
    more nodes are left and one node at a time otherwise; particles are zero-padded to a
    multiple of eight.  Every split agrees with the reference."""
    theta, omega, *quad = make_config(B + 7 * K + L, K, L, 17, 13, B, B + 1)
    ref_t, ref_o = mfg.velocity(theta, omega, *quad, backend="numpy")
    v_t, v_o = mfg.velocity(theta, omega, *quad, backend="numba")
    np.testing.assert_allclose(v_t, ref_t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v_o, ref_o, rtol=0, atol=1e-12)


@pytest.mark.parametrize("K,L", DIMS)
def test_engine_energy_matches_reference(make_config, K, L):
    theta, omega, *quad = make_config(3, K, L, 70, 45, 20, 11)
    ref = mfg.energy(theta, omega, *quad, backend="numpy")
    assert mfg.energy(theta, omega, *quad, backend="numba") == pytest.approx(ref, abs=1e-12)


def test_reference_velocity_by_hand_single_particles():
    """K = L = 1, N = M = 1, one node each: the formulas of MODEL.md section 2 written out."""
    a, b, c = 0.7, -1.3, 0.4
    alpha, beta, gamma = 0.6, -0.8, 0.25
    z, x = 0.9, -0.5
    s = lambda u: 1.0 / (1.0 + np.exp(-u))  # noqa: E731
    ds = lambda u: s(u) * (1.0 - s(u))  # noqa: E731
    g = a * s(b * z + c)
    ug, ux = beta * g + gamma, beta * x + gamma
    h = alpha * ds(ug) * beta
    expect_t = -np.array([h * s(b * z + c), h * a * ds(b * z + c) * z, h * a * ds(b * z + c)])
    expect_o = np.array([s(ug) - s(ux), alpha * (ds(ug) * g - ds(ux) * x),
                         alpha * (ds(ug) - ds(ux))])
    args = (np.array([[[a, b, c]]]), np.array([[alpha, beta, gamma]]), [[z]], [1.0], [[x]], [1.0])
    for backend in ("numpy", "numba"):
        v_t, v_o = mfg.velocity(*args, backend=backend)
        np.testing.assert_allclose(v_t[0, 0], expect_t, rtol=1e-14, atol=1e-16)
        np.testing.assert_allclose(v_o[0], expect_o, rtol=1e-14, atol=1e-16)


def test_velocity_is_equivariant_under_particle_permutations(backend, make_config):
    """The networks depend on the empirical measures only.

    Permuting the particles permutes their velocities.
    """
    theta, omega, *quad = make_config(5, 2, 2, 23, 17, 8, 6)
    v_t, v_o = mfg.velocity(theta, omega, *quad, backend=backend)
    pi, rho = np.random.default_rng(1).permutation(23), np.random.default_rng(2).permutation(17)
    w_t, w_o = mfg.velocity(theta[pi], omega[rho], *quad, backend=backend)
    np.testing.assert_allclose(w_t, v_t[pi], rtol=0, atol=1e-14)
    np.testing.assert_allclose(w_o, v_o[rho], rtol=0, atol=1e-14)


def test_coincident_particles_get_bitwise_equal_velocities(backend, make_config):
    """Same inputs, same arithmetic: the particle's index must not change a single bit."""
    theta, omega, *quad = make_config(8, 2, 1, 70, 70, 13, 9)
    omega[-1] = omega[0]
    theta[-1] = theta[0]
    v_t, v_o = mfg.velocity(theta, omega, *quad, backend=backend)
    assert np.array_equal(v_o[0], v_o[-1])
    assert np.array_equal(v_t[0], v_t[-1])


def test_velocity_does_not_modify_inputs(backend, make_config):
    args = make_config(4, 1, 2, 9, 8, 5, 5)
    copies = [np.copy(a) for a in args]
    mfg.velocity(*args, backend=backend)
    for a, c in zip(args, copies):
        assert np.array_equal(a, c)


# ------------------------------------------------------------------------------------------
# Tangent-cone projection
# ------------------------------------------------------------------------------------------
def test_projection_hand_made_boundary_cases():
    clip = 1.0
    omega = np.array([
        [1.0, -1.0, 0.3],    # upper face, lower face, interior
        [1.0, -1.0, 0.3],    # same position, velocities pointing inwards
        [1.0, 1.0, -1.0],    # a corner
        [0.999, -0.999, 0.0],  # just inside: never projected
        [1.0, -1.0, 1.0],    # zero velocities stay zero
    ])
    v = np.array([
        [2.0, -3.0, 5.0],
        [-2.0, 3.0, -5.0],
        [0.5, -0.5, -0.5],
        [4.0, -4.0, 4.0],
        [0.0, 0.0, -0.0],
    ])
    expect = np.array([
        [0.0, 0.0, 5.0],
        [-2.0, 3.0, -5.0],
        [0.0, -0.5, 0.0],
        [4.0, -4.0, 4.0],
        [0.0, 0.0, 0.0],
    ])
    out = mfg.project_velocity(omega, v, clip)
    assert np.array_equal(out, expect)
    assert out is not v and np.array_equal(v[0], [2.0, -3.0, 5.0])  # input untouched


def test_projection_uses_the_clip_parameter_and_points_outside_the_box():
    omega = np.array([[2.0, -2.0, 1.0, 2.5]])
    v = np.array([[1.0, -1.0, 1.0, 1.0]])
    # Q = [-2, 2]^4: only the outward components on (or beyond) the faces vanish.
    assert np.array_equal(mfg.project_velocity(omega, v, 2.0), [[0.0, 0.0, 1.0, 0.0]])
    # Q = [-3, 3]^4: everything is interior.
    assert np.array_equal(mfg.project_velocity(omega, v, 3.0), v)


def test_projection_is_idempotent_and_keeps_inward_directions(make_config):
    _, omega, *_ = make_config(11, 3, 1, 1, 200, 1, 1)
    v = np.random.default_rng(12).normal(size=omega.shape)
    p = mfg.project_velocity(omega, v, 1.0)
    assert np.array_equal(mfg.project_velocity(omega, p, 1.0), p)
    # From a face, a step along the projected velocity stays in Q.
    on = np.abs(omega) == 1.0
    assert np.all(np.abs(omega[on] + 1e-3 * p[on]) <= 1.0)
    changed = p != v
    assert changed.any() and np.all(np.abs(omega[changed]) == 1.0) and np.all(p[changed] == 0.0)


@pytest.mark.parametrize("Bz,Bx", [(40, 33), (1, 3)])  # node blocks of eight, single nodes
def test_numba_threaded_and_serial_passes_are_bitwise_equal(make_config, Bz, Bx):
    """Chunks depend on the particle counts only: threads change no bit of the result."""
    from meanfield_gan.engines import _numba as ne

    theta, omega, z, zw, x, xw = make_config(21, 2, 2, 300, 260, Bz, Bx)
    out = []
    for parallel in (False, True):
        ws = ne.Workspace(300, 260, 2, 2, Bz, Bx, parallel=parallel)
        vt, vo = np.empty_like(theta), np.empty_like(omega)
        ne.velocity_into(theta, omega, np.ascontiguousarray(z.T), zw, np.ascontiguousarray(x.T),
                         xw, vt, vo, ws)
        out.append((vt, vo))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
    ref = mfg.velocity(theta, omega, z, zw, x, xw, backend="numpy")
    np.testing.assert_allclose(out[0][0], ref[0], rtol=0, atol=1e-12)


def test_numba_threads_only_evaluations_with_enough_work_and_particles():
    """The threading choice depends on the sizes alone (never on the thread count)."""
    from meanfield_gan.engines import _numba as ne

    assert not ne.Workspace(1000, 1000, 1, 1, 1, 1).par  # SGD batch 1: 4e3 sigmoids
    assert ne.Workspace(2000, 2000, 1, 1, 1, 1).par  # 8e3
    assert not ne.Workspace(16, 16, 1, 1, 256, 256).par  # many nodes, 16 particles
    assert ne.Workspace(64, 64, 1, 1, 256, 256).par
    assert not ne.Workspace(5000, 32, 1, 1, 64, 64).par  # few critic particles
