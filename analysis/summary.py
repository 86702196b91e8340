"""The paper's summary of a run, vectorised: the median top-1 of its last epochs.

The rule (median of the last 5 epochs for schedules of 100 epochs or fewer, else of the last 10;
AutoMix Sec. 5, OpenMixup's benchmarks) is defined once, in `automix.record`; this module applies it
to many runs at once and is tested to agree with `record.top1_summary` value for value.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from automix import record
from automix.record import summary_window

__all__ = ["paper_summary", "summaries", "summary_window"]


def paper_summary(top1_by_epoch: Sequence[float], epochs: int) -> float:
    """`record.top1_summary`: median of the last `summary_window(epochs)` values (ordered by epoch);
    fewer values give the median of what there is, none give NaN."""
    return record.top1_summary(top1_by_epoch, epochs)


def summaries(top1: pd.DataFrame, windows: pd.Series) -> pd.Series:
    """`record.top1_summary` for many runs at once.

    top1: columns run_id, epoch, top1 (one row per run and epoch); windows: run_id -> window length
    (`summary_window(planned epochs)`). Returns run_id -> median of that run's last `window` epochs.
    """
    if top1.empty:
        return pd.Series(dtype="float64")
    ordered = top1.sort_values(["run_id", "epoch"])
    from_end = ordered.groupby("run_id", sort=False).cumcount(ascending=False)
    window = ordered["run_id"].map(windows).fillna(summary_window(1)).to_numpy()
    return ordered[from_end.to_numpy() < window].groupby("run_id")["top1"].median()
