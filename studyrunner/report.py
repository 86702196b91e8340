"""The end-of-study summary: how the trials ended, the best trial's config and a command that reruns
it alone, the top-N trials, where they are in MLflow.

Trials are ranked as the parent run ranks them (``parent_run.finish_parent``): trials that ran all
their epochs first, then by :data:`automix.record.TOP1_SUMMARY` (the median top-1 of the last epochs,
the paper's number) -- not by the last epoch alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from automix import record
from automix.config import flatten

from .console import fmt, trial_table
from .statuses import trial_status
from .study import METRIC, Study


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    status: str  # record.FINISHED | STOPPED_EARLY | FAILED | INTERRUPTED
    epochs: int  # epochs done
    planned_epochs: int
    top1_summary: float
    top1: float  # at the trial's last epoch
    top1_best: float
    values: Mapping[str, Any]  # the sampled {dotted key: value}
    error: str = ""


def rows_from_results(results, study: Study, stopped: set[str]) -> list[TrialRow]:
    """One row per trial of a Tune ``ResultGrid``; ``stopped``: ids the scheduler stopped early."""
    keys = [p.key for p in study.sampled]
    rows = []
    for r in results:
        m, config = r.metrics or {}, r.config or {}
        hist = r.metrics_dataframe
        top1s = [] if hist is None or METRIC not in hist else _by_epoch(hist)
        planned = int(config.get("train.epochs", study.epochs))
        trial_id = str(m.get("trial_id") or _trial_id_from_path(r.path))
        done = int(m.get("epoch", 0) or 0)
        rows.append(TrialRow(
            trial_id=trial_id,
            status=trial_status(failed=r.error is not None, epochs=done, planned=planned,
                                stopped_by_scheduler=trial_id in stopped),
            epochs=done, planned_epochs=planned, top1_summary=record.top1_summary(top1s, planned),
            top1=float(m.get(METRIC, math.nan)), top1_best=max(top1s, default=math.nan),
            values={k: config.get(k) for k in keys},
            error=_first_line(r.error) if r.error is not None else ""))
    return rows


def _by_epoch(hist) -> list[float]:
    """top1 in epoch order, each epoch once (a retried trial reports its last epochs again)."""
    if "epoch" not in hist:
        return [float(v) for v in hist[METRIC].dropna()]
    last = hist.dropna(subset=[METRIC]).groupby("epoch")[METRIC].last()
    return [float(v) for v in last.sort_index()]


def counts(rows: Sequence[TrialRow], total_trials: int) -> dict[str, int]:
    """Trials per status (:data:`automix.record.COUNT_TAGS` keys); planned trials that never started
    count as interrupted."""
    out = {status: sum(r.status == status for r in rows) for status in record.COUNT_TAGS}
    out[record.INTERRUPTED] += max(0, total_trials - len(rows))
    return out


def _trial_id_from_path(path: str | None) -> str:
    name = str(path or "?").rstrip("/").rsplit("/", 1)[-1]
    return name[len("trial_"):] if name.startswith("trial_") else name


def _first_line(error: BaseException) -> str:
    """The cause of a Ray error: the last line of its text (Ray prepends the worker's traceback)."""
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:160]


def ranked(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """Finished trials first, then by top1_summary (higher is better)."""
    def key(r: TrialRow):
        score = r.top1_summary if not math.isnan(r.top1_summary) else -math.inf
        return (r.status != record.FINISHED, -score)
    return sorted(rows, key=key)


def table(rows: Sequence[TrialRow], keys: Sequence[str], top_n: int = 10) -> str:
    header = ["rank", "trial_id", "status", "epochs", "top1_summary", "top1_final", "top1_best", *keys]
    body = [[str(i), r.trial_id, r.status, f"{r.epochs}/{r.planned_epochs}", fmt(r.top1_summary), fmt(r.top1),
             fmt(r.top1_best), *(fmt(r.values.get(k)) for k in keys)]
            for i, r in enumerate(ranked(rows)[:top_n], 1)]
    return trial_table(body, header)


def rerun_command(study: Study, best: TrialRow, base_config_path: str) -> str:
    flat = flatten(study.resolve({k: v for k, v in best.values.items() if v is not None}))
    sets = [f"--set {k}={flat[k]}" for k in best.values]
    return " ".join(["python -m automix.train", base_config_path, *sets, "--output-dir runs/best"])


def summary(rows: Sequence[TrialRow], study: Study, *, base_config_path: str, mlflow_lines: Sequence[str],
            top_n: int = 10) -> str:
    keys = [p.key for p in study.sampled]
    c = counts(rows, study.total_trials())
    out = [f"\n=== study {study.name}: {study.total_trials()} trials ("
           + ", ".join(f"{n} {status}" for status, n in c.items()) + ") ==="]
    best = ranked(rows)[0] if rows else None
    if best is not None and best.status == record.FINISHED:
        out.append(f"\nbest trial {best.trial_id}: top1_summary {best.top1_summary:.2f} "
                   f"(last epoch {best.top1:.2f}, best epoch {best.top1_best:.2f})")
        out += [f"    {k}: {fmt(best.values.get(k))}" for k in keys]
        out.append(f"  rerun it alone: {rerun_command(study, best, base_config_path)}")
    out.append(f"\ntop {min(top_n, len(rows))} trials (finished first, by top1_summary):")
    out.append(table(rows, keys, top_n))
    for r in [r for r in rows if r.status == record.FAILED][:5]:
        out.append(f"  trial {r.trial_id} failed: {r.error}")
    out.append("")
    out += list(mlflow_lines)
    return "\n".join(out)
