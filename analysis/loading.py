"""Load one study from MLflow into pandas: a trials frame and a per-epoch history frame.

Input is the layout in docs/architecture.md ("MLflow layout"): the study is an experiment, each trial
a child run tagged `automix.role=trial`, each launch a parent run tagged `automix.role=study`.

`StudyData.trials` has one row per trial run, *all* of them: failed, killed, unfinished and stopped-
early trials are kept but flagged (`complete` is False and `problem` says why), so nothing downstream
mixes them into results by accident (`StudyData.complete_trials` is what tables and plots use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from analysis.errors import AnalysisError
from analysis.summary import summaries, summary_window
from analysis.tracking import connect, find_experiment, iter_runs, metric_histories

ROLE_TAG = "automix.role"
TRIAL_FILTER = f"tags.`{ROLE_TAG}` = 'trial'"
STUDY_FILTER = f"tags.`{ROLE_TAG}` = 'study'"
# Per-epoch metrics of the layout (logged with step = epoch).
HISTORY_KEYS = ("top1", "top1_q", "train_loss", "lr", "momentum", "epoch_time_s")
# Planned epochs: the short param, else the resolved config key.
EPOCH_PARAMS = ("epochs", "train.epochs")
META_COLUMNS = (
    "run_id", "run_name", "parent_run_id", "trial_id", "status", "complete", "problem",
    "epochs_planned", "epochs_run", "top1_final", "top1_best", "top1_summary", "summary_window",
    "wall_time_s", "start_time", "end_time",
)
STOPPED_EARLY = "stopped early"
# str(None): what the study runner logs for an unset value. ("none" is a real choice, e.g. train.amp.)
_MISSING = frozenset({"", "None"})
_UNFINISHED = frozenset({"RUNNING", "SCHEDULED"})


@dataclass(frozen=True)
class StudyData:
    """One study as pandas frames.

    trials: one row per trial run: META_COLUMNS, then one typed column per param (MLflow stores
        params as strings; a param whose name clashes with a META column is renamed `param.<name>`).
    history: one row per (run_id, epoch) with one column per loaded metric key.
    parents: one row per launch of the study (parent run).
    """

    tracking_uri: str
    experiment: str
    experiment_id: str
    trials: pd.DataFrame
    history: pd.DataFrame
    parents: pd.DataFrame
    param_columns: tuple[str, ...]

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


def load_study(
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
    Raises `AnalysisError` subclasses with a message for the user (unreachable store, no such
    experiment).
    """
    keys = ["top1", *[k for k in history_keys if k != "top1"]]
    client = connect(tracking_uri)
    try:
        exp = find_experiment(client, experiment)
        runs = list(iter_runs(client, exp.experiment_id, TRIAL_FILTER, page_size=page_size))
        parent_runs = list(iter_runs(client, exp.experiment_id, STUDY_FILTER, page_size=page_size))
        long = metric_histories(client, [r.info.run_id for r in runs], keys, bulk=bulk_history)
    except MlflowException as e:
        raise AnalysisError(f"reading study {experiment!r} from {tracking_uri} failed: {e.message}") from e

    history = _history_frame(long, keys)
    trials, param_columns = _trials_frame(runs, history)
    return StudyData(
        tracking_uri=tracking_uri,
        experiment=experiment,
        experiment_id=exp.experiment_id,
        trials=trials,
        history=history,
        parents=_parents_frame(parent_runs),
        param_columns=param_columns,
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


def _trials_frame(runs: list, history: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    meta = pd.DataFrame.from_records(
        [
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name,
                "parent_run_id": r.data.tags.get("mlflow.parentRunId"),
                "trial_id": r.data.tags.get("trial_id"),
                "status": r.info.status,
                "start_ms": r.info.start_time,
                "end_ms": r.info.end_time,
                "logged_final": r.data.metrics.get("top1_final", np.nan),
                "logged_best": r.data.metrics.get("top1_best", np.nan),
            }
            for r in runs
        ],
        columns=["run_id", "run_name", "parent_run_id", "trial_id", "status", "start_ms", "end_ms",
                 "logged_final", "logged_best"],
    )
    raw = pd.DataFrame.from_records([r.data.params for r in runs], index=meta.index)
    params = pd.DataFrame({c: typed_param(raw[c]) for c in sorted(raw.columns)}, index=meta.index)
    params = params.rename(columns={c: f"param.{c}" for c in params.columns if c in META_COLUMNS})

    top1 = history.loc[history["top1"].notna(), ["run_id", "epoch", "top1"]]
    by_run = top1.sort_values(["run_id", "epoch"]).groupby("run_id")
    epochs_run = meta["run_id"].map(by_run["epoch"].max())
    last_top1 = meta["run_id"].map(by_run["top1"].last())
    max_top1 = meta["run_id"].map(by_run["top1"].max())

    planned = pd.Series(pd.NA, index=meta.index, dtype="Int64")
    for name in reversed(EPOCH_PARAMS):  # the first name present wins
        if name in params and pd.api.types.is_numeric_dtype(params[name]):
            planned = params[name].round().astype("Int64").combine_first(planned)
    basis = planned.astype("Float64").fillna(epochs_run).fillna(1).astype(int)
    windows = pd.Series([summary_window(e) for e in basis], index=meta["run_id"].to_numpy())

    out = pd.DataFrame(index=meta.index)
    out["run_id"] = meta["run_id"]
    out["run_name"] = meta["run_name"]
    out["parent_run_id"] = meta["parent_run_id"]
    out["trial_id"] = meta["trial_id"]
    out["status"] = meta["status"]
    out["problem"] = pd.Series(
        [_problem(s, run, plan) for s, run, plan in zip(meta["status"], epochs_run, planned, strict=True)],
        index=meta.index, dtype=object,
    )
    out["complete"] = out["problem"] == ""
    out["epochs_planned"] = planned
    out["epochs_run"] = epochs_run.astype("Int64")
    # A crashed trial never logs top1_final/top1_best: fall back to its history.
    out["top1_final"] = meta["logged_final"].astype(float).fillna(last_top1)
    out["top1_best"] = meta["logged_best"].astype(float).fillna(max_top1)
    out["top1_summary"] = meta["run_id"].map(summaries(top1, windows)).astype(float)
    out["summary_window"] = windows.to_numpy()
    start = pd.to_datetime(meta["start_ms"], unit="ms", utc=True)
    end = pd.to_datetime(meta["end_ms"], unit="ms", utc=True)
    terminal = ~meta["status"].isin(_UNFINISHED)
    out["wall_time_s"] = ((end - start).dt.total_seconds()).where(terminal)
    out["start_time"] = start
    out["end_time"] = end.where(terminal)
    out = pd.concat([out[list(META_COLUMNS)], params], axis=1)
    out = out.sort_values(["start_time", "run_id"], kind="stable")
    return out.reset_index(drop=True), tuple(params.columns)


def _problem(status: str, epochs_run, planned) -> str:
    """Why a trial cannot count as a result; "" when it can."""
    if status == "FAILED":
        return "failed"
    if status == "KILLED":
        return "killed"
    if status != "FINISHED":
        return f"unfinished: status {status}"
    if pd.isna(epochs_run):
        return "no top1: nothing logged"
    if not pd.isna(planned) and epochs_run < planned:
        return f"{STOPPED_EARLY}: epoch {int(epochs_run)} of {int(planned)}"
    return ""


def _parents_frame(runs: list) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(
        [
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name,
                "status": r.info.status,
                "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
                "study_hash": r.data.tags.get("study_hash"),
                "study_file": r.data.tags.get("study_file"),
            }
            for r in runs
        ],
        columns=["run_id", "run_name", "status", "start_time", "study_hash", "study_file"],
    )
    return frame.sort_values("start_time", kind="stable").reset_index(drop=True)
