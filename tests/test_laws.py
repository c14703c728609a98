"""Latent laws, targets and their quadratures (meanfield_gan.model.laws).

Every projected-Euler/Heun reference rests on these nodes and weights, so each rule is checked
against closed forms: Gauss-Hermite against the Gaussian moments ``E Z^k = (k-1)!!`` (exact up
to degree ``2n - 1``, and off by exactly ``n!`` at degree ``2n``), the Sobol fallback and the
logistic/uniform rules against their moments to quasi-Monte Carlo accuracy (well inside what
plain Monte Carlo with as many points could reach), mixtures against their closed-form mean and
covariance, and Dirac mixtures and data sets as exact sums.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.model import laws
from meanfield_gan.model.laws import MAX_TENSOR_NODES, gauss_hermite


def normal_moment(k: int) -> float:
    """``E Z^k`` for ``Z ~ N(0, 1)``: 0 for odd ``k``, ``(k - 1)!!`` for even ``k``."""
    return 0.0 if k % 2 else float(math.prod(range(k - 1, 0, -2)))


def weighted_moments(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` of the discrete law ``sum_b w_b delta_{x_b}``."""
    mean = w @ x
    c = x - mean
    return mean, (c * w[:, None]).T @ c


# --------------------------------------------------------------------------------------------
# Gauss-Hermite
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 12])
def test_gauss_hermite_is_exact_up_to_degree_2n_minus_1(n):
    x, w = gauss_hermite(n, 1)
    assert x.shape == (n, 1) and w.shape == (n,)
    assert np.all(w > 0) and w.sum() == pytest.approx(1.0, abs=1e-15)
    for k in range(2 * n):
        # Rounding scale of the sum: odd moments cancel terms of size w |x|^k.
        scale = w @ np.abs(x[:, 0]) ** k
        assert w @ x[:, 0] ** k == pytest.approx(normal_moment(k), rel=1e-12, abs=1e-14 * scale), \
            f"degree {k}"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 12])
def test_gauss_hermite_is_not_exact_at_degree_2n(n):
    # The n-point rule integrates x^{2n} - He_n(x)^2 (degree < 2n) exactly and He_n^2 as 0
    # (He_n vanishes at the nodes), while E He_n(Z)^2 = n!: its error at degree 2n is -n!.
    x, w = gauss_hermite(n, 1)
    q = w @ x[:, 0] ** (2 * n)
    m = normal_moment(2 * n)
    assert q != pytest.approx(m, rel=1e-3)
    assert q == pytest.approx(m - math.factorial(n), rel=1e-12)


@pytest.mark.parametrize("n, dim", [(3, 2), (4, 2), (2, 3), (3, 3)])
def test_tensor_gauss_hermite_on_mixed_monomials(n, dim):
    x, w = gauss_hermite(n, dim)
    assert x.shape == (n**dim, dim) and w.shape == (n**dim,)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    # Every node is a point of the 1-D rule's product grid, each exactly once.
    x1 = gauss_hermite(n, 1)[0][:, 0]
    grid = {tuple(p) for p in itertools.product(x1, repeat=dim)}
    assert {tuple(p) for p in x} == grid
    # E prod Z_i^{k_i} = prod E Z^{k_i}: exact whenever every k_i <= 2n - 1 ...
    for ks in itertools.product(range(2 * n), repeat=dim):
        terms = w * np.prod(x ** np.array(ks), axis=1)
        m = math.prod(normal_moment(k) for k in ks)
        assert terms.sum() == pytest.approx(m, rel=1e-12, abs=1e-14 * np.abs(terms).sum()), \
            f"exponents {ks}"
    # ... and one coordinate at degree 2n is off by n! times the others' moments.
    ks = (2 * n,) + (2,) * (dim - 1)
    q = w @ np.prod(x ** np.array(ks), axis=1)
    rest = normal_moment(2) ** (dim - 1)
    assert q == pytest.approx((normal_moment(2 * n) - math.factorial(n)) * rest, rel=1e-12)


