"""Which params make up a trial's configuration, and which of them a study varies.

A trial logs each hyperparameter once, under its dotted config key (`mix.alpha`), plus seeds and ids. A
*configuration* is every param except seeds and ids; two trials with the same configuration are
repeats (seeds) of one setting. A *sweep* study varies some configuration param.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

# Params that identify a repeat or a trial rather than a setting.
_NOT_CONFIG = re.compile(r"(^|\.)(seed|trial_id|run_id|output_dir|run_dir)$")


def config_columns(trials: pd.DataFrame, param_columns: Sequence[str]) -> list[str]:
    """Param columns that define a configuration: all but seeds and trial/run ids."""
    return [c for c in param_columns if c in trials and not _NOT_CONFIG.search(c)]


def distinct_columns(trials: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """`columns` without those that repeat another column value for value.

    A store that logged a hyperparameter under two names (`alpha` and `mix.alpha`, say, under names
    the alias table does not know) would otherwise count it twice in sweeps and importances. The
    dotted config key is kept.
    """
    ordered = sorted(columns, key=lambda c: ("." not in c, c))
    kept: list[str] = []
    signatures: set[tuple] = set()
    for column in ordered:
        signature = tuple(as_text(trials[column]))
        if signature in signatures:
            continue
        signatures.add(signature)
        kept.append(column)
    return kept


def varying_columns(trials: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Those of `columns` that take more than one value over `trials` (missing counts as a value)."""
    return [c for c in columns if as_text(trials[c]).nunique() > 1]


def config_keys(trials: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """An integer label per trial: equal labels mean equal configurations over `columns`."""
    if not columns:
        return pd.Series(0, index=trials.index)
    text = pd.DataFrame({f"c{i}": as_text(trials[c]) for i, c in enumerate(columns)}, index=trials.index)
    return text.groupby(list(text.columns), sort=False).ngroup()


def as_text(values: pd.Series) -> pd.Series:
    """Values as strings, missing ones as "<missing>" (for grouping and labels)."""
    return values.astype(object).where(values.notna(), "<missing>").astype(str)
