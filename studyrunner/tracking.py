"""MLflow tracking of a study (layout: docs/architecture.md, "MLflow layout").

One experiment per study, one parent run per launch, one nested child run per trial. Child runs are
written from the Tune driver by :class:`MlflowTrialCallback`, which sees every result exactly once
whatever happens to the workers, and talks to the tracking server from one place (the head node).

Idempotent across worker crashes and ``--resume``: a trial's child run is found by its ``trial_id``
tag under the parent before a new one is created, and an epoch already in the run's ``top1`` history
is never logged again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Mapping
from urllib.parse import urlparse

import pyarrow.fs
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DEFAULT_RESULT_KEYS

from automix.config import dump_yaml, flatten

from .study import METRIC, Study, resolve_config
from .trainable import ARTIFACTS_DIR, NODE_ID_KEY

log = logging.getLogger("studyrunner")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STATE_FILE = "state.pt"

# Short param names the analysis reads (docs/architecture.md); every dotted key is logged as well.
SHORT_PARAMS = {
    "method": "method", "backbone": "model.backbone", "dataset": "data.name", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "seed": "train.seed", "alpha": "mix.alpha",
    "mixblock_lr": "optim.mixblock_lr", "momentum": "automix.momentum",
}
# Result keys that are Tune's or ours, not the trainer's metrics.
_NOT_METRICS = set(AUTO_RESULT_KEYS) | set(DEFAULT_RESULT_KEYS) | {
    "epoch", "checkpoint_path", "checkpoint_dir_name", NODE_ID_KEY, "config", "trial_id", "experiment_tag",
    "should_checkpoint", "done", "date", "hostname", "node_ip", "pid", "timestamp"}


class TrackingUnavailable(RuntimeError):
    """The tracking URI names no store this process can write to."""


# --------------------------------------------------------------------------- URIs and reachability

def resolve_tracking_uri(uri: str | None) -> str:
    """``None`` -> ``$MLFLOW_TRACKING_URI`` if set, else the embedded SQLite file ``mlflow.db`` in the
    working directory; SQLite paths are made
    absolute (Ray changes the working directory of trial processes; the driver's stays, but a
    resumed study may be started elsewhere)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    scheme = urlparse(uri).scheme.lower()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise TrackingUnavailable(f"tracking URI {uri!r}: write SQLite URIs as sqlite:///relative/path.db "
                                      f"or sqlite:////absolute/path.db")
        path = uri[len("sqlite:///"):]
        if path != ":memory:":
            return "sqlite:///" + str(Path(path).expanduser().resolve())
        return uri
    if scheme in ("http", "https", "databricks", "postgresql", "mysql", "mssql"):
        return uri
    raise TrackingUnavailable(
        f"tracking URI {uri!r} is not supported: use sqlite:///mlflow.db (embedded) or http://HOST:PORT "
        f"(an `mlflow server`); MLflow 3 no longer writes the ./mlruns file store")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial runs: an http server must answer ``/health`` and its REST API
    within ``timeout_s``; a SQLite file must be creatable."""
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        base = uri.rstrip("/")
        for what, url in (("/health", f"{base}/health"),
                          ("the REST API", f"{base}/api/2.0/mlflow/experiments/search?max_results=1")):
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:
                    if response.status == 200:
                        continue
                    reason = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {exc.reason}"
                if exc.code == 403:
                    reason += " (an `mlflow server` behind another host name needs --allowed-hosts)"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = str(getattr(exc, "reason", exc))
            raise TrackingUnavailable(
                f"cannot reach the MLflow tracking server at {uri}: {what} did not answer within "
                f"{timeout_s:.0f}s ({reason}). Start it (mlflow server --host 0.0.0.0 --port 5000 "
                f"--backend-store-uri sqlite:///mlflow.db) or pass --tracking-uri sqlite:///mlflow.db")
    elif scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        if path != ":memory:":
            parent = Path(path).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingUnavailable(f"tracking URI {uri}: cannot create {parent}: {exc}") from None
            if not os.access(parent, os.W_OK):
                raise TrackingUnavailable(f"tracking URI {uri}: {parent} is not writable")


def client_for(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of the study's experiment, created on first use. With SQLite the artifacts go next to
    the database (``mlartifacts/``) rather than into the working directory."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise TrackingUnavailable(f"MLflow experiment {name!r} is deleted at {client.tracking_uri}; restore "
                                      f"it (mlflow experiments restore) or rename the study")
        return exp.experiment_id
    location = None
    uri = client.tracking_uri
    if uri.startswith("sqlite:///") and not uri.endswith(":memory:"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another launch
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def ui_hint(uri: str, experiment_id: str) -> str:
    """How a person opens the runs of this experiment side by side."""
    if uri.startswith("sqlite:"):
        where = f"mlflow ui --backend-store-uri {uri}   # then open http://127.0.0.1:5000"
        base = "http://127.0.0.1:5000"
    else:
        where, base = f"open {uri}", uri.rstrip("/")
    return (f"{where}\n  runs of this study: {base}/#/experiments/{experiment_id}/runs "
            f"(tick the trials, then Compare; add param columns under 'Columns')")


# --------------------------------------------------------------------------- the parent run

def start_parent(client: MlflowClient, experiment_id: str, study: Study, experiment_path: str) -> str:
    now = datetime.now(timezone.utc)
    run = client.create_run(
        experiment_id, run_name=f"{study.name}@{now:%Y-%m-%dT%H:%M:%SZ}",
        tags={"automix.role": "study", "study": study.name, "study_hash": study.sha256,
              "study_file": study.source, "smoke_test": str(study.smoke_test).lower(),
              "ray_experiment_path": experiment_path,
              "mlflow.note.content": study.description or f"study {study.name}"})
    params = {
        "search_algorithm": study.search.algorithm, "search_seed": study.search.seed,
        "scheduler": study.scheduler.name, "num_samples": study.num_samples,
        "total_trials": study.total_trials(), "max_concurrent_trials": study.max_concurrent_trials,
        "workers": study.resources.workers, "cpus_per_worker": study.resources.cpus_per_worker,
        "gpus_per_worker": study.resources.gpus_per_worker,
        "space": "; ".join(f"{p.key}~{p.dist}" for p in study.sampled) or "none",
    }
    client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        if Path(study.source).is_file():
            client.log_artifact(run.info.run_id, study.source)
        base = Path(tmp) / "base_config.yaml"
        base.write_text(dump_yaml(study.base_config()))
        client.log_artifact(run.info.run_id, str(base))
    return run.info.run_id


def reopen_parent(client: MlflowClient, run_id: str) -> None:
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "resumed_at", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def finish_parent(client: MlflowClient, run_id: str, status: str, best: Mapping[str, Any] | None) -> None:
    if best:
        client.log_batch(run_id, metrics=[Metric("best_top1", float(best["top1"]), _now_ms(), 0)],
                         tags=[RunTag("best_trial_id", str(best["trial_id"]))])
    client.set_terminated(run_id, status)


# --------------------------------------------------------------------------- child runs

@dataclass
class _RunState:
    run_id: str
    top1: dict[int, float] = field(default_factory=dict)  # epoch -> top1 already in MLflow
    node_id: str | None = None
    last_checkpoint: tuple[Any, str] | None = None  # (filesystem, path) of the newest checkpoint
    finished: bool = False


class MlflowTrialCallback(Callback):
    """Tune callback on the driver: one child run per trial, each epoch logged once."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, study: Study):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study.name
        self.base = dict(study.base)
        self.workers = study.resources.workers
        self.log_checkpoint = study.tracking.log_checkpoint
        self.sampled_keys = [p.key for p in study.sampled]
        self._client: MlflowClient | None = None
        self._runs: dict[str, _RunState] = {}

    # The callback is pickled into the experiment folder (tuner.pkl) and restored by --resume: keep
    # only its settings; clients and run states are rebuilt from MLflow.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_runs"] = {}
        return state

    @property
    def client(self) -> MlflowClient:
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
            state.last_checkpoint = location
        node = result.get(NODE_ID_KEY)
        tags = []
        if node and node != state.node_id:
            state.node_id = node
            tags.append(RunTag(NODE_ID_KEY, str(node)))
        if epoch in state.top1:  # a replayed epoch (retry or resume): MLflow already has it
            if tags:
                self.client.log_batch(state.run_id, tags=tags)
            return
        ts = _now_ms()
        metrics = [Metric(k, float(v), ts, epoch) for k, v in result.items()
                   if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.client.log_batch(state.run_id, metrics=metrics, tags=tags)
        if METRIC in result:
            state.top1[epoch] = float(result[METRIC])
        if location is not None:
            self._log_checkpoint_artifacts(state, location)

    def on_trial_complete(self, iteration, trials, trial, **info):
        state = self._run(trial)
        final = self._final_metrics(state)
        if self.log_checkpoint and state.last_checkpoint is not None:
            fs, path = state.last_checkpoint
            with tempfile.TemporaryDirectory() as tmp:
                local = _download(fs, f"{path}/{STATE_FILE}", Path(tmp) / STATE_FILE)
                if local is not None:
                    self.client.log_artifact(state.run_id, str(local), "checkpoint")
        epochs = max(state.top1, default=0)
        stopped = epochs < int(resolve_config(self.base, _sampled(trial.config, self.sampled_keys)).train.epochs)
        tags = [RunTag("epochs_done", str(epochs)), RunTag("stopped_early", str(stopped).lower())]
        self.client.log_batch(state.run_id, metrics=final, tags=tags)
        self.client.set_terminated(state.run_id, "FINISHED")
        state.finished = True

    def on_trial_error(self, iteration, trials, trial, **info):
        state = self._run(trial)
        final = self._final_metrics(state)
        error = str(getattr(trial, "error_file", "") or "")
        self.client.log_batch(state.run_id, metrics=final, tags=[RunTag("error_file", error)] if error else [])
        self.client.set_terminated(state.run_id, "FAILED")
        state.finished = True

    def on_trial_recover(self, iteration, trials, trial, **info):
        state = self._run(trial)
        self.client.set_tag(state.run_id, "retries", str(getattr(trial, "num_failures", "")))

    def on_experiment_end(self, trials, **info):
        # Reached on an interrupt too: runs of trials that did not end are KILLED until --resume
        # reopens them (the same runs, found by trial_id).
        for state in self._runs.values():
            if not state.finished:
                self.client.set_terminated(state.run_id, "KILLED")

    # ----------------------------------------------------------------- helpers

    def _run(self, trial) -> _RunState:
        state = self._runs.get(trial.trial_id)
        if state is None:
            state = self._find(trial.trial_id) or self._create(trial)
            self._runs[trial.trial_id] = state
        return state

    def _find(self, trial_id: str) -> _RunState | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.trial_id = '{trial_id}' and tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=2)
        if not runs:
            return None
        run = runs[0]
        history = self.client.get_metric_history(run.info.run_id, METRIC)
        state = _RunState(run.info.run_id, top1={int(m.step): float(m.value) for m in history},
                          node_id=run.data.tags.get(NODE_ID_KEY))
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        return state

    def _create(self, trial) -> _RunState:
        values = _sampled(trial.config, self.sampled_keys)
        cfg = resolve_config(self.base, values)
        flat = flatten(cfg)
        run = self.client.create_run(
            self.experiment_id, run_name=_run_name(flat, values, trial.trial_id),
            tags={"mlflow.parentRunId": self.parent_run_id, "automix.role": "trial", "study": self.study_name,
                  "trial_id": trial.trial_id, "ray_trial_name": str(trial), "swept": ",".join(self.sampled_keys)})
        params = {short: flat[key] for short, key in SHORT_PARAMS.items()}
        params["workers"] = self.workers
        params.update(flat)
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])
        with tempfile.TemporaryDirectory() as tmp:
            resolved = Path(tmp) / "config.yaml"
            resolved.write_text(dump_yaml(cfg))
            self.client.log_artifact(run.info.run_id, str(resolved))
        return _RunState(run.info.run_id)

    def _final_metrics(self, state: _RunState) -> list[Metric]:
        if not state.top1:
            return []
        last = max(state.top1)
        ts = _now_ms()
        return [Metric("top1_final", state.top1[last], ts, last),
                Metric("top1_best", max(state.top1.values()), ts, last)]

    def _log_checkpoint_artifacts(self, state: _RunState, location: tuple[Any, str]) -> None:
        fs, path = location
        folder = f"{path}/{ARTIFACTS_DIR}"
        infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
        files = [i for i in infos if i.type == pyarrow.fs.FileType.File]
        if not files:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for info in files:
                name = PurePosixPath(info.path).name
                local = _download(fs, info.path, Path(tmp) / name)
                # The trainer's config.yaml is identical to the resolved one logged at creation.
                subdir = "mix" if name.endswith(".png") else None
                self.client.log_artifact(state.run_id, str(local), subdir)


