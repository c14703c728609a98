"""Mode collapse / mode hopping on a bimodal Gaussian target (meanfield_gan.studies.modecollapse),
and the same across objectives (meanfield_gan.studies.collapse_objectives)."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.cli import main
from meanfield_gan.studies.collapse_objectives import (
    OBJECTIVES,
    TABLE,
    compare_objectives,
    write_objectives,
)
from meanfield_gan.studies.modecollapse import (
    mode_collapse_problem,
    plot_frame,
    run_mode_collapse,
    simulate_mode_collapse,
)

SMALL = dict(N=32, M=32, t_end=40.0, record=40, n_samples=2000, seed=0)


@pytest.fixture(scope="module")
def small():
    return simulate_mode_collapse(**SMALL)


def test_problem_is_the_bimodal_target_with_validated_inputs():
    p = mode_collapse_problem((-2.0, 2.0), 0.3, clip=0.5)
    assert (p.K, p.L, p.clip) == (1, 1, 0.5)
    np.testing.assert_array_equal(p.target.means[:, 0], [-2.0, 2.0])
    for bad in ({"modes": (1.0,)}, {"modes": (1.0, 1.0)}, {"modes": (0.0, np.nan)}):
        with pytest.raises(ValueError, match="modes"):
            mode_collapse_problem(**bad)
    with pytest.raises(ValueError, match="scale"):
        mode_collapse_problem(scale=0.0)
    with pytest.raises(ValueError, match="generator_scale"):
        mode_collapse_problem(generator_scale=-1.0)
    with pytest.raises(ValueError, match="generator_loc"):
        mode_collapse_problem(generator_loc=np.inf)
    with pytest.raises(ValueError, match="quadrature_size"):
        mode_collapse_problem(quadrature_size=0)


def test_measurements_match_their_definitions(small):
    r = small
    T = SMALL["record"] + 1
    assert r.samples.shape == (T, 2000) and r.mass_near.shape == (T, 2) and r.w1.shape == (T,)
    # The generated law is observed through one fixed set of latent samples.
    z = mfg.StandardNormal(1).sample(np.random.default_rng(np.random.SeedSequence([0, 1])), 2000)
    for k in (0, T // 2, T - 1):
        # g_mu(z) = (1/N) sum_i a_i s(b_i z + c_i), written out (MODEL.md section 1, K = L = 1).
        a, b, c = r.theta[k][:, 0, 0], r.theta[k][:, 0, 1], r.theta[k][:, 0, 2]
        g = np.mean(a / (1.0 + np.exp(-(np.outer(z[:, 0], b) + c))), axis=1)
        np.testing.assert_allclose(r.samples[k], g, rtol=1e-12, atol=1e-14)
        g = r.samples[k]
        np.testing.assert_array_equal(r.mass_near[k], [np.mean(np.abs(g + 1) < 0.5),
                                                       np.mean(np.abs(g - 1) < 0.5)])
        # W1 on the line is the integral of |F_generated - F_target|: summed by hand over the
        # merged, sorted atoms of the samples and of the target's quadrature.
        xq, xw = mode_collapse_problem().target.quadrature(256)
        pts = np.concatenate([g, xq[:, 0]])
        mass = np.concatenate([np.full(g.size, 1.0 / g.size), -xw])
        order = np.argsort(pts, kind="stable")
        w1 = np.sum(np.abs(np.cumsum(mass[order])[:-1]) * np.diff(pts[order]))
        assert r.w1[k] == pytest.approx(w1, rel=1e-9)
    np.testing.assert_allclose(r.nearest_fraction.sum(axis=1), 1.0)
    # Target reference values: about 0.494 of its mass within 0.5 of each mode.
    np.testing.assert_allclose(r.summary["target_mass_near"], 0.4938, atol=1e-3)


def test_generated_law_hops_between_the_modes_and_never_covers_both(small):
    s = small.summary
    assert s["covered_fraction"] == 0.0          # never >= 1/4 of the mass near both modes
    assert s["modes_visited"] == 2 and s["mode_switches"] >= 1
    assert min(s["max_mass_near_per_mode"]) > 0.7  # each mode in turn gets most of the mass
    assert s["max_generated_std"] < 0.2           # a narrow bump, narrower than one mode
    assert s["w1_min"] > 0.8                      # never close to the target (W1 of a Dirac ~1.08)
    assert s["w1_dirac_at_mode"][0] == pytest.approx(1.08, abs=0.01)


def test_sgd_shows_the_same_mode_hopping():
    r = simulate_mode_collapse(**{**SMALL, "t_end": 70.0, "record": 70},
                               scheme=mfg.SGD(lr=1.0, batch_size=8))
    assert r.settings["scheme"] == "SGD"
    assert r.summary["covered_fraction"] == 0.0 and r.summary["modes_visited"] == 2


def test_run_writes_json_h5_png_and_gif(tmp_path):
    from PIL import Image

    out = tmp_path / "mc"
    r = run_mode_collapse(out, N=16, M=16, t_end=6.0, record=5, n_samples=500)
    assert set(r.paths) == {"json", "h5", "png", "gif"}
    doc = json.loads((out / "mode_collapse.json").read_text())
    for key in ("times", "mass_near", "w1", "collapsed_fraction", "mode_switches", "settings"):
        assert key in doc
    assert len(doc["times"]) == 6 and np.shape(doc["mass_near"]) == (6, 2)
    with h5py.File(out / "mode_collapse.h5", "r") as f:
        assert f["samples"].shape == (6, 500) and f["theta"].shape == (6, 16, 1, 3)
        np.testing.assert_array_equal(f["w1"][()], r.w1)
    with Image.open(out / "mode_collapse.gif") as im:
        assert im.n_frames == 6
    assert (out / "mode_collapse.png").read_bytes()[:4] == b"\x89PNG"
    frame = plot_frame(r, -1, tmp_path / "frame.png")
    assert frame.stat().st_size > 0


def test_bad_inputs_raise_before_writing(tmp_path):
    taken = tmp_path / "file"
    taken.write_text("x")
    with pytest.raises(ValueError, match="outdir"):
        run_mode_collapse(taken, N=8, M=8, t_end=1.0, record=1)
    assert taken.read_text() == "x"
    out = tmp_path / "never"
    for kw, name in (({"record": 0}, "record"), ({"n_samples": 1}, "n_samples"),
                     ({"t_end": -1.0}, "t_end"), ({"modes": [0.5]}, "modes"),
                     ({"radius": 0.0}, "radius"), ({"N": 0}, "N")):
        with pytest.raises(ValueError, match=name):
            run_mode_collapse(out, **{"t_end": 1.0, "record": 1, **kw})
    assert not out.exists()
    r = simulate_mode_collapse(N=4, M=4, t_end=1.0, record=2, n_samples=10)
    with pytest.raises(ValueError, match="k"):
        plot_frame(r, 3, tmp_path / "f.png")


# --------------------------------------------------------------------------------------------
# across objectives (meanfield_gan.studies.collapse_objectives)
# --------------------------------------------------------------------------------------------
TINY = dict(N=8, M=8, t_end=4.0, record=4, n_samples=200, seed=3)


def test_problem_takes_the_objective_and_no_box():
    p = mode_collapse_problem(clip=math.inf, loss="minimax")
    assert p.loss == "minimax" and not p.has_box
    assert (p.critic_init.low, p.critic_init.high) == (-0.5, 0.5)
    gp = mode_collapse_problem(clip=None, gradient_penalty=10.0)
    assert gp.gradient_penalty == 10.0 and gp.loss == "wasserstein"
    with pytest.raises(ValueError, match="gradient_penalty"):
        mode_collapse_problem(loss="minimax", gradient_penalty=1.0)


def test_objectives_start_from_the_same_particles_and_differ_only_by_the_objective(tmp_path):
    comp = compare_objectives(**TINY)
    assert list(comp.results) == list(OBJECTIVES)
    first = comp.results["wasserstein_clip"]
    for r in comp.results.values():
        np.testing.assert_array_equal(r.theta[0], first.theta[0])
        np.testing.assert_array_equal(r.omega[0], first.omega[0])
        assert r.times.tolist() == first.times.tolist()
    st = {n: r.settings for n, r in comp.results.items()}
    assert (st["wasserstein_clip"]["loss"], st["wasserstein_clip"]["clip"]) == ("wasserstein", 1.0)
    assert st["minimax"]["loss"] == "minimax" and st["minimax"]["clip"] == math.inf
    assert st["non_saturating"]["loss"] == "non_saturating"
    assert st["wasserstein_gp"]["gradient_penalty"] == 10.0
    assert st["wasserstein_gp"]["clip"] == math.inf
    # the runs are those of simulate_mode_collapse with the same settings
    solo = simulate_mode_collapse(loss="minimax", clip=math.inf, critic_scale=0.5, **TINY)
    np.testing.assert_array_equal(solo.theta, comp.results["minimax"].theta)
    # minimax and non_saturating critics see the same objective, not the same generator
    assert not np.array_equal(comp.results["minimax"].theta[-1],
                              comp.results["non_saturating"].theta[-1])
    table = comp.table()
    for name in OBJECTIVES:
        assert set(table[name]) == set(TABLE)
        assert table[name]["collapsed_fraction"] == np.mean(comp.results[name].summary["collapsed"])
    paths = write_objectives(comp, tmp_path / "objectives")
    doc = json.loads(paths["json"].read_text())
    assert set(doc["table"]) == set(OBJECTIVES)
    assert doc["runs"]["minimax"]["settings"]["clip"] is None
    with h5py.File(paths["h5"], "r") as f:
        assert f["wasserstein_gp/theta"].shape == (5, 8, 1, 3)
        assert f["minimax"].attrs["loss"] == "minimax"
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    # a frame of a run without a box (no box drawn, the critic framed by its own extent)
    assert plot_frame(comp.results["minimax"], -1, tmp_path / "frame.png").stat().st_size > 0


def test_objectives_cli_and_bad_input(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["modecollapse", "--objectives", "minimax", "wasserstein_clip", "--t-end", "2",
               "--record", "2", "-N", "6", "-M", "6", "-o", str(out)])
    assert rc == 0
    doc = json.loads((out / "mode_collapse_objectives.json").read_text())
    assert list(doc["table"]) == ["minimax", "wasserstein_clip"]
    assert "wrote" in capsys.readouterr().out
    taken = tmp_path / "file"
    taken.write_text("x")
    assert main(["modecollapse", "-o", str(taken)]) == 2
    assert main(["modecollapse", "--gradient-penalty", "0", "-o", str(tmp_path / "no")]) == 2
    assert "gradient_penalty" in capsys.readouterr().err and not (tmp_path / "no").exists()
    with pytest.raises(ValueError, match="objectives"):
        compare_objectives(["minimax", "minimax"], **TINY)
    with pytest.raises(ValueError, match="loss"):
        compare_objectives(["minimax"], **{**TINY, "loss": "minimax"})
    with pytest.raises(ValueError, match="clip"):
        compare_objectives(["minimax"], clip=-1.0, **TINY)