@pytest.mark.parametrize("dim, n, per_dim", [(1, 7, 7), (2, 25, 5), (2, 30, 5), (3, 64, 4)])
def test_standard_normal_quadrature_is_the_tensor_rule_of_about_n_nodes(dim, n, per_dim):
    x, w = mfg.StandardNormal(dim).quadrature(n)
    xr, wr = gauss_hermite(per_dim, dim)
    np.testing.assert_array_equal(x, xr)
    np.testing.assert_array_equal(w, wr)
    # So it is exact for the mean and covariance and for x_1^2 x_2^2 ... (degree 2 <= 2k - 1).
    mean, cov = weighted_moments(x, w)
    np.testing.assert_allclose(mean, 0.0, atol=1e-14)
    np.testing.assert_allclose(cov, np.eye(dim), atol=1e-13)


def _spy(monkeypatch, name: str) -> list:
    """Record the calls of ``laws.<name>`` (the module-level function the laws call)."""
    calls = []
    real = getattr(laws, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(laws, name, wrapper)
    return calls


@pytest.mark.parametrize("dim, n_tensor, n_sobol", [
    (1, MAX_TENSOR_NODES, MAX_TENSOR_NODES + 1),
    (2, 64**2, 65**2),     # 64^2 = 4096 nodes is the largest 2-D tensor rule
    (3, 16**3, 17**3),
])
def test_sobol_fallback_above_max_tensor_nodes(monkeypatch, dim, n_tensor, n_sobol):
    gh, sobol = _spy(monkeypatch, "gauss_hermite"), _spy(monkeypatch, "sobol_uniform")
    law = mfg.StandardNormal(dim)
    x, w = law.quadrature(n_tensor)
    assert len(gh) == 1 and not sobol and len(x) == n_tensor
    x, w = law.quadrature(n_sobol)
    assert len(gh) == 1 and len(sobol) == 1
    # A scrambled Sobol set of 2^m points with equal weights, pushed through the inverse CDF.
    m = math.ceil(math.log2(n_sobol))
    assert x.shape == (2**m, dim) and np.all(w == 1.0 / 2**m)
    assert np.unique(x, axis=0).shape[0] == 2**m
    # Moments to QMC accuracy: plain Monte Carlo with 2^m points has standard errors about
    # 2^{-m/2} (0.011 at 2^13) on the mean and sqrt(2) 2^{-m/2} on the variance.
    mean, cov = weighted_moments(x, w)
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(cov, np.eye(dim), atol=1e-3)


# --------------------------------------------------------------------------------------------
# Logistic and uniform latents
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2])
def test_logistic_quadrature_moments(dim):
    x, w = mfg.StandardLogistic(dim).quadrature(4096)
    assert x.shape == (4096, dim) and np.all(w == 1 / 4096)
    mean, cov = weighted_moments(x, w)
    # Standard logistic: mean 0, variance pi^2/3, independent coordinates. Monte Carlo with
    # 4096 points has standard errors 0.028 (mean) and 0.09 (variance).
    np.testing.assert_allclose(mean, 0.0, atol=2e-3)
    np.testing.assert_allclose(cov, math.pi**2 / 3 * np.eye(dim), atol=2e-2)
    # The nodes are logistic quantiles: their CDF values are a low-discrepancy set in (0, 1).
    u = 1.0 / (1.0 + np.exp(-x[:, 0]))
    assert np.max(np.abs(np.sort(u) - (np.arange(4096) + 0.5) / 4096)) < 2e-3


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_uniform_quadrature_moments(dim):
    x, w = mfg.Uniform(dim).quadrature(1024)
    assert x.shape == (1024, dim) and np.all(np.abs(x) < 1.0)
    mean, cov = weighted_moments(x, w)
    # Uniform on [-1, 1]: mean 0, variance 1/3, E x^4 = 1/5. A scrambled Sobol set of 2^m
    # points puts one point in each of 2^m equal slices of every coordinate, so the marginal
    # moments are nearly exact; a mixed moment is QMC-accurate (Monte Carlo: about 3e-3 here).
    np.testing.assert_allclose(mean, 0.0, atol=1e-6)
    np.testing.assert_allclose(cov, np.eye(dim) / 3, atol=1e-6)
    assert w @ x[:, 0] ** 4 == pytest.approx(0.2, abs=1e-6)
    if dim > 1:
        assert w @ (x[:, 0] ** 2 * x[:, 1] ** 2) == pytest.approx(1 / 9, abs=1e-4)