def _checkpoint_location(trial, result: Mapping[str, Any]) -> tuple[Any, str] | None:
    """Where this result's checkpoint lies on the storage filesystem (local, NFS or S3)."""
    fs = trial.storage.storage_filesystem
    if result.get("checkpoint_path"):  # a Ray Train run (TuneReportCallback)
        return fs, str(result["checkpoint_path"])
    if result.get("checkpoint_dir_name"):  # ray.tune.report in the trial itself
        return fs, f"{trial.storage.trial_fs_path}/{result['checkpoint_dir_name']}"
    return None


def _download(fs, path: str, dest: Path) -> Path | None:
    try:
        with fs.open_input_stream(path) as src, dest.open("wb") as out:
            while chunk := src.read(1 << 24):
                out.write(chunk)
    except FileNotFoundError:
        return None
    return dest


def _sampled(config: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: config[k] for k in keys if k in config}


def _run_name(flat: Mapping[str, Any], values: Mapping[str, Any], trial_id: str) -> str:
    """e.g. ``automix resnet18 alpha=1.27 mixblock_lr=0.0412 momentum=0.963 [a1b2c_00003]``."""
    short = {v: k for k, v in SHORT_PARAMS.items()}
    parts = [str(flat["method"]), str(flat["model.backbone"])]
    for key, value in values.items():
        if key in ("method", "model.backbone"):
            continue
        name = short.get(key, key)
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts) + f" [{trial_id}]"


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5990] + "..." + hashlib.sha1(s.encode()).hexdigest()[:6]


def _now_ms() -> int:
    return int(time.time() * 1000)
