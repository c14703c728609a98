"""The model: probability laws, problems and states, objectives, time-stepping schemes.

Plain data and the formulas' parameters; no engine code.  Everything above (engines, core,
driver, io, studies) imports from here, never the other way round.
"""
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
from .schemes import SCHEMES, SGD, Adam, ProjectedEuler, ProjectedHeun, RMSProp, Scheme, wgan_scales

__all__ = [
    "DiracMixture", "EmpiricalData", "GaussianMixture", "NormalInit", "StandardLogistic",
    "StandardNormal", "Uniform", "UniformInit", "Problem", "State", "initial_state",
    "SCHEMES", "SGD", "Adam", "ProjectedEuler", "ProjectedHeun", "RMSProp", "Scheme", "wgan_scales",
]
