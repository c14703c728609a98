"""TOML run configurations, declared by the model objects and validated by pydantic.

A configuration file describes one run of :func:`meanfield_gan.simulate` (see
``meanfield_gan/data/default.toml`` for a documented example)::

    [problem]            K, L, clip, quadrature_size, loss, gradient_penalty, penalty_size,
                         instance_noise, noise_anneal, noise_nodes (the fields of Problem)
    [problem.target]     kind = "gaussian_mixture" | "dirac_mixture" | "data" (+ its fields)
    [problem.latent]     kind = "normal" | "logistic" | "uniform"
    [init]               N, M, seed, generator = {...}, critic = {...}
    [scheme]             kind = one of meanfield_gan.model.schemes.SCHEMES (+ its fields)
    [run]                t_end, record, seed, backend, checkpoint_every, progress
    [reference]          optional: a deterministic scheme run alongside (pair distance d_2^2)

Each parameter of the model is declared once, in :mod:`meanfield_gan.model`: the keys and
defaults of ``[scheme]`` are the dataclass fields of the scheme registered under its
``kind`` (a new scheme class appears here with no edit), those of ``[problem]`` the scalar
fields of :class:`~meanfield_gan.model.problem.Problem`, those of a law its own fields; the
values are checked by constructing those objects (:mod:`.schema` has the machinery).

Everything is checked before anything runs: an unknown key, a wrong type or an impossible value
raises :class:`ConfigError` (a :class:`ValueError`) whose one-line message starts with the
dotted key, e.g. ``scheme.lr: must be finite and > 0, got -1``.

:func:`load_config` returns a :class:`RunConfig`; :meth:`RunConfig.build` gives the
``(problem, state, scheme)`` triple, :meth:`RunConfig.to_toml` the canonical TOML text (every
default filled in, ``clip = inf`` for no box) and :attr:`RunConfig.text` the text as the user
wrote it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import tomllib as _toml  # the package requires Python >= 3.11
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import PrivateAttr, ValidationInfo, field_validator

from .._validation import nonneg_int, positive, positive_int
from ..engines import BACKENDS
from ..model.laws import (
    DiracMixture,
    EmpiricalData,
    GaussianMixture,
    NormalInit,
    StandardLogistic,
    StandardNormal,
    Uniform,
    UniformInit,
)
from ..model.problem import Problem, initial_state
from ..model.schemes import SCHEMES, ProjectedEuler, scheme_class
from .schema import (
    ConfigError,
    Section,
    apply,
    as_tuple,
    checked,
    dataclass_fields,
    derived_section,
    dispatch,
    dumps_toml,
    fail,
    floats,
    one_of,
    show,
    typed,
    validate,
)

__all__ = [
    "ConfigError",
    "TargetConfig",
    "LatentConfig",
    "ProblemConfig",
    "LawConfig",
    "ParticleLawsConfig",
    "InitConfig",
    "WithProblem",
    "SchemeConfig",
    "RunSection",
    "ReferenceConfig",
    "RunConfig",
    "load_config",
    "loads_config",
    "default_config_path",
    "dumps_toml",
    "scheme_configs",
    "reference_kinds",
    "law_config_of",
    "BACKENDS",
    "TARGET_LAWS",
    "LATENT_LAWS",
    "INIT_LAWS",
    "DISTANCES",
    "PositiveFloat",
    "PositiveInt",
    "NonNegInt",
    "merge_tables",
    "read_config_document",
]

#: Configuration ``kind`` of each law of :mod:`meanfield_gan.model.laws`.
TARGET_LAWS = {"gaussian_mixture": GaussianMixture, "dirac_mixture": DiracMixture,
               "data": EmpiricalData}
LATENT_LAWS = {"normal": StandardNormal, "logistic": StandardLogistic, "uniform": Uniform}
#: Problem's latent law when none is given (``latent=None``): N(0, I_L).
DEFAULT_LATENT = "normal"
INIT_LAWS = {"normal": NormalInit, "uniform": UniformInit}
#: ``[reference] distance``: exact W2 (POT), the natural-coupling bound, sliced W2.
DISTANCES = ("exact", "coupling", "sliced")

PositiveFloat = Annotated[float, checked(positive)]
PositiveInt = Annotated[int, checked(positive_int)]
NonNegInt = Annotated[int, checked(nonneg_int)]
#: Points (n, K) and weights of a law, as TOML writes them (lists of lists, lists).
Points = tuple[tuple[float, ...], ...]
Weights = Annotated[tuple[float, ...], as_tuple]


def _default(cls: type, name: str) -> Any:
    """The default of dataclass field ``cls.name`` (so a section does not restate it)."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].default


