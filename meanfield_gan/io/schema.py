"""The machinery of every TOML configuration: pydantic v2 sections derived from the model.

A section is a strict, frozen :class:`pydantic.BaseModel` (:class:`Section`). Three rules keep
each parameter declared once, in :mod:`meanfield_gan.model`:

* a section that mirrors a model dataclass (a scheme, the problem, a law) takes its keys,
  types and defaults from :func:`dataclasses.fields` (:func:`dataclass_fields`) and checks its
  values by constructing that object (:attr:`Section.model_class`), so the message after the
  key is the model's own;
* other numbers go through :mod:`meanfield_gan._validation` (:func:`checked`);
* every failure becomes one :class:`ConfigError` line that starts with the dotted key
  (:func:`config_error`), e.g. ``scheme.lr: must be finite and > 0, got -1``.

Types are checked first (pydantic's strict mode: ``4.0`` is not an integer, ``true`` not a
number), unknown keys before anything else, and messages quote values as TOML writes them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ConfigError", "Section", "fail", "show", "config_error", "validate", "apply", "checked",
    "one_of",
    "as_tuple", "typed", "floats", "dispatch", "dataclass_fields", "derived_section", "dumps_toml",
    "plain",
]


class ConfigError(ValueError):
    """An invalid configuration; the message is one line starting with the dotted key."""


# ------------------------------------------------------------------------------------------
# messages
# ------------------------------------------------------------------------------------------
def show(v: Any) -> str:
    """A value as it would read in TOML (so messages quote what the user wrote)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (list, tuple)):
        s = json.dumps(plain(v), default=str)
        return s if len(s) <= 60 else s[:57] + "..."
    return str(v)


def fail(message: str, key: str = "") -> PydanticCustomError:
    """A configuration error on ``key`` (relative to where it is raised: ``"lr"``, ``"[2]"``).

    Raise it from a validator; :func:`config_error` prefixes the section's dotted location.
    """
    return PydanticCustomError("config", "{message}", {"message": message, "key": key})


_WORDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
          "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
          "dict_type": "a table", "model_type": "a table"}


