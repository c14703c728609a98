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

from . import fitting, metrics  # noqa: F401  (mfg.metrics.w2_squared, ...)
from ._version import __version__
from .core import (
    critic_output,
    energy,
    generator_output,
    objectives,
    project_velocity,
    velocity,
)
from .driver import NonFiniteError, Trajectory, simulate
from .io.config import RunConfig, load_config
from .model.laws import (
    DiracMixture,
    EmpiricalData,
    GaussianMixture,
    NormalInit,
    StandardLogistic,
    StandardNormal,
    Uniform,
    UniformInit,
)
from .model.problem import Problem, State, initial_state
from .model.schemes import SGD, Adam, ProjectedEuler, ProjectedHeun, RMSProp, wgan_scales


def load(path, **kwargs):
    """Read a run written by ``meanfield-gan run`` (see :func:`meanfield_gan.io.h5md.load`)."""
    from .io.h5md import load as _load

    return _load(path, **kwargs)


__all__ = [
    "__version__", "velocity", "objectives", "project_velocity", "energy", "generator_output",
    "critic_output", "metrics", "fitting", "load",
    "load_config", "RunConfig",
    "Problem", "State", "initial_state", "simulate", "Trajectory", "NonFiniteError",
    "SGD", "RMSProp", "Adam", "ProjectedEuler", "ProjectedHeun", "wgan_scales",
    "GaussianMixture", "DiracMixture", "EmpiricalData", "StandardNormal", "StandardLogistic",
    "Uniform", "NormalInit", "UniformInit",
]
