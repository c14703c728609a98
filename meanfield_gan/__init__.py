"""meanfield_gan: GAN training dynamics as interacting particle systems.

The generator and critic of a one-hidden-layer WGAN are empirical measures over their neurons'
parameters; training is a discretisation of the mean-field WGAN-PDE whose critic velocity is
projected at the boundary of the clipping box (see ``docs/`` and MODEL.md).

Quick start::

    import meanfield_gan as mfg
    problem = mfg.Problem(K=1, L=1, target=mfg.GaussianMixture([[-1.0], [1.0]], 0.3))
    state = mfg.initial_state(problem, N=500, M=500, seed=0)
    traj = mfg.simulate(problem, state, mfg.SGD(lr=1.0), t_end=1.0, record=10, seed=1)
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import fitting, metrics  # noqa: F401  (mfg.metrics.w2_squared, ...)
from .config import RunConfig, load_config
from .core import energy, project_velocity, velocity
from .laws import (
    DiracMixture,
    EmpiricalData,
    GaussianMixture,
    NormalInit,
    StandardLogistic,
    StandardNormal,
    Uniform,
    UniformInit,
)
from .problem import Problem, State, initial_state
from .schemes import SGD, ProjectedEuler, ProjectedHeun, RMSProp, wgan_scales
from .simulate import NonFiniteError, Trajectory, simulate


def load(path, **kwargs):
    """Read a run written by ``meanfield-gan run`` (see :func:`meanfield_gan.h5md.load`)."""
    from .h5md import load as _load

    return _load(path, **kwargs)


__all__ = [
    "__version__", "velocity", "project_velocity", "energy", "metrics", "fitting", "load",
    "load_config", "RunConfig",
    "Problem", "State", "initial_state", "simulate", "Trajectory", "NonFiniteError",
    "SGD", "RMSProp", "ProjectedEuler", "ProjectedHeun", "wgan_scales",
    "GaussianMixture", "DiracMixture", "EmpiricalData", "StandardNormal", "StandardLogistic",
    "Uniform", "NormalInit", "UniformInit",
]
