"""The GAN objectives of MODEL.md section 7: first variations, engines, saturation, Adam."""
from __future__ import annotations

import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.engines.base import Nodes
from meanfield_gan.engines.reference import NumpyRunner
from meanfield_gan.model.objectives import LOSSES, dphi, log_sigmoid, phi

DIMS = [(1, 1), (2, 1), (1, 3), (3, 2)]


def _setup(K, L, N=5, M=4, B=6, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    th = rng.normal(size=(N, K, L + 2))
    om = scale * rng.uniform(-1, 1, size=(M, K + 2))
    z = rng.normal(size=(B, L))
    zw = rng.uniform(0.5, 1.5, B)
    zw /= zw.sum()
    x = rng.normal(size=(B + 1, K))
    xw = np.full(B + 1, 1.0 / (B + 1))
    return th, om, z, zw, x, xw


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("K,L", DIMS)
@pytest.mark.parametrize("noise", [False, True])
def test_velocities_are_first_variations(loss, K, L, noise):
    """``V_theta(theta_i) = -N dPsi_g/dtheta_i`` and ``V_omega(omega_j) = M dPsi_c/domega_j``."""
    th, om, z, zw, x, xw = _setup(K, L, seed=K * 10 + L)
    zn = 0.3 * np.random.default_rng(1).normal(size=(len(zw), K)) if noise else None
    vt, vo = mfg.velocity(th, om, z, zw, x, xw, backend="numpy", loss=loss, z_noise=zn)
    N, M, h = len(th), len(om), 1e-6

    def obj(t, o):
        return mfg.objectives(t, o, z, zw, x, xw, loss=loss, z_noise=zn)

    for idx in np.ndindex(th.shape):
        tp, tm = th.copy(), th.copy()
        tp[idx] += h
        tm[idx] -= h
        d = (obj(tp, om)[1] - obj(tm, om)[1]) / (2 * h)
        assert vt[idx] == pytest.approx(-N * d, rel=1e-6, abs=1e-8), idx
    for idx in np.ndindex(om.shape):
        op, omm = om.copy(), om.copy()
        op[idx] += h
        omm[idx] -= h
        d = (obj(th, op)[0] - obj(th, omm)[0]) / (2 * h)
        assert vo[idx] == pytest.approx(M * d, rel=1e-6, abs=1e-8), idx


def test_wasserstein_objectives_are_the_energy():
    th, om, z, zw, x, xw = _setup(2, 1)
    psi_c, psi_g = mfg.objectives(th, om, z, zw, x, xw)
    psi = mfg.energy(th, om, z, zw, x, xw)
    assert psi_c == pytest.approx(psi, abs=1e-15)
    assert psi_g == pytest.approx(zw @ mfg.critic_output(om, mfg.generator_output(th, z)))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("K,L", DIMS)
def test_numba_equals_reference(loss, K, L):
    th, om, z, zw, x, xw = _setup(K, L, N=21, M=19, B=13, seed=3)
    ref = mfg.velocity(th, om, z, zw, x, xw, backend="numpy", loss=loss)
    got = mfg.velocity(th, om, z, zw, x, xw, backend="numba", loss=loss)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12)


def test_saturated_critic_stays_finite():
    """``|f|`` up to 700: the stable forms give finite, accurate values and no warnings."""
    f = np.array([-700.0, -50.0, -1.0, 0.0, 1.0, 50.0, 700.0])
    with np.errstate(all="raise"):
        for loss in LOSSES:
            for arr in phi(loss, f) + dphi(loss, f):
                assert np.all(np.isfinite(arr))
        assert log_sigmoid(np.array(-700.0)) == pytest.approx(-700.0)
        assert log_sigmoid(np.array(700.0)) == pytest.approx(-np.exp(-700.0), rel=1e-12)
        assert dphi("minimax", np.array(700.0))[0] == pytest.approx(np.exp(-700.0), rel=1e-12)
    # a critic whose output is about +-700 at the nodes: objectives and velocities stay finite
    K, L = 1, 1
    th, om, z, zw, x, xw = _setup(K, L, seed=5)
    om[:, 0] = 700.0 * np.sign(np.random.default_rng(0).normal(size=len(om)))
    om[:, 1] = 40.0
    with np.errstate(over="raise", invalid="raise"):
        for loss in LOSSES:
            pc, pg = mfg.objectives(th, om, z, zw, x, xw, loss=loss)
            assert np.isfinite(pc) and np.isfinite(pg)
            for backend in ("numpy", "numba"):
                vt, vo = mfg.velocity(th, om, z, zw, x, xw, backend=backend, loss=loss)
                assert np.all(np.isfinite(vt)) and np.all(np.isfinite(vo))


