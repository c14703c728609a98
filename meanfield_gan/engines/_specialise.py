"""Compile-time constants of the Numba engine: a run compiles only the code it uses.

The Numba kernels are written once, as module-level functions that read a few module
constants (:data:`CONSTANTS`): the step rule ``RULE``, whether passes run threaded ``PAR``,
the dimension classes ``KD`` and ``LD`` of ``K`` and ``L`` (1, 2, or 0 for "above 2", which
selects the buffered general loops), ``PEN`` (the gradient penalty's code is present) and
``LOSS`` (the objective's code).
Those functions are templates.  :meth:`Specialiser.get` compiles a *variant* of one: the same
code object under a copy of its module's namespace in which the constants have the run's
values and every callee that reads a constant (directly or below it) is itself the matching
variant.  Numba folds a branch on a global constant before type inference
(``if PAR:``, ``if KD == 1:``), so a variant types, compiles and links only the branches its
values select: a serial SGD run of K = L = 1 never compiles a threaded pass, the K = 2 or
general-K kernels, Heun's stages or the gradient penalty.

Each variant has a name of its own (the template's, suffixed with its constants: Numba's
symbol and cache-file names derive from it) and its own on-disk cache entry, whose index key
also holds a hash of the engine's source files: editing any engine file invalidates every
compiled caller (Numba's own check only looks at the file that defines the function).
"""
from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

from numba import njit
from numba.core import event
from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher

#: The compile-time constants a template may read.
CONSTANTS = ("RULE", "PAR", "KD", "LD", "PEN", "LOSS")


def dim_class(d: int) -> int:
    """The value of ``KD``/``LD`` for a dimension ``d``: 1, 2 (unrolled kernels) or 0 (general)."""
    return d if d in (1, 2) else 0


def _source_hash(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


class _VariantCache(FunctionCache):
    """Numba's file cache, with the variant's constants in the index key (see module doc)."""

    def __init__(self, py_func, extra):
        self._extra = extra
        super().__init__(py_func)

    def _index_key(self, sig, codegen):
        return super()._index_key(sig, codegen) + (self._extra,)


class Specialiser:
    """Compiles variants of the Numba templates defined in ``modules``.

    Parameters
    ----------
    modules : sequence of modules
        The modules whose ``@njit`` functions are templates (each resolves its globals in its
        own module).
    remap : dict, optional
        ``{caller: {callee_constant: caller_constant}}``: the callees of ``caller`` get the
        value of ``caller_constant`` for ``callee_constant`` (the critic evaluated as a
        generator: pass 1 with ``LD`` set to the critic's ``KD``).
    choices : dict, optional
        ``{alias: (constant, {value: template})}``: in a variant, the global ``alias`` is the
        variant of the template the constant's value selects (the threaded or serial pass
        by ``PAR``), so a template calls ``_pass1(...)`` once instead of branching.
    sources : sequence of paths, optional
        Files whose contents go into every cache key (default: the modules' files); list
        the files of inlined helpers defined elsewhere.
    """

    def __init__(self, modules, remap: dict[str, dict[str, str]] | None = None,
                 choices: dict[str, tuple[str, dict]] | None = None, sources=None):
        self._templates: dict[str, CPUDispatcher] = {}
        for mod in modules:
            for name, obj in vars(mod).items():
                if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == mod.__name__:
                    self._templates[name] = obj
        self._remap = remap or {}
        self._choices = choices or {}
        self._uses: dict[str, frozenset] = {}
        self._variants: dict[tuple, CPUDispatcher] = {}
        self._hash = _source_hash(sources or [mod.__file__ for mod in modules])

    def _names(self, name: str) -> set:
        return set(self._templates[name].py_func.__code__.co_names)

    def uses(self, name: str) -> frozenset:
        """The constants that ``name`` or anything it calls reads (empty: not specialised)."""
        if name not in self._uses:
            self._uses[name] = frozenset()  # (no recursion among the kernels)
            names = self._names(name)
            got = set(names & set(CONSTANTS))
            remap = self._remap.get(name, {})
            callees = names & self._templates.keys()
            for alias in names & self._choices.keys():
                const, table = self._choices[alias]
                got.add(const)
                callees |= set(table.values())
            for callee in callees:
                got.update(remap.get(c, c) for c in self.uses(callee))
            self._uses[name] = frozenset(got)
        return self._uses[name]

    def get(self, name: str, **consts) -> CPUDispatcher:
        """The variant of template ``name`` for the constants ``consts`` (extra ones ignored).

        A template that reads no constant has one variant (a copy cached under the source
        hash); one that is not cached (``inline="always"`` helpers) is returned as it is.
        """
        template = self._templates[name]
        uses = self.uses(name)
        if not uses and not isinstance(template._cache, FunctionCache):
            return template
        missing = uses - consts.keys()
        if missing:
            raise ValueError(f"{name} needs the constants {sorted(missing)}")
        key = (name, tuple(sorted((c, consts[c]) for c in uses)))
        variant = self._variants.get(key)
        if variant is None:
            variant = self._variants[key] = self._build(name, template, consts, key)
        return variant

    def _build(self, name, template, consts, key):
        py = template.py_func
        names = self._names(name)
        ns = dict(py.__globals__)
        ns.update({c: consts[c] for c in names & set(CONSTANTS)})
        sub = dict(consts)
        for callee_c, caller_c in self._remap.get(name, {}).items():
            sub[callee_c] = consts[caller_c]
        for callee in names & self._templates.keys():
            ns[callee] = self.get(callee, **sub)
        for alias in names & self._choices.keys():
            const, table = self._choices[alias]
            ns[alias] = self.get(table[consts[const]], **sub)
        fn = types.FunctionType(py.__code__, ns, py.__name__, py.__defaults__, py.__closure__)
        # A name of its own: Numba's symbol names are the qualified name, the argument types and
        # a per-process counter, so two variants compiled in different processes could share
        # a symbol, and a process loading both from the cache would run one in place of the
        # other.  (It also gives each variant its own cache file.)
        fn.__qualname__ = py.__qualname__
        if key[1]:
            fn.__qualname__ += "__" + "_".join(f"{c}{v}" for c, v in key[1])
        fn.__module__ = py.__module__
        fn.__doc__ = py.__doc__
        opts = {k: v for k, v in template.targetoptions.items() if k != "nopython"}
        variant = njit(**opts)(fn)
        if isinstance(template._cache, FunctionCache):
            variant._cache = _VariantCache(fn, (key, self._hash))
        return variant


_ANNOUNCED = False


class _CompileNotice(event.Listener):
    """Says once per process, on a terminal, that kernels are being compiled.

    A variant not yet in Numba's on-disk cache takes 10-30 s of compilation on two cores on
    its first call, and a silent wait looks like a hang.  Only a real compilation (not a
    cache load) starts a ``numba:compile`` event.
    """

    def __init__(self, what: str):
        self.what = what

    def on_start(self, ev):
        global _ANNOUNCED
        if not _ANNOUNCED:
            _ANNOUNCED = True
            if sys.stderr.isatty():
                print(f"meanfield_gan: compiling the Numba kernels for {self.what} (first run "
                      f"only, cached afterwards)", file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


def call_announcing(fn, what: str, *args):
    """``fn(*args)`` for a compiled variant ``fn``, saying on a terminal that kernels for
    ``what`` are being compiled if a compilation happens (:class:`_CompileNotice`)."""
    if fn.signatures or _ANNOUNCED:  # compiled or loaded in this process already
        return fn(*args)
    with event.install_listener("numba:compile", _CompileNotice(what)):
        return fn(*args)
