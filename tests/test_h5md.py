"""H5MD run files: layout, dimension scales (xarray), checkpoints, truncation and mfg.load."""
from __future__ import annotations

import copy
import warnings

import h5netcdf
import h5py
import numpy as np
import pytest
import xarray

import meanfield_gan as mfg
from meanfield_gan.driver import record_steps
from meanfield_gan.io.config import dumps_toml, loads_config
from meanfield_gan.io.h5md import H5MDWriter, critic_labels, generator_labels, load, read_checkpoint
from meanfield_gan.io.runfile import run_config

K, L, N, M = 2, 1, 5, 3

CONFIG = {
    "problem": {"K": K, "L": L, "clip": 0.8, "quadrature_size": 64,
                "target": {"kind": "gaussian_mixture", "means": [[-1.0, 0.0], [1.0, 0.5]],
                           "scales": 0.3}},
    "init": {"N": N, "M": M, "seed": 2},
    "scheme": {"kind": "sgd", "lr": 0.5, "batch_size": 2},
    "run": {"t_end": 3.0, "record": 6, "seed": 5, "backend": "numpy", "checkpoint_every": 4,
            "progress": False},
}


def _config(**sections):
    d = copy.deepcopy(CONFIG)
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return loads_config(dumps_toml(d))


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A complete tiny run (numpy engine) with a reference run alongside."""
    path = tmp_path_factory.mktemp("h5md") / "run.h5"
    cfg = _config(reference={"kind": "heun", "refine": 2, "distance": "exact",
                             "record_particles": True})
    res = run_config(cfg, path, progress=False)
    assert res.complete and res.records == 7
    return path, cfg


def _new_writer(path, **kw):
    return H5MDWriter.create(path, K=K, L=L, N=N, M=M, clip=0.8, config_text="# x\n",
                             config_canonical=_config().to_toml(), parameters={"seed": 5}, **kw)


# ------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------
def test_h5md_required_groups_and_attributes(run_file):
    path, cfg = run_file
    with h5py.File(path, "r") as f:
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert isinstance(f["h5md/author"].attrs["name"], str) and f["h5md/author"].attrs["name"]
        assert f["h5md/creator"].attrs["name"] == "meanfield_gan"
        assert f["h5md/creator"].attrs["version"] == mfg.__version__
        T = 7
        for group, n, d in (("generator", N, K * (L + 2)), ("critic", M, K + 2),
                            ("reference_generator", N, K * (L + 2)),
                            ("reference_critic", M, K + 2)):
            pos = f[f"particles/{group}/position"]
            assert pos["value"].shape == (T, n, d)
            assert pos["step"].shape == (T,) and pos["step"].dtype.kind == "i"
            assert pos["time"].shape == (T,) and pos["time"].dtype.kind == "f"
            box = f[f"particles/{group}/box"]
            assert int(box.attrs["dimension"]) == d
            assert list(box.attrs["boundary"]) == ["none"] * d
            # chunked, compressed, resizable along time
            v = pos["value"]
            assert v.chunks is not None and v.compression == "gzip" and v.maxshape[0] is None
        np.testing.assert_array_equal(f["particles/critic/box/edges"][...], np.full(K + 2, 1.6))
        np.testing.assert_array_equal(f["particles/critic/box/offset"][...], np.full(K + 2, -0.8))
        assert ([s.decode() for s in f["particles/generator/coordinate"][...]]
                == generator_labels(K, L))
        assert [s.decode() for s in f["particles/critic/coordinate"][...]] == critic_labels(K)
        for name in ("psi", "critic_boundary_fraction", "d2_squared", "coupling_squared"):
            obs = f[f"observables/{name}"]
            assert obs["value"].shape == obs["step"].shape == obs["time"].shape == (T,)
        par = f["parameters"]
        assert par["config_toml"][()].decode() == cfg.text  # as written
        assert par["config_canonical_toml"][()].decode() == cfg.to_toml()  # defaults filled in
        assert par.attrs["seed"] == 5 and par.attrs["init_seed"] == 2
        assert par.attrs["package_version"] == mfg.__version__
        assert isinstance(par.attrs["git_revision"], str) and par.attrs["git_revision"]
        assert int(f.attrs["complete"]) == 1 and f.attrs["error"] == ""


def test_every_axis_of_every_dataset_has_a_dimension_scale(run_file):
    path, _ = run_file
    unscaled = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim and not obj.is_scale:
            unscaled.extend(f"{name}[{a}]" for a in range(obj.ndim) if len(obj.dims[a]) == 0)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    assert unscaled == []
    # h5netcdf without phony dims (its default raises on an unscaled axis) reads every variable
    with h5netcdf.File(path, "r") as f:
        def walk(g):
            for v in g.variables.values():
                assert not any(d.startswith("phony") for d in v.dimensions)
                v[...]
            for sub in g.groups.values():
                walk(sub)
        walk(f)


def test_xarray_gives_named_dimensions(run_file):
    path, _ = run_file
    run = mfg.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a phony-dims fallback would warn
        ds = xarray.open_dataset(path, engine="h5netcdf", group="particles/critic/position")
        gen = xarray.open_dataset(path, engine="h5netcdf", group="particles/generator/position")
        psi = xarray.open_dataset(path, engine="h5netcdf", group="observables/psi")
    with ds, gen, psi:
        assert ds["value"].dims == ("time", "id", "coordinate")
        assert dict(ds.sizes) == {"time": 7, "id": M, "coordinate": K + 2}
        np.testing.assert_array_equal(ds["time"].values, run.times)
        np.testing.assert_array_equal(ds["value"].values, run.omega)
        assert ds["step"].dims == ("time",)
        np.testing.assert_array_equal(gen["value"].values.reshape(run.theta.shape), run.theta)
        assert psi["value"].dims == ("time",)
        np.testing.assert_array_equal(psi["value"].values, run.observables["psi"])


# ------------------------------------------------------------------------------------------
# what is written is what simulate computes
# ------------------------------------------------------------------------------------------
def test_load_matches_an_in_memory_simulation(run_file):
    path, cfg = run_file
    run = mfg.load(path)
    problem, state, scheme = cfg.build()
    dt = scheme.dt(N)
    steps = record_steps(6, dt, 0, int(round(3.0 / dt)))
    traj = mfg.simulate(problem, state, scheme, 3.0, record=steps * dt, seed=5, backend="numpy")
    assert run.theta.shape == (7, N, K, L + 2) and run.omega.shape == (7, M, K + 2)
    np.testing.assert_array_equal(run.steps, traj.steps)
    np.testing.assert_array_equal(run.times, traj.times)
    np.testing.assert_array_equal(run.theta, traj.theta)
    np.testing.assert_array_equal(run.omega, traj.omega)
    for k in ("psi", "critic_boundary_fraction"):
        np.testing.assert_array_equal(run.observables[k], traj.observables[k])
    assert run.complete and run.error == ""
    assert run.config == cfg.to_dict()
    assert (run.N, run.M, run.K, run.L) == (N, M, K, L)
    # the final checkpoint is the final state
    assert run.checkpoint.state.step == traj.state.step
    np.testing.assert_array_equal(run.checkpoint.state.theta, traj.state.theta)
    # the reference: Heun from the same particles with dt/2; d2 = 0 at t = 0, and the
    # stored reference particles are that scheme's trajectory
    ref = mfg.ProjectedHeun(dt / 2, scheme.gamma_c(N, M))
    rtraj = mfg.simulate(problem, state, ref, 3.0, record=steps * dt, backend="numpy")
    np.testing.assert_array_equal(run.reference_theta, rtraj.theta)
    np.testing.assert_array_equal(run.reference_omega, rtraj.omega)
    d2 = run.observables["d2_squared"]
    assert d2[0] == 0.0 and np.all(d2[1:] > 0)
    assert np.all(d2 <= run.observables["coupling_squared"] + 1e-15)  # W2 <= natural coupling
    expected = mfg.metrics.pair_distance(traj.theta[-1], traj.omega[-1],
                                         rtraj.theta[-1], rtraj.omega[-1])
    assert d2[-1] == pytest.approx(expected, rel=1e-12)
    light = load(path, particles=False)  # mfg.load forwards only the path
    assert light.theta is None and light.observables.keys() == run.observables.keys()


# ------------------------------------------------------------------------------------------
# checkpoints and truncation
# ------------------------------------------------------------------------------------------
def _state(step, seed):
    rng = np.random.default_rng(seed)
    return mfg.State(rng.normal(size=(N, K, L + 2)), rng.uniform(-0.8, 0.8, (M, K + 2)), step,
                     step * 0.1, {"theta_sq": rng.random((N, K, L + 2)),
                                  "omega_sq": rng.random((M, K + 2))})


def _same_state(a, b):
    assert (a.step, a.time) == (b.step, b.time)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.omega, b.omega)
    assert a.opt.keys() == b.opt.keys()
    for k in a.opt:
        np.testing.assert_array_equal(a.opt[k], b.opt[k])


def test_checkpoint_slots_survive_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "ck.h5"
    s1, s2, s3 = _state(4, 1), _state(8, 2), _state(12, 3)
    with _new_writer(path) as w:
        assert w.read_checkpoint() is None
        assert w.write_checkpoint(s1) == "slot0"
        assert w.write_checkpoint(s2, {"reference": s1}) == "slot1"
        ck = w.read_checkpoint()
        _same_state(ck.state, s2)
        _same_state(ck.extras["reference"], s1)
        # crash while writing the third checkpoint: it goes to slot0, which is marked invalid
        # first, so the newest complete checkpoint (slot1) stays the one read back
        calls = {"n": 0}
        real_put = H5MDWriter._put

        def failing_put(self, g, name, arr):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full")
            return real_put(self, g, name, arr)

        monkeypatch.setattr(H5MDWriter, "_put", failing_put)
        with pytest.raises(OSError):
            w.write_checkpoint(s3)
        monkeypatch.undo()
    ck = read_checkpoint(path)
    assert ck.slot == "slot1"
    _same_state(ck.state, s2)
    with H5MDWriter.open(path) as w:  # and the next write reuses the broken slot
        assert w.write_checkpoint(s3) == "slot0"
        _same_state(w.read_checkpoint().state, s3)
        assert w.read_checkpoint().extras == {}


def test_truncate_drops_records_after_a_step(tmp_path):
    path = tmp_path / "tr.h5"
    with _new_writer(path) as w:
        for step in range(0, 12, 2):
            st = _state(step, step)
            w.record(step, step * 0.1, st.theta, st.omega,
                     {"psi": step / 10, "critic_boundary_fraction": 0.0})
        assert w.truncate(5) == 3
        assert w.read_checkpoint() is None
    with h5py.File(path, "r") as f:
        for el in ("particles/generator/position", "particles/critic/position", "observables/psi"):
            np.testing.assert_array_equal(f[el]["step"][...], [0, 2, 4])
            assert f[el]["value"].shape[0] == 3
        np.testing.assert_array_equal(f["particles/critic/position/value"][2], _state(4, 4).omega)
    assert mfg.load(path).theta.shape == (3, N, K, L + 2)


def test_load_rejects_foreign_files(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(ValueError, match="not a meanfield_gan run file"):
        mfg.load(p)
    with pytest.raises(FileNotFoundError, match="path: no such file"):
        mfg.load(tmp_path / "missing.h5")
