"""Time-stepping schemes (MODEL.md section 3): scalings, engines, seeds, coincident particles."""
from __future__ import annotations

import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.driver import CHUNK_STEPS, draw_batches

CLIP = 0.8


def _problem(K: int = 2, L: int = 1, qsize: int = 9) -> mfg.Problem:
    target = mfg.GaussianMixture([[-1.0] * K, [1.0] * K], 0.3)
    return mfg.Problem(K, L, target, clip=CLIP, quadrature_size=qsize)


def _state(problem: mfg.Problem, N: int, M: int, seed: int = 0) -> mfg.State:
    """Initial particles with about a third of the critic coordinates exactly on +-clip."""
    st = mfg.initial_state(problem, N, M, seed)
    rng = np.random.default_rng(seed + 100)
    on = rng.random(st.omega.shape) < 1.0 / 3.0
    st.omega[on] = np.where(rng.random(st.omega.shape) < 0.5, -CLIP, CLIP)[on]
    return st


def _steps_to_time(scheme, N: int, n: int) -> float:
    return n * scheme.dt(N)


def _vel(theta, omega, zT, zw, xT, xw):
    """``mfg.velocity`` on transposed batches (as ``draw_batches`` returns them)."""
    return mfg.velocity(theta, omega, zT.T, zw, xT.T, xw, backend="numpy")


SCHEMES = {
    "sgd": mfg.SGD(lr=1.0),
    "sgd-batch": mfg.SGD(lr=0.5, n_critic=2, batch_size=4),
    "sgd-alternating": mfg.SGD(lr=1.0, n_critic=3, batch_size=2, alternating=True),
    "rmsprop": mfg.RMSProp(lr=0.05, n_critic=2, batch_size=3),
    "euler": mfg.ProjectedEuler(0.05, 2.0, n_latent=9, n_target=8),
    "heun": mfg.ProjectedHeun(0.05, 2.0, n_latent=9, n_target=8),
}


