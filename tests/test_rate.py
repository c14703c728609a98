"""The C/N convergence-rate study (MODEL.md section 4, Theorem 7): config, tasks, executors, CLI."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from meanfield_gan import metrics
from meanfield_gan.cli import main
from meanfield_gan.driver import simulate
from meanfield_gan.io.config import ConfigError
from meanfield_gan.model.problem import initial_state
from meanfield_gan.model.schemes import SGD, ProjectedEuler
from meanfield_gan.studies.rate import (
    _INIT,
    _rng,
    load_rate_config,
    loads_rate_config,
    read_rate,
    run_euler_order,
    run_rate_study,
)

#: A study small enough for a test: 3 N x 3 seeds x 2 SGD runs, a handful of steps each.
TINY = """
[rate]
N = [8, 16, 32]
seeds = 3
sgd_runs = 2
t_end = 0.5
n_times = 2
exact_max_N = 16
n_boot = 200

[euler_order]
N = 16
dt_max = 0.0625
n_dt = 3
ref_refine = 4
interior = {t_end = 0.5, gamma_c = 1.0}
boundary = {t_end = 1.0, gamma_c = 5.0}

[iid]
N = [4, 8, 16]
N_ref = 64
seeds = 2
dt = 0.0625
t_end = 0.25
"""


@pytest.fixture(scope="module")
def tiny():
    return loads_rate_config(TINY, quick=True)


@pytest.fixture(scope="module")
def serial_result(tiny):
    return run_rate_study(tiny, "serial", progress=False)


# ------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quick", [True, False])
def test_packaged_configs_load_and_round_trip(quick):
    cfg = load_rate_config(quick=quick)
    assert cfg.N[0] < cfg.N[-1] and cfg.seeds >= 8
    back = loads_rate_config(cfg.to_toml(), quick=not quick)
    assert back == cfg
    assert back.to_toml() == cfg.to_toml()


def test_user_file_overrides_defaults_and_replaces_target(tiny):
    assert tiny.N == (8, 16, 32) and tiny.seeds == 3 and tiny.n_critic == 5  # n_critic: default
    cfg = loads_rate_config('[problem.target]\nkind = "gaussian_mixture"\nmeans = [[0.0]]\n'
                            'scales = 0.5\n[rate]\nseeds = 2', quick=True)
    assert cfg.problem.target.kind == "gaussian_mixture" and cfg.seeds == 2


@pytest.mark.parametrize("text, key", [
    ("[rate]\nsedes = 3", "rate.sedes: unknown key"),
    ("[rates]\nseeds = 3", "rates: unknown section"),
    ("[rate]\nseeds = 1", "rate.seeds: must be >= 2"),
    ("[rate]\nN = [64, 32, 128]", "rate.N: must be strictly increasing"),
    ("[rate]\nN = [8, 16]", "rate.N: must be a list of at least 3"),
    ("[rate]\nlr = -1.0", "rate.lr: must be finite and > 0"),
    ("[rate]\nseeds = 2.5", "rate.seeds: must be an integer"),
    ("[rate]\nbackend = 'fortran'", "rate.backend: must be one of"),
    ("[rate]\nt_end = 0.3", "rate.t_end: t_end * N / lr must be a whole number"),
    ("[problem]\nKK = 2", "problem.KK: unknown key"),
    ("[problem.target]\nkind = 'dirac_mixture'\npoints = [[1.0]]\nmeans = [[0.0]]",
     "problem.target.means: unknown key"),
    ("[init]\ncritic = {kind = 'uniform', low = 1.0, high = 0.0}", "init.critic.high"),
    ("[euler_order]\ninterior = {t_end = 1.0, gamma = 1.0}",
     "euler_order.interior.gamma: unknown key"),
    ("[iid]\nN_ref = 100", "iid.N_ref: must be at least 4 times"),
    ("[rate\nseeds = 3", "invalid TOML"),
])
def test_bad_config_is_rejected_with_one_line_naming_the_key(text, key):
    with pytest.raises(ConfigError) as exc:
        loads_rate_config(text, quick=True)
    msg = str(exc.value)
    assert key in msg and "\n" not in msg


def test_problem_section_is_the_run_configurations_and_takes_any_objective():
    from meanfield_gan.io.config import ProblemConfig

    cfg = loads_rate_config('[problem]\nloss = "minimax"\nclip = inf\n', quick=True)
    assert type(cfg.problem) is ProblemConfig
    problem = cfg.problem_instance()
    assert problem.loss == "minimax" and not problem.has_box
    back = loads_rate_config(cfg.to_toml())
    assert back == cfg and back.problem_instance().loss == "minimax"
    for text, msg in [('[problem]\nloss = "gan"', "problem.loss: must be one of wasserstein"),
                      ("[problem]\ninstance_noise = -1.0", "problem.instance_noise: must be "),
                      ("[rate]\nn_critic = 0", "rate.n_critic: must be a positive integer")]:
        with pytest.raises(ConfigError, match=f"^{msg}"):
            loads_rate_config(text, quick=True)


# ------------------------------------------------------------------------------------------
# the study
# ------------------------------------------------------------------------------------------
def test_study_numbers_are_the_documented_runs(tiny, serial_result):
    """Recompute one (N, seed, run) by hand from the stored seeds: the study is what it says."""
    res = serial_result
    i, s, r = 1, 2, 1
    N = int(res.N[i])
    problem = tiny.problem_instance()
    state = initial_state(problem, N, tiny.M(N), seed=_rng(tiny.seed, _INIT, N, s))
    sgd = SGD(lr=tiny.lr, n_critic=tiny.n_critic, batch_size=tiny.batch_size)
    a = simulate(problem, state, sgd, tiny.t_end, seed=int(res.sgd_seeds[i, s, r]),
                 observables=False)
    b = simulate(problem, state, ProjectedEuler.matching(sgd, N, N), tiny.t_end, observables=False)
    np.testing.assert_allclose(res.coupling_generator[i, s, r, -1],
                               metrics.coupling_squared(a.state.theta, b.state.theta), rtol=1e-10)
    np.testing.assert_allclose(res.coupling_critic[i, s, r, -1],
                               metrics.coupling_squared(a.state.omega, b.state.omega), rtol=1e-10)
    np.testing.assert_allclose(res.exact_critic[i, s, r],
                               metrics.w2_squared(a.state.omega, b.state.omega), rtol=1e-10)


def test_study_shapes_bounds_and_seeds(tiny, serial_result):
    res = serial_result
    assert res.coupling_generator.shape == (3, 3, 2, 2)
    assert res.exact_critic.shape == (3, 3, 2)
    assert np.all(res.coupling > 0)
    # Exact W2 where N <= exact_max_N (8, 16) only, and never above the coupling bound.
    assert np.all(np.isfinite(res.exact[:2])) and np.all(np.isnan(res.exact[2]))
    exact = res.exact_generator[:2] + res.exact_critic[:2]
    coupling = (res.coupling_generator + res.coupling_critic)[:2, :, :, -1]
    assert np.all(exact <= coupling * (1 + 1e-12))
    # Independent SGD batches for every (N, seed, run).
    assert len(np.unique(res.sgd_seeds)) == res.sgd_seeds.size
    # Exact W2 is not computed at every N, so the headline falls back to the coupling bound.
    s = res.summary()
    assert s["distance"] == "coupling"
    np.testing.assert_allclose(s["mean_d2"], res.coupling[:, :, -1].mean(axis=1))
    assert s["slope_ci"][0] <= s["slope"] <= s["slope_ci"][1]
    assert len(s["per_time"]) == 2 and s["exact"]["N"] == [8, 16]


@pytest.mark.slow
def test_local_processes_and_dask_cluster_give_the_serial_numbers(tiny, serial_result):
    distributed = pytest.importorskip("dask.distributed")
    procs = run_rate_study(tiny, "processes", progress=False, max_workers=2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None, protocol="tcp", host="127.0.0.1"
                                  ) as cluster, \
            distributed.Client(cluster) as client:
        dask = run_rate_study(tiny, client.get_executor(), progress=False)
        # A scheduler address works too (the study opens and closes its own client).
        by_address = run_rate_study(tiny, cluster.scheduler_address, progress=False)
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    for other in (procs, dask, by_address):
        np.testing.assert_array_equal(other.sgd_seeds, serial_result.sgd_seeds)
        # Workers run numba with one thread, this process with all cores: the engine's chunks
        # depend on the sizes only, so every number is the same to the last bit.
        for name in ("coupling_generator", "coupling_critic", "exact_generator", "exact_critic",
                     "boundary_euler", "boundary_sgd"):
            np.testing.assert_array_equal(getattr(other, name), getattr(serial_result, name),
                                          err_msg=name)
        assert other.summary()["slope"] == serial_result.summary()["slope"]


def test_projected_euler_is_first_order_away_from_the_boundary(tiny):
    out = run_euler_order(tiny, progress=False)
    interior = out["interior"]
    assert not interior["touches_boundary"]
    assert 0.85 < interior["order"] < 1.15, interior
    assert out["boundary"]["touches_boundary"]
    assert np.all(np.diff(out["boundary"]["error"]) < 0)  # converges as dt shrinks


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------
def test_cli_writes_json_h5_png_with_the_api_keys(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    assert main(["rate", "--quick", str(cfg), "-o", str(out), "--serial",
                 "--euler-order", "--iid"]) == 0
    printed = capsys.readouterr().out
    assert "slope" in printed and str(out / "rate.json") in printed
    doc = json.loads((out / "rate.json").read_text())
    for key in ("slope", "slope_ci", "N", "mean_d2", "seeds", "t_end", "config"):
        assert key in doc, key
    assert doc["N"] == [8, 16, 32] and doc["seeds"] == 3 and doc["t_end"] == 0.5
    assert len(doc["slope_ci"]) == 2 and len(doc["mean_d2"]) == 3
    assert doc["config"]["rate"]["sgd_runs"] == 2
    assert doc["iid"]["bound_exponent"] == pytest.approx(-2.0 / 3.0)
    assert "order" in doc["euler_order"]["interior"]
    with h5py.File(out / "rate.h5", "r") as f:
        assert f["coupling_critic"].shape == (3, 3, 2, 2)
        assert f["iid/w2"].shape == (3, 2, 3)
        # The fit can be redone offline from the stored per-run numbers.
        d2 = (f["coupling_generator"][...] + f["coupling_critic"][...]).mean(axis=2)[:, :, -1]
        slope = np.polyfit(np.log(f["N"][...]), np.log(d2.mean(axis=1)), 1)[0]
        assert slope == pytest.approx(doc["slope"], rel=1e-9)
        assert loads_rate_config(f.attrs["config_toml"]) == load_rate_config(cfg, quick=True)
    back, extras = read_rate(out / "rate.h5")
    assert back.summary()["slope"] == doc["slope"] and back.summary()["N"] == doc["N"]
    assert extras["iid"]["w2"].shape == (3, 2, 3)
    assert extras["iid"]["slope"] == doc["iid"]["slope"]
    assert extras["euler_order"]["interior"]["order"] == doc["euler_order"]["interior"]["order"]
    png = (out / "rate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_bad_key_fails_with_one_line_and_writes_nothing(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[rate]\nN = [8, 16, 32]\nseedz = 3\n")
    out = tmp_path / "out"
    assert main(["rate", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rate.seedz: unknown key" in err
    assert not out.exists()


def test_cli_missing_config_file(tmp_path, capsys):
    assert main(["rate", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
