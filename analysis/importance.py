"""Hyperparameter importances of a sweep with Optuna's fANOVA, from the trials MLflow holds.

The trials are re-created as an in-memory Optuna study (one Optuna trial per MLflow trial run, its
value the paper summary of top-1), so Optuna's evaluators run unchanged whether or not the sweep was
sampled by Optuna. Each param is modelled on the scale it is searched on: learning rates on a log
scale, the EMA momentum as log(1 - m), since 0.99 -> 0.999 -> 0.9999 are equal steps of that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

Scale = Literal["linear", "log", "log1m", "category"]
# Known hyperparameters and how their search spaces are laid out (AutoMix paper, Sec. 5.4 ablations).
KNOWN_SCALES: dict[str, Scale] = {
    "mix.alpha": "linear",
    "optim.mixblock_lr": "log",
    "optim.lr": "log",
    "optim.weight_decay": "log",
    "automix.momentum": "log1m",
}
TARGET = "top1_summary"


@dataclass(frozen=True)
class Axis:
    """A swept param and the scale it is shown and modelled on.

    `values(trials)` gives what is plotted / modelled: the raw value, except `log1m`: 1 - value
    (on a log axis). `label` names the axis ("1 - momentum").
    """

    column: str
    scale: Scale

    @property
    def label(self) -> str:
        return f"1 - {self.column}" if self.scale == "log1m" else self.column

    @property
    def log(self) -> bool:
        return self.scale in ("log", "log1m")

    def values(self, trials: pd.DataFrame) -> pd.Series:
        column = trials[self.column]
        if self.scale == "category":
            return column.astype(object).where(column.notna(), "<missing>").map(_plain)
        if self.scale == "log1m":
            return 1.0 - column.astype("float64")
        return column if pd.api.types.is_integer_dtype(column) else column.astype("float64")


def param_axes(trials: pd.DataFrame, columns: Sequence[str]) -> list[Axis]:
    """An Axis per column: known hyperparameters keep their scale; other numeric columns are log when
    positive and spanning a decade or more; booleans and text are categories."""
    axes = []
    for column in columns:
        values = trials[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            axes.append(Axis(column, "category"))
            continue
        numbers = values.astype("float64").dropna()
        scale = KNOWN_SCALES.get(column)
        if scale == "log1m" and not ((numbers > 0) & (numbers < 1)).all():
            scale = "linear"
        if scale == "log" and not (numbers > 0).all():
            scale = "linear"
        if scale is None:
            positive = (numbers > 0).all()
            scale = "log" if positive and numbers.max() >= 10 * numbers.min() else "linear"
        axes.append(Axis(column, scale))
    return axes


def to_optuna_study(trials: pd.DataFrame, axes: Sequence[Axis], *, target: str = TARGET) -> optuna.Study:
    """An in-memory Optuna study holding one COMPLETE trial per row of `trials` with a finite target."""
    rows = trials[np.isfinite(trials[target].astype(float))]
    columns = {axis.label: axis.values(rows) for axis in axes}
    distributions = {axis.label: _distribution(axis, columns[axis.label], rows) for axis in axes}
    frozen = [
        optuna.trial.create_trial(
            params={label: _plain(columns[label].loc[i]) for label in columns},
            distributions=distributions,
            value=float(rows.at[i, target]),
            user_attrs={"mlflow_run_id": rows.at[i, "run_id"]} if "run_id" in rows else {},
        )
        for i in rows.index
    ]
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per call
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(previous)
    study.add_trials(frozen)
    return study


def param_importances(
    trials: pd.DataFrame, axes: Sequence[Axis], *, target: str = TARGET, seed: int = 0
) -> pd.Series:
    """fANOVA importances (sum to 1), indexed by axis label, largest first.

    Empty when there is nothing to decompose: no swept param, fewer than two trials, or a target
    that never varies.
    """
    axes = [a for a in axes if a.values(trials).nunique() > 1]  # constant here: nothing to split
    if not axes:
        return pd.Series(dtype="float64", name="importance")
    study = to_optuna_study(trials, axes, target=target)
    values = [t.value for t in study.trials]
    if len(values) < 2 or np.ptp(values) == 0:
        return pd.Series(dtype="float64", name="importance")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    series = pd.Series(importances, dtype="float64", name="importance")
    return series.sort_values(ascending=False)


def _distribution(axis: Axis, values: pd.Series, rows: pd.DataFrame):
    if axis.scale == "category":
        return CategoricalDistribution(sorted({_plain(v) for v in values}, key=str))
    low, high = float(values.min()), float(values.max())
    if pd.api.types.is_integer_dtype(rows[axis.column]) and axis.scale != "log1m":
        return IntDistribution(int(low), int(high), log=axis.log)
    return FloatDistribution(low, high, log=axis.log)


def _plain(value: object) -> object:
    """numpy / pandas scalars as plain Python values (Optuna compares and stores them)."""
    if hasattr(value, "item"):
        return value.item()
    return value
