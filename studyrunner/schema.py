"""Typed sections of a study file: a mapping -> a frozen dataclass, unknown keys and wrong types named.

The rules are the run config's (:mod:`automix.typed`); only the error class and the file prefix differ.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Mapping

from automix import typed
from automix.config import RunConfig


class StudyError(ValueError):
    """A study file is malformed; the message names the file and the field."""


def _in(source: str) -> typed.MakeError:
    return lambda message: StudyError(f"{source}: {message}")


def reject_unknown(data: Mapping, accepted: tuple[str, ...] | list[str], where: str, source: str) -> None:
    """``where`` names the section in messages (``"the top level"``, ``"space.mix.alpha"``)."""
    prefix = "" if where == "the top level" else f"{where}."
    typed.reject_unknown(data, list(accepted), _in(source), prefix)


def section(cls: type, data: Any, where: str, source: str):
    """``cls`` built from the mapping ``data`` (``None``: its defaults)."""
    return typed.build(cls, data, _in(source), prefix=f"{where}.")


def number(value: Any, where: str, source: str, tp: type, minimum: float | None = None):
    """A finite number of type ``tp`` (numeric strings such as ``"1e-3"`` accepted), ``>= minimum``."""
    value = typed.number(value, where, _in(source), tp)
    if minimum is not None and value < minimum:
        raise StudyError(f"{source}: {where} = {value} must be >= {minimum}")
    return value


def read_study_yaml(path: str | Path) -> Any:
    """The YAML of a study file; missing, empty and malformed files are a StudyError naming the line."""
    return typed.read_yaml(path, StudyError, "study file")


def config_value(key: str, value: Any, where: str, source: str) -> Any:
    """``value`` typed as the run config's dotted ``key`` expects (``"1e-3"`` -> 0.001 for a float
    setting), for values a study hands to Tune as they are (grid and choice values, first points)."""
    cls: Any = RunConfig
    *sections, name = key.split(".")
    for part in sections:
        cls = typing.get_type_hints(cls)[part]
    return typed.coerce(typing.get_type_hints(cls)[name], value, where, _in(source))
