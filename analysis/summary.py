"""The paper's summary of a run: the median top-1 of its last epochs.

AutoMix and OpenMixup report the median top-1 of the last 5 epochs for schedules of 100 epochs or
fewer, and of the last 10 epochs for longer ones (AutoMix paper, Sec. 5; OpenMixup benchmarks), which
damps the epoch-to-epoch noise of the final value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SHORT_SCHEDULE_EPOCHS = 100
SHORT_WINDOW = 5
LONG_WINDOW = 10


def summary_window(epochs: int) -> int:
    """How many final epochs the summary takes the median over: 5 up to 100 epochs, else 10."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return SHORT_WINDOW if epochs <= SHORT_SCHEDULE_EPOCHS else LONG_WINDOW


def paper_summary(top1_by_epoch: Sequence[float], epochs: int) -> float:
    """Median of the last `summary_window(epochs)` values of `top1_by_epoch` (ordered by epoch).

    Fewer logged epochs than the window give the median of what there is; none give NaN.
    """
    values = np.asarray(top1_by_epoch, dtype=float)
    if values.size == 0:
        return float("nan")
    return float(np.median(values[-summary_window(epochs) :]))


def summaries(top1: pd.DataFrame, windows: pd.Series) -> pd.Series:
    """Vectorised `paper_summary` for many runs.

    top1: columns run_id, epoch, top1 (one row per run and epoch); windows: run_id -> window length.
    Returns run_id -> median of that run's last `window` epochs.
    """
    if top1.empty:
        return pd.Series(dtype="float64")
    ordered = top1.sort_values(["run_id", "epoch"])
    from_end = ordered.groupby("run_id", sort=False).cumcount(ascending=False)
    keep = from_end.to_numpy() < ordered["run_id"].map(windows).fillna(SHORT_WINDOW).to_numpy()
    return ordered[keep].groupby("run_id")["top1"].median()
