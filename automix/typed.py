"""Typed values from YAML: build a frozen dataclass from a mapping, one set of rules for run configs
(:class:`automix.config.ConfigError`) and study files (``studyrunner.schema.StudyError``).

The rules, the same wherever a file is read:

- an unknown key is an error that names it, with a did-you-mean hint and the accepted keys;
- ``Literal`` choices are checked (YAML 1.1 reads ``on``/``off`` as booleans; for a choice between the
  strings ``"on"`` and ``"off"`` they are read back as those strings);
- ``int``/``float`` accept numeric strings (PyYAML reads ``1e-3`` as a string, ``1.0e-3`` as a float),
  an ``int`` also an integral float (``1e3``); non-finite numbers (``.inf``, ``.nan``, ``"inf"``) are
  rejected, no setting here means infinity;
- ``bool`` only takes a boolean, ``str`` only a string; ``Optional``, ``tuple`` and ``Mapping`` as typed.

Range checks stay in each dataclass's ``__post_init__``. Errors come from ``make_error(message)``: pass
an exception class, or a function that adds where the mapping came from.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")
MakeError = Callable[[str], Exception]


def build(cls: type[T], data: Any, make_error: MakeError, prefix: str = "") -> T:
    """``cls(**data)`` with every value coerced to its field's type; nested dataclass fields are built
    from nested mappings (``None`` = that section's defaults). ``prefix`` (``"optim."``) dots the keys
    in messages."""
    where = prefix.rstrip(".") or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise make_error(f"{where} must be a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    reject_unknown(data, names, make_error, prefix)
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(hints[name], value, prefix + name, make_error) for name, value in data.items()}
    return cls(**kwargs)


def reject_unknown(data: Mapping, accepted: typing.Sequence[str], make_error: MakeError, prefix: str = "") -> None:
    """Raise for the first key of ``data`` not in ``accepted``, naming it and the likely one meant."""
    unknown = [k for k in data if k not in accepted]
    if not unknown:
        return
    key = str(unknown[0])
    close = difflib.get_close_matches(key, [str(a) for a in accepted], n=1)
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    where = prefix.rstrip(".") or "the top level"
    raise make_error(f"unknown key {prefix + key!r}{hint}; accepted under {where}: {', '.join(map(str, accepted))}")


def coerce(tp: Any, value: Any, key: str, make_error: MakeError) -> Any:
    """``value`` as type ``tp`` (see the module docstring), or ``make_error`` naming ``key``."""
    if dataclasses.is_dataclass(tp):
        return build(tp, value, make_error, key + ".")
    origin = get_origin(tp)
    if origin is Literal:
        return _choice(get_args(tp), value, key, make_error)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {tp} for {key}")  # a bug in a dataclass, not user input
        return coerce(rest[0], value, key, make_error)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise make_error(f"{key} = {value!r} must be true or false")
    if tp in (int, float):
        return number(value, key, make_error, tp)
    if tp is str:
        if isinstance(value, str):
            return value
        raise make_error(f"{key} = {value!r} must be a string")
    if tp is tuple or origin is tuple:
        return _tuple(tp, value, key, make_error)
    if tp in (dict, Mapping) or origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise make_error(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported type {tp} for {key}")  # a bug in a dataclass, not user input


def number(value: Any, key: str, make_error: MakeError, tp: type = float) -> int | float:
    """A finite ``int`` or ``float`` from a number or a numeric string (``"1e-3"``)."""
    kind = "an integer" if tp is int else "a number"
    parsed = value
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            raise make_error(f"{key} = {value!r} must be {kind}") from None
    if isinstance(parsed, bool) or not isinstance(parsed, (int, float)):
        raise make_error(f"{key} = {value!r} must be {kind}")
    if not math.isfinite(parsed):
        raise make_error(f"{key} = {value!r} must be a finite number")
    if tp is int:
        if isinstance(parsed, float) and not parsed.is_integer():
            raise make_error(f"{key} = {value!r} must be {kind}")
        return int(parsed)
    return float(parsed)


def _choice(choices: tuple, value: Any, key: str, make_error: MakeError) -> Any:
    if isinstance(value, bool) and {"on", "off"} <= set(choices):
        value = "on" if value else "off"  # YAML 1.1 read the word on/off as a boolean
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise make_error(f"{key} = {value!r} is not one of: {' | '.join(map(str, choices))}{hint}")


def _tuple(tp: Any, value: Any, key: str, make_error: MakeError) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise make_error(f"{key} must be a list, got {value!r}")
    args = get_args(tp)
    if not args or args == ((),):
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(args[0], v, f"{key}[{i}]", make_error) for i, v in enumerate(value))
    if len(args) != len(value):
        raise make_error(f"{key} must be a list of {len(args)} values, got {value!r}")
    return tuple(coerce(a, v, f"{key}[{i}]", make_error) for i, (a, v) in enumerate(zip(args, value)))


def read_yaml(path: str | Path, make_error: MakeError, what: str = "file") -> Any:
    """The YAML document in ``path``. A missing or empty file, or a syntax error (named with its line
    and column), is ``make_error(...)`` naming the file rather than a parser traceback."""
    path = Path(path)
    if not path.is_file():
        raise make_error(f"{what} {path} does not exist")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise make_error(f"{what} {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        raise make_error(f"{what} {path} is empty")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")
