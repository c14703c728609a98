"""The vanishing-gradient study (MODEL.md section 8, meanfield_gan.studies.vanishing).

Structure and invariants only, on a small configuration: the frozen generator does not move,
the critic-only training is the hand-written Adam loop of MODEL.md 7, the measurements are
their definitions, the JSON file has the keys of API.md. The predictions themselves are
measured by the full study (README).
"""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from scipy.special import expit

import meanfield_gan as mfg
from meanfield_gan.cli import main
from meanfield_gan.driver import draw_batches, draw_extras
from meanfield_gan.studies.vanishing import (
    CASES,
    VanishingSettings,
    case_problem,
    critic_gradient,
    load_vanishing_config,
    measure,
    record_grid,
    run_vanishing,
)

SMALL = {"init": {"N": 12, "M": 10},
         "problem": {"quadrature_size": 16, "noise_nodes": 3},
         "scheme": {"lr": 0.3, "batch_size": 4},
         "vanishing": {"critic_steps": 24, "records": 6, "pretrain_steps": 15}}


@pytest.fixture(scope="module")
def small():
    cfg, settings = load_vanishing_config(overrides=SMALL, backend="numba")
    return run_vanishing(cfg, settings)


def test_record_grid_is_log_spaced_from_zero():
    g = record_grid(4000, 40)
    assert g[0] == 0 and g[1] == 1 and g[-1] == 4000
    assert np.all(np.diff(g) > 0)
    ratios = g[2:][g[1:-1] >= 100] / g[1:-1][g[1:-1] >= 100]
    np.testing.assert_allclose(ratios, 4000 ** (1 / 39), rtol=0.02)
    # with n_critic updates per step the grid is in whole steps
    g3 = record_grid(4000, 40, per_step=5)
    assert np.all(g3 % 5 == 0) and g3[-1] == 4000
    with pytest.raises(ValueError, match="records"):
        record_grid(10, 0)


def test_every_case_has_the_same_generator_and_critic_draw_and_the_generator_never_moves(small):
    assert set(small.runs) == {"initial", "trained"}
    for runs in small.runs.values():
        assert list(runs) == list(CASES)
        for r in runs.values():
            assert r.generator_displacement == 0.0
            np.testing.assert_array_equal(r.omega[0], small.omega0)
            np.testing.assert_array_equal(r.critic_steps, record_grid(24, 6))
    # the pretraining moved the second generator, and only that one differs
    assert np.max(np.abs(small.generators["trained"] - small.generators["initial"])) > 1e-3


def test_minimax_and_non_saturating_train_the_same_critic(small):
    """phi_1 and phi_2 are the same for both objectives: same batches, same critic, bitwise."""
    for runs in small.runs.values():
        np.testing.assert_array_equal(runs["minimax"].omega, runs["non_saturating"].omega)
        assert not np.array_equal(runs["minimax"].omega, runs["minimax_noise"].omega)
        # only the generator's weight phi_3' differs: s(-f) against s(f)
        w_mm = runs["minimax"].series["generator_weight"]
        w_ns = runs["non_saturating"].series["generator_weight"]
        np.testing.assert_allclose(w_mm + w_ns, 1.0, rtol=0, atol=1e-14)


def _adam(y, h, v, m, s, k, b1, b2, eps):
    m[:] = b1 * m + (1 - b1) * v
    s[:] = b2 * s + (1 - b2) * v * v
    return y + h * (m / (1 - b1 ** k)) / (np.sqrt(s / (1 - b2 ** k)) + eps)


@pytest.mark.parametrize("case", CASES)
def test_critic_training_is_the_hand_written_adam_loop(small, case):
    """n_critic = 1 alternating Adam updates of lr/M on the batch velocity, the generator
    untouched: MODEL.md 3 and 7 written out with the public velocity (NumPy engine)."""
    cfg, settings = small.config, small.settings
    base, state, scheme = cfg.build()
    p = case_problem(base, settings, case)
    theta, om = state.theta, state.omega.copy()
    m, s = np.zeros_like(om), np.zeros_like(om)
    Zs, Xs = draw_batches(p, scheme, cfg.run.seed, 0)
    extra = draw_extras(p, scheme, cfg.run.seed, 0)
    b = scheme.batch_size
    w = np.full(b, 1.0 / b)
    run = small.runs["initial"][case]
    checked = 0
    for step in range(int(run.critic_steps[-1])):
        z, x = Zs[step, 0].T, Xs[step, 0].T
        z_noise, penalty, x_noisy = None, None, x
        if p.instance_noise > 0:
            z_noise = p.instance_noise * extra["gen_noise"][step, 0].T
            x_noisy = x + p.instance_noise * extra["data_noise"][step, 0].T
        if p.gradient_penalty > 0:
            penalty = (p.gradient_penalty, (z, x, extra["eps"][step, 0], w))
        _, v = mfg.velocity(theta, om, z, w, x_noisy, w, backend="numpy", loss=p.loss,
                            z_noise=z_noise, penalty=penalty)
        om = _adam(om, scheme.lr / om.shape[0], v, m, s, step + 1, scheme.beta1, scheme.beta2,
                   scheme.eps)
        om = np.clip(om, -p.clip, p.clip)
        k = np.flatnonzero(run.critic_steps == step + 1)
        if k.size:
            np.testing.assert_allclose(run.omega[k[0]], om, rtol=0, atol=1e-12)
            checked += 1
    assert checked == len(run.critic_steps) - 1
    if case == "wasserstein_clip":
        assert np.max(np.abs(run.omega)) <= settings.clip
    else:
        assert p.clip == math.inf


