"""WGAN-GP: ``examples/wgan_gp.toml`` runs, and coagulation with and without the penalty."""
from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np

import meanfield_gan as mfg
from meanfield_gan.cli import main
from meanfield_gan.io.config import dumps_toml, load_config
from meanfield_gan.studies.coagulation import load_coagulation_config
from meanfield_gan.studies.coagulation_gp import (
    critic_gradient_norm,
    run_penalty_comparison,
    write_penalty_comparison,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wgan_gp.toml"


def test_example_is_algorithm_1_of_gulrajani_et_al():
    cfg = load_config(EXAMPLE)
    problem, state, scheme = cfg.build()
    assert (problem.K, problem.L) == (2, 2)
    assert not problem.has_box and problem.loss == "wasserstein"
    assert problem.gradient_penalty == 10.0
    assert isinstance(scheme, mfg.Adam) and scheme.alternating
    assert (scheme.n_critic, scheme.beta1, scheme.beta2) == (5, 0.0, 0.9)
    # the toy code's ring: radius 2 / 1.414, standard deviation 0.02 / 1.414, 8 equal modes
    target = problem.target
    radii = np.hypot(target.means[:, 0], target.means[:, 1])
    np.testing.assert_allclose(radii, 2 / 1.414, rtol=1e-8)
    angles = np.sort(np.mod(np.arctan2(target.means[:, 1], target.means[:, 0]), 2 * math.pi))
    np.testing.assert_allclose(angles, np.arange(8) * math.pi / 4, atol=1e-8)
    np.testing.assert_allclose(target.scales, 0.02 / 1.414, rtol=1e-8)
    np.testing.assert_allclose(target.weights, 1 / 8)
    # "a minute or less": the step count the header promises
    assert round(cfg.run.t_end / scheme.dt(state.N)) == 20000


def test_example_runs_to_a_complete_file(tmp_path, capsys):
    # The full example takes about 35 s; the same file with t_end cut to 30 steps.
    doc = load_config(EXAMPLE).to_dict()
    dt = doc["scheme"]["lr"] / doc["init"]["N"]
    doc["run"].update(t_end=30 * dt, record=3, checkpoint_every=10, progress=False)
    cfg = tmp_path / "wgan_gp_short.toml"
    cfg.write_text(dumps_toml(doc))
    out = tmp_path / "wgan_gp.h5"
    assert main(["run", str(cfg), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    run = mfg.load(out)
    assert run.complete
    assert run.theta.shape == (4, 256, 2, 4) and run.omega.shape == (4, 256, 4)
    np.testing.assert_allclose(run.times, np.arange(4) * 10 * dt)
    for name in ("psi", "critic_objective", "generator_objective", "generator_speed",
                 "critic_speed"):
        assert np.all(np.isfinite(run.observables[name])), name
    # no box: nothing is ever clipped, and the critic moved (the penalty pushes |grad f|
    # towards 1 from a start where it is about 0.01)
    assert np.all(run.observables["critic_boundary_fraction"] == 0)
    assert not np.array_equal(run.omega[-1], run.omega[0])
    assert run.config["problem"]["gradient_penalty"] == 10.0


# ------------------------------------------------------------------------------------------
# coagulation with and without the penalty (meanfield-gan coagulation --compare-penalty)
# ------------------------------------------------------------------------------------------
SMALL = {"problem": {"quadrature_size": 16}, "init": {"N": 16, "M": 12},
         "run": {"t_end": 1.5, "record": 15, "backend": "numpy", "progress": False}}


def test_critic_gradient_norm_matches_finite_differences():
    rng = np.random.default_rng(3)
    omega = rng.normal(size=(7, 4)) * 2.0
    x = rng.normal(size=(5, 2))
    h = 1e-6
    fd = np.stack([(mfg.critic_output(omega, x + h * e) - mfg.critic_output(omega, x - h * e))
                   / (2 * h) for e in np.eye(2)], axis=1)
    np.testing.assert_allclose(critic_gradient_norm(omega, x), np.linalg.norm(fd, axis=1),
                               rtol=1e-7)


def test_penalty_comparison_structure(tmp_path):
    cfg = load_coagulation_config(None, SMALL)
    result = run_penalty_comparison(cfg, penalty=10.0)
    paths = write_penalty_comparison(result, tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert doc["same_initial_particles"] is True
    assert doc["penalty"] == 10.0 and doc["clip"] == 1.0 and doc["M"] == 12
    assert set(doc["runs"]) == {"clip", "penalty"}
    clip, pen = doc["runs"]["clip"], doc["runs"]["penalty"]
    assert clip["gradient_penalty"] == 0.0 and pen["clip"] is None  # inf: no box
    assert len(clip["n_distinct"]) == len(doc["times"]) == 16
    for run in (clip, pen):
        for s in ("data", "generated", "interpolates"):
            g = run["grad_norm"][s]
            assert len(g["median"]) == 16
            assert all(a <= b <= c for a, b, c in zip(g["q10"], g["median"], g["q90"]))
    # the box merges critic particles (never un-merges them); the smooth penalised flow
    # keeps every particle distinct
    assert np.all(np.diff(clip["n_distinct"]) <= 0) and clip["t0"] is not None
    assert pen["n_distinct"] == [12] * 16 and pen["t0"] is None
    assert doc["final"]["clip"]["coagulates"] and not doc["final"]["penalty"]["coagulates"]
    # the penalty pulls |grad f| at its interpolates towards 1; the box keeps it below 1/4
    assert abs(pen["grad_norm"]["interpolates"]["median"][-1] - 1.0) < 0.5
    assert clip["grad_norm"]["interpolates"]["q90"][-1] < 0.25
    with h5py.File(paths["h5"], "r") as f:
        assert f["clip/omega"].shape == (16, 12, 3)
        assert f["penalty/grad_norm/generated"].shape == (16, 16)
        assert math.isinf(f["penalty"].attrs["clip"])
        np.testing.assert_array_equal(f["clip/omega"][0], f["penalty/omega"][0])
    assert paths["png"].stat().st_size > 10_000


def test_compare_penalty_cli(tmp_path, capsys):
    cfg = tmp_path / "coag.toml"
    cfg.write_text(load_coagulation_config(None, SMALL).to_toml())
    out = tmp_path / "out"
    assert main(["coagulation", str(cfg), "--compare-penalty", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clip (box): coagulates" in text and "penalty (no box, lambda = 10)" in text
    assert sorted(p.name for p in out.iterdir()) == ["coagulation_gp.h5", "coagulation_gp.json",
                                                    "coagulation_gp.png"]
    bad = tmp_path / "bad"
    for argv, msg in ((["--compare-penalty", "--penalty", "0"], "penalty"),
                      (["--penalty", "5"], "--compare-penalty")):
        assert main(["coagulation", str(cfg), "-o", str(bad), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err
    nobox = tmp_path / "nobox.toml"
    nobox.write_text(cfg.read_text().replace("clip = 1.0", "clip = inf"))
    assert main(["coagulation", str(nobox), "--compare-penalty", "-o", str(bad)]) == 2
    assert "finite clip" in capsys.readouterr().err
    assert not bad.exists()
