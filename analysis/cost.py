"""Accuracy against cost: each trial's top1_summary against the device-hours it took, with the Pareto
front (the trials no other trial beats on both: as accurate or more for as little or less)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.loading import StudyData
from analysis.sensitivity import log_x, setting_labels
from automix import record

DPI = 110


def pareto_front(trials: pd.DataFrame, *, cost: str = record.DEVICE_HOURS,
                 value: str = "top1_summary") -> pd.Series:
    """Per trial, whether it is on the front: no other trial has cost <= and value >= with one of the
    two strictly better. Trials missing either number are never on it."""
    c = trials[cost].astype(float).to_numpy()
    v = trials[value].astype(float).to_numpy()
    known = np.isfinite(c) & np.isfinite(v)
    on = np.zeros(len(trials), dtype=bool)
    for i in np.flatnonzero(known):
        others = known & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        on[i] = not others.any()
    return pd.Series(on, index=trials.index, name="pareto")


def plot_cost(study: StudyData, path: str | Path) -> Path | None:
    """A scatter of top1_summary against device_hours of the complete trials, per setting, with the
    Pareto front drawn as a step line; None when no trial logged its cost."""
    trials = study.complete_trials
    trials = trials[np.isfinite(trials[record.DEVICE_HOURS].astype(float))
                    & np.isfinite(trials["top1_summary"].astype(float))]
    if trials.empty:
        return None
    front = trials[pareto_front(trials)].sort_values(record.DEVICE_HOURS)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    labels = setting_labels(trials)
    for label, rows in trials.groupby(labels, sort=True):
        ax.scatter(rows[record.DEVICE_HOURS], rows["top1_summary"], s=22, alpha=0.8,
                   label=f"{label} ({len(rows)})")
    ax.step(front[record.DEVICE_HOURS], front["top1_summary"], where="post", color="black", linewidth=1.0)
    ax.scatter(front[record.DEVICE_HOURS], front["top1_summary"], s=70, facecolors="none", edgecolors="black",
               label=f"Pareto front ({len(front)})")
    for _, trial in front.iterrows():
        ax.annotate(str(trial["run_name"]), (trial[record.DEVICE_HOURS], trial["top1_summary"]),
                    xytext=(4, -10), textcoords="offset points", fontsize="xx-small")
    spread = trials[record.DEVICE_HOURS].astype(float)
    if (spread > 0).all() and spread.max() >= 10 * spread.min():
        log_x(ax)
    ax.set_xlabel("device-hours per trial (GPU-h; CPU-core-h on CPUs)")
    ax.set_ylabel("top-1 (%), median of last epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    ax.set_title(f"{study.experiment}: accuracy against cost")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