@pytest.mark.parametrize("law, var", [
    (mfg.StandardNormal(2), 1.0),
    (mfg.StandardLogistic(2), math.pi**2 / 3),
    (mfg.Uniform(2), 1 / 3),
])
def test_latent_sampling_moments(law, var):
    n = 200_000
    x = law.sample(np.random.default_rng(7), n)
    assert x.shape == (n, 2)
    # Five standard errors: sd/sqrt(n) for the mean, sd(x^2)/sqrt(n) for the variance.
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=5 * math.sqrt(var / n))
    se = 5 * np.std(x**2, axis=0) / math.sqrt(n)
    assert np.all(np.abs(np.mean(x**2, axis=0) - var) < se)
    assert abs(np.mean(x[:, 0] * x[:, 1])) < 5 * var / math.sqrt(n)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------
MEANS = np.array([[-1.0, 0.5], [2.0, -1.5], [0.0, 3.0]])
SCALES = np.array([[0.3, 1.2], [0.7, 0.2], [1.0, 0.5]])
WEIGHTS = np.array([2.0, 5.0, 3.0])


def mixture_moments(means, scales, weights):
    """Closed-form mean and covariance of ``sum_c w_c N(m_c, diag(s_c^2))`` (weights normalised)."""
    p = np.asarray(weights, float) / np.sum(weights)
    mean = p @ means
    second = sum(pc * (np.diag(sc**2) + np.outer(mc, mc)) for pc, mc, sc in zip(p, means, scales))
    return mean, second - np.outer(mean, mean)


def test_gaussian_mixture_quadrature_mean_and_covariance():
    gm = mfg.GaussianMixture(MEANS, SCALES, WEIGHTS)
    np.testing.assert_allclose(gm.weights, [0.2, 0.5, 0.3], rtol=1e-15)
    x, w = gm.quadrature(300)    # 100 nodes per component: a 10 x 10 tensor rule each
    assert x.shape == (300, 2) and w.sum() == pytest.approx(1.0, abs=1e-14)
    mean, cov = weighted_moments(x, w)
    m_ref, c_ref = mixture_moments(MEANS, SCALES, WEIGHTS)
    np.testing.assert_allclose(mean, m_ref, atol=1e-13)
    np.testing.assert_allclose(cov, c_ref, atol=1e-12)
    # Each component's nodes carry that component's weight.
    np.testing.assert_allclose(w.reshape(3, 100).sum(axis=1), [0.2, 0.5, 0.3], rtol=1e-13)


def test_gaussian_mixture_isotropic_scales_per_component():
    means = np.array([[0.0, 0.0, 1.0], [1.0, -1.0, 0.0]])
    gm = mfg.GaussianMixture(means, scales=[0.5, 2.0])
    np.testing.assert_array_equal(gm.scales, [[0.5] * 3, [2.0] * 3])
    mean, cov = weighted_moments(*gm.quadrature(128))
    m_ref, c_ref = mixture_moments(means, gm.scales, [1.0, 1.0])
    np.testing.assert_allclose(mean, m_ref, atol=1e-13)
    np.testing.assert_allclose(cov, c_ref, atol=1e-12)


def test_gaussian_mixture_sampling_moments():
    gm = mfg.GaussianMixture(MEANS, SCALES, WEIGHTS)
    n = 400_000
    x = gm.sample(np.random.default_rng(11), n)
    assert x.shape == (n, 2)
    m_ref, c_ref = mixture_moments(MEANS, SCALES, WEIGHTS)
    se_mean = np.sqrt(np.diag(c_ref) / n)
    np.testing.assert_array_less(np.abs(x.mean(axis=0) - m_ref), 5 * se_mean)
    # Each covariance entry is a mean of products: its standard error is sd(product)/sqrt(n).
    c = x - m_ref
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(axis=0) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(prods.mean(axis=0) - c_ref), 5 * se_cov)
    # The same generator state gives the same batch.
    np.testing.assert_array_equal(gm.sample(np.random.default_rng(11), n), x)


