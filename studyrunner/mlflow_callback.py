"""The Tune callback that writes one MLflow child run per trial (layout: ``automix/record.py``).

It runs in the Tune driver, so it sees every result exactly once whatever happens to the workers,
and talks to the tracking server from one place (the head node). Idempotent across worker crashes
and ``--resume``: a trial's run is found by its ``trial_id`` tag under the parent before a new one is
created, and an epoch already in the run's ``top1`` history is never logged again.

When a trial ends (finished, stopped early by the scheduler, failed) its run gets the summary and
cost metrics, ``trial_status`` and the picture of its last epoch; a failed trial's run also gets
the error (tag, description, ``error.txt``).
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import pyarrow.fs
from mlflow.entities import Metric, RunTag
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DEFAULT_RESULT_KEYS

from automix import record
from automix.config import dump_yaml, flatten

from . import run_record
from .parent_run import client_for, log_params
from .study import Study, resolve_config
from .trainable import ARTIFACTS_DIR, NODE_ID_KEY

log = logging.getLogger("studyrunner")

STATE_FILE = "state.pt"
MIX_LAST = "mix_last.png"  # the trainer's picture of its latest epoch, in every checkpoint folder
_TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | frozenset(DEFAULT_RESULT_KEYS) | {"iterations_since_restore"}
# Histories a resumed trial's final metrics are computed from.
_FINAL_INPUTS = (record.TOP1, "epoch_time_s", record.IMAGES_PER_S, record.PEAK_MEM_MB)


@dataclass
class _TrialRun:
    run_id: str
    start_s: float  # when the run started, less the time it lay interrupted: device_hours counts from here
    param_names: frozenset[str]
    history: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> metrics in MLflow
    mix_logged: set[int] = field(default_factory=set)  # epochs whose picture is in mix/
    node_id: str | None = None
    last_checkpoint: tuple[Any, str, int] | None = None  # (filesystem, path, epoch)
    ended: bool = False


@dataclass(frozen=True)
class _Resources:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    def as_params(self) -> dict[str, Any]:
        return {"workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker}


class MlflowTrialCallback(Callback):
    """Tune callback on the driver: one child run per trial, each epoch logged once."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, study: Study):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study.name
        self.smoke_test = study.smoke_test
        self.base = dict(study.base)
        r = study.resources
        self.resources = _Resources(r.workers, r.cpus_per_worker, r.gpus_per_worker)
        self.log_checkpoint = study.tracking.log_checkpoint
        self.sampled_keys = [p.key for p in study.sampled]
        self._client = None
        self._runs: dict[str, _TrialRun] = {}

    # The callback is pickled into the experiment folder (tuner.pkl) and restored by --resume: keep
    # only its settings; the client and the run states are rebuilt from MLflow.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None, "_runs": {}}

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    # ----------------------------------------------------------------- Tune hooks

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        state = self._run(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        location = _checkpoint_location(trial, result)
        if location is not None:
            state.last_checkpoint = (*location, epoch)
        tags = self._result_tags(state, result)
        if epoch in state.history:  # a replayed epoch (retry or resume): MLflow already has it
            if tags:
                self.client.log_batch(state.run_id, tags=tags)
            return
        metrics = run_record.epoch_metrics(result, exclude=_TUNE_KEYS)
        run_record.check_names(state.param_names, metrics)
        ts = _now_ms()
        self.client.log_batch(state.run_id, metrics=[Metric(k, v, ts, epoch) for k, v in metrics.items()],
                              tags=tags)
        state.history[epoch] = metrics
        if location is not None:
            self._log_checkpoint_artifacts(state, location, epoch)

    def on_trial_complete(self, iteration, trials, trial, **info):
        state = self._run(trial)
        planned = self._planned_epochs(trial)
        status = record.FINISHED if max(state.history, default=0) >= planned else record.STOPPED_EARLY
        if self.log_checkpoint:
            self._log_state_file(state, trial)
        self._end(state, trial, status, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        state = self._run(trial)
        text = run_record.plain_text(_error_text(trial))
        line = run_record.error_line(text)
        self.client.log_text(state.run_id, text, record.ERROR_ARTIFACT)
        self.client.log_batch(state.run_id, tags=[
            RunTag(record.TAG_ERROR, line),
            RunTag("mlflow.note.content", f"**failed**: `{line}`\n\nFull traceback: artifact "
                                          f"`{record.ERROR_ARTIFACT}`.")])
        self._end(state, trial, record.FAILED, "FAILED")

    def on_trial_recover(self, iteration, trials, trial, **info):
        state = self._run(trial)
        self.client.set_tag(state.run_id, "retries", str(getattr(trial, "num_failures", "")))

    def on_experiment_end(self, trials, **info):
        # Reached on an interrupt too: runs of trials that did not end are KILLED until --resume
        # reopens them (the same runs, found by trial_id).
        for state in self._runs.values():
            if not state.ended:
                self.client.log_batch(state.run_id, tags=[
                    RunTag(record.TAG_STATUS, record.INTERRUPTED),
                    RunTag(record.TAG_EPOCHS_DONE, str(max(state.history, default=0))),
                    RunTag(record.TAG_HELD_S, f"{time.time() - state.start_s:.1f}")])
                self.client.set_terminated(state.run_id, "KILLED")

    # ----------------------------------------------------------------- the end of a trial

    def _end(self, state: _TrialRun, trial, status: str, mlflow_status: str) -> None:
        last = max(state.history, default=0)
        history = [state.history[e] for e in sorted(state.history)]
        wall_s = time.time() - state.start_s
        r = self.resources
        final = run_record.final_metrics(
            history, self._planned_epochs(trial), wall_s=wall_s,
            devices=run_record.devices_held(r.workers, r.cpus_per_worker, r.gpus_per_worker))
        ts = _now_ms()
        self.client.log_batch(
            state.run_id, metrics=[Metric(k, v, ts, last) for k, v in final.items()],
            tags=[RunTag(record.TAG_STATUS, status), RunTag(record.TAG_EPOCHS_DONE, str(last)),
                  RunTag(record.TAG_HELD_S, f"{wall_s:.1f}")])
        self._log_last_picture(state, trial)
        self.client.set_terminated(state.run_id, mlflow_status)
        state.ended = True

    def _log_last_picture(self, state: _TrialRun, trial) -> None:
        """The last epoch's picture (``mix_last.png`` of the last checkpoint) as ``mix/`` of that
        epoch, unless the trainer's periodic grid of that epoch is there already."""
        where = state.last_checkpoint or _latest_tune_checkpoint(trial)
        if where is None:
            return
        fs, path, epoch = where
        if epoch in state.mix_logged:
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = _download(fs, f"{path}/{MIX_LAST}", Path(tmp) / f"mix_epoch{epoch:04d}.png")
            if local is not None:
                self.client.log_artifact(state.run_id, str(local), record.MIX_ARTIFACT_DIR)
                state.mix_logged.add(epoch)

    def _log_state_file(self, state: _TrialRun, trial) -> None:
        where = state.last_checkpoint or _latest_tune_checkpoint(trial)
        if where is None:
            return
        fs, path, _ = where
        with tempfile.TemporaryDirectory() as tmp:
            local = _download(fs, f"{path}/{STATE_FILE}", Path(tmp) / STATE_FILE)
            if local is not None:
                self.client.log_artifact(state.run_id, str(local), "checkpoint")

    # ----------------------------------------------------------------- finding / creating runs

    def _run(self, trial) -> _TrialRun:
        state = self._runs.get(trial.trial_id)
        if state is None:
            state = self._find(trial.trial_id) or self._create(trial)
            self._runs[trial.trial_id] = state
        return state

    def _find(self, trial_id: str) -> _TrialRun | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.{record.TAG_TRIAL_ID} = '{trial_id}' and tags.`{record.PARENT_TAG}` = '{self.parent_run_id}'",
            max_results=2)
        if not runs:
            return None
        run = runs[0]
        run_id = run.info.run_id
        # A reopened run (--resume) counts on from the time it was held before, not from its first
        # start: the hours it lay interrupted held no devices.
        held = float(run.data.tags.get(record.TAG_HELD_S, time.time() - run.info.start_time / 1000.0))
        state = _TrialRun(run_id, time.time() - held, frozenset(run.data.params),
                          node_id=run.data.tags.get(NODE_ID_KEY))
        for key in _FINAL_INPUTS:
            # The first value per epoch: a failed trial that is rerun also holds its final metrics
            # (images_per_s, peak_mem_mb) at the last epoch's step.
            for m in sorted(self.client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
                state.history.setdefault(int(m.step), {}).setdefault(key, float(m.value))
        state.history = {e: h for e, h in state.history.items() if record.TOP1 in h}
        state.mix_logged = {_epoch_of(a.path) for a in self.client.list_artifacts(run_id, record.MIX_ARTIFACT_DIR)}
        if record.TAG_ERROR in run.data.tags:  # a failed trial rerun by --resume
            self.client.delete_tag(run_id, record.TAG_ERROR)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        return state

    def _create(self, trial) -> _TrialRun:
        values = _sampled(trial.config, self.sampled_keys)
        cfg = resolve_config(self.base, values)
        run = self.client.create_run(
            self.experiment_id, run_name=record.trial_run_name(values, trial.trial_id),
            tags={record.PARENT_TAG: self.parent_run_id, record.ROLE_TAG: record.ROLE_TRIAL,
                  record.TAG_STUDY: self.study_name, record.TAG_TRIAL_ID: trial.trial_id,
                  record.TAG_SWEPT: ",".join(self.sampled_keys),
                  record.TAG_SMOKE: str(self.smoke_test).lower(), "ray_trial_name": str(trial)})
        params = record.run_params(flatten(cfg), self.resources.as_params())
        log_params(self.client, run.info.run_id, params)
        with tempfile.TemporaryDirectory() as tmp:
            resolved = Path(tmp) / "config.yaml"
            resolved.write_text(dump_yaml(cfg))
            self.client.log_artifact(run.info.run_id, str(resolved))
        return _TrialRun(run.info.run_id, run.info.start_time / 1000.0, frozenset(params))

    # ----------------------------------------------------------------- helpers

    def _planned_epochs(self, trial) -> int:
        return int(resolve_config(self.base, _sampled(trial.config, self.sampled_keys)).train.epochs)

    def _result_tags(self, state: _TrialRun, result: Mapping[str, Any]) -> list[RunTag]:
        tags = []
        node = result.get(NODE_ID_KEY)
        if node and node != state.node_id:
            state.node_id = node
            tags.append(RunTag(NODE_ID_KEY, str(node)))
        retry = result.get(record.TAG_NUMERIC_RETRY)
        if isinstance(retry, str) and retry:
            tags.append(RunTag(record.TAG_NUMERIC_RETRY, retry))
        return tags

    def _log_checkpoint_artifacts(self, state: _TrialRun, location: tuple[Any, str], epoch: int) -> None:
        fs, path = location
        folder = f"{path}/{ARTIFACTS_DIR}"
        infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
        files = [i for i in infos if i.type == pyarrow.fs.FileType.File]
        with tempfile.TemporaryDirectory() as tmp:
            for info in files:
                name = PurePosixPath(info.path).name
                if name == "config.yaml":  # identical to the resolved config logged at creation
                    continue
                local = _download(fs, info.path, Path(tmp) / name)
                if local is None:
                    continue
                picture = name.endswith(".png")
                self.client.log_artifact(state.run_id, str(local), record.MIX_ARTIFACT_DIR if picture else None)
                if picture and name.startswith("mix_epoch"):
                    state.mix_logged.add(_epoch_of(name))


def _checkpoint_location(trial, result: Mapping[str, Any]) -> tuple[Any, str] | None:
    """Where this result's checkpoint lies on the storage filesystem (local, NFS or S3)."""
    fs = trial.storage.storage_filesystem
    if result.get("checkpoint_path"):  # a Ray Train run (TuneReportCallback)
        return fs, str(result["checkpoint_path"])
    if result.get("checkpoint_dir_name"):  # ray.tune.report in the trial itself
        return fs, f"{trial.storage.trial_fs_path}/{result['checkpoint_dir_name']}"
    return None


def _latest_tune_checkpoint(trial) -> tuple[Any, str, int] | None:
    """The trial's newest checkpoint as Tune knows it (after a --resume, before any new result)."""
    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return None
    epoch = int((trial.last_result or {}).get("epoch", 0) or 0)
    return checkpoint.filesystem, checkpoint.path, epoch


def _error_text(trial) -> str:
    """The trial's full error: Tune's error file (every failure of the trial, with tracebacks)."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    try:
        text = trial.get_error()  # from the storage filesystem
    except Exception:  # noqa: BLE001 - no error text is no reason to lose the run's other records
        text = None
    return str(text) if text else "the trial failed; Ray Tune recorded no error text"


def _download(fs, path: str, dest: Path) -> Path | None:
    try:
        with fs.open_input_stream(path) as src, dest.open("wb") as out:
            while chunk := src.read(1 << 24):
                out.write(chunk)
    except (FileNotFoundError, OSError):
        return None
    return dest


def _epoch_of(name: str) -> int:
    """``mix/mix_epoch0004.png`` -> 4 (-1 for other names)."""
    stem = PurePosixPath(name).stem
    digits = stem[len("mix_epoch"):]
    return int(digits) if stem.startswith("mix_epoch") and digits.isdigit() else -1


def _sampled(config: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: config[k] for k in keys if k in config}


def _now_ms() -> int:
    return int(time.time() * 1000)
