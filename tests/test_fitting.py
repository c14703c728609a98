"""Tests of meanfield_gan.fitting: power-law fits with bootstrap intervals over seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from meanfield_gan.fitting import PowerLawFit, fit_power_law

N_GRID = np.array([50, 100, 200, 400, 800, 1600])


def _noisy_inverse_law(n_seeds: int, seed: int, c: float = 2.0) -> np.ndarray:
    """values[p, s] = c / N_p * (1 + U(-1/2, 1/2)): the seed mean is exactly c / N."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-0.5, 0.5, size=(N_GRID.size, n_seeds))
    return c / N_GRID[:, None] * (1.0 + noise)


def test_exact_power_law_is_recovered():
    values = np.tile(3.0 * N_GRID[:, None] ** -0.5, (1, 4))
    fit = fit_power_law(N_GRID, values, n_boot=200)
    assert isinstance(fit, PowerLawFit)
    assert fit.slope == pytest.approx(-0.5, abs=1e-10)
    assert fit.intercept == pytest.approx(np.log(3.0), abs=1e-10)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-10)
    # Identical seeds: every bootstrap replicate is the data itself.
    assert fit.slope_ci == pytest.approx((-0.5, -0.5), abs=1e-10)
    np.testing.assert_allclose(fit.mean, 3.0 * N_GRID**-0.5, rtol=1e-14)
    np.testing.assert_allclose(fit.stderr, 0.0, atol=1e-15)
    np.testing.assert_allclose(fit.predict([10, 10_000]), [3 / 10**0.5, 3 / 100], rtol=1e-10)


def test_noisy_inverse_law_slope_and_interval_contain_minus_one():
    fit = fit_power_law(N_GRID, _noisy_inverse_law(40, seed=1), n_boot=2000, seed=0)
    # Per-N relative standard error ~ 0.29 / sqrt(40) = 0.046 -> slope s.e. ~ 0.016.
    assert fit.slope == pytest.approx(-1.0, abs=0.08)
    low, high = fit.slope_ci
    assert low < -1.0 < high
    assert low < fit.slope < high
    assert fit.n_boot == 2000
    np.testing.assert_array_equal(fit.n_seeds, 40)


def test_interval_width_matches_error_propagation():
    # Delta method: var(slope) = sum_p xc_p^2 (stderr_p / mean_p)^2 / Sxx^2.
    fit = fit_power_law(N_GRID, _noisy_inverse_law(60, seed=2), n_boot=4000, seed=1)
    xc = np.log(N_GRID) - np.log(N_GRID).mean()
    se = np.sqrt(np.sum(xc**2 * (fit.stderr / fit.mean) ** 2)) / np.sum(xc**2)
    width = fit.slope_ci[1] - fit.slope_ci[0]
    assert width == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_interval_narrows_with_more_seeds():
    few = fit_power_law(N_GRID, _noisy_inverse_law(5, seed=3), n_boot=1000)
    many = fit_power_law(N_GRID, _noisy_inverse_law(80, seed=3), n_boot=1000)
    width = lambda fit: fit.slope_ci[1] - fit.slope_ci[0]  # noqa: E731
    # 16x the seeds: about 4x narrower.
    assert width(many) < 0.5 * width(few)


def test_same_seed_same_interval_other_seed_other_interval():
    values = _noisy_inverse_law(10, seed=4)
    a = fit_power_law(N_GRID, values, n_boot=500, seed=7)
    b = fit_power_law(N_GRID, values, n_boot=500, seed=7)
    c = fit_power_law(N_GRID, values, n_boot=500, seed=8)
    assert a.slope_ci == b.slope_ci
    assert a.slope_ci != c.slope_ci
    assert a.slope == c.slope


def test_nans_are_ignored():
    values = _noisy_inverse_law(12, seed=5)
    padded = np.concatenate([values, np.full((N_GRID.size, 3), np.nan)], axis=1)
    base = fit_power_law(N_GRID, values, n_boot=300, seed=2)
    fit = fit_power_law(N_GRID, padded, n_boot=300, seed=2)
    # Same finite seeds per row -> same means, same fit and the same bootstrap draws.
    assert fit.slope == base.slope
    assert fit.slope_ci == base.slope_ci
    np.testing.assert_array_equal(fit.n_seeds, 12)

    ragged = values.copy()
    ragged[2, :5] = np.nan
    fit = fit_power_law(N_GRID, ragged, n_boot=100)
    assert fit.n_seeds[2] == 7
    assert fit.mean[2] == pytest.approx(values[2, 5:].mean(), rel=1e-14)
    assert fit.stderr[2] == pytest.approx(values[2, 5:].std(ddof=1) / np.sqrt(7), rel=1e-12)


def test_rows_without_data_are_left_out_of_the_fit():
    values = _noisy_inverse_law(8, seed=6)
    with_gap = values.copy()
    with_gap[3] = np.nan
    fit = fit_power_law(N_GRID, with_gap, n_boot=0)
    reference = fit_power_law(np.delete(N_GRID, 3), np.delete(values, 3, axis=0), n_boot=0)
    assert fit.slope == pytest.approx(reference.slope, rel=1e-14)
    assert np.isnan(fit.mean[3]) and fit.n_seeds[3] == 0
    assert all(np.isnan(fit.slope_ci))


def test_single_seed_rows_and_json_output():
    values = 5.0 / N_GRID.astype(float)
    fit = fit_power_law(N_GRID, values, n_boot=50)
    assert fit.slope == pytest.approx(-1.0, abs=1e-12)
    assert np.all(np.isnan(fit.stderr))
    out = json.loads(json.dumps(fit.to_dict()))
    assert out["slope"] == pytest.approx(-1.0)
    assert out["N"] == N_GRID.tolist() and all(isinstance(n, int) for n in out["N"])
    assert out["stderr"] == [None] * N_GRID.size
    assert len(out["slope_ci"]) == 2


@pytest.mark.parametrize(
    "N, values, kwargs, match",
    [
        (np.array([[1, 2]]), np.ones((1, 2)), {}, "N must be a non-empty 1-D"),
        ([10, 20, 40], np.ones((2, 3)), {}, r"values must have shape \(len\(N\), n_seeds\)"),
        ([10, 0, 40], np.ones((3, 3)), {}, "N must contain finite values > 0"),
        ([10, 10, 10], np.ones((3, 3)), {}, "two or more distinct N"),
        ([10, 20], [[1.0, np.nan], [np.nan, np.nan]], {}, "two or more distinct N"),
        ([10, 20], [[1.0, -1.0], [1.0, 1.0]], {}, "values must be >= 0"),
        ([10, 20], [[1.0, np.inf], [1.0, 1.0]], {}, "must not contain inf"),
        ([10, 20], [[0.0, 0.0], [1.0, 1.0]], {}, "average to 0 at N=10"),
        ([10, 20], [[1.0], [2.0]], {"level": 1.0}, "level"),
        ([10, 20], [[1.0], [2.0]], {"n_boot": -1}, "n_boot"),
    ],
)
def test_bad_inputs_raise(N, values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(N, values, **kwargs)
