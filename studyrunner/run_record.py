"""What one tracked run (a trial, or a single ``automix.train`` run) writes besides its epochs: the
metrics it ends with, its cost, its name checks and its error line. Pure functions over the epoch
history, shared by the Tune callback and the single-run tracker; no Ray, no MLflow.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

from automix import record

# Result keys that are the trial's bookkeeping, not the trainer's metrics.
NOT_METRICS = frozenset({"epoch", "checkpoint_path", "checkpoint_dir_name", "config", "trial_id",
                         "experiment_tag", "should_checkpoint", "done", "date", "hostname", "node_ip",
                         "pid", "timestamp", "ray_node_id", record.TAG_NUMERIC_RETRY})


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RecordError(ValueError):
    """A run would be recorded against the contract of ``automix/record.py``."""


def epoch_metrics(result: Mapping[str, Any], exclude: Iterable[str] = ()) -> dict[str, float]:
    """The numeric values of one epoch's result that are the trainer's metrics."""
    skip = NOT_METRICS | set(exclude)
    return {k: float(v) for k, v in result.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_names(params: Iterable[str], metrics: Iterable[str]) -> None:
    """A metric named like a param makes every reader guess which one a column is (and the MLflow
    UI shows both under one name): refuse it."""
    clash = sorted(set(params) & set(metrics))
    if clash:
        raise RecordError(f"metric name(s) {clash} equal param names; rename the metric in the trainer "
                          f"(schedule values are sched_*, see automix/record.py)")


def devices_held(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> float:
    """GPUs held by a run, or CPU cores when it holds no GPU: what ``device_hours`` counts."""
    return workers * (gpus_per_worker if gpus_per_worker > 0 else cpus_per_worker)


def final_metrics(history: Sequence[Mapping[str, Any]], planned_epochs: int, *, wall_s: float,
                  devices: float) -> dict[str, float]:
    """The metrics a run ends with, from its epochs (ordered, each at most once).

    ``top1_summary``/``top1_final``/``top1_best`` from ``top1``; cost: ``train_time_s`` (sum of the
    epochs' ``epoch_time_s``), ``images_per_s`` (images seen / train time, from the per-epoch
    rates), ``peak_mem_mb`` (the largest epoch's), ``device_hours`` (``wall_s`` x ``devices``).
    Metrics the history cannot give are left out rather than logged as NaN.
    """
    top1 = [float(h[record.TOP1]) for h in history if _finite(h.get(record.TOP1))]
    out: dict[str, float] = {}
    if top1:
        out[record.TOP1_SUMMARY] = record.top1_summary(top1, planned_epochs)
        out[record.TOP1_FINAL] = top1[-1]
        out[record.TOP1_BEST] = max(top1)
    times = [float(h["epoch_time_s"]) for h in history if _finite(h.get("epoch_time_s"))]
    if times:
        out[record.TRAIN_TIME_S] = sum(times)
    timed = [(float(h[record.IMAGES_PER_S]), float(h["epoch_time_s"])) for h in history
             if _finite(h.get(record.IMAGES_PER_S)) and _finite(h.get("epoch_time_s"))]
    if timed and sum(t for _, t in timed) > 0:
        out[record.IMAGES_PER_S] = sum(rate * t for rate, t in timed) / sum(t for _, t in timed)
    mem = [float(h[record.PEAK_MEM_MB]) for h in history if _finite(h.get(record.PEAK_MEM_MB))]
    if mem:
        out[record.PEAK_MEM_MB] = max(mem)
    if wall_s > 0 and devices > 0:
        out[record.DEVICE_HOURS] = wall_s / 3600.0 * devices
    return out


def plain_text(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours its error text)."""
    return _ANSI.sub("", text)


def error_line(text: str) -> str:
    """The line of a traceback a person reads first: the last exception line (``ValueError: ...``),
    without Ray's wrapper lines; at most 250 characters."""
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if line[0].isspace() or line.startswith(("Traceback", "Failure #", "The above exception", "ray::")):
            continue
        return line[:250]
    return (lines[-1] if lines else "unknown error").strip()[:250]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
