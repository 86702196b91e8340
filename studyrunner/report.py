"""The end-of-study summary: the best trial's config, the top-N trials, where they are in MLflow."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from automix.config import flatten

from .study import METRIC, Study


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    status: str  # finished | stopped early | failed | not finished
    epochs: int
    top1: float  # at the trial's last epoch
    top1_best: float
    values: Mapping[str, Any]  # the sampled {dotted key: value}
    error: str = ""


def rows_from_results(results, study: Study) -> list[TrialRow]:
    """One row per trial of a Tune ``ResultGrid``."""
    epochs = study.epochs
    keys = [p.key for p in study.sampled]
    rows = []
    for r in results:
        m = r.metrics or {}
        hist = r.metrics_dataframe
        best = float(hist[METRIC].max()) if hist is not None and METRIC in hist else math.nan
        done = int(m.get("epoch", 0) or 0)
        target = int(r.config.get("train.epochs", epochs)) if r.config else epochs
        if r.error is not None:
            status = "failed"
        elif done >= target:
            status = "finished"
        elif m.get("done") or done:
            status = "stopped early"
        else:
            status = "not started"
        rows.append(TrialRow(
            trial_id=str(m.get("trial_id") or _trial_id_from_path(r.path)), status=status, epochs=done,
            top1=float(m.get(METRIC, math.nan)), top1_best=best,
            values={k: (r.config or {}).get(k) for k in keys},
            error=_first_line(r.error) if r.error is not None else ""))
    return rows


def _trial_id_from_path(path: str | None) -> str:
    return str(path or "?").rstrip("/").rsplit("/", 1)[-1]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:120]


def ranked(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """Trials that ran all their epochs first, then by top1 at the last epoch (higher is better)."""
    def key(r: TrialRow):
        return (r.status != "finished", -(r.top1 if not math.isnan(r.top1) else -math.inf))
    return sorted(rows, key=key)


def table(rows: Sequence[TrialRow], keys: Sequence[str], top_n: int = 10) -> str:
    header = ["rank", "trial_id", "status", "epochs", "top1", "top1_best", *keys]
    body = []
    for i, r in enumerate(ranked(rows)[:top_n], 1):
        body.append([str(i), r.trial_id, r.status, str(r.epochs), _fmt(r.top1), _fmt(r.top1_best),
                     *(_fmt(r.values.get(k)) for k in keys)])
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def summary(rows: Sequence[TrialRow], study: Study, *, mlflow_lines: Sequence[str], top_n: int = 10) -> str:
    keys = [p.key for p in study.sampled]
    out = [f"\n=== study {study.name}: {len(rows)} trials "
           f"({sum(r.status == 'finished' for r in rows)} finished, "
           f"{sum(r.status == 'stopped early' for r in rows)} stopped early, "
           f"{sum(r.status == 'failed' for r in rows)} failed) ==="]
    best = ranked(rows)[0] if rows else None
    if best is not None and not math.isnan(best.top1):
        out.append(f"\nbest trial {best.trial_id}: top1 {best.top1:.2f} at epoch {best.epochs} "
                   f"(best epoch {best.top1_best:.2f})")
        cfg = study.resolve({k: v for k, v in best.values.items() if v is not None})
        flat = flatten(cfg)
        out.append("  config (swept values):")
        out += [f"    {k}: {flat[k]}" for k in keys]
        sets = " ".join(f"--set {k}={flat[k]}" for k in keys)
        out.append(f"  rerun it alone: python -m automix.train <base config> {sets} --output-dir runs/best")
    out.append(f"\ntop {min(top_n, len(rows))} trials (by top1 at the last epoch; full runs first):")
    out.append(table(rows, keys, top_n))
    failed = [r for r in rows if r.status == "failed"]
    for r in failed[:5]:
        out.append(f"  trial {r.trial_id} failed: {r.error}")
    out.append("")
    out += list(mlflow_lines)
    return "\n".join(out)