# ------------------------------------------------------------------------------------------
# [problem.target]: the data law P_*
# ------------------------------------------------------------------------------------------
def _points(v: Any, K: int | None, what: str) -> tuple[tuple[float, ...], ...]:
    """A list of points ``(n, K)``; a flat list of numbers is accepted for ``K = 1``."""
    if not isinstance(v, list) or not v:
        raise fail(f"must be a non-empty list of {what}, got {show(v)}")
    if all(not isinstance(r, list) for r in v):
        if K is not None and K != 1:
            raise fail(f"a flat list of numbers gives 1-D {what}, but problem.K = {K}; give a "
                       f"list of {K}-element lists")
        v = [[x] for x in v]
    for i, r in enumerate(v):
        if not isinstance(r, list):
            raise fail(f"must be a list of {K or 'K'} numbers, got {show(r)}", f"[{i}]")
        if K is not None and len(r) != K:
            raise fail(f"each of the {what} must have K = {K} coordinates (problem.K), got "
                       f"{len(r)} at index {i}")
    return typed(Points, v)


def _K(info: ValidationInfo) -> int | None:
    return (info.context or {}).get("K")


class TargetConfig(Section):
    """``[problem.target]``: the data law ``P_*``, one subclass per ``kind`` of
    :data:`TARGET_LAWS`; the keys are the law's fields.

    ``kind = "gaussian_mixture"`` takes ``means`` (C, K), ``scales`` (a number, C numbers or
    C x K numbers) and optional ``weights`` (C,); ``"dirac_mixture"`` takes ``points`` (C, K)
    and optional ``weights``; ``"data"`` takes either ``path`` (a ``.npy``, ``.csv`` or ``.txt``
    file of shape (n, K), relative to the configuration file) or inline ``data`` (n, K).
    """

    _array: Any = PrivateAttr(default=None)

    @property
    def array(self) -> np.ndarray | None:
        """The loaded data set of ``kind = "data"`` (not part of the configuration's identity)."""
        return self._array

    def build(self):
        """The law object (:class:`~meanfield_gan.model.laws.GaussianMixture`, ...)."""
        return self.model_object()

    def data_sha256(self) -> str | None:
        """SHA-256 of the data set (``kind = "data"``), so a resumed run can check its file."""
        if self._array is None:
            return None
        return hashlib.sha256(np.ascontiguousarray(self._array, dtype="<f8").tobytes()).hexdigest()


class GaussianMixtureConfig(TargetConfig):
    """``kind = "gaussian_mixture"``: :class:`~meanfield_gan.model.laws.GaussianMixture`."""

    model_class: ClassVar[type] = GaussianMixture
    kind_name: ClassVar[str] = "gaussian_mixture"

    kind: Literal["gaussian_mixture"] = "gaussian_mixture"
    means: Points
    scales: float | Points | tuple[float, ...] = _default(GaussianMixture, "scales")
    weights: Weights | None = _default(GaussianMixture, "weights")

    @field_validator("means", mode="before")
    @classmethod
    def _means(cls, v: Any, info: ValidationInfo) -> Any:
        return _points(v, _K(info), "means")

    @field_validator("scales", mode="before")
    @classmethod
    def _scales(cls, v: Any, info: ValidationInfo) -> Any:
        C = len(info.data["means"]) if "means" in info.data else None
        if isinstance(v, list) and v and all(isinstance(r, list) for r in v):
            rows = _points(v, _K(info), "scale rows")
            if C is not None and len(rows) != C:
                raise fail(f"must have {C} rows (one per mean), got {len(rows)}")
            return rows
        if isinstance(v, list) and C is not None and len(v) != C:
            raise fail(f"must have {C} entries, got {len(v)}")
        return floats(v)


class DiracMixtureConfig(TargetConfig):
    """``kind = "dirac_mixture"``: :class:`~meanfield_gan.model.laws.DiracMixture`."""

    model_class: ClassVar[type] = DiracMixture
    kind_name: ClassVar[str] = "dirac_mixture"

    kind: Literal["dirac_mixture"] = "dirac_mixture"
    points: Points
    weights: Weights | None = _default(DiracMixture, "weights")

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, v: Any, info: ValidationInfo) -> Any:
        return _points(v, _K(info), "points")


