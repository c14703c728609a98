"""Bad input raises ValueError naming the argument, on every public entry point.

Messages must start with the argument's name (``"theta must ..."``), so each check below
matches ``^name\\b``: ``z`` does not pass for ``z_weights``, nor ``x`` for ``complex``.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import meanfield_gan as mfg

K, L, N, M, B = 2, 1, 4, 3, 5


def _names(name: str) -> str:
    """Pattern of a message that starts with the argument's name."""
    return rf"^{re.escape(name)}\b"


def _good():
    rng = np.random.default_rng(0)
    return dict(theta=rng.normal(size=(N, K, L + 2)), omega=rng.uniform(-1, 1, (M, K + 2)),
                z=rng.normal(size=(B, L)), z_weights=np.full(B, 1 / B),
                x=rng.normal(size=(B + 1, K)), x_weights=np.full(B + 1, 1 / (B + 1)))


def _with(name, value):
    args = _good()
    args[name] = value
    return args


def _nan_in(name):
    a = _good()[name].copy()
    a.flat[a.size // 2] = np.nan
    return a


def _inf_in(name):
    a = _good()[name].copy()
    a.flat[0] = -np.inf
    return a


ARRAYS = ["theta", "omega", "z", "z_weights", "x", "x_weights"]
BAD_ARRAYS = (
    # non-finite values
    [(n, _nan_in(n), n) for n in ARRAYS] + [(n, _inf_in(n), n) for n in ARRAYS]
    # wrong dtypes
    + [(n, _good()[n].astype(np.complex128), n) for n in ARRAYS]
    + [("theta", np.full((N, K, L + 2), "a"), "theta"), ("x", [[None, None]] * 3, "x")]
    # wrong numbers of dimensions
    + [("theta", np.zeros((N, K * (L + 2))), "theta"), ("omega", np.zeros(K + 2), "omega"),
       ("z", np.zeros(B), "z"), ("z_weights", np.full((B, 1), 1 / B), "z_weights"),
       ("x", np.zeros((B, K, 1)), "x"), ("x_weights", np.float64(1.0), "x_weights")]
    # empty particle sets, K and L too small
    + [("theta", np.zeros((0, K, L + 2)), "theta"), ("omega", np.zeros((0, K + 2)), "omega"),
       ("theta", np.zeros((N, K, 2)), "theta"), ("theta", np.zeros((N, 0, L + 2)), "theta")]
    # K/L mismatch between the arrays
    + [("omega", np.zeros((M, K + 3)), "omega"), ("z", np.zeros((B, L + 1)), "z"),
       ("x", np.zeros((B, K + 1)), "x"), ("z", np.zeros((0, L)), "z")]
    # weights that do not match their nodes
    + [("z_weights", np.full(B + 1, 1 / (B + 1)), "z_weights"),
       ("x_weights", np.full(B, 1 / B), "x_weights")]
)


@pytest.mark.parametrize("name,value,match", BAD_ARRAYS,
                         ids=[f"{i}-{n}" for i, (n, _, _) in enumerate(BAD_ARRAYS)])
@pytest.mark.parametrize("func", ["velocity", "energy"])
def test_bad_arrays_name_the_argument(func, name, value, match):
    f = getattr(mfg, func)
    args = _with(name, value)
    with pytest.raises(ValueError, match=_names(match)):
        f(args["theta"], args["omega"], args["z"], args["z_weights"], args["x"],
          args["x_weights"], backend="numpy")


def test_good_arrays_pass_and_integers_are_accepted():
    args = _good()
    args["z"] = np.arange(B * L).reshape(B, L)  # integer nodes are real numbers too
    v_t, v_o = mfg.velocity(*args.values(), backend="numpy")
    assert v_t.dtype == v_o.dtype == np.float64


@pytest.mark.parametrize("func", ["velocity", "energy"])
def test_unknown_backend(func):
    with pytest.raises(ValueError, match=_names("backend")):
        getattr(mfg, func)(*_good().values(), backend="torch")


@pytest.mark.parametrize("clip", [0.0, -1.0, np.nan, -np.inf, "wide", True])
def test_bad_clip(clip):
    good = _good()
    with pytest.raises(ValueError, match=_names("clip")):
        mfg.project_velocity(good["omega"], good["omega"], clip)
    with pytest.raises(ValueError, match=_names("clip")):
        mfg.Problem(K, L, mfg.DiracMixture([[0.0] * K]), clip=clip)


@pytest.mark.parametrize("clip", [np.inf, None])
def test_no_box(clip):
    """``clip = inf`` (or None) is no box: nothing is projected, the problem says so."""
    good = _good()
    v = np.full_like(good["omega"], 3.0)
    om = np.full_like(good["omega"], 1e6)
    np.testing.assert_array_equal(mfg.project_velocity(om, v, clip), v)
    problem = mfg.Problem(K, L, mfg.DiracMixture([[0.0] * K]), clip=clip)
    assert problem.clip == np.inf and not problem.has_box


@pytest.mark.parametrize("omega,v,match", [
    (np.zeros((3, 4)), np.zeros((3, 5)), "v_omega"),
    (np.zeros((3, 4)), np.zeros((4, 4)), "v_omega"),
    (np.zeros(4), np.zeros(4), "omega"),
    (np.full((2, 3), np.nan), np.zeros((2, 3)), "omega"),
    (np.zeros((2, 3)), np.full((2, 3), np.inf), r"\bv_omega must be finite"),
])
def test_bad_projection_arrays(omega, v, match):
    with pytest.raises(ValueError, match=match if "\\" in match else _names(match)):
        mfg.project_velocity(omega, v, 1.0)


# ------------------------------------------------------------------------------------------
# Problems, states, schemes, simulate
# ------------------------------------------------------------------------------------------
def _problem(**kw):
    return mfg.Problem(K, L, mfg.GaussianMixture([[0.0] * K, [1.0] * K], 0.5), **kw)


@pytest.mark.parametrize("kw,match", [
    (dict(K=0), "K"), (dict(K=1.5), "K"), (dict(L=0), "L"), (dict(L=-2), "L"),
    (dict(latent=mfg.StandardNormal(L + 1)), "latent"),
    (dict(target=mfg.DiracMixture([[0.0] * (K + 1)])), "target"),
    (dict(quadrature_size=0), "quadrature_size"),
])
def test_bad_problem(kw, match):
    args = dict(K=K, L=L, target=mfg.GaussianMixture([[0.0] * K], 1.0))
    args.update(kw)
    with pytest.raises(ValueError, match=_names(match)):
        mfg.Problem(**args)


@pytest.mark.parametrize("n_gen,n_crit,match", [(0, 3, "N"), (3, 0, "M"), (2.5, 3, "N"),
                                                (3, -1, "M"), (True, 3, "N")])
def test_bad_particle_numbers(n_gen, n_crit, match):
    with pytest.raises(ValueError, match=_names(match)):
        mfg.initial_state(_problem(), n_gen, n_crit, seed=0)


@pytest.mark.parametrize("kw,match", [
    # K mismatch with the problem (theta and omega consistent with each other)
    (dict(theta=np.zeros((N, K + 1, L + 2)), omega=np.zeros((M, K + 3))), "theta"),
    (dict(theta=np.zeros((N, K, L + 3))), "theta"),       # L mismatch
    (dict(omega=np.zeros((M, K + 1))), "omega"),
])
def test_explicit_initial_particles_checked_against_problem(kw, match):
    with pytest.raises(ValueError, match=_names(match)):
        mfg.initial_state(_problem(), N, M, seed=0, **kw)


def test_explicit_particles_must_match_n_and_m():
    with pytest.raises(ValueError, match=r"N=5.*expected N=4"):
        mfg.initial_state(_problem(), N, M, seed=0, theta=np.zeros((N + 1, K, L + 2)))


def test_rmsprop_is_simultaneous_only():
    with pytest.raises(ValueError, match=r"alternating=False"):
        mfg.RMSProp(alternating=True)


@pytest.mark.parametrize("make,match", [
    (lambda: mfg.SGD(lr=0.0), "lr"), (lambda: mfg.SGD(lr=np.nan), "lr"),
    (lambda: mfg.SGD(lr="fast"), "lr"), (lambda: mfg.SGD(n_critic=0), "n_critic"),
    (lambda: mfg.SGD(n_critic=1.5), "n_critic"), (lambda: mfg.SGD(batch_size=0), "batch_size"),
    (lambda: mfg.RMSProp(rho=1.0), "rho"), (lambda: mfg.RMSProp(rho=-0.1), "rho"),
    (lambda: mfg.RMSProp(eps=0.0), "eps"),
    (lambda: mfg.ProjectedEuler(0.0), "time_step"), (lambda: mfg.ProjectedEuler(-1.0), "time_step"),
    (lambda: mfg.ProjectedEuler(0.1, critic_scale=0.0), "critic_scale"),
    (lambda: mfg.ProjectedHeun(0.1, n_latent=0), "n_latent"),
    (lambda: mfg.ProjectedHeun(0.1, n_target=2.5), "n_target"),
])
def test_bad_scheme_parameters(make, match):
    with pytest.raises(ValueError, match=_names(match)):
        make()


def _sim(**kw):
    problem = _problem()
    args = dict(problem=problem, state=mfg.initial_state(problem, N, M, seed=0),
                scheme=mfg.SGD(lr=1.0), t_end=1.0, backend="numpy")
    args.update(kw)
    return mfg.simulate(args.pop("problem"), args.pop("state"), args.pop("scheme"),
                        args.pop("t_end"), **args)


@pytest.mark.parametrize("kw,match", [
    (dict(backend="gpu"), "backend"),
    (dict(scheme="sgd"), "scheme"),
    (dict(t_end=-1.0), "t_end"),
    (dict(t_end=np.nan), "t_end"),
    (dict(t_end="later"), "t_end"),
    (dict(state=mfg.State(np.zeros((N, K + 1, L + 2)), np.zeros((M, K + 3)))), "theta"),
    (dict(state=mfg.State(np.zeros((N, K, L + 2)), np.zeros((M, K + 3)))), "omega"),
    (dict(state=mfg.State(np.full((N, K, L + 2), np.inf), np.zeros((M, K + 2)))), "theta"),
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(record=0), "record"),
    (dict(record=[0.0, 5.0]), "record"),
])
def test_bad_simulate_arguments(kw, match):
    with pytest.raises(ValueError, match=_names(match)):
        _sim(**kw)


