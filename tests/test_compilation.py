"""The Numba engine compiles only the variant a run uses, and caches it (engines/_specialise.py)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from meanfield_gan.engines import _numba as ne
from meanfield_gan.engines import _specialise as sp


def _specialiser():
    ne.compiled("run_steps")  # builds the specialiser
    return ne._SPECIALISER


def test_each_template_reads_the_constants_of_its_own_code_and_callees():
    s = _specialiser()
    assert s.uses("_part_critic_side") == {"KD"}
    assert s.uses("_pass2_ser") == s.uses("_pass2_par") == {"KD"}
    assert s.uses("_pass1_ser") == s.uses("_pass3_par") == {"LD"}
    # the critic as a one-output generator: its pass 1 takes LD from the critic's KD
    assert s.uses("_critic_at") == {"PAR", "KD"}
    assert s.uses("_field") == {"PAR", "KD", "LD", "PEN", "LOSS"}
    assert s.uses("run_steps") == {"RULE", "PAR", "KD", "LD", "PEN", "LOSS"}
    assert s.uses("_sums_8") == s.uses("_apply_row") == frozenset()


def test_the_cache_key_holds_the_variant_and_the_engine_sources():
    """Editing any engine file (kernels, scalar maths) invalidates every compiled variant:
    Numba's own key only follows the file that defines the function."""
    f = ne.compiled("_field", K=1, L=2, par=True)
    extra = f._cache._index_key((), f.targetctx.codegen())[-1]
    assert extra[0] == ("_field", (("KD", 1), ("LD", 2), ("LOSS", 0), ("PAR", True),
                                   ("PEN", False)))
    assert extra[1] == sp._source_hash([sys.modules[m].__file__ for m in (
        "meanfield_gan.engines._numba_kernels", "meanfield_gan.engines._numba",
        "meanfield_gan.engines._scalar")])


def test_variants_are_shared_by_the_runs_that_need_the_same_code():
    a = ne.compiled("_pass2_ser", K=1, L=1, rule=ne.SGD)
    assert ne.compiled("_pass2_ser", K=1, L=5, rule=ne.EULER, par=True) is a  # KD only
    b = ne.compiled("_pass2_ser", K=2)
    assert b is not a and b.py_func.__qualname__ != a.py_func.__qualname__
    assert ne.compiled("_pass2_ser", K=7) is ne.compiled("_pass2_ser", K=3)  # general class
    # a template without constants has one variant (cached under the sources' hash); inline
    # helpers (never cached) are used as they are
    kernels = sys.modules["meanfield_gan.engines._numba_kernels"]
    row = _specialiser().get("_apply_row", KD=1)
    assert row is _specialiser().get("_apply_row") and row is not kernels._apply_row
    assert _specialiser().get("_chunk") is kernels._chunk
    with pytest.raises(ValueError, match="needs the constants"):
        _specialiser().get("_field", PAR=False)


def test_the_compile_notice_is_said_once_and_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, expected in ((io.StringIO(), ""), (Tty(), "first run only")):
        monkeypatch.setattr(sp, "_ANNOUNCED", False)
        monkeypatch.setattr(sys, "stderr", stream)
        notice = sp._CompileNotice("sgd with the wasserstein objective")
        notice.on_start(None)
        notice.on_start(None)
        out = stream.getvalue()
        assert (expected in out) and out.count("\n") == (1 if expected else 0)


_COLD_RUN = r"""
import json, numpy as np
from numba.core import event
import meanfield_gan as mfg
p = mfg.Problem(K=1, L=1, target=mfg.GaussianMixture([[-1.0], [1.0]], scales=0.3))
st = mfg.initial_state(p, N=8, M=8, seed=0)
with event.install_recorder("numba:compile") as rec:
    r = mfg.simulate(p, st, mfg.SGD(lr=1.0, n_critic=1, batch_size=1), t_end=0.25, record=1,
                     seed=1, observables=False)
names = sorted({ev.data["dispatcher"].py_func.__qualname__ for _, ev in rec.buffer})
print(json.dumps({"compiled": names, "omega": r.omega[-1].tolist()}))
"""


@pytest.mark.slow
def test_a_serial_sgd_run_compiles_only_its_variant_and_the_cache_serves_the_next(tmp_path):
    """On an empty cache: no threaded pass, no K = 2 or general-K kernel, no Heun, penalty or
    non-linear objective is compiled; a second process compiles nothing and gets the same
    numbers."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run():
        out = subprocess.run([sys.executable, "-c", _COLD_RUN], env=env, capture_output=True,
                             text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run()
    names = first["compiled"]
    assert any(n.startswith("run_steps__") and "RULE2" in n for n in names)
    for banned in ("_pass1_par", "_pass2_par", "_pass3_par", "KD2", "KD0", "LD2", "LD0",
                   "PARTrue", "PENTrue", "LOSS1", "_penalty", "_critic_at", "_heun", "_pass_pen"):
        assert not [n for n in names if banned in n], banned
    second = run()
    assert second["compiled"] == []
    assert second["omega"] == first["omega"]


def test_borrowed_arrays_are_views_of_the_originals_without_reference_counts():
    import numpy as np
    from numba import njit
    from numba.core.errors import TypingError

    from meanfield_gan.engines._numba_kernels import _borrowed

    @njit
    def fill(a, pair):
        b, (c, d) = _borrowed((a, pair))
        row = b[1, 2:]  # a view of a borrowed array
        row[:] = 7.0
        c[0] = d[0] + 1.0
        return b.shape[0] + b.shape[1]

    a = np.zeros((3, 5))
    c, d = np.zeros(2), np.full(3, 4.0)
    assert fill(a, (c, d)) == 8
    assert np.all(a[1, 2:] == 7.0) and a.sum() == 21.0 and c[0] == 5.0

    @njit
    def scalar(x):
        return _borrowed(x)

    with pytest.raises(TypingError):
        scalar(1.0)