class DataConfig(TargetConfig):
    """``kind = "data"``: :class:`~meanfield_gan.model.laws.EmpiricalData` from a file
    (``path``) or inline (``data``)."""

    model_class: ClassVar[type] = EmpiricalData
    kind_name: ClassVar[str] = "data"

    kind: Literal["data"] = "data"
    path: str | None = None
    data: Points | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, v: Any, info: ValidationInfo) -> Any:
        return _points(v, _K(info), "data points")

    def check(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        if (self.path is None) == (self.data is None):
            raise fail('kind = "data" needs exactly one of path or data')
        if self.data is not None:
            self._array = np.array(self.data, dtype=np.float64)
        else:
            if not self.path:
                raise fail(f"must be a file name, got {show(self.path)}", "path")
            base = Path(context.get("base_dir", "."))
            self._array = _load_data(base / Path(self.path).expanduser(), context.get("K"))
        super().check(raw, context)

    def model_kwargs(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return {"data": self._array}


def _load_data(path: Path, K: int | None) -> np.ndarray:
    """Read a data set ``(n, K)`` from ``.npy``, ``.csv`` or whitespace-separated text."""
    def bad(msg: str) -> Exception:
        return fail(msg, "path")

    if not path.is_file():
        raise bad(f"no such file: {path}")
    if path.suffix not in (".npy", ".csv", ".txt", ".dat"):
        raise bad(f"unsupported file type {path.suffix!r} (use .npy, .csv or .txt)")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            arr = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except Exception as exc:  # numpy's parse errors are of several types
        raise bad(f"cannot read {path}: {exc}".replace("\n", " ")) from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise bad(f"{path} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 1 and K == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 1 or (K is not None and arr.shape[1] != K):
        raise bad(f"{path} must have shape (n, K) = (n, {K}) (problem.K), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise bad(f"{path} contains non-finite values")
    return np.ascontiguousarray(arr, dtype=np.float64)


TARGET_CONFIGS: dict[str, type[TargetConfig]] = {
    "gaussian_mixture": GaussianMixtureConfig, "dirac_mixture": DiracMixtureConfig,
    "data": DataConfig}


# ------------------------------------------------------------------------------------------
# laws derived from their dataclasses: [problem.latent], [init] generator / critic
# ------------------------------------------------------------------------------------------
class LatentConfig(Section):
    """``[problem.latent]``: the law of ``Z``, ``kind`` one of :data:`LATENT_LAWS`
    (``"normal"``: N(0, I_L), ``"logistic"``, ``"uniform"`` on [-1, 1]^L). ``latent = "normal"``
    is shorthand for the table. The dimension is the problem's ``L``."""

    def check(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Nothing to check alone: the law is built with the problem's ``L``."""

    def build(self, L: int):
        """The law object on ``R^L``."""
        return self.model_class(dim=L, **{k: getattr(self, k)
                                          for k in type(self).model_fields if k != "kind"})


class LawConfig(Section):
    """An initial particle law, ``kind`` one of :data:`INIT_LAWS`: ``{kind = "normal", loc,
    scale}`` or ``{kind = "uniform", low, high}`` (i.i.d. coordinates)."""

    def build(self):
        """The law object (:class:`~meanfield_gan.model.laws.NormalInit`, ...)."""
        return self.model_object()


LATENT_CONFIGS: dict[str, type[LatentConfig]] = {
    kind: derived_section(f"LatentConfig_{kind}", LatentConfig, cls, module=__name__, kind=kind,
                          skip=("dim",))
    for kind, cls in LATENT_LAWS.items()}
LAW_CONFIGS: dict[str, type[LawConfig]] = {
    kind: derived_section(f"LawConfig_{kind}", LawConfig, cls, module=__name__, kind=kind)
    for kind, cls in INIT_LAWS.items()}


def law_config_of(law: Any) -> LawConfig:
    """The ``[init]`` table of an initial-law object (how defaults of the model are written)."""
    for kind, cls in INIT_LAWS.items():
        if type(law) is cls:
            return LAW_CONFIGS[kind](**{f.name: getattr(law, f.name)
                                        for f in dataclasses.fields(law)})
    raise ValueError(f"{type(law).__name__} has no configuration kind (known: "
                     f"{', '.join(INIT_LAWS)})")


# ------------------------------------------------------------------------------------------
# [problem]: the scalar fields of Problem, the target and the latent law
# ------------------------------------------------------------------------------------------
#: Problem fields that are not ``[problem]`` keys: the initial laws live in ``[init]``.
INIT_FIELDS = {"generator_init": "generator", "critic_init": "critic"}


class _ProblemBase(Section):
    model_class: ClassVar[type] = Problem

    @field_validator("target", mode="before", check_fields=False)
    @classmethod
    def _target(cls, v: Any, info: ValidationInfo) -> Any:
        K = info.data.get("K")
        # An impossible K is the problem's to report (problem.K), not the target's.
        return dispatch(TARGET_CONFIGS, v, {**(info.context or {}),
                                            "K": K if isinstance(K, int) and K >= 1 else None})

    @field_validator("latent", mode="before", check_fields=False)
    @classmethod
    def _latent(cls, v: Any) -> Any:
        return dispatch(LATENT_CONFIGS, {"kind": v} if isinstance(v, str) else v,
                        default_kind=DEFAULT_LATENT)

    def model_kwargs(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        kw = {k: raw.get(k, getattr(self, k)) for k in type(self).model_fields
              if k not in ("target", "latent")}
        kw.update(target=self.target.build(), latent=self.latent.build(self.L))
        return kw

    def build(self, generator_init: Any = None, critic_init: Any = None) -> Problem:
        """The :class:`~meanfield_gan.model.problem.Problem` (initial laws: the model's
        defaults unless given)."""
        kw = self.model_kwargs({})
        for name, law in (("generator_init", generator_init), ("critic_init", critic_init)):
            if law is not None:
                kw[name] = law
        return Problem(**kw)


def _problem_fields() -> dict[str, tuple[Any, Any]]:
    """``[problem]`` keys in the order of Problem's fields: its scalars, target and latent."""
    scalars = dataclass_fields(Problem)
    tables = {"target": (TargetConfig, ...),
              "latent": (LatentConfig, LATENT_CONFIGS[DEFAULT_LATENT]())}
    return {f.name: scalars.get(f.name) or tables[f.name]
            for f in dataclasses.fields(Problem) if f.name in scalars or f.name in tables}


#: ``[problem]``: the fields of :class:`~meanfield_gan.model.problem.Problem` that TOML can hold
#: (``K``, ``L``, ``clip`` (``inf``: no box), ``quadrature_size``, ``loss``,
#: ``gradient_penalty``, ``penalty_size``, ``instance_noise``, ``noise_anneal``, ``noise_nodes``)
#: with its defaults, plus the ``target`` and ``latent`` tables.
ProblemConfig = derived_section("ProblemConfig", _ProblemBase, Problem, module=__name__,
                                fields=_problem_fields())


class _LawsMixin(Section):
    @field_validator("generator", "critic", mode="before", check_fields=False)
    @classmethod
    def _law(cls, v: Any) -> Any:
        return dispatch(LAW_CONFIGS, v)


class ParticleLawsConfig(_LawsMixin):
    """The initial laws ``mu_in`` (``generator``) and ``nu_in`` (``critic``); left out, the
    problem's defaults (``N(0, 1)`` and uniform on ``[-clip/2, clip/2]``)."""

    generator: LawConfig | None = None
    critic: LawConfig | None = None


class InitConfig(_LawsMixin):
    """``[init]``: ``N`` generator and ``M`` critic particles drawn i.i.d. with ``seed`` from
    the ``generator`` and ``critic`` laws (see :class:`ParticleLawsConfig`)."""

    N: PositiveInt
    M: PositiveInt
    seed: NonNegInt = 0
    generator: LawConfig | None = None
    critic: LawConfig | None = None


class WithProblem(Section):
    """A configuration with a ``[problem]`` and an ``[init]`` whose laws default to the
    problem's (the run configuration and the studies' configurations)."""

    noun: ClassVar[str] = "section"

    @field_validator("init", mode="before", check_fields=False)
    @classmethod
    def _init_laws(cls, v: Any, info: ValidationInfo) -> Any:
        problem = info.data.get("problem")
        if problem is None or not isinstance(v, dict):
            return v
        built = problem.build()
        filled = dict(v)
        filled.setdefault("generator", law_config_of(built.generator_init))
        filled.setdefault("critic", law_config_of(built.critic_init))
        return filled

    def problem_instance(self) -> Problem:
        """The :class:`~meanfield_gan.model.problem.Problem`, initial laws included."""
        return self.problem.build(self.init.generator.build(), self.init.critic.build())


# ------------------------------------------------------------------------------------------
# [scheme]: one section per registered scheme
# ------------------------------------------------------------------------------------------
class SchemeConfig(Section):
    """``[scheme]``: how a step is taken. One subclass per entry of
    :data:`meanfield_gan.model.schemes.SCHEMES`; its keys and defaults are the scheme
    dataclass's fields (``kind = "sgd"``: ``lr``, ``n_critic``, ``batch_size``,
    ``alternating``; ``"rmsprop"`` adds ``rho``, ``eps``; ``"adam"`` ``beta1``, ``beta2``,
    ``eps``; ``"euler"``/``"heun"``: ``time_step``, ``critic_scale``, ``n_latent``,
    ``n_target``)."""

    @property
    def stochastic(self) -> bool:
        """Whether the scheme draws batches."""
        return self.model_class.stochastic

    def build(self):
        """The scheme object."""
        return self.model_object()

    def to_dict(self) -> dict[str, Any]:
        # The scheme says which of its fields are configuration keys (RMSProp has no
        # ``alternating``).
        return self.build().to_dict()


_SCHEME_CONFIGS: dict[type, type[SchemeConfig]] = {}


def scheme_configs() -> dict[str, type[SchemeConfig]]:
    """The ``[scheme]`` section class of every registered kind (built on first use)."""
    out = {}
    for kind, cls in SCHEMES.items():
        if cls not in _SCHEME_CONFIGS:
            _SCHEME_CONFIGS[cls] = derived_section(f"SchemeConfig_{kind}", SchemeConfig, cls,
                                                   module=__name__, kind=kind)
        out[kind] = _SCHEME_CONFIGS[cls]
    return out


scheme_configs()  # the built-in kinds exist at import (worker processes unpickle them)


def reference_kinds() -> tuple[str, ...]:
    """Scheme kinds that can serve as ``[reference]``: the deterministic projected schemes."""
    return tuple(k for k, c in SCHEMES.items() if issubclass(c, ProjectedEuler))


# ------------------------------------------------------------------------------------------
# [run] and [reference]
# ------------------------------------------------------------------------------------------
class RunSection(Section):
    """``[run]``: final time ``t_end``; ``record`` (number of intervals between evenly spaced
    records, or a list of times in ``[0, t_end]``); ``seed`` of the SGD batches; ``backend``;
    ``checkpoint_every`` (steps); ``progress`` (``true``, ``false`` or ``"auto"``: a bar only
    on a terminal)."""

    t_end: PositiveFloat
    record: Any = 10
    seed: NonNegInt = 0
    backend: Annotated[str, one_of(BACKENDS)] = "numba"
    checkpoint_every: PositiveInt = 1000
    progress: Any = "auto"

    @field_validator("record", mode="before")
    @classmethod
    def _record(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, list):
            if not v:
                raise fail("must be a non-empty list of times, got []")
            times = floats(v)
            t_end = info.data.get("t_end", float("inf"))
            for t in times:
                if not 0.0 <= t <= t_end:
                    raise fail(f"record times must lie in [0, t_end = {t_end}], got {t}")
            return times
        if isinstance(v, int) and not isinstance(v, bool):
            return apply(positive_int, v)
        raise fail(f"must be an integer (number of intervals) or a list of times, got {show(v)}")

    @field_validator("progress", mode="before")
    @classmethod
    def _progress(cls, v: Any) -> Any:
        if not (isinstance(v, bool) or v == "auto"):
            raise fail(f'must be true, false or "auto", got {show(v)}')
        return v


class ReferenceConfig(Section):
    """``[reference]`` (optional): a deterministic scheme (``kind``, see
    :func:`reference_kinds`) run alongside the main one from the same initial particles, with
    time step ``dt / refine`` and the main scheme's ``gamma_c``. At every record the pair
    distance ``d2_squared`` (``distance = "exact"``: POT, ``"coupling"``: the natural-coupling
    bound, ``"sliced"``) and ``coupling_squared`` are written as observables;
    ``record_particles = true`` also stores the reference particles."""

    kind: Annotated[str, one_of(reference_kinds)] = "heun"
    refine: PositiveInt = 1
    n_latent: PositiveInt | None = None
    n_target: PositiveInt | None = None
    distance: Annotated[str, one_of(DISTANCES)] = "exact"
    record_particles: bool = False

    def build(self, scheme, N: int, M: int):
        """The reference scheme matching ``scheme``'s ``dt(N) / refine`` and ``gamma_c(N, M)``."""
        return scheme_class(self.kind)(time_step=scheme.dt(N) / self.refine,
                                       critic_scale=scheme.gamma_c(N, M),
                                       n_latent=self.n_latent, n_target=self.n_target)


# ------------------------------------------------------------------------------------------
# the configuration
# ------------------------------------------------------------------------------------------
class RunConfig(WithProblem):
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

    _text: str = PrivateAttr(default="")
    _source: str = PrivateAttr(default="")

    @field_validator("scheme", mode="before")
    @classmethod
    def _scheme(cls, v: Any) -> Any:
        return dispatch(scheme_configs(), v)

    def check(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Checks across sections: the run takes at least one step, and not absurdly many."""
        dt = self.scheme.build().dt(self.init.N)
        n_steps = int(round(self.run.t_end / dt))
        if n_steps < 1:
            raise fail(f"must be at least one step (dt = {dt:.6g}), got {self.run.t_end}",
                       "run.t_end")
        if n_steps > 2**53:
            raise fail(f"needs {n_steps:.3g} steps of dt = {dt:.6g}: too many", "run.t_end")

    @property
    def text(self) -> str:
        """The configuration as written (``""`` when built from a dict)."""
        return self._text

    @property
    def source(self) -> str:
        """Where it was read from (``""`` if not from a file)."""
        return self._source

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | os.PathLike = ".", *,
                  text: str = "", source: str = "") -> RunConfig:
        """Validate a parsed TOML document (``base_dir`` resolves relative data paths).

        Raises
        ------
        ConfigError
            One line naming the offending key.
        """
        cfg = validate(cls, dict(d) if isinstance(d, Mapping) else d,
                       context={"base_dir": Path(base_dir)})
        cfg._text, cfg._source = text, source
        return cfg

    def to_toml(self) -> str:
        """Canonical TOML text of :meth:`to_dict` (``loads_config(cfg.to_toml()) == cfg``)."""
        return dumps_toml(self.to_dict())

    def with_backend(self, backend: str) -> RunConfig:
        """A copy with ``run.backend`` replaced (validated)."""
        if backend not in BACKENDS:
            raise ConfigError(f"backend: must be one of {', '.join(BACKENDS)}; got {show(backend)}")
        return self.model_copy(update={"run": self.run.model_copy(update={"backend": backend})})

    def build(self):
        """Build ``(problem, state, scheme)``: the objects :func:`meanfield_gan.simulate` takes.

        The initial state is drawn with ``init.seed``; the batches of the run use ``run.seed``.
        """
        try:
            problem = self.problem_instance()
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
        raise ConfigError(f"{where}invalid TOML: {exc}".replace("\n", " ")) from None
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
        message starts with the dotted key, e.g. ``scheme.lr: must be finite and > 0, got -1``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config: no such file: {p}")
    text = p.read_text(encoding="utf-8")
    return loads_config(text, p.resolve().parent, source=str(p))


def merge_tables(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """Deep-merge ``overrides`` into a copy of the TOML document ``base``.

    Tables merge key by key, except that a table naming another ``kind`` (a different scheme,
    target or law) replaces the old one: the old kind's keys would not be valid for the new.
    """
    out = copy.deepcopy(dict(base))
    for k, v in overrides.items():
        old = out.get(k)
        if (isinstance(v, Mapping) and isinstance(old, dict)
                and v.get("kind", old.get("kind")) == old.get("kind")):
            out[k] = merge_tables(old, v)
        else:
            out[k] = copy.deepcopy(dict(v) if isinstance(v, Mapping) else v)
    return out


def read_config_document(path: str | os.PathLike | None, default: Path,
                         overrides: Mapping[str, Any] | None = None
                         ) -> tuple[Path, str, dict]:
    """Read a study's TOML configuration: ``(path, text, document)``.

    ``path=None`` reads ``default``; ``overrides`` (nested tables) are merged with
    :func:`merge_tables`.  A missing file, invalid TOML or non-mapping overrides raise a
    one-line :class:`ValueError` before anything else happens.
    """
    p = default if path is None else Path(path)
    if not p.is_file():
        raise ValueError(f"config: no such file: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        doc = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise ValueError(f"config: {p}: invalid TOML: {exc}".replace("\n", " ")) from None
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ValueError(f"overrides: must be a mapping of tables, got {overrides!r}")
        doc = merge_tables(doc, overrides)
    return p, text, doc


def default_config_path() -> Path:
    """Path of the documented example configuration shipped with the package."""
    return Path(__file__).resolve().parent.parent / "data" / "default.toml"
