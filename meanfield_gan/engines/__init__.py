"""The three engines of one set of formulas (MODEL.md), and the choice between them.

* :mod:`.reference` - readable NumPy, the ground truth of every test;
* :mod:`._numba` (with :mod:`._numba_kernels`) - fused, threaded CPU kernels;
* :mod:`._cuda` - ``numba.cuda`` kernels, imported only when asked for;
* :mod:`._scalar` - the per-particle scalar maths both compiled engines share;
* :mod:`.base` - the step runner every engine extends.

An engine maps each scheme's step ``rule`` to its implementation (``RULES`` in each module).
Engines import the model and nothing above it (never the driver).
"""
from __future__ import annotations

from .base import Runner

__all__ = ["BACKENDS", "check_backend", "make_runner", "Runner"]

BACKENDS = ("numpy", "numba", "cuda")


def check_backend(backend: str) -> str:
    """Validate an engine name (``numpy``, ``numba`` or ``cuda``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


def make_runner(backend: str, problem, state, scheme, **options) -> Runner:
    """The step runner of ``backend`` for ``(problem, state, scheme)``.

    ``options`` go to the CUDA engine (``dtype``, ``threads_per_block``, ...); the CPU engines
    take none.  Engine modules are imported here, on first use, so that ``import meanfield_gan``
    loads neither Numba's compiled kernels nor ``numba.cuda``.
    """
    check_backend(backend)
    if backend != "cuda" and options:
        raise ValueError(f"engine options {sorted(options)} apply to backend='cuda' only")
    if backend == "numpy":
        from .reference import NumpyRunner

        return NumpyRunner(problem, state, scheme)
    if backend == "numba":
        from ._numba import NumbaRunner

        return NumbaRunner(problem, state, scheme)
    from ._cuda import make_runner as cuda_runner

    return cuda_runner(problem, state, scheme, **options)
