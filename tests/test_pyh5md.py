"""An independent reader of our run files: pyh5md (the H5MD reader of the format's authors).

A run written by ``meanfield-gan run`` is opened with ``pyh5md.File`` and read through
``pyh5md.element`` (positions, steps, times, the box, the observables); everything must agree
with :func:`meanfield_gan.load`.
"""
from __future__ import annotations

import copy
import math

import h5py
import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.cli import main
from meanfield_gan.io.config import dumps_toml
from meanfield_gan.io.h5md import H5MDWriter, critic_labels, generator_labels

pyh5md = pytest.importorskip("pyh5md")

K, L, N, M, CLIP = 2, 1, 5, 3, 0.8

CONFIG = {
    "problem": {"K": K, "L": L, "clip": CLIP, "quadrature_size": 32,
                "target": {"kind": "gaussian_mixture", "means": [[-1.0, 0.0], [1.0, 0.5]],
                           "scales": 0.3}},
    "init": {"N": N, "M": M, "seed": 2, "critic": {"kind": "uniform", "low": -0.8, "high": 0.8}},
    "scheme": {"kind": "sgd", "lr": 2.0, "batch_size": 2},
    "run": {"t_end": 5.0, "record": 5, "seed": 5, "backend": "numpy", "checkpoint_every": 4,
            "progress": False},
    "reference": {"kind": "euler", "refine": 1, "distance": "coupling", "record_particles": True},
}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("pyh5md")
    cfg = d / "cfg.toml"
    cfg.write_text(dumps_toml(copy.deepcopy(CONFIG)))
    path = d / "run.h5"
    assert main(["run", str(cfg), "-o", str(path)]) == 0
    return path


def test_pyh5md_reads_the_metadata(run_path):
    with pyh5md.File(str(run_path), "r") as f:
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["h5md/creator"].attrs["name"] == "meanfield_gan"
        assert f["h5md/creator"].attrs["version"] == mfg.__version__
        assert f["h5md/author"].attrs["name"]


@pytest.mark.parametrize("group", ["generator", "critic", "reference_generator",
                                   "reference_critic"])
def test_pyh5md_positions_times_and_box_agree_with_load(run_path, group):
    run = mfg.load(run_path)
    assert run.complete and len(run.times) == 6
    ours = {"generator": run.theta, "critic": run.omega,
            "reference_generator": run.reference_theta, "reference_critic": run.reference_omega}
    expected = ours[group].reshape(len(run.times), ours[group].shape[1], -1)
    labels = generator_labels(K, L) if "generator" in group else critic_labels(K)
    with pyh5md.File(str(run_path), "r") as f:
        g = f.particles_group(group)
        pos = pyh5md.element(g, "position")
        assert pos.element_type == "TimeElement"
        np.testing.assert_array_equal(pos.value[...], expected)
        np.testing.assert_array_equal(pos.step[...], run.steps)
        np.testing.assert_array_equal(pos.time[...], run.times)
        assert pos.step.dtype.kind == "i" and pos.time.dtype.kind == "f"
        # the particle identity and the flattened coordinate order (MODEL.md)
        ids = pyh5md.element(g, "id")
        assert ids.element_type == "FixedElement"
        np.testing.assert_array_equal(ids.value[...], np.arange(expected.shape[1]))
        assert [s.decode() for s in pyh5md.element(g, "coordinate").value[...]] == labels

        box = g["box"]
        D = int(box.attrs["dimension"])
        assert D == expected.shape[2] == len(labels)
        assert [str(b) for b in box.attrs["boundary"]] == ["none"] * D
        if "critic" in group:
            edges = pyh5md.element(box, "edges")
            offset = pyh5md.element(box, "offset")
            assert edges.element_type == offset.element_type == "FixedElement"
            np.testing.assert_array_equal(edges.value[...], np.full(D, 2 * CLIP))
            np.testing.assert_array_equal(offset.value[...], np.full(D, -CLIP))
            # the critic lives in Q = offset + [0, edges], and reaches its boundary here
            lo, hi = offset.value[...], offset.value[...] + edges.value[...]
            assert np.all((expected >= lo) & (expected <= hi))
            assert np.any(np.isclose(np.abs(expected), CLIP))
        else:
            assert "edges" not in box  # every boundary is "none": H5MD lets edges be omitted


def test_pyh5md_observables_agree_with_load(run_path):
    run = mfg.load(run_path)
    with pyh5md.File(str(run_path), "r") as f:
        names = set(f["observables"])
        assert names == set(run.observables)
        assert {"psi", "critic_boundary_fraction", "d2_squared", "coupling_squared"} <= names
        for name in names:
            el = pyh5md.element(f["observables"], name)
            assert el.element_type == "TimeElement"
            np.testing.assert_array_equal(el.value[...], run.observables[name], err_msg=name)
            np.testing.assert_array_equal(el.step[...], run.steps, err_msg=name)
            np.testing.assert_array_equal(el.time[...], run.times, err_msg=name)
    # a number that means something: the coupling bound dominates the exact distance (here it
    # is the coupling itself) and starts at 0 (same initial particles)
    assert run.observables["coupling_squared"][0] == 0.0
    assert run.observables["coupling_squared"][-1] > 0.0


def test_pyh5md_reads_a_critic_without_box(tmp_path):
    """``clip = inf`` (no box): the critic box has every boundary "none" and no edges."""
    path = tmp_path / "nobox.h5"
    w = H5MDWriter.create(path, K=1, L=1, N=2, M=3, clip=math.inf, config_text="# x\n",
                          config_canonical="", parameters={"seed": 0})
    with w:
        omega = np.array([[3.0, -2.0, 0.5], [0.0, 1.0, -7.0], [10.0, 0.0, 0.0]])
        w.record(0, 0.0, np.zeros((2, 1, 3)), omega, {"psi": 0.25})
    with pyh5md.File(str(path), "r") as f:
        g = f.particles_group("critic")
        assert [str(b) for b in g["box"].attrs["boundary"]] == ["none"] * 3
        assert "edges" not in g["box"] and "offset" not in g["box"]
        np.testing.assert_array_equal(pyh5md.element(g, "position").value[0], omega)
    with h5py.File(path, "r") as f:
        assert f["parameters"].attrs["clip"] == math.inf
