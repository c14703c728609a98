"""TOML run configurations: validation messages, defaults, data files, round trips, build()."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import meanfield_gan as mfg
from meanfield_gan.io.config import (
    ConfigError,
    RunConfig,
    default_config_path,
    dumps_toml,
    load_config,
    loads_config,
)

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "problem": {"K": 1, "L": 1, "clip": 1.0,
                "target": {"kind": "gaussian_mixture", "means": [[-1.0], [1.0]], "scales": 0.3}},
    "init": {"N": 4, "M": 3, "seed": 0},
    "scheme": {"kind": "sgd", "lr": 0.5},
    "run": {"t_end": 1.0, "record": 4, "seed": 1, "backend": "numpy"},
}


def _cfg(mutate=None, base_dir="."):
    d = copy.deepcopy(BASE)
    if mutate:
        mutate(d)
    return loads_config(dumps_toml(d), base_dir)


def _error(mutate) -> str:
    with pytest.raises(ConfigError) as exc:
        _cfg(mutate)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _set(path, value):
    def f(d):
        *head, last = path.split(".")
        for k in head:
            d = d.setdefault(k, {})
        d[last] = value
    return f


def _drop(path):
    def f(d):
        *head, last = path.split(".")
        for k in head:
            d = d[k]
        del d[last]
    return f


@pytest.mark.parametrize("mutate, expected", [
    (_set("scheme.lr", -1), "scheme.lr: must be > 0, got -1"),
    (_set("scheme.lr", 0.0), "scheme.lr: must be > 0, got 0.0"),
    (_set("scheme.lr", float("nan")), "scheme.lr: must be finite, got nan"),
    (_set("scheme.lr", "fast"), 'scheme.lr: must be a number, got "fast"'),
    (_set("scheme.lr", True), "scheme.lr: must be a number, got true"),
    (_set("init.N", 4.0), "init.N: must be an integer, got 4.0"),
    (_set("init.N", 0), "init.N: must be >= 1, got 0"),
    (_set("init.M", -2), "init.M: must be >= 1, got -2"),
    (_set("problem.clip", 0), "problem.clip: must be > 0, got 0"),
    (_set("problem.K", 2), "problem.target.means: each of the means must have K = 2 coordinates "
                           "(problem.K), got 1 at index 0"),
    (lambda d: (d["problem"].update(K=2), d["problem"]["target"].update(means=[-1.0, 1.0])),
     "problem.target.means: a flat list of numbers gives 1-D means, but problem.K = 2"),
    (_set("problem.quadrature_size", 0), "problem.quadrature_size: must be >= 1, got 0"),
    (_set("run.backend", "fortran"), 'run.backend: must be one of numpy, numba, cuda; got "fortran"'),
    (_set("scheme.kind", "adam"), 'scheme.kind: must be one of sgd, rmsprop, euler, heun; got "adam"'),
    (_set("problem.latent", {"kind": "cauchy"}), "problem.latent.kind: must be one of normal"),
    (_set("problem.target.kind", "gan"), "problem.target.kind: must be one of"),
    (_set("run.record", 0), "run.record: must be >= 1, got 0"),
    (_set("run.record", [0.0, 2.0]), "run.record: record times must lie in [0, t_end = 1.0], got 2.0"),
    (_set("run.record", "often"), "run.record: must be an integer"),
    (_set("run.t_end", 0.01), "run.t_end: must be at least one step (dt = 0.125)"),
    (_set("run.progress", "yes"), 'run.progress: must be true, false or "auto"'),
    (_set("run.seed", -1), "run.seed: must be >= 0, got -1"),
    (_set("run.checkpoint_every", 0), "run.checkpoint_every: must be >= 1, got 0"),
    (_drop("run.t_end"), "run.t_end: required key is missing"),
    (_drop("init"), "init: required key is missing"),
    (_set("scheme", {"kind": "rmsprop", "rho": 1.0}), "scheme.rho: must be in [0, 1), got 1.0"),
    (_set("scheme", {"kind": "euler"}), "scheme.time_step: required key is missing"),
    (_set("scheme", {"kind": "euler", "time_step": 0.1, "lr": 1.0}),
     'scheme.lr: unknown key for kind "euler" (allowed: kind, time_step, critic_scale'),
    (_set("scheme", {"kind": "rmsprop", "alternating": True}), 'scheme.alternating: unknown key for kind "rmsprop"'),
    (_set("init.generator", {"kind": "uniform", "low": 1.0, "high": 0.0}),
     "init.generator.high: must be > low = 1.0, got 0.0"),
    (_set("init.critic", {"kind": "normal", "scale": -1}), "init.critic.scale: must be > 0, got -1"),
    (_set("problem.target.scales", [0.3]), "problem.target.scales: must have 2 entries, got 1"),
    (_set("problem.target.weights", [0.0, 0.0]), "problem.target.weights: must not be all zero"),
    (_set("problem.target.weights", [1.0, -1.0]), "problem.target.weights[1]: must be >= 0"),
    (_set("reference", {"distance": "w5"}), 'reference.distance: must be one of exact, coupling, sliced'),
    (_set("reference", {"refine": 0}), "reference.refine: must be >= 1, got 0"),
])
def test_bad_values_give_one_line_naming_the_key(mutate, expected):
    assert expected in _error(mutate)


@pytest.mark.parametrize("section", ["", "problem", "problem.target", "problem.latent", "init",
                                     "init.generator", "init.critic", "scheme", "run", "reference"])
def test_unknown_key_in_every_section(section):
    def mutate(d):
        t = d
        for k in filter(None, section.split(".")):
            t = t.setdefault(k, {"kind": "normal"} if k in ("latent", "generator", "critic") else {})
        t["colour"] = "blue"
    msg = _error(mutate)
    key = f"{section}.colour" if section else "colour"
    assert msg.startswith(f"{key}: unknown ")
    assert "allowed:" in msg


def test_target_dimension_must_match_problem_K():
    msg = _error(lambda d: (d["problem"].update(K=2),
                            d["problem"]["target"].update(means=[[-1.0, 0.0], [1.0]])))
    assert msg.startswith("problem.target.means: each of the means must have K = 2 coordinates")
    msg = _error(lambda d: d["problem"].update(
        target={"kind": "dirac_mixture", "points": [[0.0, 1.0]]}))
    assert msg.startswith("problem.target.points: each of the points must have K = 1")


def test_invalid_toml_is_a_config_error():
    with pytest.raises(ConfigError, match="cfg.toml: invalid TOML"):
        loads_config("[problem\nK = 1", source="cfg.toml")
    with pytest.raises(FileNotFoundError, match="config: no such file"):
        load_config("/nonexistent/run.toml")


# ------------------------------------------------------------------------------------------
# defaults, data targets, round trips
# ------------------------------------------------------------------------------------------
def test_defaults_are_filled_in():
    cfg = _cfg(lambda d: d["problem"].update(clip=2.0))
    assert cfg.problem.latent.kind == "normal"
    assert cfg.problem.quadrature_size == 256
    assert (cfg.init.critic.kind, cfg.init.critic.low, cfg.init.critic.high) == ("uniform", -1.0, 1.0)
    assert (cfg.init.generator.kind, cfg.init.generator.loc, cfg.init.generator.scale) == ("normal", 0.0, 1.0)
    assert (cfg.scheme.n_critic, cfg.scheme.batch_size, cfg.scheme.alternating) == (1, 1, False)
    assert cfg.run.checkpoint_every == 1000 and cfg.run.progress == "auto"
    assert cfg.reference is None
    # latent shorthand
    assert _cfg(_set("problem.latent", "logistic")).problem.latent.kind == "logistic"


@pytest.mark.parametrize("path", [default_config_path(), REPO / "examples" / "run.toml"])
def test_shipped_examples_validate_and_round_trip(path):
    cfg = load_config(path)
    assert cfg.text == Path(path).read_text()
    again = loads_config(cfg.to_toml())
    assert again == cfg
    assert again.to_toml() == cfg.to_toml()
    assert cfg.reference is not None


def test_data_target_from_files_and_inline(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(7, 2))
    np.save(tmp_path / "pts.npy", data)
    np.savetxt(tmp_path / "pts.csv", data, delimiter=",")
    sub = tmp_path / "cfgs"
    sub.mkdir()
    for name in ("pts.npy", "pts.csv"):
        d = copy.deepcopy(BASE)
        d["problem"].update(K=2, target={"kind": "data", "path": f"../{name}"})
        (sub / "c.toml").write_text(dumps_toml(d))
        cfg = load_config(sub / "c.toml")  # relative to the config's folder, not the cwd
        np.testing.assert_allclose(cfg.problem.target.array, data, rtol=1e-15)
        problem, _, _ = cfg.build()
        assert isinstance(problem.target, mfg.EmpiricalData)
        assert cfg.problem.target.data_sha256() is not None
        assert loads_config(cfg.to_toml(), sub).to_dict() == cfg.to_dict()
    d = copy.deepcopy(BASE)
    d["problem"].update(K=2, target={"kind": "data", "path": "../pts.npy"})
    d["problem"]["K"] = 3
    (sub / "bad.toml").write_text(dumps_toml(d))
    with pytest.raises(ConfigError, match=r"^problem.target.path: .* must have shape \(n, K\) = \(n, 3\)"):
        load_config(sub / "bad.toml")
    with pytest.raises(ConfigError, match="^problem.target.path: no such file"):
        _cfg(_set("problem.target", {"kind": "data", "path": "missing.npy"}), tmp_path)
    with pytest.raises(ConfigError, match="^problem.target: kind = \"data\" needs exactly one of path or data"):
        _cfg(_set("problem.target", {"kind": "data"}))
    inline = _cfg(_set("problem.target", {"kind": "data", "data": [0.5, -0.5, 1.5]}))
    np.testing.assert_array_equal(inline.problem.target.array, [[0.5], [-0.5], [1.5]])


def test_build_gives_the_objects_simulate_takes():
    cfg = _cfg(lambda d: (d["init"].update(generator={"kind": "uniform", "low": -2.0, "high": 2.0}),
                          d.update(reference={"kind": "euler", "refine": 4})))
    problem, state, scheme = cfg.build()
    assert (problem.K, problem.L, problem.clip) == (1, 1, 1.0)
    assert isinstance(scheme, mfg.SGD) and scheme.lr == 0.5
    expected = mfg.initial_state(problem, 4, 3, seed=0)
    np.testing.assert_array_equal(state.theta, expected.theta)
    np.testing.assert_array_equal(state.omega, expected.omega)
    assert np.all(np.abs(state.theta) <= 2.0) and state.theta.shape == (4, 1, 3)
    ref = cfg.build_reference(scheme)
    assert isinstance(ref, mfg.ProjectedEuler) and not isinstance(ref, mfg.ProjectedHeun)
    assert ref.dt() == pytest.approx(scheme.dt(4) / 4)
    assert ref.gamma_c() == pytest.approx(scheme.gamma_c(4, 3))
    heun = _cfg(_set("scheme", {"kind": "heun", "time_step": 0.01, "critic_scale": 3.0, "n_latent": 8}))
    _, _, s = heun.build()
    assert isinstance(s, mfg.ProjectedHeun) and (s.dt(), s.gamma_c(), s.n_latent) == (0.01, 3.0, 8)
    rms = _cfg(_set("scheme", {"kind": "rmsprop", "lr": 0.1, "rho": 0.5}))
    assert isinstance(rms.build()[2], mfg.RMSProp) and rms.build()[2].rho == 0.5


def test_with_backend_and_canonical_text():
    cfg = _cfg()
    assert cfg.with_backend("numba").run.backend == "numba"
    with pytest.raises(ConfigError, match="^backend: must be one of"):
        cfg.with_backend("gpu")
    text = cfg.to_toml()
    assert "[problem.target]" in text and "progress = \"auto\"" in text
    assert isinstance(RunConfig.from_dict(loads_config(text).to_dict()), RunConfig)
