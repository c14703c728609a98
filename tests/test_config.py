"""TOML run configurations: validation messages, defaults, data files, round trips, build()."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar  # noqa: F401  (a scheme class defined in a test annotates with it)

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
    (_set("scheme.lr", -1), "scheme.lr: must be finite and > 0, got -1"),
    (_set("scheme.lr", 0.0), "scheme.lr: must be finite and > 0, got 0.0"),
    (_set("scheme.lr", float("nan")), "scheme.lr: must be finite and > 0, got nan"),
    (_set("scheme.lr", "fast"), 'scheme.lr: must be a number, got "fast"'),
    (_set("scheme.lr", True), "scheme.lr: must be a number, got true"),
    (_set("init.N", 4.0), "init.N: must be an integer, got 4.0"),
    (_set("init.N", 0), "init.N: must be a positive integer, got 0"),
    (_set("init.M", -2), "init.M: must be a positive integer, got -2"),
    (_set("problem.clip", 0), "problem.clip: must be > 0 (or inf for no box), got 0"),
    (_set("problem.K", 2), "problem.target.means: each of the means must have K = 2 coordinates "
                           "(problem.K), got 1 at index 0"),
    (lambda d: (d["problem"].update(K=2), d["problem"]["target"].update(means=[-1.0, 1.0])),
     "problem.target.means: a flat list of numbers gives 1-D means, but problem.K = 2"),
    (_set("problem.quadrature_size", 0),
     "problem.quadrature_size: must be a positive integer, got 0"),
    (_set("problem.K", 0), "problem.K: must be a positive integer, got 0"),
    (_set("run.backend", "fortran"),
     'run.backend: must be one of numpy, numba, cuda; got "fortran"'),
    (_set("scheme.kind", "sgdm"),
     'scheme.kind: must be one of sgd, rmsprop, adam, euler, heun; got "sgdm"'),
    (_set("problem.latent", {"kind": "cauchy"}), "problem.latent.kind: must be one of normal"),
    (_set("problem.target.kind", "gan"), "problem.target.kind: must be one of"),
    (_set("run.record", 0), "run.record: must be a positive integer, got 0"),
    (_set("run.record", [0.0, 2.0]),
     "run.record: record times must lie in [0, t_end = 1.0], got 2.0"),
    (_set("run.record", "often"), "run.record: must be an integer"),
    (_set("run.t_end", 0.01), "run.t_end: must be at least one step (dt = 0.125)"),
    (_set("run.progress", "yes"), 'run.progress: must be true, false or "auto"'),
    (_set("run.seed", -1), "run.seed: must be an integer >= 0, got -1"),
    (_set("run.checkpoint_every", 0), "run.checkpoint_every: must be a positive integer, got 0"),
    (_drop("run.t_end"), "run.t_end: required key is missing"),
    (_drop("init"), "init: required key is missing"),
    (_set("scheme", {"kind": "rmsprop", "rho": 1.0}), "scheme.rho: must be in [0, 1), got 1.0"),
    (_set("scheme", {"kind": "euler"}), "scheme.time_step: required key is missing"),
    (_set("scheme", {"kind": "euler", "time_step": 0.1, "lr": 1.0}),
     'scheme.lr: unknown key for kind "euler" (allowed: kind, time_step, critic_scale'),
    (_set("scheme", {"kind": "rmsprop", "alternating": True}),
     "scheme.alternating: RMSProp is implemented in simultaneous form only"),
    (_set("init.generator", {"kind": "uniform", "low": 1.0, "high": 0.0}),
     "init.generator.high: must be > low = 1.0, got 0.0"),
    (_set("init.critic", {"kind": "normal", "scale": -1}),
     "init.critic.scale: must be finite and > 0, got -1"),
    (_set("problem.target.scales", [0.3]), "problem.target.scales: must have 2 entries, got 1"),
    (_set("problem.target.weights", [0.0, 0.0]),
     "problem.target.weights: must be finite, non-negative and not all zero"),
    (_set("problem.target.weights", [1.0, -1.0]),
     "problem.target.weights: must be finite, non-negative"),
    (_set("reference", {"distance": "w5"}),
     'reference.distance: must be one of exact, coupling, sliced'),
    (_set("reference", {"refine": 0}), "reference.refine: must be a positive integer, got 0"),
])
def test_bad_values_give_one_line_naming_the_key(mutate, expected):
    assert expected in _error(mutate)


@pytest.mark.parametrize("section", ["", "problem", "problem.target", "problem.latent", "init",
                                     "init.generator", "init.critic", "scheme", "run", "reference"])
def test_unknown_key_in_every_section(section):
    def mutate(d):
        t = d
        for k in filter(None, section.split(".")):
            t = t.setdefault(
                k, {"kind": "normal"} if k in ("latent", "generator", "critic") else {})
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
    assert ((cfg.init.critic.kind, cfg.init.critic.low, cfg.init.critic.high)
            == ("uniform", -1.0, 1.0))
    assert ((cfg.init.generator.kind, cfg.init.generator.loc, cfg.init.generator.scale)
            == ("normal", 0.0, 1.0))
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
    with pytest.raises(ConfigError,
                       match=r"^problem.target.path: .* must have shape \(n, K\) = \(n, 3\)"):
        load_config(sub / "bad.toml")
    with pytest.raises(ConfigError, match="^problem.target.path: no such file"):
        _cfg(_set("problem.target", {"kind": "data", "path": "missing.npy"}), tmp_path)
    with pytest.raises(ConfigError,
                       match="^problem.target: kind = \"data\" needs exactly one of path or data"):
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
    heun = _cfg(_set("scheme", {"kind": "heun", "time_step": 0.01, "critic_scale": 3.0,
                                "n_latent": 8}))
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


# ------------------------------------------------------------------------------------------
# the objectives, no box and Adam (MODEL.md section 7)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mutate, expected", [
    (_set("problem.loss", "gan"),
     "problem.loss: must be one of wasserstein, minimax, non_saturating; got 'gan'"),
    (_set("problem.loss", 1), "problem.loss: must be a string, got 1"),
    (_set("problem.instance_noise", -0.1),
     "problem.instance_noise: must be finite and >= 0, got -0.1"),
    (_set("problem.noise_anneal", 0.0), "problem.noise_anneal: must be finite and > 0, got 0.0"),
    (_set("problem.noise_anneal", -2), "problem.noise_anneal: must be finite and > 0, got -2"),
    (_set("problem.noise_nodes", 0), "problem.noise_nodes: must be a positive integer, got 0"),
    (_set("problem.penalty_size", 1.5), "problem.penalty_size: must be an integer, got 1.5"),
    (_set("problem.gradient_penalty", -1.0),
     "problem.gradient_penalty: must be finite and >= 0, got -1.0"),
    (lambda d: d["problem"].update(loss="minimax", gradient_penalty=10.0),
     "problem.gradient_penalty: goes with loss 'wasserstein' only; got loss 'minimax'"),
    (_set("problem.clip", float("-inf")),
     "problem.clip: must be > 0 (or inf for no box), got -inf"),
    (_set("scheme", {"kind": "adam", "beta1": 1.0}), "scheme.beta1: must be in [0, 1), got 1.0"),
    (_set("scheme", {"kind": "adam", "beta1": -0.5}), "scheme.beta1: must be in [0, 1), got -0.5"),
    (_set("scheme", {"kind": "adam", "beta2": 1.5}), "scheme.beta2: must be in [0, 1), got 1.5"),
    (_set("scheme", {"kind": "adam", "eps": 0}), "scheme.eps: must be finite and > 0, got 0"),
    (_set("scheme", {"kind": "adam", "rho": 0.9}), 'scheme.rho: unknown key for kind "adam"'),
])
def test_objective_noise_and_adam_keys_fail_with_one_line(mutate, expected):
    msg = _error(mutate)
    assert msg.startswith(expected), msg


def test_clip_inf_means_no_box_and_round_trips():
    cfg = loads_config(dumps_toml(BASE).replace("clip = 1.0", "clip = inf"))
    assert cfg.problem.clip == np.inf
    text = cfg.to_toml()
    assert "\nclip = inf\n" in text
    again = loads_config(text)
    assert again == cfg and again.to_toml() == text
    problem, state, _ = cfg.build()
    assert not problem.has_box
    # Without a box the model's default critic law is uniform on [-1/2, 1/2], written out.
    critic = cfg.init.critic
    assert (critic.kind, critic.low, critic.high) == ("uniform", -0.5, 0.5)
    assert np.all(np.abs(state.omega) <= 0.5)


def test_new_problem_keys_reach_the_problem_and_round_trip():
    cfg = _cfg(lambda d: d["problem"].update(loss="non_saturating", instance_noise=0.3,
                                             noise_anneal=2.0, noise_nodes=7, penalty_size=32))
    problem, _, _ = cfg.build()
    assert (problem.loss, problem.instance_noise, problem.noise_anneal, problem.noise_nodes,
            problem.penalty_size) == ("non_saturating", 0.3, 2.0, 7, 32)
    assert loads_config(cfg.to_toml()) == cfg
    gp = _cfg(lambda d: d["problem"].update(gradient_penalty=10.0, clip=float("inf")))
    assert gp.build()[0].gradient_penalty == 10.0
    # defaults are the Problem's own, filled in
    d = _cfg().to_dict()["problem"]
    assert (d["loss"], d["gradient_penalty"], d["instance_noise"]) == ("wasserstein", 0.0, 0.0)
    assert "noise_anneal" not in d  # None: constant noise, no TOML value


def test_adam_scheme_builds_and_round_trips():
    cfg = _cfg(_set("scheme", {"kind": "adam", "lr": 0.5, "beta1": 0.0, "n_critic": 5}))
    scheme = cfg.build()[2]
    assert isinstance(scheme, mfg.Adam)
    assert (scheme.lr, scheme.n_critic, scheme.beta1, scheme.beta2, scheme.eps) == \
        (0.5, 5, 0.0, 0.9, 1e-8)
    written = cfg.to_dict()["scheme"]
    assert written == {"kind": "adam", **{k: getattr(scheme, k) for k in written if k != "kind"}}
    assert {"lr", "n_critic", "batch_size", "alternating", "beta1", "beta2", "eps"} <= set(written)
    assert loads_config(cfg.to_toml()) == cfg


def test_minimax_example_validates_and_round_trips():
    path = REPO / "examples" / "minimax.toml"
    cfg = load_config(path)
    assert cfg.text == path.read_text()
    assert (cfg.problem.loss, cfg.problem.clip, cfg.scheme.kind) == ("minimax", np.inf, "adam")
    assert (cfg.problem.K, cfg.problem.L) == (1, 1)
    text = cfg.to_toml()
    assert "clip = inf" in text and 'loss = "minimax"' in text
    again = loads_config(text)
    assert again == cfg and again.to_toml() == text
    problem, state, scheme = cfg.build()
    assert problem.loss == "minimax" and not problem.has_box and isinstance(scheme, mfg.Adam)
    # small enough to run in seconds
    assert state.N * round(cfg.run.t_end / scheme.dt(state.N)) <= 64 * 256


# ------------------------------------------------------------------------------------------
# every parameter declared once, in the model
# ------------------------------------------------------------------------------------------
def test_scheme_sections_are_the_registered_scheme_dataclasses():
    import dataclasses

    from meanfield_gan.io.config import scheme_configs
    from meanfield_gan.model.schemes import SCHEMES

    configs = scheme_configs()
    assert list(configs) == list(SCHEMES) == ["sgd", "rmsprop", "adam", "euler", "heun"]
    for kind, cls in SCHEMES.items():
        fields = [f for f in dataclasses.fields(cls) if f.init]
        assert list(configs[kind].model_fields) == ["kind"] + [f.name for f in fields]
        for f in fields:
            key = configs[kind].model_fields[f.name]
            if f.default is dataclasses.MISSING:
                assert key.is_required(), f.name
            else:
                assert key.default == f.default, f.name


def test_a_newly_registered_scheme_appears_in_the_configuration():
    import dataclasses

    from meanfield_gan._validation import unit_interval
    from meanfield_gan.model.schemes import SCHEMES

    @dataclasses.dataclass(frozen=True)
    class HeavyBall(mfg.SGD):
        momentum: float = 0.9
        kind: ClassVar[str] = "test_heavy_ball"

        def __post_init__(self) -> None:
            super().__post_init__()
            unit_interval(self.momentum, "momentum")

    try:
        cfg = _cfg(_set("scheme", {"kind": "test_heavy_ball", "lr": 0.25, "momentum": 0.5}))
        scheme = cfg.build()[2]
        assert isinstance(scheme, HeavyBall) and (scheme.lr, scheme.momentum) == (0.25, 0.5)
        assert loads_config(cfg.to_toml()) == cfg
        assert _error(_set("scheme", {"kind": "test_heavy_ball", "momentum": 2.0})) == \
            "scheme.momentum: must be in [0, 1), got 2.0"
        assert "test_heavy_ball" in _error(_set("scheme.kind", "nope"))
    finally:
        SCHEMES.pop("test_heavy_ball", None)
    assert "test_heavy_ball" not in _error(_set("scheme.kind", "nope"))


def test_every_problem_field_is_a_problem_key_or_an_init_law():
    import dataclasses

    from meanfield_gan.io.config import INIT_FIELDS, ProblemConfig

    keys = set(ProblemConfig.model_fields)
    for f in dataclasses.fields(mfg.Problem):
        assert f.name in keys or f.name in INIT_FIELDS, f.name
        if f.name in keys and f.name not in ("K", "L", "target", "latent"):
            assert ProblemConfig.model_fields[f.name].default == f.default, f.name


def test_law_sections_have_the_laws_fields():
    import dataclasses

    from meanfield_gan.io.config import (
        INIT_LAWS,
        LATENT_CONFIGS,
        LATENT_LAWS,
        LAW_CONFIGS,
        TARGET_CONFIGS,
        TARGET_LAWS,
    )

    for laws, configs, extra, supplied in ((TARGET_LAWS, TARGET_CONFIGS, {"data": {"path"}}, ()),
                                           (LATENT_LAWS, LATENT_CONFIGS, {}, ("dim",)),
                                           (INIT_LAWS, LAW_CONFIGS, {}, ())):
        assert list(laws) == list(configs)
        for kind, law in laws.items():
            names = {f.name for f in dataclasses.fields(law)} - set(supplied)
            assert set(configs[kind].model_fields) == {"kind"} | names | extra.get(kind, set())
            assert configs[kind].model_class is law


def test_configurations_pickle_for_worker_processes():
    import pickle

    cfg = _cfg(lambda d: d.update(scheme={"kind": "adam"}, reference={"kind": "euler"}))
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and back.to_toml() == cfg.to_toml()
