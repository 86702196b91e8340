"""Tracking of a single ``python -m automix.train ... --tracking-uri URI`` run in MLflow.

The run lands in experiment ``--experiment`` (default ``automix-runs``) as a run tagged
``automix.role=run``, with the same params, per-epoch metrics, final metrics and pictures as a trial
of a study (``automix/record.py``), so the analysis reads both the same way. The run's id is kept in
``OUTPUT_DIR/mlflow_run.json``: ``--resume`` of that folder continues the same MLflow run, and an
epoch already logged is not logged again.

Used by the trainer's command line only when ``--tracking-uri`` is given; imports no Ray.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from automix import record
from automix.config import RunConfig, dump_yaml, flatten

from . import run_record
from .parent_run import client_for, ensure_experiment, log_params
from .uris import TrackingUnavailable, check_reachable, resolve_tracking_uri, run_url, share_runs_view

RUN_FILE = "mlflow_run.json"
Status = Literal["FINISHED", "FAILED", "KILLED"]
_STATUS_WORD = {"FINISHED": record.FINISHED, "FAILED": record.FAILED, "KILLED": record.INTERRUPTED}

__all__ = ["RunTracker", "TrackingUnavailable", "open_tracker", "RUN_FILE"]


@dataclass
class RunTracker:
    """The trainer's reporter for one tracked run (``report`` each epoch, ``close`` once)."""
    client: Any
    tracking_uri: str
    experiment_id: str
    run_id: str
    planned_epochs: int
    devices: float
    start_s: float  # the MLflow run's first start (device_hours counts from here)
    param_names: frozenset[str]
    logged_epochs: set[int] = field(default_factory=set)
    mix_logged: set[int] = field(default_factory=set)
    last_picture: tuple[Path, int] | None = None  # the newest checkpoint's mix_last.png and its epoch
    reopened: bool = False  # continued by --resume

    @property
    def url(self) -> str:
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None, artifacts: Sequence[Path]) -> None:
        from mlflow.entities import Metric

        epoch = int(metrics["epoch"])
        if checkpoint_dir is not None and (Path(checkpoint_dir) / "mix_last.png").is_file():
            self.last_picture = (Path(checkpoint_dir) / "mix_last.png", epoch)
        if epoch in self.logged_epochs:  # a resumed run re-running an epoch MLflow already has
            return
        values = run_record.epoch_metrics(metrics)
        run_record.check_names(self.param_names, values)
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, epoch) for k, v in values.items()])
        self.logged_epochs.add(epoch)
        for path in map(Path, artifacts):
            if path.name == "config.yaml":  # logged when the run was opened
                continue
            picture = path.suffix == ".png"
            self.client.log_artifact(self.run_id, str(path), record.MIX_ARTIFACT_DIR if picture else None)
            if picture and path.stem.startswith("mix_epoch") and path.stem[9:].isdigit():
                self.mix_logged.add(int(path.stem[9:]))

    def close(self, status: Status, history: Sequence[Mapping[str, Any]], error: str | None = None) -> None:
        """Log the final metrics and the run's end; ``error``: the full traceback of a failed run."""
        from mlflow.entities import Metric, RunTag

        last = max((int(h["epoch"]) for h in history), default=0)
        final = run_record.final_metrics(history, self.planned_epochs, wall_s=time.time() - self.start_s,
                                         devices=self.devices)
        tags = [RunTag(record.TAG_STATUS, _STATUS_WORD[status]), RunTag(record.TAG_EPOCHS_DONE, str(last))]
        if error:
            line = run_record.error_line(error)
            self.client.log_text(self.run_id, error, record.ERROR_ARTIFACT)
            tags += [RunTag(record.TAG_ERROR, line),
                     RunTag("mlflow.note.content", f"**failed**: `{line}`\n\nFull traceback: artifact "
                                                   f"`{record.ERROR_ARTIFACT}`.")]
        if self.reopened:  # a resumed run that ended before: the same value is not logged twice
            logged = self.client.get_run(self.run_id).data.metrics
            final = {k: v for k, v in final.items() if logged.get(k) != v}
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, last) for k, v in final.items()], tags=tags)
        if self.last_picture is not None and self.last_picture[1] not in self.mix_logged:
            picture, epoch = self.last_picture
            with tempfile.TemporaryDirectory() as tmp:
                named = Path(tmp) / f"mix_epoch{epoch:04d}.png"
                named.write_bytes(picture.read_bytes())
                self.client.log_artifact(self.run_id, str(named), record.MIX_ARTIFACT_DIR)
            self.mix_logged.add(epoch)
        self.client.set_terminated(self.run_id, status)


