"""Write studies with known numbers into an MLflow store, for the tests and benchmarks.

`StudyWriter` writes our record (automix/record.py; docs/architecture.md, "The record"), every name
taken from the contract: one parent run per launch (`automix.role=study`), one child per trial
(`automix.role=trial`, `mlflow.parentRunId`) whose params are the dotted config keys, per-epoch
metrics at `step = epoch`, and when a trial ends `top1_summary`, `top1_final`, `top1_best`, the cost
metrics and the `trial_status` tag; the parent gets the best trial's `top1_summary`, `best_run_id`,
the summed `device_hours`, `wall_time_s` and the trial counts.

`write_plain_study` writes what someone using MLflow's fluent API by hand would: a parent run with
nested runs, short param names, a `top1` history, and no automix tag at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from automix import record

# MlflowClient.log_batch accepts at most 1000 metrics and 100 params per call.
_MAX_METRICS = 1000
_MAX_PARAMS = 100
_STATUS_OF = {"FINISHED": record.FINISHED, "FAILED": record.FAILED, "KILLED": record.INTERRUPTED}


def new_sqlite_store(path: str | os.PathLike) -> str:
    """An empty MLflow SQLite store at `path`; returns its tracking URI.

    Creating a store runs MLflow's schema migrations (several seconds); an empty migrated database is
    kept once per MLflow version in the temp directory and copied, so tests can afford many stores.
    """
    path = Path(path)
    template = Path(tempfile.gettempdir()) / f"automix-analysis-empty-mlflow-{mlflow.__version__}.db"
    if not template.is_file():
        fd, scratch = tempfile.mkstemp(suffix=".db", dir=template.parent)
        os.close(fd)
        os.unlink(scratch)
        MlflowClient(tracking_uri=f"sqlite:///{scratch}").search_experiments()
        os.replace(scratch, template)  # atomic: a concurrent reader never sees half a file
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class TrialSpec:
    """One trial to write: its params (dotted keys) and its per-epoch `top1`.

    `status` is an MLflow run status ("FINISHED", "FAILED", "RUNNING", "KILLED"); a RUNNING trial is
    left without an end time. `trial_status` is the record's tag (default: from `status` and whether
    every planned epoch ran). `final_metrics` controls whether the end-of-trial metrics are logged (a
    crashed trial never reaches them). `mix_epochs`: epochs with a mixed-sample grid artifact
    (`mix/mix_epochNNNN.png`). `device_hours` defaults to the wall time on one device.
    """

    params: Mapping[str, object]
    top1: Sequence[float]
    status: str = "FINISHED"
    trial_id: str = ""
    wall_time_s: float = 60.0
    final_metrics: bool = True
    extra_history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    trial_status: str | None = None
    smoke: bool = False
    device_hours: float | None = None
    mix_epochs: Sequence[int] = ()

    def resolved_status(self) -> str | None:
        """The `trial_status` tag to write; None while the trial runs (no tag yet)."""
        if self.trial_status is not None or self.status == "RUNNING":
            return self.trial_status
        planned = int(self.params.get(record.EPOCHS, len(self.top1)))
        if self.status == "FINISHED" and len(self.top1) < planned:
            return record.STOPPED_EARLY
        return _STATUS_OF.get(self.status, record.INTERRUPTED)


def trial_params(
    *,
    method: str,
    backbone: str,
    dataset: str,
    epochs: int,
    seed: int,
    alpha: float = 2.0,
    mixblock_lr: float = 0.1,
    momentum: float = 0.999,
    batch_size: int = 256,
    lr: float = 0.1,
    extra: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """The params a trial logs (`record.run_params`): dotted config keys, each once."""
    flat: dict[str, object] = {
        record.METHOD: method, record.BACKBONE: backbone, record.DATASET: dataset,
        record.EPOCHS: epochs, record.SEED: seed, "mix.alpha": alpha, "automix.momentum": momentum,
        "optim.lr": lr, "optim.mixblock_lr": mixblock_lr, "train.batch_size": batch_size,
        "train.channels_last": False, "train.max_steps_per_epoch": None, "model.width": 64,
    }
    flat.update(extra or {})
    return record.run_params(flat, {"workers": 1})


class StudyWriter:
    """Creates one experiment (the study) and writes parent and trial runs into it."""

    def __init__(self, tracking_uri: str, study: str, *, artifact_location: str | None = None):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.study = study
        existing = self.client.get_experiment_by_name(study)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            self.experiment_id = self.client.create_experiment(study, artifact_location=artifact_location)
        self.tracking_uri = tracking_uri
        self._clock_ms = 1_700_000_000_000
        self._trial_counter = 0
        self._trials: dict[str, list[tuple[str, TrialSpec]]] = {}  # parent -> (run id, spec)

    @classmethod
    def in_new_store(cls, folder: str | os.PathLike, study: str) -> StudyWriter:
        """A writer of `study` in a new SQLite store `folder/mlflow.db`, artifacts under `folder/artifacts`."""
        folder = Path(folder)
        return cls(new_sqlite_store(folder / "mlflow.db"), study, artifact_location=str(folder / "artifacts"))

    def start_parent(self, *, study_hash: str = "0" * 64, smoke: bool = False) -> str:
        """A parent run for one launch of the study; returns its run id."""
        run = self.client.create_run(
            self.experiment_id,
            start_time=self._tick(1000),
            run_name=f"{self.study}@2024-01-01T00:00:00Z",
            tags={
                record.ROLE_TAG: record.ROLE_STUDY, record.TAG_STUDY: self.study,
                record.TAG_STUDY_HASH: study_hash, record.TAG_STUDY_FILE: f"studies/{self.study}.yaml",
                record.TAG_SMOKE: str(smoke).lower(),
            },
        )
        self._trials[run.info.run_id] = []
        return run.info.run_id

    def finish_parent(self, parent_run_id: str, status: str = "FINISHED") -> None:
        """End the launch as the study runner does: best trial, summed cost, trial counts."""
        trials = self._trials.get(parent_run_id, [])
        finished = [(rid, s) for rid, s in trials if s.final_metrics and s.resolved_status() == record.FINISHED]
        metrics = [Metric(record.DEVICE_HOURS, sum(_device_hours(s) for _, s in trials), self._clock_ms, 0),
                   Metric(record.WALL_TIME_S, sum(s.wall_time_s for _, s in trials), self._clock_ms, 0)]
        tags = [RunTag(tag, str(sum(s.resolved_status() == st for _, s in trials)))
                for st, tag in record.COUNT_TAGS.items()]
        if finished:
            best_id, best = max(finished, key=lambda t: _summary(t[1]))
            metrics.append(Metric(record.TOP1_SUMMARY, _summary(best), self._clock_ms, 0))
            tags.append(RunTag(record.TAG_BEST_RUN_ID, best_id))
        self.client.log_batch(parent_run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(parent_run_id, status=status, end_time=self._tick(1000))

    def add_trial(self, parent_run_id: str, spec: TrialSpec) -> str:
        """Writes one trial run (params, per-epoch metrics, final metrics, status); returns its id."""
        self._trial_counter += 1
        trial_id = spec.trial_id or f"t{self._trial_counter:05d}"
        start = self._tick(1000)
        end = start + int(spec.wall_time_s * 1000)
        name = " ".join(str(spec.params.get(k, "?")) for k in (record.METHOD, record.BACKBONE, record.SEED))
        tags = {
            record.ROLE_TAG: record.ROLE_TRIAL, record.PARENT_TAG: parent_run_id, record.TAG_STUDY: self.study,
            record.TAG_TRIAL_ID: trial_id, record.TAG_SMOKE: str(spec.smoke).lower(),
            record.TAG_EPOCHS_DONE: str(len(spec.top1)),
        }
        if spec.resolved_status() is not None:
            tags[record.TAG_STATUS] = spec.resolved_status()
        run_id = self.client.create_run(self.experiment_id, start_time=start, run_name=f"{name} · {trial_id}",
                                        tags=tags).info.run_id
        metrics = _epoch_metrics(spec, start)
        if spec.final_metrics and spec.top1:
            metrics += [Metric(k, v, end, len(spec.top1)) for k, v in _final_metrics(spec).items()]
        params = [Param(k, str(v)) for k, v in spec.params.items()]
        batches = max(-(-len(metrics) // _MAX_METRICS), -(-len(params) // _MAX_PARAMS), 1)
        for i in range(batches):
            self.client.log_batch(run_id, metrics=metrics[i * _MAX_METRICS : (i + 1) * _MAX_METRICS],
                                  params=params[i * _MAX_PARAMS : (i + 1) * _MAX_PARAMS])
        if spec.mix_epochs:
            self._log_mix_grids(run_id, spec.mix_epochs)
        if spec.status != "RUNNING":  # a new run is RUNNING until terminated
            self.client.set_terminated(run_id, status=spec.status, end_time=end)
        self._trials.setdefault(parent_run_id, []).append((run_id, spec))
        return run_id

    def _log_mix_grids(self, run_id: str, epochs: Sequence[int]) -> None:
        from matplotlib.image import imsave

        with tempfile.TemporaryDirectory() as tmp:
            for epoch in epochs:
                path = Path(tmp) / f"mix_epoch{epoch:04d}.png"
                shade = (epoch % 7) / 7.0  # each epoch's grid looks different
                imsave(path, np.full((16, 32, 3), shade) * np.linspace(0.2, 1.0, 32)[None, :, None])
                self.client.log_artifact(run_id, str(path), artifact_path=record.MIX_ARTIFACT_DIR)

    def _tick(self, ms: int) -> int:
        self._clock_ms += ms
        return self._clock_ms


def _epoch_metrics(spec: TrialSpec, start: int) -> list[Metric]:
    series = {record.TOP1: spec.top1, **spec.extra_history}
    return [Metric(key, float(v), start + (e + 1) * 10, e + 1)
            for key, values in series.items() for e, v in enumerate(values)]


def _summary(spec: TrialSpec) -> float:
    return record.top1_summary(spec.top1, int(spec.params.get(record.EPOCHS, len(spec.top1))))


def _device_hours(spec: TrialSpec) -> float:
    return spec.device_hours if spec.device_hours is not None else spec.wall_time_s / 3600.0


def _final_metrics(spec: TrialSpec) -> dict[str, float]:
    return {
        record.TOP1_SUMMARY: _summary(spec), record.TOP1_FINAL: float(spec.top1[-1]),
        record.TOP1_BEST: float(max(spec.top1)), record.DEVICE_HOURS: _device_hours(spec),
        record.TRAIN_TIME_S: spec.wall_time_s, record.PEAK_MEM_MB: 512.0,
        record.IMAGES_PER_S: 1000.0,
    }


# --------------------------------------------------------------------------- plain MLflow calls

@dataclass(frozen=True)
class PlainRun:
    """A run as a person logs it by hand: any params, a `top1` per step (from `first_step`)."""

    params: Mapping[str, object]
    top1: Sequence[float]
    first_step: int = 0


def write_plain_study(tracking_uri: str, experiment: str, runs: Sequence[PlainRun]) -> str:
    """Nested runs under one parent, written with MLflow's fluent API and no automix tag; returns
    the experiment id."""
    with _tracking_uri(tracking_uri):
        experiment_id = mlflow.create_experiment(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name="my sweep"):
            for i, run in enumerate(runs):
                with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial {i}", nested=True):
                    mlflow.log_params(dict(run.params))
                    for step, value in enumerate(run.top1, start=run.first_step):
                        mlflow.log_metric(record.TOP1, float(value), step=step)
    return experiment_id


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    # The fluent API reads a process-wide URI (and sets MLFLOW_TRACKING_URI): put back what was there.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
