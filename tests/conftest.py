"""Shared fixtures: every engine-level test runs on every available engine (as POT does).

``backend`` is parametrised over ``"numpy"``, ``"numba"`` and ``"cuda"``; ``engine`` over the
fast engines only (``"numba"``, ``"cuda"``), for tests that compare an engine against the
NumPy reference.  The CUDA engine is optional: its parameter is skipped unless
``meanfield_gan.engines._cuda`` imports and reports itself usable (a GPU, or the simulator
under ``NUMBA_ENABLE_CUDASIM=1``).  The check runs lazily, when a cuda-parametrised test
first asks for it, so importing this file never imports ``numba.cuda`` (a test module may
still set ``NUMBA_ENABLE_CUDASIM`` before that happens).
"""
from __future__ import annotations

import importlib
from functools import lru_cache

import numpy as np
import pytest

BACKENDS = ("numpy", "numba", "cuda")


@lru_cache(maxsize=1)
def _cuda_status() -> tuple[bool, str]:
    try:
        mod = importlib.import_module("meanfield_gan.engines._cuda")
    except ImportError as exc:  # module not written yet, or numba.cuda unavailable
        return False, f"meanfield_gan.engines._cuda not importable ({exc})"
    for name in ("is_available", "available"):
        check = getattr(mod, name, None)
        if callable(check):
            try:
                ok = bool(check())
            except Exception as exc:  # a broken driver must skip, not error, the CPU suite
                return False, f"_cuda_engine.{name}() failed: {exc}"
            return ok, f"_cuda_engine.{name}() returned {ok}"
    try:
        from numba import cuda

        ok = bool(cuda.is_available())
    except Exception as exc:
        return False, f"numba.cuda unusable ({exc})"
    return ok, "no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)"


def _require(name: str) -> str:
    if name == "cuda":
        ok, why = _cuda_status()
        if not ok:
            pytest.skip(f"cuda backend unavailable: {why}")
    return name


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Every engine: ``numpy`` (reference), ``numba``, ``cuda`` (skipped when unusable)."""
    return _require(request.param)


@pytest.fixture(params=BACKENDS[1:])
def engine(request) -> str:
    """The fast engines compared against the NumPy reference."""
    return _require(request.param)


def random_config(seed: int, K: int, L: int, N: int, M: int, Bz: int, Bx: int,
                  clip: float = 1.0, boundary: bool = True):
    """A random particle configuration with non-uniform quadrature weights.

    With ``boundary=True`` about a third of the critic coordinates sit exactly on
    ``+-clip`` (the cases where the tangent-cone projection and clipping act).
    """
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(N, K, L + 2))
    omega = rng.uniform(-clip, clip, size=(M, K + 2))
    if boundary:
        mask = rng.random(omega.shape) < 1.0 / 3.0
        omega[mask] = np.where(rng.random(omega.shape) < 0.5, -clip, clip)[mask]
    z = rng.normal(size=(Bz, L))
    zw = rng.uniform(0.5, 1.5, size=Bz)
    x = rng.normal(size=(Bx, K)) + 0.5
    xw = rng.uniform(0.5, 1.5, size=Bx)
    return theta, omega, z, zw / zw.sum(), x, xw / xw.sum()


@pytest.fixture
def make_config():
    """Factory fixture for :func:`random_config`."""
    return random_config
