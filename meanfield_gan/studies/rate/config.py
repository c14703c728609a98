"""The rate study's configuration (``meanfield-gan rate [--quick] [CONFIG.toml]``).

``[problem]`` and ``[init]`` are the sections of a run configuration
(:mod:`meanfield_gan.io.config`: every key of :class:`~meanfield_gan.model.problem.Problem`,
``loss`` included, and the initial laws); ``[rate]``, ``[euler_order]`` and ``[iid]`` are the
study's own, on the same pydantic machinery (:mod:`meanfield_gan.io.schema`). The SGD
parameters of ``[rate]`` (``lr``, ``n_critic``, ``batch_size``) are the fields of
:class:`~meanfield_gan.model.schemes.SGD` and are checked by it.

A user file is layered over the packaged defaults (``data/rate_quick.toml`` or
``data/rate_full.toml``): tables merge key by key, except ``problem.target``,
``problem.latent``, ``init.generator`` and ``init.critic``, which a user table replaces whole.
"""
from __future__ import annotations

import copy
import os
import tomllib as _toml  # the package requires Python >= 3.11
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field, PrivateAttr, ValidationInfo, field_validator

from meanfield_gan.io.config import (
    BACKENDS,
    NonNegInt,
    ParticleLawsConfig,
    PositiveFloat,
    PositiveInt,
    ProblemConfig,
    WithProblem,
)
from meanfield_gan.io.schema import (
    ConfigError,
    Section,
    as_tuple,
    derived_section,
    dumps_toml,
    fail,
    one_of,
    typed,
    validate,
)
from meanfield_gan.model.schemes import SGD

__all__ = ["RateConfig", "RateSection", "EulerOrderSection", "EulerOrderCase", "IidSection",
           "load_rate_config", "loads_rate_config", "default_rate_config_path"]

#: Tables replaced as a whole (not merged key by key) when a user file overrides a default.
_REPLACED = {("problem", "target"), ("problem", "latent"), ("init", "generator"),
             ("init", "critic")}


def _increasing(v: tuple[int, ...]) -> tuple[int, ...]:
    if any(b <= a for a, b in zip(v, v[1:])):
        raise fail(f"must be strictly increasing, got {list(v)}")
    return v


def _grid(minimum: int) -> Any:
    """A grid of particle numbers: at least 3, each ``>= minimum``, strictly increasing."""
    return Annotated[tuple[Annotated[int, Field(ge=minimum)], ...], as_tuple, Field(min_length=3),
                     AfterValidator(_increasing)]


def _whole(x: float) -> bool:
    return abs(x - round(x)) <= 1e-9 * max(1.0, x)