def test_adam_two_steps_by_hand():
    """Two simultaneous Adam steps written out from MODEL.md section 7."""
    problem = mfg.Problem(1, 1, mfg.DiracMixture([[-1.0], [1.0]]), clip=np.inf, loss="minimax")
    state = mfg.initial_state(problem, 6, 5, seed=2)
    sch = mfg.Adam(lr=0.3, batch_size=2, beta1=0.5, beta2=0.9, eps=1e-8)
    traj = {b: mfg.simulate(problem, state, sch, 2 * sch.dt(6), seed=4, backend=b,
                            observables=False) for b in ("numpy", "numba")}
    Zs, Xs = mfg.driver.draw_batches(problem, sch, 4, 0)
    th, om = state.theta.copy(), state.omega.copy()
    mt, st, mo, so = (np.zeros_like(th), np.zeros_like(th), np.zeros_like(om), np.zeros_like(om))
    dt, gdt = sch.dt(6), sch.gamma_c(6, 5) * sch.dt(6)
    for k in (1, 2):
        vt, vo = mfg.velocity(th, om, Zs[k - 1, 0].T, np.full(2, 0.5), Xs[k - 1, 0].T,
                              np.full(2, 0.5), backend="numpy", loss="minimax")
        mt = 0.5 * mt + 0.5 * vt
        st = 0.9 * st + 0.1 * vt**2
        mo = 0.5 * mo + 0.5 * vo
        so = 0.9 * so + 0.1 * vo**2
        th = th + dt * (mt / (1 - 0.5**k)) / (np.sqrt(st / (1 - 0.9**k)) + 1e-8)
        om = om + gdt * (mo / (1 - 0.5**k)) / (np.sqrt(so / (1 - 0.9**k)) + 1e-8)
    for b, tr in traj.items():
        np.testing.assert_allclose(tr.state.theta, th, rtol=0, atol=1e-12, err_msg=b)
        np.testing.assert_allclose(tr.state.omega, om, rtol=0, atol=1e-12, err_msg=b)
        np.testing.assert_allclose(tr.state.opt["theta_m"], mt, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tr.state.opt["omega_v"], so, rtol=0, atol=1e-14)


def test_adam_resumes_bitwise():
    problem = mfg.Problem(1, 1, mfg.GaussianMixture([[-1.0], [1.0]], 0.3), loss="non_saturating")
    state = mfg.initial_state(problem, 16, 12, seed=1)
    sch = mfg.Adam(lr=0.5, n_critic=3, batch_size=2, alternating=True, beta1=0.0, beta2=0.9)
    for backend in ("numpy", "numba"):
        full = mfg.simulate(problem, state, sch, 40 * sch.dt(16), seed=5, backend=backend)
        half = mfg.simulate(problem, state, sch, 17 * sch.dt(16), seed=5, backend=backend)
        rest = mfg.simulate(problem, half.state, sch, 40 * sch.dt(16), seed=5, backend=backend)
        np.testing.assert_array_equal(rest.state.theta, full.state.theta)
        np.testing.assert_array_equal(rest.state.omega, full.state.omega)
        for k in full.state.opt:
            np.testing.assert_array_equal(rest.state.opt[k], full.state.opt[k])


@pytest.mark.parametrize("loss", ["minimax", "non_saturating"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_coincident_critic_particles_stay_coincident(loss, backend):
    problem = mfg.Problem(2, 1, mfg.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], 0.3), loss=loss)
    state = mfg.initial_state(problem, 20, 12, seed=3)
    state.omega[5] = state.omega[2]
    state.omega[9] = state.omega[2]
    for sch in (mfg.SGD(lr=3.0, n_critic=5, batch_size=3), mfg.ProjectedEuler(0.05, 5.0)):
        tr = mfg.simulate(problem, state, sch, 60 * sch.dt(20), seed=1, backend=backend,
                          observables=False)
        om = tr.state.omega
        assert np.array_equal(om[5], om[2]) and np.array_equal(om[9], om[2])