def test_measurements_are_their_definitions(small):
    cfg = small.config
    base, state, _ = cfg.build()
    theta = small.generators["trained"]
    z, zw, x, xw = base.quadrature()
    for case in ("minimax", "wasserstein_gp", "minimax_noise"):
        run = small.runs["trained"][case]
        p = case_problem(base, small.settings, case)
        om = run.omega[-1]
        got = measure(p, theta, om, backend="numpy")
        k = len(run.critic_steps) - 1
        assert got["generator_speed"] == pytest.approx(run.series["generator_speed"][k], rel=1e-10)
        if case != "minimax_noise":
            # the driver's own observable (numba, problem quadrature) under the case's loss
            traj = mfg.simulate(p, mfg.initial_state(p, len(theta), len(om), theta=theta, omega=om),
                                mfg.Adam(lr=1.0, alternating=True, freeze_generator=True), 0.0)
            assert got["generator_speed"] == pytest.approx(traj.observables["generator_speed"][0],
                                                           rel=1e-10)
            g = mfg.generator_output(theta, z)
            fg, fx = mfg.critic_output(om, g), mfg.critic_output(om, x)
            assert got["f_generated"] == pytest.approx(zw @ np.abs(fg), rel=1e-12)
            assert got["f_data"] == pytest.approx(xw @ np.abs(fx), rel=1e-12)
            # |grad f| at g(z) against central differences of the public critic
            h = 1e-6
            fd = np.stack([(mfg.critic_output(om, g + h * e) - mfg.critic_output(om, g - h * e))
                           / (2 * h) for e in np.eye(g.shape[1])], axis=1)
            np.testing.assert_allclose(critic_gradient(om, g), fd, rtol=1e-6, atol=1e-9)
            assert got["grad_f_generated"] == pytest.approx(zw @ np.linalg.norm(fd, axis=1),
                                                            rel=1e-6)
        if p.loss == "minimax":
            assert got["generator_weight"] == pytest.approx(
                run.series["generator_weight"][k], rel=1e-12)
            if p.instance_noise == 0:
                err = 0.5 * (xw @ expit(fx) + zw @ expit(-fg))
                assert got["discriminator_error"] == pytest.approx(err, rel=1e-12)
                assert got["discriminator_error_clean"] == got["discriminator_error"]
            else:
                # the clean error is the noiseless formula; the noisy one differs
                g0 = mfg.generator_output(theta, z)
                err0 = 0.5 * (xw @ expit(mfg.critic_output(om, x))
                              + zw @ expit(-mfg.critic_output(om, g0)))
                assert got["discriminator_error_clean"] == pytest.approx(err0, rel=1e-12)
                assert got["discriminator_error"] != pytest.approx(err0, rel=1e-6)
        else:
            assert got["discriminator_error"] is None and got["generator_weight"] == 1.0
        for loss in ("wasserstein", "minimax", "non_saturating"):
            assert got["generator_speed_by_objective"][loss] > 0


def test_the_noisy_speed_is_the_velocity_over_the_noisy_nodes(small):
    base, _, _ = small.config.build()
    p = case_problem(base, small.settings, "minimax_noise")
    theta, om = small.generators["initial"], small.runs["initial"]["minimax_noise"].omega[-1]
    z, zw, x, xw = p.quadrature()
    e, we = mfg.StandardNormal(2).quadrature(9)  # noise_nodes = 3 per dimension
    sig = p.instance_noise
    # the noisy game written as a double sum over (latent node, noise node)
    zz = np.array([zi for zi in z for _ in we])
    zzw = np.array([a * b for a in zw for b in we])
    zn = np.array([sig * ei for _ in z for ei in e])
    xx = np.array([xi + sig * ei for xi in x for ei in e])
    xxw = np.array([a * b for a in xw for b in we])
    vt, _ = mfg.velocity(theta, om, zz, zzw, xx, xxw, backend="numpy", loss="minimax", z_noise=zn)
    got = measure(p, theta, om, backend="numpy")
    speed = np.sqrt(np.mean(np.sum(vt ** 2, axis=(1, 2))))
    assert got["generator_speed"] == pytest.approx(speed, rel=1e-12)