def test_t_end_before_a_resumed_state():
    problem = _problem()
    scheme = mfg.SGD(lr=1.0)
    out = _sim(t_end=2.0)
    assert out.state.step == 2 * N
    with pytest.raises(ValueError, match=_names("t_end")):
        mfg.simulate(problem, out.state, scheme, 1.0, backend="numpy")
    # t_end equal to the state's time is a valid, empty run.
    same = mfg.simulate(problem, out.state, scheme, 2.0, backend="numpy")
    assert same.state.step == out.state.step


def test_integers_beyond_int64_are_refused():
    """Seeds and counts are stored as int64 (HDF5 attributes, NumPy): 2^63 and beyond stop
    with a one-line error instead of failing after the output file exists."""
    from meanfield_gan._validation import nonneg_int, positive_int

    assert nonneg_int(2**63 - 1, "seed") == 2**63 - 1
    for check in (positive_int, nonneg_int):
        with pytest.raises(ValueError, match=r"seed must be < 2\^63"):
            check(2**64, "seed")


def test_noise_quadrature_size_is_bounded():
    with pytest.raises(ValueError, match="noise_nodes"):
        mfg.Problem(8, 1, mfg.DiracMixture([[0.0] * 8]), instance_noise=0.1)
    assert mfg.Problem(8, 1, mfg.DiracMixture([[0.0] * 8])).noise_nodes == 5  # no noise: fine