def test_noise_nodes_are_exact_on_polynomials():
    """The tensor Gauss-Hermite noise nodes integrate ``p(x + sigma E)`` exactly for a
    polynomial ``p`` of degree up to ``2 n - 1`` per coordinate."""
    K, n, sigma = 2, 3, 0.7
    problem = mfg.Problem(K, 1, mfg.DiracMixture([[0.5, -1.0], [2.0, 1.0]], [0.25, 0.75]),
                          instance_noise=sigma, noise_nodes=n, quadrature_size=4)
    state = mfg.initial_state(problem, 3, 3, seed=0)
    r = NumpyRunner(problem, state, mfg.ProjectedEuler(0.1))
    z, zw, x, xw, zn, pen = Nodes(r, None, None, None).nodes(0, 0, 0)
    assert pen is None and zn.shape == (len(zw), K)
    # E[(X1 + s E1)^5 (X2 + s E2)^2] with X the Dirac mixture, E standard normal
    m1 = lambda a: a**5 + 10 * a**3 * sigma**2 + 15 * a * sigma**4  # noqa: E731
    m2 = lambda a: a**2 + sigma**2  # noqa: E731
    exact = 0.25 * m1(0.5) * m2(-1.0) + 0.75 * m1(2.0) * m2(1.0)
    assert xw @ (x[:, 0] ** 5 * x[:, 1] ** 2) == pytest.approx(exact, rel=1e-13)
    assert zw.sum() == pytest.approx(1.0) and np.mean(zn) == pytest.approx(0.0, abs=1e-14)
    # degree 6 in one coordinate is beyond the rule: the test can fail
    m6 = lambda a: a**6 + 15 * a**4 * sigma**2 + 45 * a**2 * sigma**4 + 15 * sigma**6  # noqa
    assert xw @ x[:, 0] ** 6 != pytest.approx(0.25 * m6(0.5) + 0.75 * m6(2.0), rel=1e-6)


def test_noisy_sgd_keeps_the_batches_of_a_noiseless_run():
    """Instance noise draws from its own stream: latent and data batches are unchanged."""
    base = mfg.Problem(1, 1, mfg.GaussianMixture([[-1.0], [1.0]], 0.3), loss="minimax")
    noisy = mfg.Problem(1, 1, base.target, loss="minimax", instance_noise=0.3)
    sgd = mfg.SGD(lr=1.0, batch_size=4)
    Z0, X0 = mfg.driver.draw_batches(base, sgd, 7, 2)
    Z1, X1 = mfg.driver.draw_batches(noisy, sgd, 7, 2)
    np.testing.assert_array_equal(Z0, Z1)
    np.testing.assert_array_equal(X0, X1)
    extra = mfg.driver.draw_extras(noisy, sgd, 7, 2)
    assert extra["gen_noise"].shape == (mfg.driver.CHUNK_STEPS, 1, 1, 4)
    assert not mfg.driver.draw_extras(base, sgd, 7, 2)
    state = mfg.initial_state(noisy, 10, 8, seed=0)
    a = mfg.simulate(noisy, state, sgd, 20 * sgd.dt(10), seed=7, backend="numpy")
    b = mfg.simulate(base, state, sgd, 20 * sgd.dt(10), seed=7, backend="numpy")
    assert not np.allclose(a.state.omega, b.state.omega)  # the noise did something


def test_bad_objective_inputs():
    th, om, z, zw, x, xw = _setup(1, 1)
    with pytest.raises(ValueError, match="loss"):
        mfg.velocity(th, om, z, zw, x, xw, loss="hinge")
    with pytest.raises(ValueError, match="z_noise"):
        mfg.velocity(th, om, z, zw, x, xw, backend="numpy", z_noise=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="gradient_penalty"):
        mfg.Problem(1, 1, mfg.DiracMixture([[0.0]]), loss="minimax", gradient_penalty=1.0)
    with pytest.raises(ValueError, match="instance_noise"):
        mfg.Problem(1, 1, mfg.DiracMixture([[0.0]]), instance_noise=-0.1)
    with pytest.raises(ValueError, match="noise_anneal"):
        mfg.Problem(1, 1, mfg.DiracMixture([[0.0]]), noise_anneal=0.0)
    for b in ("beta1", "beta2"):
        with pytest.raises(ValueError, match=b):
            mfg.Adam(**{b: 1.0})


