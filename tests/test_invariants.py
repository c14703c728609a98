"""Trajectories do not drift: every scheme's final state equals the one stored by the code
before the architecture change (``tests/data/make_invariants.py``), on numpy and numba.

Bitwise on the machine that made them; 1e-12 here since other CPUs may round the last bit
differently.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
import make_invariants  # noqa: E402

STORED = np.load(Path(__file__).resolve().parent / "data" / "invariants.npz")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_invariant_trajectories(backend):
    got = make_invariants.run_all(backend)
    assert len(got) == 20
    for key, value in got.items():
        ref = STORED[f"{backend}/{key}"]
        np.testing.assert_allclose(value, ref, rtol=0, atol=1e-12, err_msg=key)
