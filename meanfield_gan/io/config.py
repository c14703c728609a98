"""TOML run configurations: parsed into validated, frozen dataclasses.

A configuration file describes one run of :func:`meanfield_gan.simulate` (see
``meanfield_gan/data/default.toml`` for a documented example)::

    [problem]            K, L, clip, quadrature_size
    [problem.target]     kind = "gaussian_mixture" | "dirac_mixture" | "data" (+ its fields)
    [problem.latent]     kind = "normal" | "logistic" | "uniform"
    [init]               N, M, seed, generator = {...}, critic = {...}
    [scheme]             kind = "sgd" | "rmsprop" | "euler" | "heun" (+ its fields)
    [run]                t_end, record, seed, backend, checkpoint_every, progress
    [reference]          optional: a deterministic scheme run alongside (pair distance d_2^2)

Everything is checked before anything runs: an unknown key, a wrong type or an impossible value
raises :class:`ConfigError` (a :class:`ValueError`) whose one-line message starts with the
dotted key, e.g. ``scheme.lr: must be > 0, got -1``.

:func:`load_config` returns a :class:`RunConfig`; :meth:`RunConfig.build` gives the
``(problem, state, scheme)`` triple, :meth:`RunConfig.to_toml` the canonical TOML text (every
default filled in) and :attr:`RunConfig.text` the text as the user wrote it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

import tomllib as _toml  # the package requires Python >= 3.11

__all__ = [
    "ConfigError",
    "TargetConfig",
    "LatentConfig",
    "ProblemConfig",
    "LawConfig",
    "InitConfig",
    "SchemeConfig",
    "RunSection",
    "ReferenceConfig",
    "RunConfig",
    "load_config",
    "loads_config",
    "default_config_path",
    "dumps_toml",
    "BACKENDS",
    "SCHEME_KINDS",
]

BACKENDS = ("numpy", "numba", "cuda")
SCHEME_KINDS = ("sgd", "rmsprop", "euler", "heun")
TARGET_KINDS = ("gaussian_mixture", "dirac_mixture", "data")
LATENT_KINDS = ("normal", "logistic", "uniform")
INIT_KINDS = ("normal", "uniform")
REFERENCE_KINDS = ("euler", "heun")
DISTANCES = ("exact", "coupling", "sliced")

_REQUIRED = object()


class ConfigError(ValueError):
    """An invalid run configuration; the message is one line starting with the dotted key."""


# ------------------------------------------------------------------------------------------
# value checkers: each takes the raw TOML value and the dotted key for its message
# ------------------------------------------------------------------------------------------
def _show(v: Any) -> str:
    """A value as it would read in TOML (so messages quote what the user wrote)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (list, tuple)):
        s = json.dumps(v, default=str)
        return s if len(s) <= 60 else s[:57] + "..."
    return str(v)


def _fail(key: str, msg: str) -> ConfigError:
    return ConfigError(f"{key}: {msg}")