@pytest.mark.parametrize("K,L", [(1, 1), (2, 1), (3, 2)])
def test_penalty_velocity_is_a_first_variation(K, L):
    """With the gradient penalty, ``V_omega = M dPsi_c/domega`` (``xh`` held fixed: the
    generator's velocity has no penalty term)."""
    th, om, z, zw, x, xw = _setup(K, L, seed=7 + K)
    rng = np.random.default_rng(4)
    P = 7
    pen = (10.0, (rng.normal(size=(P, L)), rng.normal(size=(P, K)), rng.uniform(size=P),
                  np.full(P, 1.0 / P)))
    vt, vo = mfg.velocity(th, om, z, zw, x, xw, backend="numpy", penalty=pen)
    vt0, _ = mfg.velocity(th, om, z, zw, x, xw, backend="numpy")
    np.testing.assert_array_equal(vt, vt0)
    M, h = len(om), 1e-6
    for idx in np.ndindex(om.shape):
        op, omm = om.copy(), om.copy()
        op[idx] += h
        omm[idx] -= h
        d = (mfg.objectives(th, op, z, zw, x, xw, penalty=pen)[0]
             - mfg.objectives(th, omm, z, zw, x, xw, penalty=pen)[0]) / (2 * h)
        assert vo[idx] == pytest.approx(M * d, rel=1e-6, abs=1e-7), idx


def test_penalty_where_the_critic_gradient_vanishes():
    """``grad f = 0`` at an interpolate (all amplitudes 0): ``n = 0`` by convention, so the
    penalty's velocity is finite; the value is ``(0 - 1)^2 = 1``."""
    th, om, z, zw, x, xw = _setup(2, 1, seed=1)
    om[:, 0] = 0.0
    P = 3
    pen = (10.0, (np.zeros((P, 1)), np.zeros((P, 2)), np.full(P, 0.5), np.full(P, 1 / P)))
    vt, vo = mfg.velocity(th, om, z, zw, x, xw, backend="numpy", penalty=pen)
    assert np.all(np.isfinite(vo))
    pc, _ = mfg.objectives(th, om, z, zw, x, xw, penalty=pen)
    assert pc == pytest.approx(-10.0, abs=1e-15)  # f = 0 everywhere, P = 1


@pytest.mark.parametrize("K,L", [(1, 1), (2, 1), (3, 2)])
@pytest.mark.parametrize("loss", LOSSES)
def test_numba_equals_reference_with_noise_offsets_and_penalty(K, L, loss):
    th, om, z, zw, x, xw = _setup(K, L, N=13, M=11, B=7, seed=2)
    rng = np.random.default_rng(9)
    kw = {"z_noise": 0.3 * rng.normal(size=(len(zw), K))}
    if loss == "wasserstein":
        P = 10
        kw["penalty"] = (10.0, (rng.normal(size=(P, L)), rng.normal(size=(P, K)),
                                rng.uniform(size=P), np.full(P, 1.0 / P)))
    ref = mfg.velocity(th, om, z, zw, x, xw, backend="numpy", loss=loss, **kw)
    got = mfg.velocity(th, om, z, zw, x, xw, backend="numba", loss=loss, **kw)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12)


NOISY = [dict(loss="minimax", instance_noise=0.3),
         dict(loss="non_saturating", instance_noise=0.3, noise_anneal=0.5),
         dict(gradient_penalty=10.0, clip=None, penalty_size=16),
         dict(gradient_penalty=10.0, clip=None, instance_noise=0.2, penalty_size=16)]
SCHEMES = [mfg.SGD(lr=1.0, n_critic=2, batch_size=3),
           mfg.SGD(lr=1.0, n_critic=2, batch_size=2, alternating=True),
           mfg.Adam(lr=0.5, n_critic=3, batch_size=2, alternating=True, beta1=0.0),
           mfg.ProjectedEuler(0.05, 2.0), mfg.ProjectedHeun(0.05, 2.0)]