def open_tracker(tracking_uri: str | None, experiment: str | None, cfg: RunConfig, output_dir: Path,
                 *, resume: bool | None = None) -> RunTracker:
    """Open (or, resuming, reopen) the MLflow run of a single training run.

    ``tracking_uri``: as for studies (None -> ``$MLFLOW_TRACKING_URI`` -> ``sqlite:///mlflow.db``);
    raises :class:`TrackingUnavailable` when it cannot be reached. ``resume`` (the CLI's
    ``--resume``): continue the run named in ``output_dir/mlflow_run.json`` when that file names the
    same tracking URI and experiment (else a new run); False: always a new run; None: as True.
    """
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    experiment = experiment or record.DEFAULT_EXPERIMENT
    client = client_for(uri)
    experiment_id = ensure_experiment(client, experiment)
    output_dir = Path(output_dir)
    devices, resources = _devices(cfg)
    params = record.run_params(flatten(cfg), resources)
    saved = _saved_run(output_dir, uri, experiment_id) if resume is not False else None
    if saved is not None:
        tracker = _reopen(client, uri, experiment_id, saved, cfg, devices)
    else:
        tracker = _create(client, uri, experiment_id, cfg, params, devices)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / RUN_FILE).write_text(json.dumps(
            {"run_id": tracker.run_id, "experiment_id": experiment_id, "tracking_uri": uri}, indent=2))
    return tracker


def _devices(cfg: RunConfig) -> tuple[float, dict[str, Any]]:
    """(devices held, resources params): one GPU when the run uses one, else its CPU threads."""
    import torch

    gpu = cfg.train.device != "cpu" and torch.cuda.is_available()
    cpus = cfg.train.threads or os.cpu_count() or 1
    resources = {"workers": 1, "cpus_per_worker": cpus, "gpus_per_worker": 1 if gpu else 0}
    return run_record.devices_held(1, cpus, 1 if gpu else 0), resources


def _saved_run(output_dir: Path, uri: str, experiment_id: str) -> dict | None:
    path = output_dir / RUN_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("tracking_uri") != uri or saved.get("experiment_id") != experiment_id:
        return None
    return saved


def _create(client, uri: str, experiment_id: str, cfg: RunConfig, params: Mapping[str, str],
            devices: float) -> RunTracker:
    name = f"{cfg.method} {cfg.model.backbone} {cfg.data.name} seed={cfg.train.seed}"
    run = client.create_run(experiment_id, run_name=name, tags={record.ROLE_TAG: record.ROLE_RUN})
    run_id = run.info.run_id
    share_runs_view(client, experiment_id, (*record.REQUIRED_PARAMS, record.SEED),
                    (record.TOP1_SUMMARY, record.TOP1_FINAL, record.DEVICE_HOURS))
    log_params(client, run_id, params)
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "config.yaml"
        resolved.write_text(dump_yaml(cfg))
        client.log_artifact(run_id, str(resolved))
    return RunTracker(client, uri, experiment_id, run_id, cfg.train.epochs, devices,
                      run.info.start_time / 1000.0, frozenset(params))


def _reopen(client, uri: str, experiment_id: str, saved: Mapping[str, Any], cfg: RunConfig,
            devices: float) -> RunTracker:
    run = client.get_run(saved["run_id"])
    run_id = run.info.run_id
    client.update_run(run_id, status="RUNNING")
    if record.TAG_ERROR in run.data.tags:
        client.delete_tag(run_id, record.TAG_ERROR)
    epochs = {int(m.step) for m in client.get_metric_history(run_id, record.TOP1)}
    mix = {int(a.path[-8:-4]) for a in client.list_artifacts(run_id, record.MIX_ARTIFACT_DIR)
           if a.path.endswith(".png") and a.path[-8:-4].isdigit()}
    return RunTracker(client, uri, experiment_id, run_id, cfg.train.epochs, devices,
                      run.info.start_time / 1000.0, frozenset(run.data.params), epochs, mix, reopened=True)
