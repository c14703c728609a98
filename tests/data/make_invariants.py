"""Generate the invariant trajectories (architecture issue): final states of a fixed set of
runs on the numpy and numba engines, written by the code before a refactor and compared by
``tests/test_invariants.py`` after it (to 1e-12; bitwise on the machine that made them).

Run from the repository root: ``python tests/data/make_invariants.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import meanfield_gan as mfg

HERE = Path(__file__).resolve().parent


def cases():
    """(name, problem, scheme, t_end, seed) of the invariant set."""
    out = []
    for K, L in ((1, 1), (2, 3)):
        target = mfg.GaussianMixture([[-1.0] * K, [1.0] * K], scales=0.4)
        problem = mfg.Problem(K=K, L=L, target=target, clip=1.0, quadrature_size=16)
        N, M = 24, 20
        sch = {
            "sgd": mfg.SGD(lr=2.0, n_critic=3, batch_size=4),
            "sgd_alt": mfg.SGD(lr=2.0, n_critic=3, batch_size=2, alternating=True),
            "rmsprop": mfg.RMSProp(lr=0.5, n_critic=2, batch_size=3),
            "euler": mfg.ProjectedEuler(0.05, critic_scale=3.0),
            "heun": mfg.ProjectedHeun(0.05, critic_scale=3.0),
        }
        for name, s in sch.items():
            t_end = 40 * s.dt(N)
            out.append((f"{name}_K{K}L{L}", problem, s, N, M, t_end))
    return out


def run_all(backend: str) -> dict[str, np.ndarray]:
    res = {}
    for name, problem, scheme, N, M, t_end in cases():
        state = mfg.initial_state(problem, N, M, seed=7)
        tr = mfg.simulate(problem, state, scheme, t_end, seed=11, backend=backend,
                          observables=False, record_particles=False)
        res[f"{name}/theta"] = tr.state.theta
        res[f"{name}/omega"] = tr.state.omega
    return res


if __name__ == "__main__":
    data = {}
    for backend in ("numpy", "numba"):
        for k, v in run_all(backend).items():
            data[f"{backend}/{k}"] = v
    np.savez_compressed(HERE / "invariants.npz", **data)
    print(f"wrote {len(data)} arrays to {HERE / 'invariants.npz'}")