class _RateKeys(Section):
    """The keys of ``[rate]`` other than the SGD scheme's."""

    N: _grid(2)
    M_ratio: PositiveFloat = 1.0
    seeds: Annotated[int, Field(ge=2)]
    sgd_runs: Any = 1
    seed: NonNegInt = 0
    t_end: PositiveFloat
    n_times: PositiveInt = 4
    exact_max_N: NonNegInt = 0
    n_boot: Annotated[int, Field(ge=100)] = 2000
    backend: Annotated[str, one_of(BACKENDS)] = "numba"

    @field_validator("sgd_runs", mode="before")
    @classmethod
    def _runs(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, list):
            return typed(PositiveInt, v)
        N = info.data.get("N")
        if N is not None and len(v) != len(N):
            raise fail(f"a list must give one number per N ({len(N)}), got {len(v)}")
        return typed(tuple[PositiveInt, ...], v)

    def check(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        super().check(raw, context)  # lr, n_critic, batch_size: by constructing the SGD scheme
        # Every N must record at the same times: whole numbers of steps of dt = lr/N.
        for N in self.N:
            steps = self.t_end * N / self.lr
            if not _whole(steps):
                raise fail(f"t_end * N / lr must be a whole number of steps; for N = {N} it is "
                           f"{steps:g}", "t_end")
            if round(steps) % self.n_times:
                raise fail(f"must divide the number of steps t_end * N / lr ({round(steps)} for "
                           f"N = {N})", "n_times")


#: ``[rate]``: the grid ``N`` (``M = max(1, round(M_ratio N))``), ``seeds`` initial draws per
#: ``N``, ``sgd_runs`` SGD runs per draw (or one number per ``N``), the base ``seed``, records at
#: ``t_end k / n_times``, exact W2 for ``N <= exact_max_N``, ``n_boot`` bootstrap resamples, the
#: ``backend``, and the SGD scheme's ``lr``, ``n_critic``, ``batch_size`` (its fields).
RateSection = derived_section("RateSection", _RateKeys, SGD, module=__name__,
                              only=("lr", "n_critic", "batch_size"))


class EulerOrderCase(Section):
    """One setting of the Euler-order check: horizon ``t_end`` and critic scale ``gamma_c``."""

    t_end: PositiveFloat
    gamma_c: PositiveFloat


class EulerOrderSection(Section):
    """``[euler_order]``: projected Euler with ``dt = dt_max / 2^k`` (``k < n_dt``) against
    projected Heun at ``min(dt) / ref_refine``, ``N = M`` particles, two cases."""

    N: PositiveInt = 64
    seed: NonNegInt = 0
    dt_max: PositiveFloat = 1.0 / 16
    n_dt: Annotated[int, Field(ge=2)] = 5
    ref_refine: PositiveInt = 8
    interior: EulerOrderCase = EulerOrderCase(t_end=1.0, gamma_c=1.0)
    boundary: EulerOrderCase = EulerOrderCase(t_end=2.0, gamma_c=5.0)

    @field_validator("interior", "boundary", mode="before")
    @classmethod
    def _case(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, dict):  # keys left out take the case's own defaults
            v = {**cls.model_fields[info.field_name].default.to_dict(), **v}
        return v

    def check(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        for case in ("interior", "boundary"):
            if not _whole(getattr(self, case).t_end / self.dt_max):
                raise fail(f"must be a whole multiple of euler_order.dt_max = {self.dt_max:g}",
                           f"{case}.t_end")


class IidSection(Section):
    """``[iid]``: Corollary 9, ``seeds`` i.i.d. draws of each ``N`` against ``N_ref``
    particles, projected Euler with ``dt`` and ``gamma_c`` up to ``t_end``."""

    N: _grid(1) = (16, 32, 64, 128)
    N_ref: Annotated[int, Field(ge=2)] = 4096
    seeds: Annotated[int, Field(ge=2)] = 4
    seed: NonNegInt = 0
    dt: PositiveFloat = 1.0 / 32
    t_end: PositiveFloat = 1.0
    gamma_c: PositiveFloat = 1.0

    def check(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        if self.N_ref < 4 * max(self.N):
            raise fail(f"must be at least 4 times the largest iid.N ({4 * max(self.N)}), got "
                       f"{self.N_ref}", "N_ref")
        if not _whole(self.t_end / self.dt):
            raise fail(f"must be a whole multiple of iid.dt = {self.dt:g}", "t_end")


class RateConfig(WithProblem):
    """A validated rate-study configuration (see ``meanfield_gan/data/rate_quick.toml``).

    Attributes
    ----------
    problem : ProblemConfig
        ``[problem]``: dimensions, box, objective, target, latent law and the quadrature size
        of the Euler reference (the section of ``meanfield-gan run`` configurations).
    init : ParticleLawsConfig
        ``[init]``: the laws ``mu_in`` (``generator``), ``nu_in`` (``critic``) of the i.i.d.
        initial particles.
    rate : RateSection
        ``[rate]``; its keys are also attributes of the configuration (``cfg.N``,
        ``cfg.seeds``, ``cfg.lr``, ...).
    euler_order, iid : EulerOrderSection, IidSection
        Settings of the two companion checks.
    source : str
        Where it was read from (not part of the configuration's identity).
    """

    problem: ProblemConfig
    init: ParticleLawsConfig = Field(default_factory=dict, validate_default=True)
    rate: RateSection
    euler_order: EulerOrderSection = EulerOrderSection()
    iid: IidSection = IidSection()

    _source: str = PrivateAttr(default="")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], base_dir: str | os.PathLike = ".",
                  source: str = "") -> RateConfig:
        """Validate a parsed TOML document (every section present, see :func:`load_rate_config`).

        Raises
        ------
        ConfigError
            One line naming the offending key (``rate.seeds: must be >= 2, got 1``).
        """
        cfg = validate(cls, dict(doc) if isinstance(doc, Mapping) else doc,
                       context={"base_dir": Path(base_dir)})
        cfg._source = source
        return cfg

    @property
    def source(self) -> str:
        return self._source

    # -- the [rate] keys and [init] laws as attributes ----------------------------------------
    generator = property(lambda self: self.init.generator, doc="The law mu_in.")
    critic = property(lambda self: self.init.critic, doc="The law nu_in.")
    N = property(lambda self: self.rate.N, doc="Grid of generator particle numbers.")
    M_ratio = property(lambda self: self.rate.M_ratio, doc="M / N.")
    seeds = property(lambda self: self.rate.seeds, doc="Initial draws per N.")
    sgd_runs = property(lambda self: self.rate.sgd_runs, doc="SGD runs per draw (or per N).")
    seed = property(lambda self: self.rate.seed, doc="Base seed of every draw.")
    t_end = property(lambda self: self.rate.t_end, doc="Final time.")
    n_times = property(lambda self: self.rate.n_times, doc="Records up to t_end.")
    lr = property(lambda self: self.rate.lr, doc="SGD learning rate: dt = lr / N.")
    n_critic = property(lambda self: self.rate.n_critic, doc="gamma_c = n_critic N / M.")
    batch_size = property(lambda self: self.rate.batch_size, doc="SGD batch size.")
    exact_max_N = property(lambda self: self.rate.exact_max_N, doc="Exact W2 up to this N.")
    n_boot = property(lambda self: self.rate.n_boot, doc="Bootstrap resamples of the fit.")
    backend = property(lambda self: self.rate.backend, doc="Engine of every run.")

    # -- derived quantities -------------------------------------------------------------------
    def runs(self, N: int) -> int:
        """SGD runs per initial draw for ``N`` particles."""
        if isinstance(self.sgd_runs, int):
            return self.sgd_runs
        return self.sgd_runs[self.N.index(N)]

    def M(self, N: int) -> int:
        """Critic particles for ``N`` generator particles."""
        return max(1, int(round(self.M_ratio * N)))

    @property
    def times(self) -> np.ndarray:
        """Nominal record times ``t_end k / n_times``, ``k = 1..n_times``."""
        return self.t_end * np.arange(1, self.n_times + 1) / self.n_times

    @property
    def exact_everywhere(self) -> bool:
        """Whether exact ``W_2`` is computed for every ``N`` (then it is the headline)."""
        return max(self.N) <= self.exact_max_N

    def to_toml(self) -> str:
        """Canonical TOML text of :meth:`to_dict` (reads back to an equal configuration)."""
        return dumps_toml(self.to_dict())

    def replace(self, **changes: Any) -> RateConfig:
        """A copy with ``[rate]`` keys changed, validated again (e.g. ``seeds=4``)."""
        doc = self.to_dict()
        doc["rate"].update({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()})
        return RateConfig.from_dict(doc, source=self.source)


def default_rate_config_path(quick: bool = False) -> Path:
    """The packaged defaults: ``data/rate_quick.toml`` (``quick``) or ``data/rate_full.toml``."""
    name = "rate_quick.toml" if quick else "rate_full.toml"
    return Path(str(resources.files("meanfield_gan").joinpath("data", name)))


def _merge(base: dict, over: Mapping, path: tuple[str, ...] = ()) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        here = path + (k,)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and here not in _REPLACED:
            out[k] = _merge(out[k], v, here)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_toml(text: str, source: str) -> dict:
    try:
        return _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}".replace("\n", " ")) from None


