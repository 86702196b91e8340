"""Typed sections of a study file: a mapping -> a frozen dataclass, unknown keys and wrong types named."""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Mapping, get_args, get_origin


class StudyError(ValueError):
    """A study file is malformed; the message names the file and the field."""


def reject_unknown(data: Mapping, accepted: tuple[str, ...] | list[str], where: str, source: str) -> None:
    unknown = [k for k in data if k not in accepted]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(accepted), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StudyError(f"{source}: unknown key {key!r} in {where}{hint}; accepted: {', '.join(accepted)}")


def section(cls: type, data: Any, where: str, source: str):
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise StudyError(f"{source}: {where} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    reject_unknown(data, tuple(fields), where, source)
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}", source) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise StudyError(f"{source}: {where} = {value!r} is not one of: {' | '.join(map(str, get_args(tp)))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        return _coerce(next(a for a in get_args(tp) if a is not type(None)), value, where, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise StudyError(f"{source}: {where} = {value!r} must be true or false")
        return value
    if tp in (int, float):
        return number(value, where, source, tp)
    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise StudyError(f"{source}: {where} must be a list, got {value!r}")
        return tuple(value)
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise StudyError(f"{source}: {where} must be a mapping, got {value!r}")
        return dict(value)
    return value


def number(value: Any, where: str, source: str, tp: type, minimum: float | None = None):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and tp is int:
        ok = float(value).is_integer()
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        kind = "an integer" if tp is int else "a number"
        raise StudyError(f"{source}: {where} = {value!r} must be {kind}")
    value = tp(value)
    if minimum is not None and value < minimum:
        raise StudyError(f"{source}: {where} = {value} must be >= {minimum}")
    return value