# ------------------------------------------------------------------------------------------
# Engines agree on whole trajectories
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCHEMES))
def test_engine_trajectories_match_reference(engine, name):
    scheme = SCHEMES[name]
    problem = _problem()
    N, M = 24, 19
    state = _state(problem, N, M, seed=3)
    # SGD runs cross a batch-chunk boundary (CHUNK_STEPS) to check the batch bookkeeping.
    n = CHUNK_STEPS + 44 if scheme.stochastic else 120
    t_end = _steps_to_time(scheme, N, n)
    ref = mfg.simulate(problem, state, scheme, t_end, record=6, seed=7, backend="numpy")
    out = mfg.simulate(problem, state, scheme, t_end, record=6, seed=7, backend=engine)
    assert ref.state.step == out.state.step == n
    np.testing.assert_array_equal(out.steps, ref.steps)
    np.testing.assert_allclose(out.theta, ref.theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.omega, ref.omega, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.observables["psi"], ref.observables["psi"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out.observables["critic_boundary_fraction"],
                                  ref.observables["critic_boundary_fraction"])
    # The dynamics moved the particles and the box was active (clipping and projection).
    assert np.abs(out.theta[-1] - out.theta[0]).max() > 1e-2
    assert np.all(np.abs(out.omega) <= CLIP)
    assert ref.observables["critic_boundary_fraction"][-1] > 0
    if name == "rmsprop":
        for k in ("theta_sq", "omega_sq"):
            np.testing.assert_allclose(out.state.opt[k], ref.state.opt[k], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------
# dt and gamma_c: each scheme against its definition written out with velocity()
# ------------------------------------------------------------------------------------------
def test_simultaneous_sgd_step_definition(backend):
    problem = _problem(K=2, L=2)
    N, M = 11, 7
    scheme = mfg.SGD(lr=0.7, n_critic=3, batch_size=5)
    state = _state(problem, N, M, seed=1)
    Zs, Xs = draw_batches(problem, scheme, seed=4, chunk=0)
    assert Zs.shape == (CHUNK_STEPS, 1, 2, 5) and Xs.shape == (CHUNK_STEPS, 1, 2, 5)
    w = np.full(5, 1 / 5)
    th, om = state.theta.copy(), state.omega.copy()
    for s in range(2):
        vt, vo = _vel(th, om, Zs[s, 0], w, Xs[s, 0], w)
        # theta + (lr/N) v_theta; clip(omega + n_critic (lr/M) v_omega), both at step s's state
        th, om = th + (0.7 / N) * vt, np.clip(om + 3 * (0.7 / M) * vo, -CLIP, CLIP)
    out = mfg.simulate(problem, state, scheme, 2 * 0.7 / N, seed=4, backend=backend)
    assert out.state.step == 2 and out.state.time == pytest.approx(2 * 0.7 / N)
    np.testing.assert_allclose(out.state.theta, th, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out.state.omega, om, rtol=0, atol=1e-13)


def test_alternating_sgd_step_definition(backend):
    """Algorithm 1: n_critic critic steps of lr/M with fresh batches, then a generator step."""
    problem = _problem(K=1, L=2)
    N, M, n_critic, m = 9, 6, 3, 2
    scheme = mfg.SGD(lr=1.3, n_critic=n_critic, batch_size=m, alternating=True)
    state = _state(problem, N, M, seed=2)
    Zs, Xs = draw_batches(problem, scheme, seed=5, chunk=0)
    assert (Zs.shape == (CHUNK_STEPS, n_critic + 1, 2, m)
            and Xs.shape == (CHUNK_STEPS, n_critic, 1, m))
    w = np.full(m, 1 / m)
    th, om = state.theta.copy(), state.omega.copy()
    for s in range(3):
        for c in range(n_critic):
            om = np.clip(om + (1.3 / M) * _vel(th, om, Zs[s, c], w, Xs[s, c], w)[1], -CLIP, CLIP)
        # The generator's velocity does not depend on the data batch; its latent batch is fresh.
        th = th + (1.3 / N) * _vel(th, om, Zs[s, n_critic], w, Xs[s, 0], w)[0]
    out = mfg.simulate(problem, state, scheme, 3 * 1.3 / N, seed=5, backend=backend)
    assert out.state.step == 3
    np.testing.assert_allclose(out.state.theta, th, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out.state.omega, om, rtol=0, atol=1e-13)
    # The scheme's scales: dt = lr/N, gamma_c = n_critic N/M (n_critic steps of lr/M).
    assert scheme.dt(N) == pytest.approx(1.3 / N)
    assert scheme.gamma_c(N, M) * scheme.dt(N) == pytest.approx(n_critic * scheme.critic_dt(M))


def test_rmsprop_step_definition(backend):
    problem = _problem(K=1, L=1)
    N, M, m = 8, 5, 3
    scheme = mfg.RMSProp(lr=0.2, n_critic=2, batch_size=m, rho=0.8, eps=1e-6)
    state = _state(problem, N, M, seed=6)
    Zs, Xs = draw_batches(problem, scheme, seed=8, chunk=0)
    w = np.full(m, 1 / m)
    th, om = state.theta.copy(), state.omega.copy()
    st, so = np.zeros_like(th), np.zeros_like(om)
    for s in range(3):
        vt, vo = _vel(th, om, Zs[s, 0], w, Xs[s, 0], w)
        st = 0.8 * st + 0.2 * vt**2
        so = 0.8 * so + 0.2 * vo**2
        th = th + (0.2 / N) * vt / (np.sqrt(st) + 1e-6)
        om = np.clip(om + 2 * (0.2 / M) * vo / (np.sqrt(so) + 1e-6), -CLIP, CLIP)
    out = mfg.simulate(problem, state, scheme, 3 * 0.2 / N, seed=8, backend=backend)
    np.testing.assert_allclose(out.state.theta, th, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out.state.omega, om, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out.state.opt["theta_sq"], st, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(out.state.opt["omega_sq"], so, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("heun", [False, True])
def test_projected_euler_and_heun_step_definitions(backend, heun):
    problem = _problem(K=2, L=1, qsize=16)
    N, M, dt, gc = 10, 12, 0.1, 3.0
    cls = mfg.ProjectedHeun if heun else mfg.ProjectedEuler
    scheme = cls(dt, gc, n_latent=5, n_target=6)
    state = _state(problem, N, M, seed=9)
    quad = problem.quadrature(5, 6)
    vel = lambda t, o: mfg.velocity(t, o, *quad, backend="numpy")  # noqa: E731
    proj = lambda o, v: mfg.project_velocity(o, v, CLIP)  # noqa: E731
    th, om = state.theta.copy(), state.omega.copy()
    for _ in range(2):
        vt, vo = vel(th, om)
        if heun:
            vo = proj(om, vo)
            th2, om2 = th + dt * vt, np.clip(om + gc * dt * vo, -CLIP, CLIP)
            vt2, vo2 = vel(th2, om2)
            th = th + 0.5 * dt * (vt + vt2)
            om = np.clip(om + 0.5 * gc * dt * (vo + proj(om2, vo2)), -CLIP, CLIP)
        else:
            th, om = th + dt * vt, np.clip(om + gc * dt * vo, -CLIP, CLIP)
    out = mfg.simulate(problem, state, scheme, 2 * dt, backend=backend)
    np.testing.assert_allclose(out.state.theta, th, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out.state.omega, om, rtol=0, atol=1e-13)


def test_matching_euler_has_the_sgd_scales():
    sgd = mfg.SGD(lr=0.6, n_critic=5)
    N, M = 40, 25
    eu = mfg.ProjectedEuler.matching(sgd, N, M, refine=4, n_latent=7)
    assert eu.dt() == pytest.approx(0.6 / N / 4)
    assert eu.gamma_c() == pytest.approx(5 * N / M)
    assert eu.n_latent == 7
    assert mfg.wgan_scales(0.6, 5, N, M) == pytest.approx((sgd.dt(N), sgd.gamma_c(N, M)))


def test_recorded_times_are_steps_times_dt():
    problem = _problem(K=1, L=1)
    scheme = mfg.SGD(lr=1.0)
    out = mfg.simulate(problem, _state(problem, 8, 8), scheme, 40 / 8, record=4, seed=0,
                       backend="numba")
    np.testing.assert_array_equal(out.steps, [0, 10, 20, 30, 40])
    np.testing.assert_allclose(out.times, out.steps / 8, rtol=1e-15)
    assert out.theta.shape == (5, 8, 1, 3) and out.omega.shape == (5, 8, 3)


# ------------------------------------------------------------------------------------------
# Seeds
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sgd-batch", "sgd-alternating", "rmsprop"])
def test_same_seed_is_bitwise_reproducible_and_seeds_differ(backend, name):
    scheme = SCHEMES[name]
    problem = _problem()
    N, M = 12, 10
    state = _state(problem, N, M, seed=11)
    t_end = _steps_to_time(scheme, N, 30)
    a = mfg.simulate(problem, state, scheme, t_end, record=3, seed=21, backend=backend)
    b = mfg.simulate(problem, state, scheme, t_end, record=3, seed=21, backend=backend)
    c = mfg.simulate(problem, state, scheme, t_end, record=3, seed=22, backend=backend)
    assert np.array_equal(a.theta, b.theta) and np.array_equal(a.omega, b.omega)
    assert np.array_equal(a.observables["psi"], b.observables["psi"])
    assert not np.array_equal(a.state.theta, c.state.theta)
    assert not np.array_equal(a.state.omega, c.state.omega)
    # simulate() leaves the state it was given alone.
    assert np.array_equal(state.theta, _state(problem, N, M, seed=11).theta)


def test_resumed_run_equals_uninterrupted_run(backend):
    """Batches depend on (seed, step) only: stopping and resuming changes nothing."""
    problem = _problem()
    scheme = mfg.SGD(lr=1.0, n_critic=2, batch_size=2)
    N, M = 10, 9
    state = _state(problem, N, M, seed=12)
    n1, n2 = CHUNK_STEPS - 3, CHUNK_STEPS + 20  # the cut falls inside a batch chunk
    whole = mfg.simulate(problem, state, scheme, n2 / N, seed=3, backend=backend)
    first = mfg.simulate(problem, state, scheme, n1 / N, seed=3, backend=backend)
    rest = mfg.simulate(problem, first.state, scheme, n2 / N, seed=3, backend=backend)
    assert rest.state.step == n2
    assert np.array_equal(rest.state.theta, whole.state.theta)
    assert np.array_equal(rest.state.omega, whole.state.omega)


# ------------------------------------------------------------------------------------------
# Coincident critic particles stay coincident (MODEL.md section 4.3)
# ------------------------------------------------------------------------------------------
def _n_distinct(omega: np.ndarray) -> int:
    return len(np.unique(omega, axis=0))


@pytest.mark.parametrize("name", ["sgd", "sgd-alternating", "euler"])
def test_coincident_critic_particles_stay_bitwise_equal(backend, name):
    scheme = {"sgd": mfg.SGD(lr=4.0, n_critic=2),
              "sgd-alternating": mfg.SGD(lr=4.0, n_critic=2, alternating=True),
              "euler": mfg.ProjectedEuler(0.1, 8.0, n_latent=7, n_target=6)}[name]
    problem = _problem(K=2, L=1)
    # M = 75: the fast engine pads the critic to 80 and splits it into two chunks of 40, whose
    # loops over particles may end in a remainder loop; index 0 starts the first chunk, index
    # M-1 sits near the end of the last.  The results must still agree bit for bit.
    N, M = 21, 75
    state = _state(problem, N, M, seed=13)
    om = state.omega
    om[0] = [0.1, -0.3, 0.45, 0.2]          # inside Q ...
    om[M - 1] = om[0]                        # ... at the first and last index
    om[1] = [CLIP, -CLIP, 0.3, CLIP]         # on the boundary (a face and an edge)
    om[M - 2] = om[1]
    om[5] = om[9] = om[1]                    # a triple, in the middle of the array
    n = 400 if scheme.stochastic else 200
    out = mfg.simulate(problem, state, scheme, _steps_to_time(scheme, N, n), record=30, seed=2,
                       backend=backend)
    for omega in out.omega:
        assert np.array_equal(omega[0], omega[M - 1])
        assert np.array_equal(omega[1], omega[M - 2])
        assert np.array_equal(omega[1], omega[5]) and np.array_equal(omega[1], omega[9])
    counts = [_n_distinct(o) for o in out.omega]
    assert counts[0] == M - 4
    assert all(b <= a for a, b in zip(counts, counts[1:])), counts
    # The critic actually moved and touched the box (else the test would be vacuous).
    assert np.abs(out.omega[-1] - out.omega[0]).max() > 0.1
    assert out.observables["critic_boundary_fraction"].max() > 0.5


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_non_finite_values_raise_at_the_same_step_on_every_engine(backend):
    """A step that overflows raises NonFiniteError naming that step; the state is not returned."""
    problem = _problem(K=1, L=1)
    state = _state(problem, 6, 5, seed=14)
    # Amplitudes near the largest float: the generator output sum overflows to inf, the
    # critic's velocity becomes inf * 0 = NaN.
    state.theta[:, :, 0] = 1e308
    scheme = mfg.SGD(lr=1.0, batch_size=2)
    with pytest.raises(mfg.NonFiniteError) as info:
        mfg.simulate(problem, state, scheme, 10 * scheme.dt(6), seed=0, backend=backend)
    ref_step = None
    try:
        mfg.simulate(problem, state, scheme, 10 * scheme.dt(6), seed=0, backend="numpy")
    except mfg.NonFiniteError as exc:
        ref_step = exc.step
    assert info.value.step == ref_step and 1 <= ref_step <= 10
