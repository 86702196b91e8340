"""What a launch prints while it runs: one compact table of the trials, at most every
``every_s`` seconds and whenever a trial changes status -- the columns a researcher reads (trial,
status, epoch, top1, top1_q, the swept values rounded, time), nothing else.

Ray 2.60's default output engine prints a 25-line box per result, a TensorBoard hint and the search
algorithm's class name; the runner switches it off (``RAY_AIR_NEW_OUTPUT=0``) and hands this reporter
to Tune's classic progress loop instead.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Mapping, Sequence

from ray.tune import ProgressReporter

from automix.record import RUN_NAME_ABBREVIATIONS, TOP1, TOP1_Q

from .space import stopped_trials
from .study import EPOCH_ATTR
from .statuses import trial_status

_STATUS = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "ERROR": "failed"}


def column_name(key: str) -> str:
    """``mix.alpha`` -> ``a`` (the run names' abbreviations), else the last part of the dotted key."""
    return RUN_NAME_ABBREVIATIONS.get(key) or key.rsplit(".", 1)[-1]


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def trial_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


class StudyProgress(ProgressReporter):
    """Tune progress reporter: the trials' table when something changed, throttled to ``every_s``."""

    def __init__(self, swept: Sequence[str], planned_epochs: int, experiment_path: str, every_s: float = 30.0,
                 out=None):
        self.swept = list(swept)
        self.experiment_path = experiment_path
        self.planned_epochs = planned_epochs
        self.every_s = every_s
        self.out = out or sys.stdout
        self._last_t = 0.0
        self._last_statuses: tuple = ()
        self._start = time.monotonic()

    def should_report(self, trials, done: bool = False) -> bool:
        statuses = tuple((t.trial_id, t.status) for t in trials)
        changed = statuses != self._last_statuses
        due = time.monotonic() - self._last_t >= self.every_s
        return bool(trials) and not done and (changed or due)

    def report(self, trials, done: bool, *sys_info) -> None:
        self._last_t = time.monotonic()
        self._last_statuses = tuple((t.trial_id, t.status) for t in trials)
        header = ["trial", "status", "epoch", "top1", "top1_q", *map(column_name, self.swept), "time"]
        stopped = stopped_trials(self.experiment_path)
        rows = [self._row(t, stopped) for t in trials]
        counts = ", ".join(f"{n} {s}" for s, n in _count(r[1] for r in rows).items())
        elapsed = time.monotonic() - self._start
        print(f"\n[{elapsed / 60:.1f} min] {len(trials)} trials: {counts}\n{trial_table(rows, header)}",
              file=self.out, flush=True)

    def _row(self, trial, stopped: set[str]) -> list[str]:
        r: Mapping[str, Any] = trial.last_result or {}
        epoch = r.get(EPOCH_ATTR)
        status = _STATUS.get(trial.status) or trial_status(
            failed=False, epochs=int(epoch or 0), planned=self._planned(trial),
            stopped_by_scheduler=trial.trial_id in stopped)
        return [trial.trial_id, status,
                "-" if epoch is None else f"{epoch}/{self._planned(trial)}",
                fmt(r.get(TOP1)), fmt(r.get(TOP1_Q)), *(fmt(trial.config.get(k)) for k in self.swept),
                f"{r.get('time_total_s', 0.0):.0f}s" if r else "-"]

    def _planned(self, trial) -> int:
        return int(trial.config.get("train.epochs", self.planned_epochs))


def _count(statuses) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out