def _describe(err: Mapping[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "config":
        return ctx["message"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _WORDS:
        return f"must be {_WORDS[kind]}, got {show(value)}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}, got {show(value)}"
    if kind == "too_short":
        return f"must be a list of at least {ctx['min_length']} entries, got {ctx['actual_length']}"
    return str(err["msg"]).replace("\n", " ")


def _join(key: str, part: Any) -> str:
    if isinstance(part, int):
        return f"{key}[{part}]"
    part = str(part)
    if not part:
        return key
    if part.startswith("["):
        return key + part
    return f"{key}.{part}" if key else part


def config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first error of ``exc`` as one line ``dotted.key: message``."""
    err = exc.errors(include_url=False)[0]
    key = prefix
    for part in err["loc"]:
        key = _join(key, part)
    key = _join(key, (err.get("ctx") or {}).get("key", ""))
    return ConfigError(f"{key or 'configuration'}: {_describe(err)}")


def validate(section: type[BaseModel], raw: Any, prefix: str = "",
             context: Mapping[str, Any] | None = None) -> Any:
    """``section.model_validate(raw)``, failing with a :class:`ConfigError` under ``prefix``."""
    try:
        return section.model_validate(raw, context=dict(context or {}))
    except ValidationError as exc:
        raise config_error(exc, prefix) from None


def model_error(exc: ValueError, keys: Iterable[str]) -> PydanticCustomError:
    """A model object's ValueError as an error on the key it names.

    The model's messages start with the parameter (``"lr must be ..."``, also
    ``"GaussianMixture.scales must ..."`` or ``"GaussianMixture: weights must ..."``); a message
    that starts otherwise goes to the first key it mentions, else to the section.
    """
    keys = tuple(keys)
    msg = str(exc).replace("\n", " ")
    m = re.match(r"(?:\w+[.:]\s*)?(\w+):?\s+(.*)", msg)
    if m and m[1] in keys:
        return fail(m[2], m[1])
    named = [k for k in keys if re.search(rf"\b{re.escape(k)}\b", msg)]
    return fail(msg, named[0] if named else "")


# ------------------------------------------------------------------------------------------
# value types
# ------------------------------------------------------------------------------------------
def apply(check: Callable[[Any, str], Any], v: Any, key: str = "") -> Any:
    """Run a :mod:`meanfield_gan._validation` checker; its ValueError becomes :func:`fail`."""
    try:
        return check(v, "")
    except ValueError as exc:
        raise fail(str(exc).strip(), key) from None


def checked(check: Callable[[Any, str], Any]) -> WrapValidator:
    """A :mod:`meanfield_gan._validation` checker as a pydantic validator.

    The type is checked first (strictly); the checker then sees the value as written, so
    ``lr = -1`` reads ``got -1``, not ``got -1.0``.
    """
    def run(v: Any, handler: Callable[[Any], Any]) -> Any:
        out = handler(v)
        apply(check, v)
        return out

    return WrapValidator(run)


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]]) -> AfterValidator:
    """A string among ``choices`` (or among what ``choices()`` returns when validating)."""
    def run(v: str) -> str:
        names = tuple(choices() if callable(choices) else choices)
        if v not in names:
            raise fail(f"must be one of {', '.join(names)}; got {show(v)}")
        return v

    return AfterValidator(run)


def _to_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


#: TOML arrays are lists; strict pydantic takes tuples only, so lists are converted first.
as_tuple = BeforeValidator(_to_tuple)


def _deep_tuple(v: Any) -> Any:
    return tuple(_deep_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp, config=ConfigDict(strict=True))


def typed(tp: Any, value: Any) -> Any:
    """``value`` checked as type ``tp`` like a key is (strict; lists as tuples): inside a
    validator, an error names the entry (``[2]``, ``[0][1]``)."""
    return _adapter(tp).validate_python(_deep_tuple(value))


def floats(value: Any) -> Any:
    """A TOML number or list of numbers (as a tuple of floats), type-checked."""
    return typed(tuple[float, ...] if isinstance(value, (list, tuple)) else float, value)


def dispatch(configs: Mapping[str, type[BaseModel]], raw: Any,
             context: Mapping[str, Any] | None = None, default_kind: str | None = None) -> Any:
    """Validate a ``{kind = "...", ...}`` table with the section class of its ``kind``
    (``default_kind`` when the table has none; required otherwise)."""
    if isinstance(raw, BaseModel):
        return raw
    if not isinstance(raw, dict):
        raise fail(f"must be a table, got {show(raw)}")
    if "kind" not in raw and default_kind is None:
        raise fail("required key is missing", "kind")
    kind = raw.get("kind", default_kind)
    if not isinstance(kind, str) or kind not in configs:
        raise fail(f"must be one of {', '.join(configs)}; got {show(kind)}", "kind")
    return configs[kind].model_validate(raw, context=dict(context or {}))


# ------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------
def plain(v: Any) -> Any:
    """Tuples as lists, recursively (the values TOML and JSON write)."""
    if isinstance(v, (tuple, list)):
        return [plain(x) for x in v]
    return v


class Section(BaseModel):
    """A configuration table: strict types, frozen, unknown keys named, values checked.

    Subclasses declare their keys as fields. When :attr:`model_class` is set, the values are
    checked by constructing it from the section's fields that are also its dataclass fields
    (:meth:`model_object`); override :meth:`check` for checks across keys.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid",
                              arbitrary_types_allowed=True)

    #: The model dataclass whose constructor checks the values (``None``: no such object).
    model_class: ClassVar[type | None] = None
    #: The ``kind`` this section stands for (``None``: no ``kind`` key).
    kind_name: ClassVar[str | None] = None
    #: What an unknown name is called in messages.
    noun: ClassVar[str] = "key"

    @model_validator(mode="wrap")
    @classmethod
    def _validate_section(cls, raw: Any, handler: Callable[[Any], Any],
                          info: ValidationInfo) -> Any:
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, dict):
            raise fail(f"must be a table, got {show(raw)}")
        for k in raw:
            if k not in cls.model_fields:
                what = f' for kind "{cls.kind_name}"' if cls.kind_name else ""
                raise fail(f"unknown {cls.noun}{what} (allowed: {', '.join(cls.model_fields)})",
                           str(k))
        section = handler(raw)
        section.check(raw, info.context or {})
        return section

    def check(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Check the values together (``raw``: the table as written; ``context``: what the
        enclosing configuration passes down, e.g. ``base_dir``); raise :func:`fail`."""
        if self.model_class is not None:
            self.model_object(raw)

    def model_kwargs(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments of :attr:`model_class`: the written values where given."""
        names = {f.name for f in dataclasses.fields(self.model_class) if f.init}
        return {k: raw.get(k, getattr(self, k)) for k in type(self).model_fields if k in names}

    def model_object(self, raw: Mapping[str, Any] | None = None) -> Any:
        """The model object of this section; its ValueError names the key."""
        try:
            return self.model_class(**self.model_kwargs(raw or {}))
        except ValueError as exc:
            raise model_error(exc, type(self).model_fields) from None

    def to_dict(self) -> dict[str, Any]:
        """The table with every default filled in (plain Python values; ``None`` left out)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            v = getattr(self, name)
            if v is not None:
                out[name] = v.to_dict() if isinstance(v, Section) else plain(v)
        return out

    # Sections compare by what they write: data loaded from files and objects built from the
    # values are not part of a configuration's identity.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Section):
            return NotImplemented
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((type(self).__name__, json.dumps(self.to_dict(), sort_keys=True, default=str)))


_SCALARS = (int, float, bool, str)


def _scalar(tp: Any) -> bool:
    """Whether ``tp`` is a TOML scalar type, optionally ``| None``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) == 1 and args[0] in _SCALARS
    return tp in _SCALARS


