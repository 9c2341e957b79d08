"""Typed data: decode plain JSON/TOML values into dataclasses, encode them back, describe them.

The settings and the codersdk wire models are dataclasses; this module is the one place that
checks a value against a field's type. It replaces a validation library that cost the daemon
several MiB of resident memory for a dozen small shapes.

Rules:

* Pure: no I/O. :func:`decode` walks the type hints of a dataclass and returns an instance, or
  raises :class:`Invalid` with the path to the first bad value (``("scripts", 0, "timeout")``)
  and one line saying what was expected. The value itself is never echoed (it may be a secret).
* Supported types: ``str``, ``int``, ``float``, ``bool``, :class:`~pathlib.Path`,
  :class:`datetime.datetime` (RFC 3339, nanoseconds cut to microseconds), :class:`Secret`, ``Literal``,
  ``X | None``, ``list[X]``, ``dict[str, X]``, ``Any`` and nested dataclasses. Conversions are
  the lenient ones text sources need: a number from text, a whole float to ``int``.
* Field extras go in ``field(metadata=rules(...))`` (constraints ``min_length``/``ge``/``gt``, ``aliases`` accepted
  on input, ``before``/``after`` converters that raise ValueError). Unknown keys are ignored,
  unless the class sets ``FORBID_EXTRA = True`` (settings: a typo is an error, not a no-op).
* :func:`encode` gives JSON-ready data (every field, ``None`` as null, datetimes as RFC 3339
  with ``Z``); :func:`json_schema` the JSON Schema the local API's OpenAPI document quotes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["REDACTED", "Invalid", "Secret", "decode", "encode", "json_schema", "parse_bool", "parse_time", "rules"]

T = TypeVar("T")
REDACTED = "[REDACTED]"  # what a secret prints as, everywhere (settings, logs, manifests)
Loc = tuple[str | int, ...]


class Invalid(ValueError):
    """A value does not fit its declared type; ``loc`` is the path to it."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc)) or 'value'}: {msg}")
        self.loc = loc
        self.msg = msg