def _int(v: Any, key: str, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(key, f"must be an integer, got {_show(v)}")
    if minimum is not None and v < minimum:
        raise _fail(key, f"must be >= {minimum}, got {v}")
    return int(v)


def _float(v: Any, key: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(key, f"must be a number, got {_show(v)}")
    f = float(v)
    if not math.isfinite(f):
        raise _fail(key, f"must be finite, got {_show(v)}")
    if positive and f <= 0:
        raise _fail(key, f"must be > 0, got {_show(v)}")
    if nonneg and f < 0:
        raise _fail(key, f"must be >= 0, got {_show(v)}")
    return f


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, f"must be true or false, got {_show(v)}")
    return v


def _choice(v: Any, key: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(v, str):
        raise _fail(key, f"must be a string, one of {', '.join(choices)}; got {_show(v)}")
    if v not in choices:
        raise _fail(key, f"must be one of {', '.join(choices)}; got {_show(v)}")
    return v


def _table(v: Any, key: str) -> dict:
    if not isinstance(v, dict):
        raise _fail(key, f"must be a table, got {_show(v)}")
    return v


def _check_keys(d: Mapping, key: str, allowed: Iterable[str], what: str = "") -> None:
    allowed = tuple(allowed)
    for k in d:
        if k not in allowed:
            full = f"{key}.{k}" if key else k
            noun = "section" if not key else "key"
            raise _fail(full, f"unknown {noun}{what} (allowed: {', '.join(allowed)})")


def _get(d: Mapping, k: str, key: str, default: Any = _REQUIRED) -> Any:
    if k in d:
        return d[k]
    if default is _REQUIRED:
        raise _fail(f"{key}.{k}" if key else k, "required key is missing")
    return default


def _matrix(v: Any, key: str, K: int, what: str) -> tuple[tuple[float, ...], ...]:
    """A list of points ``(n, K)`` (a flat list of numbers is accepted for ``K = 1``)."""
    if not isinstance(v, list) or not v:
        raise _fail(key, f"must be a non-empty list of {what}, got {_show(v)}")
    if all(not isinstance(r, list) for r in v):
        rows = [[x] for x in v]
        if K != 1:
            raise _fail(key, f"a flat list of numbers gives 1-D {what}, but problem.K = {K}; "
                             f"give a list of {K}-element lists")
    else:
        rows = v
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, list):
            raise _fail(f"{key}[{i}]", f"must be a list of {K} numbers, got {_show(r)}")
        if len(r) != K:
            raise _fail(key, f"each of the {what} must have K = {K} coordinates (problem.K), "
                             f"got {len(r)} at index {i}")
        out.append(tuple(_float(x, f"{key}[{i}]") for x in r))
    return tuple(out)


def _vector(v: Any, key: str, n: int | None = None, *, positive: bool = False,
            nonneg: bool = False) -> tuple[float, ...]:
    if not isinstance(v, list) or not v:
        raise _fail(key, f"must be a non-empty list of numbers, got {_show(v)}")
    if n is not None and len(v) != n:
        raise _fail(key, f"must have {n} entries, got {len(v)}")
    return tuple(_float(x, f"{key}[{i}]", positive=positive, nonneg=nonneg)
                 for i, x in enumerate(v))


def _weights(v: Any, key: str, n: int) -> tuple[float, ...] | None:
    if v is None:
        return None
    w = _vector(v, key, n, nonneg=True)
    if sum(w) <= 0:
        raise _fail(key, "must not be all zero")
    return w


# ------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetConfig:
    """``[problem.target]``: the data law ``P_*``.

    ``kind = "gaussian_mixture"`` takes ``means`` (C, K), ``scales`` (a number, C numbers or
    C x K numbers) and optional ``weights`` (C,); ``"dirac_mixture"`` takes ``points`` (C, K)
    and optional ``weights``; ``"data"`` takes either ``path`` (a ``.npy``, ``.csv`` or ``.txt``
    file of shape (n, K), relative to the configuration file) or inline ``data`` (n, K).
    """

    kind: str
    means: tuple | None = None
    scales: float | tuple | None = None
    weights: tuple | None = None
    points: tuple | None = None
    path: str | None = None
    data: tuple | None = None
    #: the loaded data set of ``kind = "data"`` (not part of the configuration's identity)
    array: np.ndarray | None = field(default=None, compare=False, repr=False)

    _KEYS = {
        "gaussian_mixture": ("kind", "means", "scales", "weights"),
        "dirac_mixture": ("kind", "points", "weights"),
        "data": ("kind", "path", "data"),
    }

    @classmethod
    def parse(cls, raw: Any, key: str, K: int, base_dir: Path) -> "TargetConfig":
        d = _table(raw, key)
        kind = _choice(_get(d, "kind", key), f"{key}.kind", TARGET_KINDS)
        _check_keys(d, key, cls._KEYS[kind], f" for kind {_show(kind)}")
        if kind == "gaussian_mixture":
            means = _matrix(_get(d, "means", key), f"{key}.means", K, "means")
            C = len(means)
            s = d.get("scales", 1.0)
            if isinstance(s, list) and s and all(isinstance(r, list) for r in s):
                scales: Any = _matrix(s, f"{key}.scales", K, "scale rows")
                if len(scales) != C:
                    raise _fail(f"{key}.scales", f"must have {C} rows (one per mean), got {len(scales)}")
                if any(x <= 0 for r in scales for x in r):
                    raise _fail(f"{key}.scales", "must be > 0")
            elif isinstance(s, list):
                scales = _vector(s, f"{key}.scales", C, positive=True)
            else:
                scales = _float(s, f"{key}.scales", positive=True)
            return cls(kind, means=means, scales=scales,
                       weights=_weights(d.get("weights"), f"{key}.weights", C))
        if kind == "dirac_mixture":
            points = _matrix(_get(d, "points", key), f"{key}.points", K, "points")
            return cls(kind, points=points,
                       weights=_weights(d.get("weights"), f"{key}.weights", len(points)))
        # kind == "data"
        if ("path" in d) == ("data" in d):
            raise _fail(key, 'kind = "data" needs exactly one of path or data')
        if "data" in d:
            data = _matrix(d["data"], f"{key}.data", K, "data points")
            return cls(kind, data=data, array=np.array(data, dtype=np.float64))
        path = d["path"]
        if not isinstance(path, str) or not path:
            raise _fail(f"{key}.path", f"must be a file name, got {_show(path)}")
        arr = _load_data(base_dir / Path(path).expanduser(), f"{key}.path", K)
        return cls(kind, path=path, array=arr)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind}
        for k in ("means", "scales", "weights", "points", "path", "data"):
            v = getattr(self, k)
            if v is not None:
                d[k] = _plain(v)
        return d

    def build(self):
        from ..model.laws import DiracMixture, EmpiricalData, GaussianMixture

        if self.kind == "gaussian_mixture":
            return GaussianMixture(np.array(self.means), np.array(self.scales),
                                   None if self.weights is None else np.array(self.weights))
        if self.kind == "dirac_mixture":
            return DiracMixture(np.array(self.points),
                                None if self.weights is None else np.array(self.weights))
        return EmpiricalData(self.array)

    def data_sha256(self) -> str | None:
        """SHA-256 of the data set (``kind = "data"``), so a resumed run can check its file."""
        if self.array is None:
            return None
        return hashlib.sha256(np.ascontiguousarray(self.array, dtype="<f8").tobytes()).hexdigest()


