"""The public networks ``mfg.generator_output`` (g_mu) and ``mfg.critic_output`` (f_nu) of
MODEL.md section 1, on every CPU engine, against the formulas written out unit by unit."""
from __future__ import annotations

import math

import numpy as np
import pytest

import meanfield_gan as mfg


def _s(u: float) -> float:
    return 1.0 / (1.0 + math.exp(-u))


def _g_by_hand(theta, z):
    N, K, L2 = theta.shape
    out = np.zeros((len(z), K))
    for b in range(len(z)):
        for i in range(N):
            for k in range(K):
                a, bk, c = theta[i, k, 0], theta[i, k, 1:L2 - 1], theta[i, k, L2 - 1]
                out[b, k] += a * _s(float(bk @ z[b]) + c) / N
    return out


def _f_by_hand(omega, x):
    M, K2 = omega.shape
    out = np.zeros(len(x))
    for b in range(len(x)):
        for j in range(M):
            out[b] += omega[j, 0] * _s(float(omega[j, 1:K2 - 1] @ x[b]) + omega[j, K2 - 1]) / M
    return out


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("K,L", [(1, 1), (2, 1), (1, 3), (3, 2), (2, 2)])
@pytest.mark.parametrize("N,B", [(1, 1), (7, 5), (37, 19)])
def test_outputs_match_model_section_1(backend, K, L, N, B):
    rng = np.random.default_rng(K * 100 + L * 10 + N)
    theta = rng.normal(size=(N, K, L + 2))
    omega = rng.normal(size=(N + 3, K + 2))
    z = rng.normal(size=(B, L))
    x = rng.normal(size=(B + 2, K))
    g = mfg.generator_output(theta, z, backend=backend)
    f = mfg.critic_output(omega, x, backend=backend)
    assert g.shape == (B, K) and f.shape == (B + 2,)
    np.testing.assert_allclose(g, _g_by_hand(theta, z), rtol=0, atol=1e-13)
    np.testing.assert_allclose(f, _f_by_hand(omega, x), rtol=0, atol=1e-13)


def test_outputs_reject_bad_input():
    theta = np.zeros((3, 2, 3))
    with pytest.raises(ValueError, match="z must have shape"):
        mfg.generator_output(theta, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="x must have shape"):
        mfg.critic_output(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="theta"):
        mfg.generator_output(np.full((3, 2, 3), np.nan), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="backend"):
        mfg.critic_output(np.zeros((3, 4)), np.zeros((4, 2)), backend="torch")
