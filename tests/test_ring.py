"""The 8-Gaussian ring study: mode counting with known answers, and a tiny run's outputs."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from meanfield_gan.cli import main
from meanfield_gan.studies.ring import (
    CASES,
    case_config,
    gulrajani_ring,
    load_ring_config,
    mode_coverage,
    run_ring,
    write_ring,
)

TINY = {"init": {"N": 12, "M": 10}, "scheme": {"batch_size": 8, "lr": 0.012},
        "run": {"t_end": 0.006, "record": 2, "backend": "numpy", "progress": False}}


def test_gulrajani_ring_is_their_toy_data_and_the_default_target():
    centers, sd = gulrajani_ring()
    assert centers.shape == (8, 2)
    np.testing.assert_allclose(np.hypot(*centers.T), 2 / 1.414)
    np.testing.assert_allclose(np.arctan2(centers[:, 1], centers[:, 0]) % (2 * math.pi),
                               np.arange(8) * math.pi / 4, atol=1e-12)
    assert sd == pytest.approx(0.02 / 1.414)
    target = load_ring_config().build()[0].target
    np.testing.assert_allclose(target.means, centers, atol=1e-8)
    np.testing.assert_allclose(target.scales, sd, rtol=1e-8)


def test_mode_coverage_known_answer():
    centers, sd = gulrajani_ring()
    r = 3 * sd
    rng = np.random.default_rng(0)
    ang = rng.uniform(0, 2 * math.pi, 50)
    samples = np.concatenate([
        np.repeat(centers[[0]], 100, axis=0),                              # on mode 0
        centers[3] + 0.9 * r * np.stack([np.cos(ang), np.sin(ang)], 1),    # near mode 3
        np.repeat(centers[[5]] + [[1.5 * r, 0.0]], 30, axis=0),            # close, not near
        np.repeat([[0.0, 0.2]], 20, axis=0),                               # far from all
    ])
    d = mode_coverage(samples, centers, r, min_fraction=0.1)
    np.testing.assert_allclose(d["per_mode"], [0.5, 0, 0, 0.25, 0, 0, 0, 0])
    assert d["near_fraction"] == pytest.approx(0.75)
    assert d["modes_covered"] == 2
    np.testing.assert_allclose(d["nearest"], [0.5, 0, 0.1, 0.25, 0, 0.15, 0, 0])
    # the threshold: mode 3 holds 25% of the samples
    assert mode_coverage(samples, centers, r, min_fraction=0.3)["modes_covered"] == 1
    assert mode_coverage(samples, centers, r, min_fraction=0.25)["modes_covered"] == 2
    # a larger radius takes in the samples next to mode 5
    wide = mode_coverage(samples, centers, 2 * r, min_fraction=0.1)
    assert wide["modes_covered"] == 3 and wide["near_fraction"] == pytest.approx(0.9)
    # samples drawn from the target itself cover every mode with ~99.7% within 3 sd
    x = centers[rng.integers(0, 8, 20000)] + sd * rng.standard_normal((20000, 2))
    full = mode_coverage(x, centers, r)
    assert full["modes_covered"] == 8
    assert abs(full["near_fraction"] - (1 - math.exp(-4.5))) < 0.005  # chi2_2 mass within 3


def test_mode_coverage_rejects_bad_input():
    centers, sd = gulrajani_ring()
    with pytest.raises(ValueError, match="radius"):
        mode_coverage(centers, centers, 0.0)
    with pytest.raises(ValueError, match="dimension"):
        mode_coverage(np.zeros((3, 3)), centers, sd)
    with pytest.raises(ValueError, match="min_fraction"):
        mode_coverage(centers, centers, sd, min_fraction=-0.1)


def test_case_configs_change_only_the_objective():
    cfg = load_ring_config(None, TINY)
    p = {c: case_config(cfg, c).problem for c in CASES}
    assert (p["wasserstein_clip"].loss, p["wasserstein_clip"].clip,
            p["wasserstein_clip"].gradient_penalty) == ("wasserstein", 1.0, 0.0)
    gp, ns = p["wasserstein_gp"], p["non_saturating"]
    assert (gp.loss, gp.gradient_penalty) == ("wasserstein", 10.0)
    assert math.isinf(gp.clip) and math.isinf(ns.clip)
    assert (ns.loss, ns.gradient_penalty) == ("non_saturating", 0.0)
    base = cfg.to_dict()
    for c in CASES:
        d = case_config(cfg, c).to_dict()
        for k in ("init", "scheme", "run"):
            assert d[k] == base[k]
        assert d["problem"]["target"] == base["problem"]["target"]
    with pytest.raises(ValueError, match="unknown case"):
        case_config(cfg, "minimax")


def test_tiny_run_writes_every_case_from_the_same_particles(tmp_path):
    result = run_ring(load_ring_config(None, TINY), n_samples=64)
    paths = write_ring(result, tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert list(doc["cases"]) == list(CASES)
    assert doc["same_initial_particles"] is True
    assert doc["budget"] == {"kind": "steps", "generator_steps": 6, "critic_updates": 30,
                             "t_end": pytest.approx(0.006)}
    for name, case in doc["cases"].items():
        assert 0 <= case["modes_covered"] <= 8 and 0 <= case["near_fraction"] <= 1
        assert len(case["series"]["near_fraction"]) == 3
        assert case["box"] == (name == "wasserstein_clip")
        for pts in ("data", "generated", "interpolates"):
            q = case["grad_norm"][pts]
            assert 0 <= q["q10"] <= q["median"] <= q["q90"]
    with h5py.File(paths["h5"], "r") as f:
        assert f["centers"].shape == (8, 2)
        for name in CASES:
            assert f[name]["samples"].shape == (3, 64, 2)
            assert f[name]["theta"].shape == (3, 12, 2, 4)
            assert f[name]["grad_norm/interpolates"].shape == (3, 3)
            np.testing.assert_array_equal(f[name]["theta"][0], f[CASES[0]]["theta"][0])
        # the objectives moved the particles differently
        assert not np.array_equal(f["wasserstein_clip"]["omega"][-1],
                                  f["wasserstein_gp"]["omega"][-1])
        assert np.abs(f["wasserstein_clip"]["omega"][...]).max() <= 1.0
    assert paths["png"].stat().st_size > 10_000


def test_cli_writes_outputs_and_rejects_bad_input(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(load_ring_config(None, TINY).to_toml())
    out = tmp_path / "out"
    assert main(["ring", str(cfg), "-o", str(out), "--cases", "wasserstein_gp", "non_saturating",
                 "--samples", "50"]) == 0
    text = capsys.readouterr().out
    assert "wasserstein_gp:" in text and "wrote" in text
    assert sorted(p.name for p in out.iterdir()) == ["ring.h5", "ring.json", "ring.png"]
    assert list(json.loads((out / "ring.json").read_text())["cases"]) == ["wasserstein_gp",
                                                                          "non_saturating"]
    bad = tmp_path / "bad"
    assert main(["ring", str(cfg), "-o", str(bad), "--penalty", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "penalty" in err and "\n" not in err
    assert not bad.exists()
    dirac = tmp_path / "dirac.toml"
    dirac.write_text(cfg.read_text().replace('kind = "gaussian_mixture"', 'kind = "dirac_mixture"')
                     .replace("means =", "points =").replace("scales = 0.0141442716\n", ""))
    assert main(["ring", str(dirac), "-o", str(bad)]) == 2
    assert "gaussian mixture" in capsys.readouterr().err.lower()
    assert not bad.exists()
