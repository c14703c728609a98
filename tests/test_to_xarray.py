"""``mfg.load(...).to_xarray()``: a run as an xarray.Dataset with named dimensions."""
from __future__ import annotations

import builtins
import copy
import tomllib

import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.io.config import dumps_toml, loads_config
from meanfield_gan.io.runfile import run_config

xr = pytest.importorskip("xarray")

K, L, N, M = 2, 1, 5, 3

CONFIG = {
    "problem": {"K": K, "L": L, "clip": 0.8, "quadrature_size": 32,
                "target": {"kind": "gaussian_mixture", "means": [[-1.0, 0.0], [1.0, 0.5]],
                           "scales": 0.3}},
    "init": {"N": N, "M": M, "seed": 2},
    "scheme": {"kind": "sgd", "lr": 0.5, "batch_size": 2},
    "run": {"t_end": 3.0, "record": 6, "seed": 5, "backend": "numpy", "checkpoint_every": 4,
            "progress": False},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("xr") / "run.h5"
    cfg = copy.deepcopy(CONFIG)
    cfg["reference"] = {"kind": "heun", "refine": 2, "distance": "coupling",
                        "record_particles": True}
    run_config(loads_config(dumps_toml(cfg)), path, progress=False)
    return mfg.load(path)


def test_dimensions_coordinates_and_values(run):
    ds = run.to_xarray()
    T = len(run.times)
    assert ds["theta"].dims == ("time", "generator", "k", "generator_parameter")
    assert ds["omega"].dims == ("time", "critic", "critic_parameter")
    assert ds["reference_theta"].dims == ds["theta"].dims
    assert ds["reference_omega"].dims == ds["omega"].dims
    assert dict(ds.sizes) == {"time": T, "generator": N, "k": K, "generator_parameter": L + 2,
                              "critic": M, "critic_parameter": K + 2}
    assert list(ds["generator_parameter"].values) == ["a", "b[0]", "c"]
    assert list(ds["critic_parameter"].values) == ["alpha", "beta[0]", "beta[1]", "gamma"]
    np.testing.assert_array_equal(ds["time"].values, run.times)
    np.testing.assert_array_equal(ds["step"].values, run.steps)
    np.testing.assert_array_equal(ds["theta"].values, run.theta)
    np.testing.assert_array_equal(ds["omega"].values, run.omega)
    np.testing.assert_array_equal(ds["reference_omega"].values, run.reference_omega)
    for name, values in run.observables.items():
        assert ds[name].dims == ("time",)
        np.testing.assert_array_equal(ds[name].values, values)
    # selection by name follows the MODEL.md layout: theta[..., 0] = a, omega[:, K+1] = gamma
    np.testing.assert_array_equal(ds["theta"].sel(generator_parameter="a").values,
                                  run.theta[..., 0])
    np.testing.assert_array_equal(ds["omega"].sel(critic_parameter="gamma").values,
                                  run.omega[..., K + 1])
    # an analysis in named dimensions: the generator output's mean amplitude over time
    amp = ds["theta"].sel(generator_parameter="a").mean(("generator", "k"))
    np.testing.assert_allclose(amp.values, run.theta[..., 0].mean(axis=(1, 2)))


def test_attributes_hold_the_configuration_and_survive_netcdf(run, tmp_path):
    ds = run.to_xarray()
    assert tomllib.loads(ds.attrs["config_toml"]) == run.config
    assert ds.attrs["config_toml_as_written"] == run.config_text
    assert ds.attrs["parameters.N"] == N and ds.attrs["parameters.K"] == K
    assert ds.attrs["complete"] == 1 and ds.attrs["error"] == ""
    out = tmp_path / "run.nc"
    ds.to_netcdf(out, engine="h5netcdf")
    back = xr.load_dataset(out, engine="h5netcdf")
    xr.testing.assert_identical(back.drop_attrs(), ds.drop_attrs())
    assert back.attrs["config_toml"] == ds.attrs["config_toml"]


def test_without_particles_only_the_time_series(run):
    ds = mfg.load(run.path, particles=False).to_xarray()
    assert "theta" not in ds and "omega" not in ds
    assert set(ds.data_vars) == set(run.observables)
    assert ds["psi"].dims == ("time",)


def test_clear_error_without_xarray(run, monkeypatch):
    real_import = builtins.__import__

    def no_xarray(name, *args, **kwargs):
        if name == "xarray" or name.startswith("xarray."):
            raise ImportError("No module named 'xarray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xarray)
    with pytest.raises(ImportError, match="pip install xarray"):
        run.to_xarray()
