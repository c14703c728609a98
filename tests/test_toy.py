"""The explicit example of MODEL.md section 5 (step generator, ReLU critic, logistic latent)."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from meanfield_gan.cli import main
from meanfield_gan.models.explicit import (
    integrate,
    measure_limit,
    orbit_period,
    predicted_limit,
    toy_energy,
    toy_velocity,
)
from meanfield_gan.studies.toy import run_toy

GAMMAS = (1.0, 10.0)


def _logistic(g):
    return 1.0 / (1.0 + np.exp(-g))


# ------------------------------------------------------------------------------------------
# Closed forms
# ------------------------------------------------------------------------------------------
def test_velocity_matches_logistic_formulas_and_conserves_energy():
    rng = np.random.default_rng(0)
    g = rng.uniform(-4, 4, 200)
    w = rng.uniform(-1, 1, 200)
    phi = _logistic(g)
    dphi = phi * (1 - phi)
    # The two identities behind the conservation law.
    np.testing.assert_allclose(0.5 - phi, -np.tanh(g / 2) / 2, atol=1e-15)
    np.testing.assert_allclose(np.sinh(g) * dphi, np.tanh(g / 2) / 2, atol=1e-14)
    for gc in GAMMAS:
        dg, dw = toy_velocity(g, w, gc, constrained=False)
        np.testing.assert_allclose(dg, dphi * w, atol=1e-15)
        np.testing.assert_allclose(dw, gc * (0.5 - phi), atol=1e-14)
        # dE/dt = grad E . v = 2 sinh(g) g' + 2 omega omega' / gamma_c = 0
        np.testing.assert_allclose(2 * np.sinh(g) * dg + 2 * w * dw / gc, 0.0, atol=1e-13)


def test_tangent_cone_projection():
    # On omega = 1 the critic velocity is zeroed only when it points outwards (g < 0).
    dg, dw = toy_velocity(np.array([-0.5, 0.5, -0.5, 0.5]), np.array([1.0, 1.0, -1.0, -1.0]), 2.0)
    assert dw[0] == 0.0 and dw[1] < 0.0
    assert dw[2] > 0.0 and dw[3] == 0.0
    np.testing.assert_allclose(
        dg, toy_velocity([-0.5, 0.5, -0.5, 0.5], [1, 1, -1, -1], 2.0, False)[0])


@pytest.mark.parametrize("gc", GAMMAS)
def test_predicted_limit_is_the_level_set_through_the_sliding_exit(gc):
    p = predicted_limit(gc)
    # E* is the energy of (g, omega) = (0, +-1), where sliding ends...
    assert toy_energy(0.0, 1.0, gc) == pytest.approx(p["limit_energy"], abs=1e-15)
    # ...and max |g| is where that level set meets omega = 0.
    assert toy_energy(p["max_abs_g"], 0.0, gc) == pytest.approx(p["limit_energy"], abs=1e-14)
    assert p["max_abs_g"] == pytest.approx({1.0: 0.9624, 10.0: 0.3149}[gc], abs=1e-4)


@pytest.mark.parametrize("gc", GAMMAS)
def test_small_amplitude_period(gc):
    # Linearisation at the centre: g'' = -gamma_c g / 16, period 8 pi / sqrt(gamma_c).
    assert orbit_period(1e-3, 0.0, gc) == pytest.approx(8 * math.pi / math.sqrt(gc), rel=1e-5)
    # Larger orbits are slower (Phi' decays).
    assert orbit_period(1.5, 0.0, gc) > orbit_period(0.5, 0.0, gc)


# ------------------------------------------------------------------------------------------
# Unconstrained flow: RK4 keeps E, explicit Euler drifts at O(dt)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gc", GAMMAS)
@pytest.mark.parametrize("start", [(1.0, 0.5), (-2.0, 0.0)])
def test_rk4_conserves_energy_over_ten_periods(gc, start):
    dt = 0.05
    T = orbit_period(*start, gc)
    t, g, w = integrate(*start, gc, 10 * T, dt, scheme="rk4", constrained=False)
    e = toy_energy(g, w, gc)
    assert np.max(np.abs(e - e[0])) < 1e-6
    # The orbit did close ten times (it is periodic, not damped to the centre).
    assert np.sum((g[:-1] < 0) & (g[1:] >= 0)) >= 9


@pytest.mark.parametrize("gc", GAMMAS)
def test_explicit_euler_energy_drifts_upwards_at_first_order(gc):
    start = (1.0, 0.0)
    T = orbit_period(*start, gc)
    drift = []
    for dt in (0.02, 0.01):
        t, g, w = integrate(*start, gc, T, dt, scheme="euler", constrained=False)
        drift.append(toy_energy(g[-1], w[-1], gc) - toy_energy(g[0], w[0], gc))
    assert drift[0] > 0 and drift[1] > 0
    assert 1.7 <= drift[0] / drift[1] <= 2.3


def test_verlet_energy_error_is_bounded():
    gc, start, dt = 1.0, (1.0, 0.5), 0.1
    T = orbit_period(*start, gc)
    t, g, w = integrate(*start, gc, 10 * T, dt, scheme="verlet", constrained=False)
    dev = np.abs(toy_energy(g, w, gc) - toy_energy(*start, gc))
    first, last = dev[t <= T], dev[t >= 9 * T]
    assert dev.max() < 1e-3
    # Symplectic: the error oscillates, it does not accumulate.
    assert last.max() < 1.5 * first.max()


# ------------------------------------------------------------------------------------------
# Constrained flow: capture onto the limit orbit E = E*
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gc", GAMMAS)
@pytest.mark.parametrize("start", [(-2.0, 0.0), (1.0, -0.8), (-0.5, 1.0), (1.5, 0.3)])
def test_limit_orbit_from_starts_outside(gc, start):
    pred = predicted_limit(gc)
    assert toy_energy(*start, gc) > pred["limit_energy"]
    t, g, w = integrate(*start, gc, 120.0, 0.05, scheme="rk4")
    assert np.all(np.abs(w) <= 1.0)
    m = measure_limit(t, g, w, gc, n_periods=2)
    assert m["periods_in_window"] == 2
    assert abs(m["limit_energy"] - pred["limit_energy"]) < 1e-3
    assert m["energy_spread"] < 1e-3
    assert abs(m["max_abs_g"] - pred["max_abs_g"]) < 1e-3


def test_sliding_phase_follows_the_exact_solution():
    # From (-1, 1): omega is pinned at 1 and F(g) = 2g + 2 sinh g grows at unit rate until g = 0.
    gc, g0 = 1.0, -1.0
    t_exit = -(2 * g0 + 2 * math.sinh(g0))
    t, g, w = integrate(g0, 1.0, gc, 8.0, 0.01, scheme="rk4")
    slide = t < t_exit
    assert np.all(w[slide] == 1.0)
    np.testing.assert_allclose(2 * g[slide] + 2 * np.sinh(g[slide]),
                               2 * g0 + 2 * math.sinh(g0) + t[slide], atol=1e-10)
    assert np.all(w[t > t_exit + 0.05] < 1.0)  # it leaves the boundary at g = 0
    # Independent check: projected Euler with a small step agrees.
    te, ge, we = integrate(g0, 1.0, gc, 8.0, 0.001, scheme="euler")
    assert abs(ge[-1] - g[-1]) < 1e-3 and abs(we[-1] - w[-1]) < 1e-3


@pytest.mark.parametrize("gc", GAMMAS)
@pytest.mark.parametrize("start", [(0.15, 0.0), (0.0, 0.9), (-0.1, -0.5)])
def test_starts_inside_keep_their_energy(gc, start):
    pred = predicted_limit(gc)
    e0 = toy_energy(*start, gc)
    assert e0 < pred["limit_energy"]
    t, g, w = integrate(*start, gc, 60.0, 0.05, scheme="rk4")
    assert np.max(np.abs(w)) < 1.0  # never touches the boundary: no sliding
    assert np.max(np.abs(toy_energy(g, w, gc) - e0)) < 1e-7
    # And the constrained run is the unconstrained one, exactly.
    tu, gu, wu = integrate(*start, gc, 60.0, 0.05, scheme="rk4", constrained=False)
    np.testing.assert_array_equal(g, gu)
    np.testing.assert_array_equal(w, wu)


# ------------------------------------------------------------------------------------------
# Projected Euler converges to the projected flow
# ------------------------------------------------------------------------------------------
def _euler_errors(gc, start, t_end, dts):
    tr, gr, wr = integrate(*start, gc, t_end, 0.001, scheme="rk4")
    errs = []
    for dt in dts:
        t, g, w = integrate(*start, gc, t_end, dt, scheme="euler")
        errs.append(math.hypot(g[-1] - gr[-1], w[-1] - wr[-1]))
    errs = np.array(errs)
    order = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    return errs, order


def test_reference_solution_is_converged_through_the_events():
    # The event-located RK4 keeps fourth order through hit, slide and departure.
    gc, start, t_end = 1.0, (-2.0, 0.0), 40.0
    a = integrate(*start, gc, t_end, 0.1, scheme="rk4")
    b = integrate(*start, gc, t_end, 0.05, scheme="rk4")
    c = integrate(*start, gc, t_end, 0.001, scheme="rk4")
    e1 = math.hypot(a[1][-1] - c[1][-1], a[2][-1] - c[2][-1])
    e2 = math.hypot(b[1][-1] - c[1][-1], b[2][-1] - c[2][-1])
    assert e2 < 1e-7
    assert 3.5 < math.log2(e1 / e2) < 4.5


@pytest.mark.parametrize("gc", GAMMAS)
def test_projected_euler_converges_near_the_constraint(gc):
    # (-2, 0) hits omega = 1, slides, then grazes the boundary every half period.
    dts = np.array([0.04, 0.02, 0.01, 0.005])
    errs, order = _euler_errors(gc, (-2.0, 0.0), 40.0 if gc == 1.0 else 20.0, dts)
    assert np.all(np.diff(errs) < 0)
    # Henry's theorem guarantees order 1/2; this one-dimensional box does better (about 1).
    assert 0.45 <= order <= 1.3


def test_projected_euler_is_first_order_away_from_the_constraint():
    dts = np.array([0.04, 0.02, 0.01, 0.005])
    errs, order = _euler_errors(1.0, (0.5, 0.0), 40.0, dts)
    assert np.all(np.diff(errs) < 0)
    assert 0.9 <= order <= 1.1


# ------------------------------------------------------------------------------------------
# Study and command line
# ------------------------------------------------------------------------------------------
def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "toy_out"
    assert main(["toy", "--gamma-c", "1", "10", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("toy.json", "toy.h5", "toy.png"):
        assert (out / name).is_file()
        assert str(out / name) in printed
    assert (out / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "toy.png").stat().st_size > 10_000
    data = json.loads((out / "toy.json").read_text())
    assert [r["gamma_c"] for r in data["runs"]] == [1.0, 10.0]
    for run in data["runs"]:
        for key in ("gamma_c", "limit_energy", "max_abs_g", "predicted_limit_energy",
                    "predicted_max_abs_g"):
            assert key in run
        assert abs(run["limit_energy"] - run["predicted_limit_energy"]) < 1e-3
        assert abs(run["max_abs_g"] - run["predicted_max_abs_g"]) < 1e-3
        assert run["n_converging_starts"] >= 1
    assert data["settings"]["scheme"] == "rk4" and data["settings"]["dt"] == 0.05
    with h5py.File(out / "toy.h5", "r") as f:
        grp = f["gamma_c_10"]
        n_starts = len(data["settings"]["starts"])
        assert (grp["g"].shape == grp["omega"].shape == grp["energy"].shape
                == (n_starts, grp["t"].shape[0]))
        assert grp.attrs["gamma_c"] == 10.0
        np.testing.assert_allclose(grp["energy"][...],
                                   toy_energy(grp["g"][...], grp["omega"][...], 10.0))
    # The explicit-Euler panel spirals outwards.
    assert data["euler_spiral"]["final_energy"] > data["euler_spiral"]["initial_energy"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--gamma-c", "0"],
        ["--gamma-c", "1", "-2"],
        ["--dt", "0"],
        ["--dt", "-0.1"],
        ["--t-end", "-5"],
        ["--start", "0.0", "1.5"],
        ["--gamma-c", "1", "1.0"],
    ],
)
def test_cli_bad_input_writes_nothing(tmp_path, capsys, argv):
    out = tmp_path / "bad"
    assert main(["toy", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_python_api_rejects_bad_input():
    with pytest.raises(ValueError, match="gamma_c"):
        run_toy(gamma_cs=(1.0, 0.0))
    with pytest.raises(ValueError, match="dt"):
        integrate(0.0, 0.5, 1.0, 10.0, 0.0)
    with pytest.raises(ValueError, match="scheme"):
        integrate(0.0, 0.5, 1.0, 10.0, 0.1, scheme="leapfrog")
    with pytest.raises(ValueError, match="omega0"):
        integrate(0.0, 1.5, 1.0, 10.0, 0.1)
    # Without the constraint omega is unbounded, so the same start is fine.
    integrate(0.0, 1.5, 1.0, 1.0, 0.1, constrained=False)
