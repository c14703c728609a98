"""Coagulation of the critic at the boundary of Q (MODEL.md section 4.3).

The ``meanfield-gan coagulation`` study.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.cli import main
from meanfield_gan.io.config import dumps_toml, load_config
from meanfield_gan.studies.coagulation import (
    DEFAULT_CONFIG,
    load_coagulation_config,
    run_coagulation,
)

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

#: The default study shrunk for tests: same physics, 48 particles each, t_end 2.
SMALL = {"init": {"N": 48, "M": 48}, "run": {"t_end": 2.0, "record": 100}}
SGD_SCHEME = {"scheme": {"kind": "sgd", "lr": 1.0, "n_critic": 10, "batch_size": 1}}


def _small(backend: str = "numba", **extra) -> mfg.RunConfig:
    over = {k: dict(v) for k, v in SMALL.items()}
    for k, v in extra.items():
        over.setdefault(k, {}).update(v)
    return load_coagulation_config(overrides=over, backend=backend)


def _n_distinct(omega: np.ndarray) -> int:
    """Distinct critic positions, counted as a set of coordinate tuples (not with np.unique,
    which the package uses)."""
    return len({tuple(float(v) + 0.0 for v in row) for row in omega})


# --------------------------------------------------------------------------------------------
# The diagnostics on hand-built critic clouds with known answers
# --------------------------------------------------------------------------------------------
def test_faces_and_corners_of_a_hand_built_cloud():
    # K = 1, Q = [-2, 2]^3. Two corners, two points on one face each, one on an edge (two
    # faces, not a corner), three interior points (one just inside a face).
    clip = 2.0
    omega = np.array([
        [2.0, 2.0, 2.0],      # corner
        [-2.0, 2.0, -2.0],    # corner
        [2.0, 0.3, -0.1],     # face alpha = +2
        [0.5, -2.0, 1.0],     # face beta = -2
        [-2.0, 1.0, 2.0],     # edge alpha = -2, gamma = +2
        [0.0, 0.0, 0.0],
        [1.999, 0.2, 0.2],    # inside: 1.999 < 2
        [-0.5, 0.5, 1.5],
    ])
    d = mfg.metrics.coagulation(omega, clip)
    assert d["boundary_fraction"] == 5 / 8
    assert d["corner_fraction"] == 2 / 8
    # Per coordinate, the fraction at -clip (column 0) and at +clip (column 1), counted above.
    np.testing.assert_array_equal(d["face_fractions"],
                                  [[2 / 8, 2 / 8], [1 / 8, 2 / 8], [1 / 8, 2 / 8]])
    assert d["n_distinct"] == 8 and d["n_clusters"] == 8


def test_every_particle_at_one_corner_is_a_single_point():
    omega = np.tile([1.0, -1.0, 1.0, -1.0], (25, 1))   # K = 2: a corner of [-1, 1]^4
    d = mfg.metrics.coagulation(omega, 1.0)
    assert d["boundary_fraction"] == 1.0 and d["corner_fraction"] == 1.0
    assert d["n_distinct"] == 1 and d["n_clusters"] == 1
    assert d["spread"] == 0.0 and d["effective_dimension"] == 0


def test_cluster_counts_of_hand_built_groups():
    # Three groups of 4 particles, each group within 1e-9 of its centre, centres >= 0.5 apart;
    # and a chain of 6 points 0.4e-3 apart, linked end to end only through its neighbours.
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, -0.5, 0.5]])
    groups = np.repeat(centres, 4, axis=0) + 1e-9 * rng.uniform(-1, 1, (12, 3))
    chain = np.array([[0.9, 0.4e-3 * i, 0.0] for i in range(6)])
    omega = np.vstack([groups, chain])
    assert mfg.metrics.coagulation(omega, 1.0, tol=1e-6)["n_clusters"] == 3 + 6
    assert mfg.metrics.coagulation(omega, 1.0, tol=1e-3)["n_clusters"] == 3 + 1
    assert mfg.metrics.coagulation(omega, 1.0, tol=0.0)["n_clusters"] == 12 + 6
    assert mfg.metrics.coagulation(omega, 1.0)["n_distinct"] == 18
    # Exact duplicates count once.
    assert mfg.metrics.coagulation(np.vstack([chain, chain[:2]]), 1.0, tol=0.0)["n_distinct"] == 6


def test_spread_computed_by_hand():
    # (0,0,0), (1,0,0), (0,1,0): mean (1/3, 1/3, 0), squared distances 2/9, 5/9, 5/9, so
    # spread = sqrt((2/9 + 5/9 + 5/9) / 3) = 2/3.
    omega = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert mfg.metrics.coagulation(omega, 1.0)["spread"] == pytest.approx(2 / 3, rel=1e-15)
    # Two antipodal corners of [-1, 1]^3: every particle at distance sqrt(3) from the mean 0.
    pair = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]] * 5)
    d = mfg.metrics.coagulation(pair, 1.0)
    assert d["spread"] == pytest.approx(np.sqrt(3.0), rel=1e-15)
    assert d["n_distinct"] == 2 and d["corner_fraction"] == 1.0 and d["effective_dimension"] == 1


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------
def test_default_config_is_an_ordinary_run_configuration():
    # The same file must run under `meanfield-gan run`: it parses with the run-config loader.
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg == load_coagulation_config()
    assert cfg.scheme.kind == "euler" and cfg.problem.target.kind == "dirac_mixture"


def test_first_variation_is_even_so_the_critic_field_is_odd():
    """sigma(x; -omega) = sigma(x; omega) - alpha: V_omega(-omega) = -V_omega(omega), and the
    generator does not see the sign of a critic particle (the module docstring's argument)."""
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(9, 2, 3))
    omega = rng.uniform(-1, 1, size=(7, 4))
    z, zw = rng.normal(size=(11, 1)), np.full(11, 1 / 11)
    x, xw = rng.normal(size=(5, 2)), np.full(5, 1 / 5)
    vt, vo = mfg.velocity(theta, omega, z, zw, x, xw, backend="numpy")
    flipped = omega.copy()
    flipped[::2] *= -1.0
    wt, wo = mfg.velocity(theta, flipped, z, zw, x, xw, backend="numpy")
    sign = np.where(np.arange(7) % 2 == 0, -1.0, 1.0)[:, None]
    np.testing.assert_allclose(wo, sign * vo, rtol=0, atol=1e-14)
    np.testing.assert_allclose(wt, vt, rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_coagulation_run_reaches_a_single_point_in_finite_time(backend):
    res = run_coagulation(_small(backend))
    t_end = res.config.run.t_end
    assert res.t0 is not None and 0.0 < res.t0 <= t_end
    # Counted here from the recorded particles, independently of the package's diagnostics.
    nd = np.array([_n_distinct(om) for om in res.omega])
    np.testing.assert_array_equal(res.series["n_distinct"], nd)
    # Merged particles never separate: the count of distinct positions never increases...
    assert nd[0] == 48 and np.all(np.diff(nd) <= 0)
    # ...and t0 is the first record with a single position, which then stays single.
    k0 = int(np.flatnonzero(nd == 1)[0])
    assert res.t0 == res.times[k0]
    assert np.all(nd[:k0] > 1) and np.all(nd[k0:] == 1)
    # The support flattens on the faces before it collapses, and collapses onto the corner
    # (1, 1, 1) (clip = 1: clipping puts the coordinates exactly on +-1).
    on_face = np.abs(res.omega) == 1.0
    boundary = on_face.any(axis=2).mean(axis=1)
    np.testing.assert_array_equal(res.series["boundary_fraction"], boundary)
    assert res.times[np.argmax(boundary >= 1.0)] <= res.t0
    assert np.all(res.omega[k0:] == 1.0)
    assert np.all(res.series["corner_fraction"][k0:] == 1.0)
    assert np.all(res.series["spread"][k0:] == 0.0) and np.all(res.series["spread"][:k0] > 0.0)
    assert np.all(res.series["effective_dimension"][k0:] == 0)
    assert np.array_equal(res.final_positions(), np.ones((1, 3)))
    # A single exact point is a single cluster at any linking distance: t0_tol comes no later.
    assert res.t0_tol is not None and res.t0_tol <= res.t0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("scheme", ["euler", "sgd"])
def test_merged_critic_particles_stay_bitwise_equal_at_every_step(backend, scheme):
    """Once two critic particles coincide they coincide forever, bit for bit, so the number of
    distinct positions never increases (checked at every single step)."""
    extra = dict(SGD_SCHEME) if scheme == "sgd" else {}
    cfg = _small(backend, **extra)
    problem, state, sch = cfg.build()
    n_steps = int(round(1.6 / sch.dt(state.N)))
    traj = mfg.simulate(problem, state, sch, n_steps * sch.dt(state.N), record=n_steps,
                        seed=5, backend=backend, observables=False)
    assert len(traj.times) == n_steps + 1
    counts = []
    for prev, nxt in zip(traj.omega[:-1], traj.omega[1:]):
        _, labels = np.unique(prev, axis=0, return_inverse=True)
        for g in np.unique(labels):
            group = nxt[labels.ravel() == g]
            assert np.all(group == group[0]), "coincident critic particles separated"
        counts.append(len(np.unique(prev, axis=0)))
    counts.append(len(np.unique(traj.omega[-1], axis=0)))
    assert all(b <= a for a, b in zip(counts, counts[1:]))
    # Not vacuous: merges did happen, down to one point.
    assert counts[0] == 48 and counts[-1] == 1


def test_a_symmetric_critic_cloud_ends_as_an_antipodal_pair():
    # Uniform on [-1/2, 1/2]^3: the odd field sends each half to its own corner, so no t0.
    cfg = _small(init={"critic": {"kind": "uniform", "low": -0.5, "high": 0.5}})
    res = run_coagulation(cfg)
    assert res.t0 is None
    final = res.final_positions()
    assert final.shape == (2, 3)
    np.testing.assert_array_equal(final[0], -final[1])
    assert np.all(np.abs(final) == 1.0)


def _write_config(path: Path, overrides: dict) -> Path:
    doc = tomllib.loads(DEFAULT_CONFIG.read_text())
    for sec, vals in overrides.items():
        doc.setdefault(sec, {}).update(vals)
    path.write_text(dumps_toml(doc))
    return path


def test_cli_end_to_end_writes_json_h5_and_png(tmp_path, capsys):
    cfg = _write_config(tmp_path / "small.toml", SMALL)
    out = tmp_path / "out"
    assert main(["coagulation", str(cfg), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "t0 = " in printed and str(out / "coagulation.json") in printed

    doc = json.loads((out / "coagulation.json").read_text())
    for key in ("t0", "n_distinct", "boundary_fraction", "times"):
        assert key in doc
    T = len(doc["times"])
    assert T == 101 and len(doc["n_distinct"]) == T and len(doc["boundary_fraction"]) == T
    assert doc["t0"] is not None and doc["t0"] in doc["times"]
    k0 = doc["times"].index(doc["t0"])
    assert doc["n_distinct"][k0] == 1 and doc["n_distinct"][k0 - 1] > 1
    assert doc["config"]["init"]["N"] == 48

    with h5py.File(out / "coagulation.h5", "r") as f:
        assert f["times"].shape == (T,)
        assert f["omega"].shape == (T, 48, 3) and f["theta"].shape == (T, 48, 1, 3)
        np.testing.assert_array_equal(f["diagnostics/n_distinct"][()], doc["n_distinct"])
        assert f.attrs["t0"] == doc["t0"]
        assert load_coagulation_config(overrides=SMALL).to_toml() == f.attrs["config_toml"]
    png = (out / "coagulation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000


@pytest.mark.parametrize("section, changes, key", [
    ("init", {"bogus": 1}, "init.bogus"),
    ("init", {"N": 0}, "init.N"),
    ("scheme", {"time_step": -0.1}, "scheme.time_step"),
    ("reference", {"kind": "heun"}, "reference"),
    ("run", {"t_end": "long"}, "run.t_end"),
    (None, None, "invalid TOML"),
])
def test_bad_config_is_one_line_error_and_no_output(tmp_path, capsys, section, changes, key):
    cfg = tmp_path / "bad.toml"
    if section is None:
        cfg.write_text("[problem\nK = 1\n")
    else:
        _write_config(cfg, {section: changes})
    out = tmp_path / "out"
    assert main(["coagulation", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and key in err
    assert not out.exists()


def test_other_bad_inputs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["coagulation", str(tmp_path / "missing.toml"), "-o", str(out)]) == 2
    assert "config" in capsys.readouterr().err
    assert main(["coagulation", "-o", str(out), "--tol", "-1"]) == 2
    assert "tol" in capsys.readouterr().err
    taken = tmp_path / "file"
    taken.write_text("x")
    assert main(["coagulation", "-o", str(taken)]) == 2
    assert "output" in capsys.readouterr().err
    assert not out.exists() and taken.read_text() == "x"
    with pytest.raises(ValueError, match="init.M"):
        load_coagulation_config(overrides={"init": {"M": -3}})
    with pytest.raises(ValueError, match="tol"):
        run_coagulation(_small(), tol=float("nan"))