def test_json_has_the_api_keys(small, tmp_path):
    from meanfield_gan.studies.vanishing import write_vanishing

    paths = write_vanishing(small, tmp_path / "v")
    doc = json.loads(paths["json"].read_text())
    assert set(doc["cases"]) >= set(CASES)
    assert set(doc["cases_trained"]) == set(CASES)
    for case in CASES:
        c = doc["cases"][case]
        T = len(c["critic_steps"])
        assert T == 7 and len(c["generator_speed"]) == T
        for key in ("loss", "clip", "gradient_penalty", "instance_noise"):
            assert key in c
        if case.startswith("wasserstein"):
            assert c["discriminator_error"] is None
        else:
            assert len(c["discriminator_error"]) == T
    assert doc["cases"]["wasserstein_clip"]["clip"] == 1.0
    assert doc["cases"]["minimax"]["clip"] is None  # JSON has no inf: no box
    assert doc["cases"]["wasserstein_gp"]["gradient_penalty"] == 10.0
    assert doc["cases"]["minimax_noise"]["instance_noise"] == 0.3
    with h5py.File(paths["h5"], "r") as f:
        assert f["initial/minimax/omega"].shape == (7, 10, 4)
        assert f["trained/theta"].shape == (12, 2, 3)
        assert "discriminator_error" not in f["initial/wasserstein_gp"]
        np.testing.assert_array_equal(f["initial/minimax/generator_speed"][()],
                                      doc["cases"]["minimax"]["generator_speed"])
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_cli_end_to_end(tmp_path, capsys):
    cfg = tmp_path / "v.toml"
    from meanfield_gan.studies.vanishing import DEFAULT_CONFIG

    text = DEFAULT_CONFIG.read_text()
    text = text.replace("N = 256", "N = 8").replace("M = 256", "M = 8")
    text = text.replace("critic_steps = 4000", "critic_steps = 10")
    text = text.replace("records = 40", "records = 4")
    text = text.replace("pretrain_steps = 1000", "pretrain_steps = 0")
    text = text.replace("quadrature_size = 128", "quadrature_size = 8")
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["vanishing", str(cfg), "-o", str(out), "--backend", "numpy"]) == 0
    doc = json.loads((out / "vanishing.json").read_text())
    assert "cases_trained" not in doc and doc["config"]["run"]["backend"] == "numpy"
    assert doc["cases"]["minimax"]["critic_steps"][-1] == 10
    printed = capsys.readouterr().out
    assert "wrote" in printed and "minimax_noise" in printed


@pytest.mark.parametrize("override, name", [
    ({"problem": {"loss": "minimax"}}, "problem.loss"),
    ({"problem": {"clip": 2.0}}, "problem.clip"),
    ({"run": {"t_end": 3.0}}, "run.t_end"),
    ({"scheme": {"kind": "euler", "time_step": 0.1}}, "scheme.kind"),
    ({"scheme": {"freeze_generator": False}}, "scheme.freeze_generator"),
    ({"vanishing": {"critic_steps": 0}}, "vanishing.critic_steps"),
    ({"vanishing": {"instance_noise": -0.1}}, "vanishing.instance_noise"),
    ({"vanishing": {"cases": ["minimax", "hinge"]}}, "vanishing.cases"),
    ({"vanishing": {"clip": math.inf}}, "vanishing.clip"),
    ({"vanishing": {"steps": 3}}, "vanishing.steps"),
    ({"init": {"N": 0}}, "init.N"),
])
def test_bad_configuration_names_the_key(override, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        load_vanishing_config(overrides=override)


def test_cli_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["vanishing", str(tmp_path / "missing.toml"), "-o", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    taken = tmp_path / "file"
    taken.write_text("x")
    assert main(["vanishing", "-o", str(taken)]) == 2
    assert "output" in capsys.readouterr().err and taken.read_text() == "x"
    assert not out.exists()
    with pytest.raises(ValueError, match="settings"):
        run_vanishing(load_vanishing_config()[0])
    with pytest.raises(ValueError, match="cases"):
        VanishingSettings(cases=())


@pytest.mark.parametrize("text,message", [
    ('scheme = "adam"\n', "scheme: must be a table"),
    ("vanishing = 3\n", "vanishing: must be a table"),
    ("[problem]\nK = 1\n", "scheme: required"),
])
def test_bad_sections_stop_with_one_line(tmp_path, text, message):
    from meanfield_gan.studies.vanishing import load_vanishing_config

    path = tmp_path / "v.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_vanishing_config(path)


def test_settings_errors_name_the_key():
    from meanfield_gan.studies.vanishing import load_vanishing_config

    with pytest.raises(ValueError, match="^vanishing.critic_steps: must be a positive integer"):
        load_vanishing_config(None, overrides={"vanishing": {"critic_steps": 0}})