def loads_rate_config(text: str = "", quick: bool = False, base_dir: str | os.PathLike = ".",
                      source: str = "") -> RateConfig:
    """Parse a rate configuration from TOML text layered over the packaged defaults.

    Parameters
    ----------
    text : str
        TOML overriding the defaults (empty: the defaults themselves). Tables merge key by
        key, except ``problem.target``, ``problem.latent``, ``init.generator`` and
        ``init.critic``, which a user table replaces whole.
    quick : bool
        Layer over ``rate_quick.toml`` instead of ``rate_full.toml``.
    base_dir : path
        Folder against which a relative ``problem.target.path`` is resolved.
    source : str
        Name used in error messages.

    Raises
    ------
    ConfigError
        Invalid TOML, an unknown section or key, a wrong type or an impossible value.
    """
    dpath = default_rate_config_path(quick)
    base = _read_toml(dpath.read_text(encoding="utf-8"), str(dpath))
    user = _read_toml(text, source or "config") if text else {}
    # A user's unknown names survive the merge, so they are reported as written.
    return RateConfig.from_dict(_merge(base, user), base_dir, source=source)


def load_rate_config(path: str | os.PathLike | None = None, quick: bool = False) -> RateConfig:
    """Read a rate configuration: ``path`` (optional) layered over the packaged defaults.

    Parameters
    ----------
    path : path, optional
        A TOML file with any of the sections ``[problem]``, ``[init]``, ``[rate]``,
        ``[euler_order]``, ``[iid]``; keys left out take the defaults.
    quick : bool
        Defaults from ``rate_quick.toml`` (the few-minute study) instead of ``rate_full.toml``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ConfigError
        On any invalid entry (one line naming the key).
    """
    if path is None:
        return loads_rate_config("", quick=quick, source=str(default_rate_config_path(quick)))
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config: no such file: {p}")
    return loads_rate_config(p.read_text(encoding="utf-8"), quick=quick,
                             base_dir=p.resolve().parent, source=str(p))