def test_dirac_mixture_is_an_exact_weighted_sum():
    pts = np.array([[-1.0, 2.0], [0.5, 0.5], [3.0, -2.0]])
    dm = mfg.DiracMixture(pts, weights=[1.0, 2.0, 1.0])
    x, w = dm.quadrature(5)   # n is irrelevant: the nodes are the atoms
    np.testing.assert_array_equal(x, pts)
    np.testing.assert_array_equal(w, [0.25, 0.5, 0.25])
    # E f(X) = sum_c w_c f(x_c) for any f, e.g. f(x) = exp(x_1) cos(x_2).
    f = np.exp(x[:, 0]) * np.cos(x[:, 1])
    ref = 0.25 * math.exp(-1) * math.cos(2) + 0.5 * math.exp(0.5) * math.cos(0.5) \
        + 0.25 * math.exp(3) * math.cos(-2)
    assert w @ f == pytest.approx(ref, rel=1e-15)
    # The quadrature is a copy: changing it leaves the law alone.
    x[0] = 99.0
    assert dm.points[0, 0] == -1.0
    # Sampling draws only atoms, with frequencies near the weights.
    s = dm.sample(np.random.default_rng(2), 40_000)
    idx = [np.flatnonzero((pts == row).all(axis=1))[0] for row in s[:1000]]
    assert len(idx) == 1000
    freq = np.array([np.mean((s == p).all(axis=1)) for p in pts])
    assert freq.sum() == 1.0
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=5 * math.sqrt(0.25 / 40_000))
    # One-dimensional points (n,) mean K = 1.
    assert mfg.DiracMixture([-1.0, 1.0]).dim == 1


def test_empirical_data_is_the_exact_sum():
    data = np.random.default_rng(4).normal(size=(37, 3))
    ed = mfg.EmpiricalData(data)
    x, w = ed.quadrature()
    np.testing.assert_array_equal(x, data)
    np.testing.assert_array_equal(w, np.full(37, 1 / 37))
    np.testing.assert_allclose(w @ x, data.mean(axis=0), rtol=1e-14, atol=1e-15)
    s = ed.sample(np.random.default_rng(0), 500)
    rows = {tuple(r) for r in data}
    assert all(tuple(r) in rows for r in s)


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: gauss_hermite(0, 1), "n_per_dim"),
    (lambda: gauss_hermite(3, 0), "dim"),
    (lambda: laws.sobol_uniform(0, 2), "n"),
    (lambda: mfg.StandardNormal(1).quadrature(0), "n"),
    (lambda: mfg.StandardNormal(1).quadrature(2.5), "n"),
    (lambda: mfg.StandardLogistic(1).quadrature(-4), "n"),
    (lambda: mfg.Uniform(2).quadrature(0), "n"),
    (lambda: mfg.GaussianMixture(MEANS, SCALES, WEIGHTS).quadrature(0), "n"),
    (lambda: mfg.GaussianMixture(MEANS, 0.0), "scales"),
    (lambda: mfg.GaussianMixture(MEANS, [[1.0, -1.0]] * 3), "scales"),
    (lambda: mfg.GaussianMixture(MEANS, np.nan), "scales"),
    (lambda: mfg.GaussianMixture([[0.0, np.inf]]), "means"),
    (lambda: mfg.GaussianMixture(np.zeros((0, 2))), "means"),
    (lambda: mfg.GaussianMixture(MEANS, 1.0, [1.0, 1.0]), "weights"),
    (lambda: mfg.GaussianMixture(MEANS, 1.0, [1.0, -1.0, 1.0]), "weights"),
    (lambda: mfg.GaussianMixture(MEANS, 1.0, [0.0, 0.0, 0.0]), "weights"),
    (lambda: mfg.DiracMixture(np.zeros((2, 2, 2))), "points"),
    (lambda: mfg.DiracMixture([[0.0], [np.nan]]), "points"),
    (lambda: mfg.DiracMixture([[0.0], [1.0]], [1.0, np.nan]), "weights"),
    (lambda: mfg.EmpiricalData(np.zeros((0, 1))), "points"),
    (lambda: mfg.NormalInit(0.0, 0.0), "scale"),
    (lambda: mfg.NormalInit(np.nan, 1.0), "loc"),
    (lambda: mfg.UniformInit(1.0, 1.0), "low < high"),
])
def test_bad_inputs_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
