"""Trials one by one: a table of them best first, and their top-1 curves epoch by epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.loading import StudyData
from analysis.sensitivity import sweep_parameters
from automix import record

DPI = 110
SHOWN = ("run_name", "top1_summary", "top1_best", "epochs_run", record.DEVICE_HOURS, "smoke")


def trials_by_top1(study: StudyData, *, include_stopped: bool = False) -> pd.DataFrame:
    """The complete trials (and, with `include_stopped`, those stopped early), best `top1_summary`
    first: run name, the setting (method, dataset, backbone, epochs), the swept values, top-1, cost."""
    trials = study.complete_trials
    if include_stopped:
        trials = pd.concat([trials, study.stopped_trials])
    setting = [c for c in (record.METHOD, record.DATASET, record.BACKBONE, record.EPOCHS) if c in trials]
    columns = [*SHOWN[:1], *setting, *sweep_parameters(study), *SHOWN[1:], "run_id"]
    ordered = trials.sort_values("top1_summary", ascending=False, kind="stable")
    return ordered[list(dict.fromkeys(columns))].reset_index(drop=True)


def plot_trial_curves(study: StudyData, path: str | Path, *, max_trials: int = 10) -> Path:
    """Top-1 by epoch, one line per trial, for the `max_trials` best complete trials (legend: run
    name and top1_summary)."""
    best = trials_by_top1(study).head(max_trials)
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.add_subplot()
    history = study.history.set_index("run_id")
    for _, trial in best.iterrows():
        rows = history.loc[[trial["run_id"]]] if trial["run_id"] in history.index else history.iloc[:0]
        rows = rows[rows[record.TOP1].notna()]
        ax.plot(rows["epoch"], rows[record.TOP1], linewidth=1.2,
                label=f"{trial['run_name']} ({trial['top1_summary']:.2f})" + (" [smoke]" if trial["smoke"] else ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    if len(best):
        ax.legend(fontsize="x-small", title="trial (top1_summary)", title_fontsize="x-small")
    ax.set_title(f"{study.experiment}: top-1 per epoch, {len(best)} best trial(s)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