class Secret:
    """A string that never prints: ``repr``/``str`` give ``[REDACTED]``; read it on purpose."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def rules(
    *,
    min_length: int | None = None,
    ge: float | None = None,
    gt: float | None = None,
    aliases: tuple[str, ...] = (),
    before: Callable[[Any], Any] | None = None,
    after: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """A field's constraints and converters, as ``field(metadata=rules(...))`` (see the module rules)."""
    return {"min_length": min_length, "ge": ge, "gt": gt, "aliases": aliases, "before": before, "after": after}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def _optional(tp: Any) -> tuple[bool, list[Any]]:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return len(args) < len(typing.get_args(tp)), args


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _choices(values: tuple[Any, ...]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 timestamp (``Z`` or an offset). Python >= 3.11 reads Go's nanoseconds and keeps
    microseconds; ValueError otherwise."""
    return dt.datetime.fromisoformat(text.strip())


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    """``true``/``yes``/``on``/``1`` or ``false``/``no``/``off``/``0`` (any case); ValueError
    otherwise, naming the text (callers that must not echo it catch and say less)."""
    v = text.strip().lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _scalar(tp: Any, v: Any, loc: Loc) -> Any:
    if tp is str:
        if isinstance(v, str):
            return v
        raise Invalid(loc, "expected a string")
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str):
            try:
                return parse_bool(v)
            except ValueError:
                pass
        raise Invalid(loc, "expected true or false")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("+-").isdecimal():
            return int(v)
        raise Invalid(loc, "expected a whole number")
    if tp is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            f = float(v)
        elif isinstance(v, str):
            try:
                f = float(v)
            except ValueError:
                raise Invalid(loc, "expected a number") from None
        else:
            raise Invalid(loc, "expected a number")
        if not math.isfinite(f):
            raise Invalid(loc, "expected a finite number")
        return f
    if tp is Path:
        if isinstance(v, Path):
            return v
        if isinstance(v, str) and v:
            return Path(v)
        raise Invalid(loc, "expected a path")
    if tp is dt.datetime:
        if isinstance(v, dt.datetime):
            return v
        if isinstance(v, str):
            try:
                return parse_time(v)
            except ValueError:
                pass
        raise Invalid(loc, "expected an RFC 3339 time")
    if tp is Secret:
        if isinstance(v, Secret):
            return v
        if isinstance(v, str):
            return Secret(v)
        raise Invalid(loc, "expected a string")
    raise TypeError(f"typed.decode: unsupported type {tp!r}")


def _decode(tp: Any, v: Any, loc: Loc) -> Any:
    if tp is Any:
        return v
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_class(tp, v, loc)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if isinstance(v, str) and v in allowed:
            return v
        raise Invalid(loc, f"expected {_choices(allowed)}")
    if _is_union(tp):
        nullable, args = _optional(tp)
        if v is None:
            if nullable:
                return None
            raise Invalid(loc, "must not be null")
        err: Invalid | None = None
        for a in args:
            try:
                return _decode(a, v, loc)
            except Invalid as e:
                err = err or e
        assert err is not None
        raise err
    if origin is list:
        if not isinstance(v, (list, tuple)):
            raise Invalid(loc, "expected a list")
        (item,) = typing.get_args(tp)
        return [_decode(item, x, (*loc, i)) for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, Mapping):
            raise Invalid(loc, "expected a table of key = value")
        _, value_tp = typing.get_args(tp)
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise Invalid(loc, "keys must be strings")
            out[k] = _decode(value_tp, x, (*loc, k))
        return out
    if v is None:
        raise Invalid(loc, "must not be null")
    return _scalar(tp, v, loc)


def _check(meta: Mapping[str, Any], v: Any, loc: Loc) -> None:
    n = meta.get("min_length")
    if n is not None and len(v) < n:
        raise Invalid(loc, f"should have at least {n} character{'s' if n != 1 else ''}"
                      if isinstance(v, str) else f"should have at least {n} item{'s' if n != 1 else ''}")
    ge = meta.get("ge")
    if ge is not None and v < ge:
        raise Invalid(loc, f"should be greater than or equal to {ge:g}")
    gt = meta.get("gt")
    if gt is not None and v <= gt:
        raise Invalid(loc, f"should be greater than {gt:g}")


def _decode_class(cls: type[T], data: Any, loc: Loc) -> T:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise Invalid(loc, "expected an object")
    hints = _hints(cls)  # type: ignore[arg-type]  # classes are hashable
    kwargs: dict[str, Any] = {}
    known: set[str] = set()
    for f in _fields(cls):
        names = (f.name, *f.metadata.get("aliases", ()))
        known.update(names)
        key = next((n for n in names if n in data), None)
        here = (*loc, f.name)
        if key is None:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Invalid(here, "required")
            continue
        v = data[key]
        try:
            if f.metadata.get("before"):
                v = f.metadata["before"](v)
            v = _decode(hints[f.name], v, here)
            if v is not None:
                _check(f.metadata, v, here)
            if f.metadata.get("after"):
                v = f.metadata["after"](v)
        except Invalid:
            raise
        except ValueError as e:
            raise Invalid(here, str(e)) from None
        kwargs[f.name] = v
    if getattr(cls, "FORBID_EXTRA", False):
        for k in data:
            if k not in known:
                raise Invalid((*loc, str(k)), "unknown key")
    return cls(**kwargs)


def decode(cls: type[T], data: Any) -> T:
    """``data`` (parsed JSON or TOML) as a ``cls`` instance; :class:`Invalid` otherwise."""
    return _decode_class(cls, data, ())


def encode(obj: Any) -> Any:
    """JSON-ready data: dataclasses → dicts of every field, datetimes → RFC 3339 (``Z`` for UTC)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dt.datetime):
        text = obj.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Secret):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [encode(x) for x in obj]
    if isinstance(obj, Mapping):
        return {str(k): encode(v) for k, v in obj.items()}
    return obj


_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"}, bool: {"type": "boolean"},
    Path: {"type": "string"}, Secret: {"type": "string"}, dt.datetime: {"type": "string", "format": "date-time"},
}


def _schema(tp: Any, defs: dict[str, Any], ref: str) -> dict[str, Any]:
    if tp is Any:
        return {}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        _define(tp, defs, ref)
        return {"$ref": ref.format(model=tp.__name__)}
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(tp)), "type": "string"}
    if _is_union(tp):
        nullable, args = _optional(tp)
        options = [_schema(a, defs, ref) for a in args] + ([{"type": "null"}] if nullable else [])
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is list:
        return {"type": "array", "items": _schema(typing.get_args(tp)[0], defs, ref)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(typing.get_args(tp)[1], defs, ref)}
    return dict(_SCALARS[tp])


def _define(cls: type, defs: dict[str, Any], ref: str) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}  # placeholder: breaks cycles
    hints = _hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in _fields(cls):
        s = _schema(hints[f.name], defs, ref)
        if f.metadata.get("min_length") is not None:
            s["minLength" if hints[f.name] is str else "minItems"] = f.metadata["min_length"]
        props[f.name] = s
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    body: dict[str, Any] = {"type": "object", "title": cls.__name__, "properties": props}
    if required:
        body["required"] = required
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
        body["description"] = cls.__doc__.strip()
    defs[cls.__name__] = body


def json_schema(classes: list[type], ref_template: str) -> dict[str, Any]:
    """``{name: schema}`` for ``classes`` and every dataclass they reference."""
    defs: dict[str, Any] = {}
    for cls in classes:
        _define(cls, defs, ref_template)
    return defs
