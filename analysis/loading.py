"""Load one experiment from MLflow into pandas: a trials frame and a per-epoch history frame.

Reads our record (automix/record.py; docs/architecture.md, "The record") and stores written by plain
MLflow calls (`analysis.runs`). Params are columns under their dotted config keys (`mix.alpha`,
`model.backbone`, `data.name`, `train.epochs`), whatever names the store used.

`StudyData.trials` has one row per trial run, *all* of them: failed, killed, unfinished, stopped-early
and unusable trials are kept but flagged (`complete` is False and `problem` says why), so nothing
downstream mixes them into results by accident (`StudyData.complete_trials` is what tables use).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from analysis.errors import AnalysisError
from analysis.history import metric_histories
from analysis.runs import Runs, describe, dotted_params, missing_params, sort_runs
from analysis.summary import summaries, summary_window
from analysis.tracking import connect, find_experiment, iter_runs
from automix import record

log = logging.getLogger(__name__)

# Per-epoch metrics loaded by default (logged with step = epoch).
HISTORY_KEYS = (
    record.TOP1, record.TOP1_Q, "train_loss", "sched_lr", "sched_mixblock_lr", "sched_ema_momentum",
    "sched_mask_weight", "mask_saturated", "mask_spatial_std", "mask_lam_gap", "epoch_time_s",
)
META_COLUMNS = (
    "run_id", "run_name", "parent_run_id", "trial_id", "status", "trial_status", "smoke", "complete",
    "problem", "epochs_planned", "epochs_run", "top1_final", "top1_best", "top1_summary",
    "summary_window", *record.COST_METRICS, "wall_time_s", "start_time", "end_time",
)
STOPPED_EARLY = record.STOPPED_EARLY
# Our record's trial runs, for callers that query them directly (the loader reads every run once).
TRIAL_FILTER = f"tags.`{record.ROLE_TAG}` = '{record.ROLE_TRIAL}'"
# str(None): what a writer logs for an unset value. ("none" is a real choice, e.g. train.amp.)
_MISSING = frozenset({"", "None"})
_UNFINISHED = frozenset({"RUNNING", "SCHEDULED"})


@dataclass(frozen=True)
class StudyData:
    """One experiment (a study) as pandas frames.

    trials: one row per trial run: META_COLUMNS, then one typed column per param (MLflow stores
        params as strings; a param whose name clashes with a META column is renamed `param.<name>`).
    history: one row per (run_id, epoch) with one column per loaded metric key.
    parents: one row per launch of the study (parent run).
    layout: how the trials were told apart (`analysis.runs.LAYOUT_RECORD` or `LAYOUT_FOREIGN`).
    history_path: how the history was read (`analysis.history.SQL_PATH` or `PUBLIC_PATH`).
    found: what the experiment held, in words (for messages when nothing is usable).
    """

    tracking_uri: str
    experiment: str
    experiment_id: str
    trials: pd.DataFrame
    history: pd.DataFrame
    parents: pd.DataFrame
    param_columns: tuple[str, ...]
    layout: str = ""
    history_path: str = ""
    found: str = ""

    @property
    def complete_trials(self) -> pd.DataFrame:
        """Trials that finished every planned epoch: the only ones results are built from."""
        return self.trials[self.trials["complete"]]

    @property
    def stopped_trials(self) -> pd.DataFrame:
        """Trials a scheduler (ASHA) stopped before their last epoch: configurations the search tried,
        not results."""
        stopped = [str(p).startswith(STOPPED_EARLY) for p in self.trials["problem"]]
        return self.trials[np.asarray(stopped, dtype=bool)]

    def latest_launch(self) -> StudyData:
        """The study restricted to the trials of its most recent launch (parent run).

        A study is one experiment however often it is launched; launches of a changed study file
        (another `study_hash`) should not be averaged together.
        """
        if self.parents.empty:
            return self
        parent = self.parents.iloc[-1]["run_id"]  # parents are sorted by start time
        trials = self.trials[self.trials["parent_run_id"] == parent].reset_index(drop=True)
        history = self.history[self.history["run_id"].isin(trials["run_id"])].reset_index(drop=True)
        parents = self.parents[self.parents["run_id"] == parent].reset_index(drop=True)
        return replace(self, trials=trials, history=history, parents=parents)

    def skipped(self) -> dict[str, int]:
        """How many trials were left out of results, by reason ("failed", "unfinished", ...)."""
        problems = self.trials.loc[~self.trials["complete"], "problem"]
        reasons = [str(p).split(":")[0] for p in problems]
        return {r: reasons.count(r) for r in sorted(set(reasons))}


def load_experiment(
    tracking_uri: str,
    experiment: str,
    *,
    history_keys: Sequence[str] = HISTORY_KEYS,
    page_size: int = 1000,
    bulk_history: bool = True,
) -> StudyData:
    """Read every trial of `experiment` from `tracking_uri` (a `sqlite:///` file or `http://` server).

    history_keys: per-epoch metrics to load (`top1` is always loaded: the summary needs it).
    page_size: runs per `search_runs` call; all pages are read.
    bulk_history: False forces MLflow's public per-run history calls (see `analysis.history`).
    Raises `AnalysisError` subclasses with a message for the user (unreachable store, no such
    experiment).
    """
    keys = [record.TOP1, *[k for k in history_keys if k != record.TOP1]]
    client = connect(tracking_uri)
    try:
        exp = find_experiment(client, experiment)
        runs = sort_runs(list(iter_runs(client, exp.experiment_id, page_size=page_size)))
        read = metric_histories(client, [r.info.run_id for r in runs.trials], keys, bulk=bulk_history)
    except MlflowException as e:
        raise AnalysisError(f"reading study {experiment!r} from {tracking_uri} failed: {e.message}") from e

    history = _history_frame(read.frame, keys)
    parents = _parents_frame(runs.parents)
    trials, param_columns = _trials_frame(runs, history, parents)
    return StudyData(
        tracking_uri=tracking_uri,
        experiment=experiment,
        experiment_id=exp.experiment_id,
        trials=trials,
        history=history,
        parents=parents,
        param_columns=param_columns,
        layout=runs.layout,
        history_path=read.path,
        found=describe(runs, set(history.loc[history[record.TOP1].notna(), "run_id"])),
    )


def typed_param(values: pd.Series) -> pd.Series:
    """MLflow's string params as a typed column.

    "None" (str of an unset value), "" and absent params are missing. Of the remaining values: all
    "true"/"false" -> boolean; all integers -> Int64; all numbers -> float64 (so "2.0" and "1e-3"
    stay floats); else strings.
    """
    s = values.astype(object).where(values.notna() & ~values.astype(str).isin(_MISSING), None)
    present = s.dropna().astype(str)
    if present.empty:
        return s
    lowered = present.str.lower()
    if lowered.isin(("true", "false")).all():
        return s.map(lambda v: None if v is None else str(v).lower() == "true").astype("boolean")
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all():
        full = pd.to_numeric(s, errors="coerce")
        if present.str.fullmatch(r"[+-]?\d+").all():
            return full.astype("Int64")
        return full.astype("float64")
    return s


def _history_frame(long: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    columns = ["run_id", "epoch", *keys]
    if long.empty:
        empty = {c: pd.Series(dtype=object if c == "run_id" else "float64") for c in columns}
        return pd.DataFrame(empty).astype({"epoch": "int64"})
    # A resumed trial re-logs the epochs after its checkpoint: the later value wins.
    long = long.sort_values("timestamp", kind="stable")
    long = long.drop_duplicates(["run_id", "key", "step"], keep="last")
    wide = long.pivot(index=["run_id", "step"], columns="key", values="value")
    wide = wide.reindex(columns=list(keys)).rename_axis(columns=None).reset_index()
    wide = wide.rename(columns={"step": "epoch"}).sort_values(["run_id", "epoch"], kind="stable")
    return wide.reset_index(drop=True)[columns]


def _run_records(runs: Runs, parents: pd.DataFrame) -> pd.DataFrame:
    """What the trials frame needs from each run besides its params and history."""
    smoke_parents = set(parents.loc[parents["smoke"], "run_id"])
    rows = []
    for r in runs.trials:
        tags, metrics = r.data.tags, r.data.metrics
        parent = tags.get(record.PARENT_TAG)
        row = {
            "run_id": r.info.run_id, "run_name": r.info.run_name, "parent_run_id": parent,
            "trial_id": tags.get(record.TAG_TRIAL_ID), "status": r.info.status,
            "trial_status": tags.get(record.TAG_STATUS),
            "smoke": _is_true(tags.get(record.TAG_SMOKE)) or parent in smoke_parents,
            "start_ms": r.info.start_time, "end_ms": r.info.end_time,
            "missing": ", ".join(missing_params(dotted_params(r.data.params))),
        }
        for key in record.FINAL_METRICS:
            row[f"logged.{key}"] = metrics.get(key, np.nan)
        rows.append(row)
    columns = ["run_id", "run_name", "parent_run_id", "trial_id", "status", "trial_status", "smoke",
               "start_ms", "end_ms", "missing", *(f"logged.{k}" for k in record.FINAL_METRICS)]
    return pd.DataFrame.from_records(rows, columns=columns)


def _params_frame(runs: Runs, index: pd.Index) -> pd.DataFrame:
    raw = pd.DataFrame.from_records([dotted_params(r.data.params) for r in runs.trials], index=index)
    params = pd.DataFrame({c: typed_param(raw[c]) for c in sorted(raw.columns)}, index=index)
    return params.rename(columns={c: f"param.{c}" for c in params.columns if c in META_COLUMNS})


def _trials_frame(
    runs: Runs, history: pd.DataFrame, parents: pd.DataFrame
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    meta = _run_records(runs, parents)
    params = _params_frame(runs, meta.index)
    top1 = history.loc[history[record.TOP1].notna(), ["run_id", "epoch", record.TOP1]]
    by_run = top1.sort_values(["run_id", "epoch"]).groupby("run_id")
    # Steps counted from 0 (some plain-MLflow writers) would make the last step one short.
    epochs_run = np.fmax(meta["run_id"].map(by_run["epoch"].max()), meta["run_id"].map(by_run.size()))
    planned = pd.Series(pd.NA, index=meta.index, dtype="Int64")
    if record.EPOCHS in params and pd.api.types.is_numeric_dtype(params[record.EPOCHS]):
        planned = params[record.EPOCHS].round().astype("Int64")
    basis = planned.astype("Float64").fillna(epochs_run).fillna(1).astype(int)
    windows = pd.Series([summary_window(e) for e in basis], index=meta["run_id"].to_numpy())

    out = meta[["run_id", "run_name", "parent_run_id", "trial_id", "status", "trial_status", "smoke"]].copy()
    out["problem"] = pd.Series(
        [_problem(*args) for args in zip(meta["status"], meta["trial_status"], meta["missing"], epochs_run,
                                         planned, strict=True)], index=meta.index, dtype=object)
    out["complete"] = out["problem"] == ""
    out["epochs_planned"] = planned
    out["epochs_run"] = epochs_run.astype("Int64")
    # A crashed trial never logs its final metrics: fall back to its history.
    out["top1_final"] = meta[f"logged.{record.TOP1_FINAL}"].astype(float).fillna(
        meta["run_id"].map(by_run[record.TOP1].last()))
    out["top1_best"] = meta[f"logged.{record.TOP1_BEST}"].astype(float).fillna(
        meta["run_id"].map(by_run[record.TOP1].max()))
    out["top1_summary"] = meta[f"logged.{record.TOP1_SUMMARY}"].astype(float).fillna(
        meta["run_id"].map(summaries(top1, windows)).astype(float))
    out["summary_window"] = windows.to_numpy()
    for key in record.COST_METRICS:
        out[key] = meta[f"logged.{key}"].astype(float)
    out = pd.concat([out, _times(meta)], axis=1)
    out = pd.concat([out[list(META_COLUMNS)], params], axis=1)
    out = out.sort_values(["start_time", "run_id"], kind="stable")
    return out.reset_index(drop=True), tuple(params.columns)


def _times(meta: pd.DataFrame) -> pd.DataFrame:
    start = pd.to_datetime(meta["start_ms"], unit="ms", utc=True)
    end = pd.to_datetime(meta["end_ms"], unit="ms", utc=True)
    terminal = ~meta["status"].isin(_UNFINISHED)
    return pd.DataFrame({
        "wall_time_s": (end - start).dt.total_seconds().where(terminal),
        "start_time": start,
        "end_time": end.where(terminal),
    }, index=meta.index)


def _problem(status: str, trial_status, missing: str, epochs_run, planned) -> str:
    """Why a trial cannot count as a result; "" when it can."""
    if status == "FAILED" or trial_status == record.FAILED:
        return "failed"
    if status == "KILLED":
        return "killed"
    if trial_status == record.INTERRUPTED:
        return "interrupted"
    if status != "FINISHED":
        return f"unfinished: status {status}"
    if missing:
        return f"unusable: missing params {missing}"
    if pd.isna(epochs_run):
        return f"no {record.TOP1}: nothing logged"
    if not pd.isna(planned) and epochs_run < planned:
        return f"{STOPPED_EARLY}: epoch {int(epochs_run)} of {int(planned)}"
    if trial_status == record.STOPPED_EARLY:
        return f"{STOPPED_EARLY}: epoch {int(epochs_run)}"
    return ""


def _is_true(value: object) -> bool:
    return str(value).strip().lower() == "true"


def _parents_frame(runs: list) -> pd.DataFrame:
    columns = ["run_id", "run_name", "status", "start_time", "study_hash", "study_file", "smoke",
               record.TOP1_SUMMARY, record.DEVICE_HOURS, record.WALL_TIME_S, "best_run_id",
               *record.COUNT_TAGS.values()]
    rows = []
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        row = {
            "run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
            "study_hash": tags.get(record.TAG_STUDY_HASH), "study_file": tags.get(record.TAG_STUDY_FILE),
            "smoke": _is_true(tags.get(record.TAG_SMOKE)), "best_run_id": tags.get(record.TAG_BEST_RUN_ID),
        }
        for key in (record.TOP1_SUMMARY, record.DEVICE_HOURS, record.WALL_TIME_S):
            row[key] = metrics.get(key, np.nan)
        for tag in record.COUNT_TAGS.values():
            row[tag] = pd.to_numeric(tags.get(tag), errors="coerce")
        rows.append(row)
    frame = pd.DataFrame.from_records(rows, columns=columns).astype({"smoke": bool})
    return frame.sort_values("start_time", kind="stable").reset_index(drop=True)
