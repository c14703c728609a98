"""The bimodal Gaussian GAN with interval discriminators (MODEL.md section 6) and its study."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import rel_entr, xlogy

from meanfield_gan.cli import main
from meanfield_gan.models import bimodal as bm
from meanfield_gan.studies.bimodal import BimodalConfig, run_bimodal

TARGET = np.array([-2.0, 2.0])

# generator means covering the cases: 1, 2 and 3 crossings, equal means, a swap of mu*,
# nearly equal means, far away, one mean on a target mode
CASES = [
    (0.0, 1.0),
    (1.0, 1.0),
    (-2.1, 1.9),
    (-2.0, 2.3),
    (-5.0, 5.0),
    (-2.5, -1.5),
    (0.3, -0.7),
    (2.0, -2.0),
    (-2.0, 2.0 + 1e-6),
    (3.0, 3.5),
    (-9.0, 7.0),
]


def _tv_quad(mu, target):
    """(1/2) int |p* - p_mu| by adaptive quadrature, split at the kinks of the integrand.

    The kinks (crossings) are located independently of the package: sign changes on a fine
    grid, refined with brentq. Without them quad can be off by 1e-8 at a kink.
    """
    f = lambda x: bm.mixture_density(x, target) - bm.mixture_density(x, mu)  # noqa: E731
    lo, hi = min(*mu, *target) - 15.0, max(*mu, *target) + 15.0
    xs = np.linspace(lo, hi, 40_001)
    fx = f(xs)
    kinks = [brentq(f, xs[i], xs[i + 1], xtol=1e-15) for i in np.nonzero(fx[:-1] * fx[1:] < 0)[0]]
    pts = sorted(set([*mu, *target, *kinks]))
    val, _ = quad(lambda x: abs(f(x)), lo, hi, points=pts, limit=500, epsabs=1e-14, epsrel=1e-13)
    return 0.5 * val


def _parity_indicator(x, l, r):
    ends = np.array([l[0], r[0], l[1], r[1]])
    return (np.sum(ends[:, None] <= np.atleast_1d(x)[None, :], axis=0) % 2).astype(float)


# --------------------------------------------------------------------------------------------
# L, TV and the optimal discriminator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu", CASES)
def test_tv_closed_form_matches_quadrature(mu):
    tv = float(bm.tv_distance(np.array(mu), TARGET))
    assert tv == pytest.approx(_tv_quad(np.array(mu), TARGET), abs=1e-11)


def test_tv_random_targets_and_zero_at_target():
    rng = np.random.default_rng(11)
    for _ in range(25):
        target = rng.uniform(-4, 4, 2)
        mu = rng.uniform(-4, 4, 2)
        assert float(bm.tv_distance(mu, target)) == pytest.approx(_tv_quad(mu, target), abs=1e-11)
    assert float(bm.tv_distance(TARGET, TARGET)) == 0.0
    assert float(bm.tv_distance(TARGET[::-1], TARGET)) == 0.0
    # vectorised over a batch, same values as one at a time
    mus = np.array(CASES)
    batch = bm.tv_distance(mus, TARGET)
    assert batch.shape == (len(CASES),)
    np.testing.assert_allclose(batch, [bm.tv_distance(np.array(m), TARGET) for m in CASES],
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("mu", CASES)
def test_crossings_are_sign_changes_of_the_density_difference(mu):
    mu = np.array(mu)
    z = bm.density_crossings(mu, TARGET)
    zs = z[~np.isnan(z)]
    f = lambda x: bm.mixture_density(x, TARGET) - bm.mixture_density(x, mu)  # noqa: E731
    assert np.all(np.diff(zs) > 0)
    # each crossing is a zero of the difference, with a sign change across it
    scale = bm.mixture_density(zs, TARGET) + bm.mixture_density(zs, mu)
    assert np.all(np.abs(f(zs)) <= 1e-10 * scale)
    h = min([1e-4, *(np.diff(zs) / 4)])
    for x0 in zs:
        assert f(x0 - h) * f(x0 + h) < 0
    # and there is no other sign change on a fine grid (where the difference is resolved)
    xs = np.linspace(min(mu.min(), -2) - 8, max(mu.max(), 2) + 8, 200_001)
    fx = f(xs)
    big = np.abs(fx) > 1e-13
    sgn = np.sign(fx[big])
    n_changes = int(np.sum(sgn[1:] != sgn[:-1]))
    assert n_changes == zs.size <= 3


@pytest.mark.parametrize("mu", CASES)
def test_loss_matches_its_definition(mu):
    """L = E_{G*} D + E_{G_mu} (1 - D), integrated numerically, for ordered and crossed ends."""
    mu = np.array(mu)
    rng = np.random.default_rng(CASES.index(tuple(mu)))
    for _ in range(3):
        ends = rng.uniform(-5, 5, 4)
        l, r = ends[[0, 2]], ends[[1, 3]]  # any order: D is the parity indicator of the ends
        pts = sorted(ends)

        def integrand(x, dens_means, flip, l=l, r=r):
            d = _parity_indicator(x, l, r)[0]
            return bm.mixture_density(x, dens_means) * ((1.0 - d) if flip else d)

        ref = 0.0
        for means, flip in ((TARGET, False), (mu, True)):
            lo, hi = min(pts + list(means)) - 15, max(pts + list(means)) + 15
            ref += quad(integrand, lo, hi, args=(means, flip), points=pts, limit=400,
                        epsabs=1e-13)[0]
        assert float(bm.loss(mu, l, r, TARGET)) == pytest.approx(ref, abs=1e-10)


def test_loss_of_ordered_intervals_is_the_union():
    mu = np.array([0.5, 1.0])
    l, r = np.array([-3.0, 0.0]), np.array([-1.0, 2.5])
    mass = lambda m: sum(bm.mixture_cdf(b, m) - bm.mixture_cdf(a, m) for a, b in zip(l, r))  # noqa: E731
    assert float(bm.loss(mu, l, r, TARGET)) == pytest.approx(
        mass(TARGET) + 1.0 - mass(mu), abs=1e-15
    )


@pytest.mark.parametrize("mu", CASES)
def test_optimal_discriminator_attains_max_of_L(mu):
    mu = np.array(mu)
    l, r = bm.optimal_discriminator(mu, TARGET)
    ends = np.array([l[0], r[0], l[1], r[1]])
    assert np.all(np.diff(ends) >= 0)  # ordered, two intervals
    assert np.all(np.abs(ends) <= bm.ENDS_CAP)
    best = float(bm.loss(mu, l, r, TARGET))
    assert best == pytest.approx(1.0 + _tv_quad(mu, TARGET), abs=1e-9)
    # brute force over ordered ends on a grid (with the two infinite ends)
    g = np.r_[-bm.ENDS_CAP, np.linspace(-12.0, 12.0, 49), bm.ENDS_CAP]
    i = np.array(np.meshgrid(*[np.arange(g.size)] * 4, indexing="ij")).reshape(4, -1)
    i = i[:, (i[0] <= i[1]) & (i[1] <= i[2]) & (i[2] <= i[3])]
    e = g[i].T
    brute = bm.loss(mu, e[:, [0, 2]], e[:, [1, 3]], TARGET)
    assert brute.max() <= best + 1e-12
    assert brute.max() >= best - 2e-2  # the grid is 0.5 wide: it gets close
    # random ends in any order, and small perturbations of the optimum, never do better
    rng = np.random.default_rng(5)
    e = rng.uniform(-8, 8, size=(20_000, 4))
    assert bm.loss(mu, e[:, [0, 2]], e[:, [1, 3]], TARGET).max() <= best + 1e-12
    finite = np.abs(ends) < bm.ENDS_CAP
    pert = ends + finite * rng.normal(scale=1e-3, size=(2000, 4))
    assert bm.loss(mu, pert[:, [0, 2]], pert[:, [1, 3]], TARGET).max() <= best + 1e-12


def test_optimal_discriminator_shapes_and_tails():
    # mu* has the heavier tails on both sides when the generator sits in the middle
    l, r = bm.optimal_discriminator(np.array([-0.5, 0.5]), TARGET)
    assert l[0] == -bm.ENDS_CAP and r[1] == bm.ENDS_CAP
    assert r[0] < -0.5 < 0.5 < l[1]
    # at mu = mu* every discriminator is optimal: the whole line, L = 1
    l, r = bm.optimal_discriminator(TARGET, TARGET)
    assert float(bm.loss(TARGET, l, r, TARGET)) == 1.0
    # batches of any leading shape
    mus = np.random.default_rng(0).uniform(-4, 4, size=(3, 5, 2))
    l, r = bm.optimal_discriminator(mus, TARGET)
    assert l.shape == r.shape == (3, 5, 2)
    assert bm.density_crossings(mus, TARGET).shape == (3, 5, 3)
    np.testing.assert_allclose(bm.tv_distance(mus, TARGET)[1, 2], bm.tv_distance(mus[1, 2], TARGET),
                               atol=1e-15)


def test_gradients_of_L_against_finite_differences():
    rng = np.random.default_rng(7)
    h = 1e-6
    for _ in range(20):
        mu = rng.uniform(-4, 4, 2)
        l, r = rng.uniform(-5, 5, 2), rng.uniform(-5, 5, 2)  # unordered ends on purpose
        g_mu, g_l, g_r = bm.loss_grad(mu, l, r, TARGET)
        for name, x, g in (("mu", mu, g_mu), ("l", l, g_l), ("r", r, g_r)):
            for i in range(2):
                xp, xm = x.copy(), x.copy()
                xp[i] += h
                xm[i] -= h
                args = {"mu": mu, "l": l, "r": r}
                fp = bm.loss(**{**args, name: xp}, target=TARGET)
                fm = bm.loss(**{**args, name: xm}, target=TARGET)
                assert g[i] == pytest.approx((fp - fm) / (2 * h), abs=1e-8), (name, i)
    # the maximiser is a critical point in the ends: dL/dx = +-(p* - p_mu)(x) = 0 at crossings
    mu = np.array([-2.1, 1.9])
    l, r = bm.optimal_discriminator(mu, TARGET)
    _, g_l, g_r = bm.loss_grad(mu, l, r, TARGET)
    assert np.max(np.abs(np.r_[g_l, g_r])) < 1e-12


def test_unrolled_generator_gradient_against_finite_differences():
    rng = np.random.default_rng(3)
    lr, k, h = 0.3, 4, 1e-6

    def unrolled_loss(mu, l, r):
        for _ in range(k):
            _, gl, gr = bm.loss_grad(mu, l, r, TARGET)
            l, r = l + lr * gl, r + lr * gr
        return float(bm.loss(mu, l, r, TARGET))

    for _ in range(8):
        mu = rng.uniform(-3, 3, 2)
        e = np.sort(rng.uniform(-4, 4, 4))
        l, r = e[[0, 2]], e[[1, 3]]
        new_mu, new_l, new_r = bm.first_order_step(mu, l, r, TARGET, lr, unrolled=k)
        g = (mu - new_mu) / lr
        fd = [
            (unrolled_loss(mu + h * np.eye(2)[i], l, r)
             - unrolled_loss(mu - h * np.eye(2)[i], l, r)) / (2 * h)
            for i in range(2)
        ]
        np.testing.assert_allclose(g, fd, atol=1e-7)
        # the discriminator step is the plain one either way
        _, plain_l, plain_r = bm.first_order_step(mu, l, r, TARGET, lr, unrolled=0)
        np.testing.assert_array_equal(new_l, plain_l)
        np.testing.assert_array_equal(new_r, plain_r)


# --------------------------------------------------------------------------------------------
# dynamics
# --------------------------------------------------------------------------------------------


def test_optimal_dynamics_converge_from_a_spread_of_starts():
    g = np.linspace(-4.0, 4.0, 7)
    m1, m2 = np.meshgrid(g, g + 0.37, indexing="ij")  # off the diagonal mu_1 = mu_2
    mu0 = np.stack([m1.ravel(), m2.ravel()], axis=1)
    run = bm.run_dynamics("optimal", mu0, TARGET, lr=0.2, steps=600)
    assert np.all(bm.classify(run.mu, TARGET, tol=0.1) == bm.CONVERGED)
    assert np.all(bm.tv_distance(run.mu, TARGET) < 0.03)
    # the optimal dynamics descend d_TV: it decreases along the way (in the large)
    rec = bm.run_dynamics("optimal", mu0[:5], TARGET, lr=0.2, steps=300, record_every=50)
    tv = bm.tv_distance(rec.trajectory, TARGET)
    assert rec.trajectory.shape == (7, 5, 2)
    assert np.all(tv[-1] < tv[0])


def test_equal_means_stay_equal_and_first_order_stalls_without_gradient():
    # mu_1 = mu_2 is invariant under both dynamics: no symmetric start can converge
    mu0 = np.array([[0.7, 0.7], [-3.0, -3.0]])
    opt = bm.run_dynamics("optimal", mu0, TARGET, lr=0.2, steps=200)
    assert np.all(opt.mu[:, 0] == opt.mu[:, 1])
    l0, r0 = np.array([[-4.0, 0.0]] * 2), np.array([[-1.0, 3.0]] * 2)
    fo = bm.run_dynamics("first_order", mu0, TARGET, lr=0.2, steps=200, l0=l0, r0=r0)
    assert np.all(fo.mu[:, 0] == fo.mu[:, 1])
    assert np.all(bm.classify(opt.mu, TARGET) != bm.CONVERGED)
    # a discriminator far from every mean passes no gradient: the first-order run stalls where
    # it starts, while the optimal dynamics from the same means converge
    mu0 = np.array([[-0.5, 0.5]])
    fo = bm.run_dynamics("first_order", mu0, TARGET, lr=0.2, steps=300,
                         l0=[[20.0, 24.0]], r0=[[22.0, 26.0]])
    np.testing.assert_allclose(fo.mu, mu0, atol=1e-12)
    assert bm.classify(fo.mu, TARGET)[0] == bm.OTHER
    opt = bm.run_dynamics("optimal", mu0, TARGET, lr=0.2, steps=600)
    assert bm.classify(opt.mu, TARGET)[0] == bm.CONVERGED


def test_first_order_step_is_simultaneous_gradient_play():
    mu, l, r = np.array([0.3, 1.1]), np.array([-3.0, 0.5]), np.array([-1.0, 2.0])
    g_mu, g_l, g_r = bm.loss_grad(mu, l, r, TARGET)
    new = bm.first_order_step(mu, l, r, TARGET, 0.25)
    np.testing.assert_allclose(new[0], mu - 0.25 * g_mu, rtol=0, atol=1e-15)
    np.testing.assert_allclose(new[1], l + 0.25 * g_l, rtol=0, atol=1e-15)
    np.testing.assert_allclose(new[2], r + 0.25 * g_r, rtol=0, atol=1e-15)


def test_run_dynamics_rejects_bad_input():
    with pytest.raises(ValueError, match="dynamics"):
        bm.run_dynamics("adam", [0.0, 1.0], TARGET, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="lr"):
        bm.run_dynamics("optimal", [0.0, 1.0], TARGET, lr=-0.1, steps=1)
    with pytest.raises(ValueError, match="l0"):
        bm.run_dynamics("first_order", [0.0, 1.0], TARGET, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="mu0"):
        bm.run_dynamics("optimal", [0.0, 1.0, 2.0], TARGET, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="steps"):
        bm.run_dynamics("optimal", [0.0, 1.0], TARGET, lr=0.1, steps=2.5)
    with pytest.raises(ValueError, match="record_every"):
        bm.run_dynamics("optimal", [0.0, 1.0], TARGET, lr=0.1, steps=1, record_every=-1)


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def test_classify_hand_made_end_states():
    states = np.array(
        [
            [-2.0, 2.0],  # converged
            [2.05, -1.95],  # converged, modes swapped
            [-1.92, 2.09],  # converged, within 0.1
            [-2.0, 2.15],  # one mean off by 0.15: not converged, not collapsed
            [2.0, 2.0],  # collapsed on the right mode
            [-2.3, -1.8],  # collapsed on the left mode, within 0.5
            [-2.0, -1.3],  # 0.7 from the left mode: not collapsed
            [0.0, 0.0],  # stalled in the middle
            [-6.0, 6.0],  # diverged
        ]
    )
    expect = [0, 0, 0, 2, 1, 1, 2, 2, 2]
    codes = bm.classify(states, TARGET, tol=0.1, collapse_tol=0.5)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, expect)
    # collapse tolerance defaults to tol
    assert bm.classify([-2.3, -1.8], TARGET, tol=0.1) == bm.OTHER
    assert bm.classify(np.array([[[2.0, 2.0]]]), TARGET).shape == (1, 1)
    assert [bm.OUTCOMES[c] for c in (bm.CONVERGED, bm.COLLAPSED, bm.OTHER)] == [
        "converged", "collapsed", "other"
    ]
    with pytest.raises(ValueError, match="tol"):
        bm.classify(states, TARGET, tol=0.0)


# --------------------------------------------------------------------------------------------
# the original GAN game: D* = p/(p+q), the JSD identity and the JS dynamics
# --------------------------------------------------------------------------------------------


def _line_integral(f, mu, target):
    """Adaptive quadrature over the line, split at the means and the density crossings."""
    lo, hi = min(*mu, *target) - 14.0, max(*mu, *target) + 14.0
    pts = sorted({*mu, *target, *[c for c in bm.density_crossings(mu, target) if np.isfinite(c)]})
    val, _ = quad(f, lo, hi, points=pts, limit=500, epsabs=1e-14, epsrel=1e-13)
    return val


JS_CASES = [(0.0, 1.0), (-2.1, 1.9), (3.0, 3.5), (-5.0, 5.0), (0.3, -0.7), (-2.0, 2.0 + 1e-6),
            (-9.0, 7.0)]


@pytest.mark.parametrize("mu", JS_CASES)
def test_optimal_discriminator_is_p_over_p_plus_q_and_the_jsd_identity(mu):
    """max_D E log D(X) + E log(1 - D(G)) = -log 4 + 2 JSD, against adaptive quadrature."""
    mu = np.array(mu)
    p = lambda x: bm.mixture_density(x, TARGET)  # noqa: E731
    q = lambda x: bm.mixture_density(x, mu)  # noqa: E731
    xs = np.linspace(-8, 8, 101)
    np.testing.assert_allclose(bm.density_discriminator(xs, mu, TARGET), p(xs) / (p(xs) + q(xs)),
                               rtol=1e-12)

    def value(d, one_minus_d):
        # E_p log D + E_q log(1 - D), the original GAN game at discriminator d (xlogy: 0 log 0 = 0)
        return _line_integral(lambda x: xlogy(p(x), d(x)) + xlogy(q(x), one_minus_d(x)), mu, TARGET)

    dstar = lambda x: float(bm.density_discriminator(x, mu, TARGET))  # noqa: E731
    # 1 - D* = q/(p+q) written out: 1 - D* rounds to 0 where q << p
    best = value(dstar, lambda x: q(x) / (p(x) + q(x)))
    m = lambda x: 0.5 * (p(x) + q(x))  # noqa: E731
    jsd = 0.5 * _line_integral(lambda x: rel_entr(p(x), m(x)) + rel_entr(q(x), m(x)), mu, TARGET)
    assert best == pytest.approx(-np.log(4.0) + 2.0 * jsd, abs=1e-10)
    assert float(bm.minimax_value(mu, TARGET)) == pytest.approx(best, abs=1e-10)
    assert float(bm.js_divergence(mu, TARGET)) == pytest.approx(jsd, abs=1e-10)
    # D* is the maximiser: any perturbation of it does worse
    for eps in (0.05, -0.05):
        def bent(x, e=eps):
            return min(max(dstar(x) + e * np.exp(-x * x / 8), 1e-12), 1 - 1e-12)

        assert value(bent, lambda x: 1.0 - bent(x)) < best


def test_jsd_is_a_divergence_and_its_gradient_matches_finite_differences():
    assert float(bm.js_divergence(TARGET, TARGET)) == pytest.approx(0.0, abs=1e-14)
    assert float(bm.js_divergence(TARGET[::-1], TARGET)) == pytest.approx(0.0, abs=1e-14)
    far = float(bm.js_divergence(np.array([40.0, 41.0]), TARGET))
    assert far == pytest.approx(np.log(2.0), abs=1e-12)  # disjoint in effect: JSD = log 2
    rng = np.random.default_rng(5)
    mus = rng.uniform(-4, 4, size=(20, 2))
    vals = bm.js_divergence(mus, TARGET)
    assert vals.shape == (20,) and np.all((vals > 0) & (vals < np.log(2.0)))
    np.testing.assert_allclose(bm.minimax_value(mus, TARGET), -np.log(4.0) + 2 * vals,
                               rtol=0, atol=1e-13)
    g = bm.js_gradient(mus, TARGET)
    h = 1e-5
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        fd = (bm.js_divergence(mus + e, TARGET) - bm.js_divergence(mus - e, TARGET)) / (2 * h)
        np.testing.assert_allclose(g[:, i], fd, rtol=0, atol=1e-9)
    # vectorised over runs, same values one at a time
    np.testing.assert_allclose(g[3], bm.js_gradient(mus[3], TARGET), rtol=0, atol=1e-15)


def test_js_dynamics_descend_the_jsd_and_keep_equal_means_equal():
    rng = np.random.default_rng(8)
    mu0 = rng.uniform(-4, 4, size=(6, 2))
    run = bm.run_dynamics("jsd", mu0, TARGET, lr=0.2, steps=40, record_every=10)
    traj = run.trajectory
    jsd = bm.js_divergence(traj, TARGET)  # (T, R)
    assert np.all(np.diff(jsd, axis=0) < 0)  # small steps of gradient descent
    ten = mu0
    for _ in range(10):
        ten = bm.js_step(ten, TARGET, 0.2)
    np.testing.assert_array_equal(traj[1], ten)  # recorded every 10 steps
    step = bm.js_step(mu0, TARGET, 0.2)
    np.testing.assert_allclose(step, mu0 - 0.2 * bm.js_gradient(mu0, TARGET), rtol=0, atol=0)
    eq = bm.run_dynamics("jsd", np.array([[0.5, 0.5], [-1.0, -1.0]]), TARGET, lr=0.2, steps=30)
    np.testing.assert_array_equal(eq.mu[:, 0], eq.mu[:, 1])


# --------------------------------------------------------------------------------------------
# the study and the command line
# --------------------------------------------------------------------------------------------


def test_study_shows_the_dichotomy_and_does_not_depend_on_chunking():
    cfg = BimodalConfig(runs=24, steps=500, grid=0, seed=4)
    a = run_bimodal(cfg, "serial", chunk=10)
    with ThreadPoolExecutor(2) as ex:
        b = run_bimodal(cfg, ex, chunk=256)
    for dyn in bm.DYNAMICS:
        np.testing.assert_array_equal(a.random[dyn]["mu"], b.random[dyn]["mu"])
        np.testing.assert_array_equal(a.random[dyn]["outcome"], b.random[dyn]["outcome"])
    assert a.summary == b.summary
    s = a.summary
    assert s["optimal"]["converged"] == 1.0
    assert s["first_order"]["converged"] < 0.8
    assert s["first_order"]["collapsed"] + s["first_order"]["other"] > 0.2
    # the JS dynamics ran from the same starts, and their end states are their own
    assert set(s["jsd"]) >= {"converged", "collapsed", "other", "n_runs", "median_final_jsd"}
    np.testing.assert_allclose(a.random["jsd"]["jsd"],
                               bm.js_divergence(a.random["jsd"]["mu"], TARGET))


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "study"
    rc = main(["bimodal", "--runs", "10", "--steps", "40", "--grid", "3", "--workers", "1",
               "--lr", "0.3", "--target-means", "-1.5", "2", "--unrolled", "2", "--seed", "9",
               "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out / "bimodal.json") in printed and str(out / "bimodal.png") in printed
    data = json.loads((out / "bimodal.json").read_text())
    for dyn in ("optimal", "first_order", "jsd"):
        d = data[dyn]
        assert d["n_runs"] == 10
        assert d["converged"] + d["collapsed"] + d["other"] == pytest.approx(1.0)
    st = data["settings"]
    assert (st["runs"], st["steps"], st["lr"], st["unrolled"], st["seed"], st["grid"]) == (
        10, 40, 0.3, 2, 9, 3
    )
    assert st["target_means"] == [-1.5, 2.0]
    assert data["grid"]["optimal"]["n_runs"] == 9
    with h5py.File(out / "bimodal.h5", "r") as f:
        assert f["random/mu0"].shape == (10, 2) and f["random/l0"].shape == (10, 2)
        assert f["grid/mu0"].shape == (9, 2)
        np.testing.assert_allclose(f["grid/axis"][:], np.linspace(-4, 4, 3))
        for dyn in ("optimal", "first_order", "jsd"):
            codes = f[f"random/{dyn}/outcome"][:]
            mu = f[f"random/{dyn}/mu"][:]
            assert f[f"random/{dyn}/l"].shape == f[f"random/{dyn}/r"].shape == (10, 2)
            np.testing.assert_array_equal(codes, bm.classify(mu, [-1.5, 2.0], 0.1, 0.5))
            assert np.mean(codes == 0) == pytest.approx(data[dyn]["converged"])
            assert f[f"grid/{dyn}/outcome"].shape == (9,)
        assert list(f.attrs["target_means"]) == [-1.5, 2.0]
    png = (out / "bimodal.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize(
    "args, name",
    [
        (["--runs", "0"], "runs"),
        (["--steps", "-3"], "steps"),
        (["--lr", "0"], "lr"),
        (["--lr", "nan"], "lr"),
        (["--target-means", "1", "1"], "target_means"),
        (["--unrolled", "-1"], "unrolled"),
        (["--grid", "1"], "grid"),
        (["--seed", "-2"], "seed"),
        (["--workers", "0"], "workers"),
        (["--tol", "-0.1"], "tol"),
        (["--scheduler", "nowhere"], "scheduler"),
    ],
)
def test_cli_bad_input_names_the_argument_and_writes_nothing(tmp_path, capsys, args, name):
    out = tmp_path / "never"
    rc = main(["bimodal", *args, "-o", str(out)])  # rejected before anything runs
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err
    assert not out.exists()


def test_config_validation_errors_name_the_setting():
    with pytest.raises(ValueError, match="collapse_tol"):
        BimodalConfig(collapse_tol=float("inf")).validate()
    with pytest.raises(ValueError, match="init_range"):
        BimodalConfig(init_range=0).validate()
    with pytest.raises(ValueError, match="target_means"):
        BimodalConfig(target_means=(0.0, 0.5)).validate()
    with pytest.raises(ValueError, match="chunk"):
        run_bimodal(BimodalConfig(runs=2, steps=1, grid=0), "serial", chunk=0)