@pytest.mark.parametrize("kw", NOISY, ids=["noise", "annealed", "penalty", "penalty+noise"])
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.rule)
def test_trajectories_with_noise_and_penalty_agree(kw, scheme):
    """Numba steps instance noise (tensor Gauss-Hermite nodes, or the SGD draws) and the
    penalty (fixed triples, or the batch's pairs) as the reference does."""
    p = mfg.Problem(2, 1, mfg.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], 0.3),
                    quadrature_size=9, noise_nodes=3, **kw)
    st = mfg.initial_state(p, 20, 16, seed=1)
    a = mfg.simulate(p, st, scheme, 20 * scheme.dt(20), seed=3, backend="numpy", record=2)
    b = mfg.simulate(p, st, scheme, 20 * scheme.dt(20), seed=3, backend="numba", record=2)
    np.testing.assert_allclose(b.state.theta, a.state.theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.state.omega, a.state.omega, rtol=0, atol=1e-12)
    for k in a.observables:
        np.testing.assert_allclose(b.observables[k], a.observables[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme", [mfg.Adam(lr=0.5, n_critic=3, batch_size=2, alternating=True,
                                             freeze_generator=True),
                                    mfg.SGD(lr=1.0, batch_size=3, freeze_generator=True)],
                         ids=["adam_alt", "sgd"])
def test_frozen_generator_does_not_move(scheme):
    """Critic-only training (MODEL.md 8): the generator is bitwise unchanged, the critic moves
    as a hand-written critic-only loop moves it, on numpy and numba."""
    p = mfg.Problem(2, 1, mfg.DiracMixture([[-1.0, 0.0], [1.0, 0.5]]), loss="minimax", clip=None)
    st = mfg.initial_state(p, 12, 10, seed=1)
    a = mfg.simulate(p, st, scheme, 6 * scheme.dt(12), seed=3, backend="numpy")
    b = mfg.simulate(p, st, scheme, 6 * scheme.dt(12), seed=3, backend="numba")
    np.testing.assert_array_equal(a.state.theta, st.theta)
    np.testing.assert_array_equal(b.state.theta, st.theta)
    np.testing.assert_allclose(b.state.omega, a.state.omega, rtol=0, atol=1e-12)
    if scheme.alternating:  # the loop by hand: n_critic Adam updates of lr/M per step
        Zs, Xs = mfg.driver.draw_batches(p, scheme, 3, 0)
        om, m, v = st.omega.copy(), np.zeros_like(st.omega), np.zeros_like(st.omega)
        k = 0
        for s in range(6):
            for c in range(scheme.n_critic):
                k += 1
                _, vo = mfg.velocity(st.theta, om, Zs[s, c].T, np.full(2, 0.5), Xs[s, c].T,
                                     np.full(2, 0.5), backend="numpy", loss="minimax")
                m = 0.5 * m + 0.5 * vo
                v = 0.9 * v + 0.1 * vo**2
                om = om + scheme.critic_dt(10) * (m / (1 - 0.5**k)) / (
                    np.sqrt(v / (1 - 0.9**k)) + 1e-8)
        np.testing.assert_allclose(a.state.omega, om, rtol=0, atol=1e-13)


def test_observables_are_those_of_the_noisy_game():
    """With instance noise the recorded objectives and speeds are the noisy game's (tensor
    Gauss-Hermite noise nodes at the record's sigma_n); ``psi`` stays the clean energy."""
    from meanfield_gan.model.laws import gauss_hermite

    p = mfg.Problem(1, 1, mfg.DiracMixture([[-1.0], [1.0]]), loss="minimax", clip=None,
                    instance_noise=0.5, noise_nodes=4, quadrature_size=6)
    st = mfg.initial_state(p, 9, 7, seed=2)
    st.omega *= 6.0  # a critic that discriminates, so that the noise matters
    tr = mfg.simulate(p, st, mfg.SGD(lr=0.1), 0.0, backend="numpy")
    z, zw, x, xw = p.quadrature()
    e, we = gauss_hermite(4, 1)
    zn, zwn = np.repeat(z, 4, axis=0), np.outer(zw, we).ravel()
    xn, xwn = (x[:, None, :] + 0.5 * e[None]).reshape(-1, 1), np.outer(xw, we).ravel()
    off = 0.5 * np.tile(e, (len(zw), 1))
    pc, pg = mfg.objectives(st.theta, st.omega, zn, zwn, xn, xwn, loss="minimax", z_noise=off)
    assert tr.observables["critic_objective"][0] == pytest.approx(pc, rel=1e-13)
    assert tr.observables["generator_objective"][0] == pytest.approx(pg, rel=1e-13)
    clean = mfg.objectives(st.theta, st.omega, z, zw, x, xw, loss="minimax")
    assert abs(clean[0] - pc) > 1e-3  # the noise changed the game
    assert tr.observables["psi"][0] == pytest.approx(
        mfg.energy(st.theta, st.omega, z, zw, x, xw), rel=1e-13)