def _load_data(path: Path, key: str, K: int) -> np.ndarray:
    if not path.is_file():
        raise _fail(key, f"no such file: {path}")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix in (".csv", ".txt", ".dat"):
            arr = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
        else:
            raise _fail(key, f"unsupported file type {path.suffix!r} (use .npy, .csv or .txt)")
    except ConfigError:
        raise
    except Exception as exc:  # numpy's parse errors are of several types
        raise _fail(key, f"cannot read {path}: {exc}".replace("\n", " ")) from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise _fail(key, f"{path} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 1 and K == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != K:
        raise _fail(key, f"{path} must have shape (n, K) = (n, {K}) (problem.K), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise _fail(key, f"{path} contains non-finite values")
    return np.ascontiguousarray(arr, dtype=np.float64)


@dataclass(frozen=True)
class LatentConfig:
    """``[problem.latent]``: ``kind = "normal"`` (N(0, I_L)), ``"logistic"`` or ``"uniform"``
    (on [-1, 1]^L). ``latent = "normal"`` is shorthand for the table."""

    kind: str = "normal"

    @classmethod
    def parse(cls, raw: Any, key: str) -> "LatentConfig":
        if isinstance(raw, str):
            return cls(_choice(raw, key, LATENT_KINDS))
        d = _table(raw, key)
        _check_keys(d, key, ("kind",))
        return cls(_choice(_get(d, "kind", key), f"{key}.kind", LATENT_KINDS))

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    def build(self, L: int):
        from ..model.laws import StandardLogistic, StandardNormal, Uniform

        return {"normal": StandardNormal, "logistic": StandardLogistic, "uniform": Uniform}[self.kind](L)


@dataclass(frozen=True)
class ProblemConfig:
    """``[problem]``: dimensions ``K`` (data), ``L`` (latent), the box half-width ``clip``
    (``Q = [-clip, clip]^{K+2}``), the default ``quadrature_size``, the target and the latent law."""

    K: int
    L: int
    target: TargetConfig
    latent: LatentConfig = LatentConfig()
    clip: float = 1.0
    quadrature_size: int = 256

    @classmethod
    def parse(cls, raw: Any, key: str, base_dir: Path) -> "ProblemConfig":
        d = _table(raw, key)
        _check_keys(d, key, ("K", "L", "clip", "quadrature_size", "target", "latent"))
        K = _int(_get(d, "K", key), f"{key}.K", 1)
        L = _int(_get(d, "L", key), f"{key}.L", 1)
        return cls(
            K=K, L=L,
            target=TargetConfig.parse(_get(d, "target", key), f"{key}.target", K, base_dir),
            latent=LatentConfig.parse(d.get("latent", {"kind": "normal"}), f"{key}.latent"),
            clip=_float(d.get("clip", 1.0), f"{key}.clip", positive=True),
            quadrature_size=_int(d.get("quadrature_size", 256), f"{key}.quadrature_size", 1),
        )

    def to_dict(self) -> dict:
        return {"K": self.K, "L": self.L, "clip": self.clip, "quadrature_size": self.quadrature_size,
                "target": self.target.to_dict(), "latent": self.latent.to_dict()}


@dataclass(frozen=True)
class LawConfig:
    """An initial particle law: ``{kind = "normal", loc, scale}`` or ``{kind = "uniform", low, high}``
    (i.i.d. coordinates)."""

    kind: str
    loc: float = 0.0
    scale: float = 1.0
    low: float = -0.5
    high: float = 0.5

    @classmethod
    def parse(cls, raw: Any, key: str) -> "LawConfig":
        d = _table(raw, key)
        kind = _choice(_get(d, "kind", key), f"{key}.kind", INIT_KINDS)
        if kind == "normal":
            _check_keys(d, key, ("kind", "loc", "scale"), ' for kind "normal"')
            return cls(kind, loc=_float(d.get("loc", 0.0), f"{key}.loc"),
                       scale=_float(d.get("scale", 1.0), f"{key}.scale", positive=True))
        _check_keys(d, key, ("kind", "low", "high"), ' for kind "uniform"')
        low = _float(d.get("low", -0.5), f"{key}.low")
        high = _float(d.get("high", 0.5), f"{key}.high")
        if not low < high:
            raise _fail(f"{key}.high", f"must be > low = {low}, got {high}")
        return cls(kind, low=low, high=high)

    def to_dict(self) -> dict:
        if self.kind == "normal":
            return {"kind": "normal", "loc": self.loc, "scale": self.scale}
        return {"kind": "uniform", "low": self.low, "high": self.high}

    def build(self):
        from ..model.laws import NormalInit, UniformInit

        if self.kind == "normal":
            return NormalInit(self.loc, self.scale)
        return UniformInit(self.low, self.high)


@dataclass(frozen=True)
class InitConfig:
    """``[init]``: ``N`` generator and ``M`` critic particles drawn i.i.d. with ``seed`` from
    ``generator`` (default ``N(0, 1)``) and ``critic`` (default uniform on
    ``[-clip/2, clip/2]``) laws."""

    N: int
    M: int
    seed: int = 0
    generator: LawConfig = LawConfig("normal")
    critic: LawConfig | None = None

    @classmethod
    def parse(cls, raw: Any, key: str, clip: float) -> "InitConfig":
        d = _table(raw, key)
        _check_keys(d, key, ("N", "M", "seed", "generator", "critic"))
        critic = (LawConfig.parse(d["critic"], f"{key}.critic") if "critic" in d
                  else LawConfig("uniform", low=-0.5 * clip, high=0.5 * clip))
        return cls(
            N=_int(_get(d, "N", key), f"{key}.N", 1),
            M=_int(_get(d, "M", key), f"{key}.M", 1),
            seed=_int(d.get("seed", 0), f"{key}.seed", 0),
            generator=LawConfig.parse(d.get("generator", {"kind": "normal"}), f"{key}.generator"),
            critic=critic,
        )

    def to_dict(self) -> dict:
        return {"N": self.N, "M": self.M, "seed": self.seed,
                "generator": self.generator.to_dict(), "critic": self.critic.to_dict()}


@dataclass(frozen=True)
class SchemeConfig:
    """``[scheme]``: how a step is taken (MODEL.md section 3).

    ``kind = "sgd"``: ``lr`` (> 0), ``n_critic``, ``batch_size``, ``alternating``;
    ``"rmsprop"``: ``lr``, ``n_critic``, ``batch_size``, ``rho`` (in [0, 1)), ``eps``;
    ``"euler"`` / ``"heun"`` (projected, exact expectations): ``time_step`` (required),
    ``critic_scale`` (gamma_c), ``n_latent``, ``n_target`` (quadrature sizes).
    """

    kind: str
    lr: float = 1.0
    n_critic: int = 1
    batch_size: int = 1
    alternating: bool = False
    rho: float = 0.9
    eps: float = 1e-8
    time_step: float | None = None
    critic_scale: float = 1.0
    n_latent: int | None = None
    n_target: int | None = None

    _KEYS = {
        "sgd": ("kind", "lr", "n_critic", "batch_size", "alternating"),
        "rmsprop": ("kind", "lr", "n_critic", "batch_size", "rho", "eps"),
        "euler": ("kind", "time_step", "critic_scale", "n_latent", "n_target"),
        "heun": ("kind", "time_step", "critic_scale", "n_latent", "n_target"),
    }

    @classmethod
    def parse(cls, raw: Any, key: str) -> "SchemeConfig":
        d = _table(raw, key)
        kind = _choice(_get(d, "kind", key), f"{key}.kind", SCHEME_KINDS)
        _check_keys(d, key, cls._KEYS[kind], f" for kind {_show(kind)}")
        if kind in ("sgd", "rmsprop"):
            kw: dict[str, Any] = dict(
                lr=_float(d.get("lr", 1.0), f"{key}.lr", positive=True),
                n_critic=_int(d.get("n_critic", 1), f"{key}.n_critic", 1),
                batch_size=_int(d.get("batch_size", 1), f"{key}.batch_size", 1),
            )
            if kind == "sgd":
                kw["alternating"] = _bool(d.get("alternating", False), f"{key}.alternating")
            else:
                rho = _float(d.get("rho", 0.9), f"{key}.rho")
                if not 0.0 <= rho < 1.0:
                    raise _fail(f"{key}.rho", f"must be in [0, 1), got {_show(d['rho'])}")
                kw["rho"] = rho
                kw["eps"] = _float(d.get("eps", 1e-8), f"{key}.eps", positive=True)
            return cls(kind, **kw)
        opt_int = lambda k: None if k not in d else _int(d[k], f"{key}.{k}", 1)  # noqa: E731
        return cls(kind,
                   time_step=_float(_get(d, "time_step", key), f"{key}.time_step", positive=True),
                   critic_scale=_float(d.get("critic_scale", 1.0), f"{key}.critic_scale", positive=True),
                   n_latent=opt_int("n_latent"), n_target=opt_int("n_target"))

    @property
    def stochastic(self) -> bool:
        return self.kind in ("sgd", "rmsprop")

    def to_dict(self) -> dict:
        return {k: _plain(getattr(self, k)) for k in self._KEYS[self.kind]
                if getattr(self, k) is not None}

    def build(self):
        from ..model.schemes import SGD, ProjectedEuler, ProjectedHeun, RMSProp

        if self.kind == "sgd":
            return SGD(self.lr, self.n_critic, self.batch_size, self.alternating)
        if self.kind == "rmsprop":
            return RMSProp(self.lr, self.n_critic, self.batch_size, rho=self.rho, eps=self.eps)
        cls = ProjectedEuler if self.kind == "euler" else ProjectedHeun
        return cls(self.time_step, self.critic_scale, self.n_latent, self.n_target)


@dataclass(frozen=True)
class RunSection:
    """``[run]``: final time ``t_end``; ``record`` (number of intervals between evenly spaced
    records, or a list of times in ``[0, t_end]``); ``seed`` of the SGD batches; ``backend``;
    ``checkpoint_every`` (steps); ``progress`` (``true``, ``false`` or ``"auto"``: a bar only
    on a terminal)."""

    t_end: float
    record: int | tuple[float, ...] = 10
    seed: int = 0
    backend: str = "numba"
    checkpoint_every: int = 1000
    progress: bool | str = "auto"

    @classmethod
    def parse(cls, raw: Any, key: str) -> "RunSection":
        d = _table(raw, key)
        _check_keys(d, key, ("t_end", "record", "seed", "backend", "checkpoint_every", "progress"))
        t_end = _float(_get(d, "t_end", key), f"{key}.t_end", positive=True)
        rec = d.get("record", 10)
        if isinstance(rec, list):
            times = _vector(rec, f"{key}.record", nonneg=True)
            bad = [t for t in times if t > t_end]
            if bad:
                raise _fail(f"{key}.record", f"record times must lie in [0, t_end = {t_end}], got {bad[0]}")
            record: int | tuple[float, ...] = times
        elif isinstance(rec, int) and not isinstance(rec, bool):
            record = _int(rec, f"{key}.record", 1)
        else:
            raise _fail(f"{key}.record", "must be an integer (number of intervals) or a list of "
                                         f"times, got {_show(rec)}")
        prog = d.get("progress", "auto")
        if not (isinstance(prog, bool) or prog == "auto"):
            raise _fail(f"{key}.progress", f'must be true, false or "auto", got {_show(prog)}')
        return cls(
            t_end=t_end, record=record,
            seed=_int(d.get("seed", 0), f"{key}.seed", 0),
            backend=_choice(d.get("backend", "numba"), f"{key}.backend", BACKENDS),
            checkpoint_every=_int(d.get("checkpoint_every", 1000), f"{key}.checkpoint_every", 1),
            progress=prog,
        )

    def to_dict(self) -> dict:
        return {"t_end": self.t_end, "record": _plain(self.record), "seed": self.seed,
                "backend": self.backend, "checkpoint_every": self.checkpoint_every,
                "progress": self.progress}


@dataclass(frozen=True)
class ReferenceConfig:
    """``[reference]`` (optional): a deterministic scheme run alongside the main one from the
    same initial particles, with time step ``dt / refine`` and the main scheme's ``gamma_c``.
    At every record the pair distance ``d2_squared`` (``distance = "exact"``: POT,
    ``"coupling"``: the natural-coupling bound, ``"sliced"``) and ``coupling_squared`` are
    written as observables; ``record_particles = true`` also stores the reference particles."""

    kind: str = "heun"
    refine: int = 1
    n_latent: int | None = None
    n_target: int | None = None
    distance: str = "exact"
    record_particles: bool = False

    @classmethod
    def parse(cls, raw: Any, key: str) -> "ReferenceConfig":
        d = _table(raw, key)
        _check_keys(d, key, ("kind", "refine", "n_latent", "n_target", "distance", "record_particles"))
        opt_int = lambda k: None if k not in d else _int(d[k], f"{key}.{k}", 1)  # noqa: E731
        return cls(
            kind=_choice(d.get("kind", "heun"), f"{key}.kind", REFERENCE_KINDS),
            refine=_int(d.get("refine", 1), f"{key}.refine", 1),
            n_latent=opt_int("n_latent"), n_target=opt_int("n_target"),
            distance=_choice(d.get("distance", "exact"), f"{key}.distance", DISTANCES),
            record_particles=_bool(d.get("record_particles", False), f"{key}.record_particles"),
        )

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "refine": self.refine, "distance": self.distance,
             "record_particles": self.record_particles}
        for k in ("n_latent", "n_target"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    def build(self, scheme, N: int, M: int):
        """The reference scheme matching ``scheme``'s ``dt(N) / refine`` and ``gamma_c(N, M)``."""
        from ..model.schemes import ProjectedEuler, ProjectedHeun

        cls = ProjectedEuler if self.kind == "euler" else ProjectedHeun
        return cls(scheme.dt(N) / self.refine, scheme.gamma_c(N, M), self.n_latent, self.n_target)


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration (see the module docstring and ``default.toml``).

    Attributes
    ----------
    problem, init, scheme, run : the sections
    reference : ReferenceConfig or None
    text : str
        The configuration as written (comments included); ``""`` when built from a dict.
    source : str
        Where it was read from (``""`` if not from a file).
    """

    problem: ProblemConfig
    init: InitConfig
    scheme: SchemeConfig
    run: RunSection
    reference: ReferenceConfig | None = None
    text: str = field(default="", compare=False, repr=False)
    source: str = field(default="", compare=False, repr=False)

    SECTIONS = ("problem", "init", "scheme", "run", "reference")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | os.PathLike = ".", *,
                  text: str = "", source: str = "") -> "RunConfig":
        """Validate a parsed TOML document (``base_dir`` resolves relative data paths)."""
        d = _table(dict(d), "configuration")
        _check_keys(d, "", cls.SECTIONS)
        problem = ProblemConfig.parse(_get(d, "problem", ""), "problem", Path(base_dir))
        cfg = cls(
            problem=problem,
            init=InitConfig.parse(_get(d, "init", ""), "init", problem.clip),
            scheme=SchemeConfig.parse(_get(d, "scheme", ""), "scheme"),
            run=RunSection.parse(_get(d, "run", ""), "run"),
            reference=ReferenceConfig.parse(d["reference"], "reference") if "reference" in d else None,
            text=text, source=source,
        )
        cfg._check_consistency()
        return cfg

    def _check_consistency(self) -> None:
        """Checks that involve several sections (the run must take at least one step, ...)."""
        scheme = self.scheme.build()
        dt = scheme.dt(self.init.N)
        n_steps = int(round(self.run.t_end / dt))
        if n_steps < 1:
            raise _fail("run.t_end", f"must be at least one step (dt = {dt:.6g}), got {self.run.t_end}")
        if n_steps > 2**53:
            raise _fail("run.t_end", f"needs {n_steps:.3g} steps of dt = {dt:.6g}: too many")

    # ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The full configuration, every default filled in (plain Python types)."""
        d = {"problem": self.problem.to_dict(), "init": self.init.to_dict(),
             "scheme": self.scheme.to_dict(), "run": self.run.to_dict()}
        if self.reference is not None:
            d["reference"] = self.reference.to_dict()
        return d

    def to_toml(self) -> str:
        """Canonical TOML text of :meth:`to_dict` (``loads_config(cfg.to_toml()) == cfg``)."""
        return dumps_toml(self.to_dict())

    def with_backend(self, backend: str) -> "RunConfig":
        """A copy with ``run.backend`` replaced (validated)."""
        b = _choice(backend, "backend", BACKENDS)
        return dataclasses.replace(self, run=dataclasses.replace(self.run, backend=b))

    def build(self):
        """Build ``(problem, state, scheme)``: the objects :func:`meanfield_gan.simulate` takes.

        The initial state is drawn with ``init.seed``; the batches of the run use ``run.seed``.
        """
        from ..model.problem import Problem, initial_state

        p = self.problem
        try:
            problem = Problem(K=p.K, L=p.L, target=p.target.build(), latent=p.latent.build(p.L),
                              clip=p.clip, generator_init=self.init.generator.build(),
                              critic_init=self.init.critic.build(),
                              quadrature_size=p.quadrature_size)
            state = initial_state(problem, self.init.N, self.init.M, seed=self.init.seed)
            scheme = self.scheme.build()
        except ValueError as exc:  # every value was checked above: this is a bug or a corner case
            raise ConfigError(f"configuration: {exc}") from exc
        return problem, state, scheme

    def build_reference(self, scheme):
        """The reference scheme of ``[reference]`` for the main ``scheme`` (or ``None``)."""
        if self.reference is None:
            return None
        return self.reference.build(scheme, self.init.N, self.init.M)


def loads_config(text: str, base_dir: str | os.PathLike = ".", source: str = "") -> RunConfig:
    """Parse and validate a configuration from TOML text.

    Raises
    ------
    ConfigError
        On invalid TOML or an invalid value (one line naming the key).
    """
    try:
        doc = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}invalid TOML: {exc}") from None
    return RunConfig.from_dict(doc, base_dir, text=text, source=source)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a TOML run configuration.

    Parameters
    ----------
    path : str or path-like
        The ``.toml`` file; relative ``problem.target.path`` entries are resolved against its
        folder.

    Returns
    -------
    RunConfig

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ConfigError
        On invalid TOML, an unknown key, a wrong type or an impossible value; the one-line
        message starts with the dotted key, e.g. ``scheme.lr: must be > 0, got -1``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config: no such file: {p}")
    text = p.read_text(encoding="utf-8")
    return loads_config(text, p.resolve().parent, source=str(p))


def default_config_path() -> Path:
    """Path of the documented example configuration shipped with the package."""
    return Path(__file__).resolve().parent.parent / "data" / "default.toml"


# ------------------------------------------------------------------------------------------
# a small TOML writer for the canonical form (tables of scalars, lists and inline tables)
# ------------------------------------------------------------------------------------------
def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # shortest round-trip repr; valid TOML (e.g. 1e-08, 0.5)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dumps_toml(doc: Mapping[str, Any]) -> str:
    """Write a nested dict as TOML: dict values become ``[tables]``, the rest ``key = value``."""
    lines: list[str] = []

    def table(name: str, d: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in d.items() if not isinstance(v, dict)]
        subs = [(k, v) for k, v in d.items() if isinstance(v, dict)]
        if name and (scalars or not subs):
            if lines:
                lines.append("")
            lines.append(f"[{name}]")
        for k, v in scalars:
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in subs:
            table(f"{name}.{k}" if name else k, v)

    table("", doc)
    return "\n".join(lines) + "\n"