def dataclass_fields(cls: type, *, only: Iterable[str] | None = None, skip: Iterable[str] = (),
                     scalars: bool = True) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of the init fields of dataclass ``cls``, for ``create_model``.

    ``only``/``skip`` select fields; with ``scalars``, fields that TOML cannot hold (laws,
    arrays) are left out. A field without a default is required (``...``).
    """
    hints = typing.get_type_hints(cls)
    only = None if only is None else tuple(only)
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip or (only is not None and f.name not in only):
            continue
        if scalars and not _scalar(hints[f.name]):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...
        out[f.name] = (hints[f.name], default)
    if only is not None:
        return {k: out[k] for k in only if k in out}
    return out


def derived_section(name: str, base: type[Section], model_class: type, *, module: str,
                    kind: str | None = None, fields: Mapping[str, tuple[Any, Any]] | None = None,
                    **select: Any) -> type[Section]:
    """A section class whose keys are ``kind`` (if given) and the dataclass fields of
    ``model_class`` (:func:`dataclass_fields` with ``select``), or ``fields`` when given.

    The class is registered as ``module.name`` so that its instances pickle (the studies send
    configurations to worker processes).
    """
    spec: dict[str, Any] = {}
    if kind is not None:
        spec["kind"] = (typing.Literal[kind], kind)
    spec.update(dataclass_fields(model_class, **select) if fields is None else fields)
    cls = create_model(name, __base__=base, __module__=module, **spec)
    cls.model_class = model_class
    cls.kind_name = kind
    setattr(sys.modules[module], name, cls)
    return cls


# ------------------------------------------------------------------------------------------
# a small TOML writer for the canonical form (tables of scalars, lists and inline tables)
# ------------------------------------------------------------------------------------------
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
