"""Write studies with known numbers into an MLflow store, in the layout `studyrunner` uses.

Used by the tests and benchmarks/analysis_scale.py: every value written here can be checked
against what `analysis.loading` reads back. The layout is the one in docs/architecture.md
("MLflow layout"): one parent run per launch tagged `automix.role=study`, one child per trial tagged
`automix.role=trial` with `mlflow.parentRunId`, per-epoch metrics at `step = epoch`, and
`top1_final` / `top1_best` at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

ROLE_TAG = "automix.role"
PARENT_TAG = "mlflow.parentRunId"
# MlflowClient.log_batch accepts at most 1000 metrics and 100 params per call.
_MAX_METRICS = 1000
_MAX_PARAMS = 100


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
    """One trial to write: its params (short and dotted names) and its per-epoch `top1`.

    `status` is an MLflow run status ("FINISHED", "FAILED", "RUNNING", "KILLED"); a RUNNING trial is
    left without an end time. `final_metrics` controls whether `top1_final`/`top1_best` are logged
    (a crashed trial never reaches them).
    """

    params: Mapping[str, object]
    top1: Sequence[float]
    status: str = "FINISHED"
    trial_id: str = ""
    wall_time_s: float = 60.0
    final_metrics: bool = True
    extra_history: Mapping[str, Sequence[float]] = field(default_factory=dict)


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
) -> dict[str, object]:
    """The params a `studyrunner` trial logs: short names plus the dotted config keys they mirror."""
    params: dict[str, object] = {
        "method": method,
        "backbone": backbone,
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "alpha": alpha,
        "mixblock_lr": mixblock_lr,
        "momentum": momentum,
        "workers": 1,
        "mix.alpha": alpha,
        "automix.momentum": momentum,
        "optim.lr": lr,
        "optim.mixblock_lr": mixblock_lr,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.seed": seed,
        "train.channels_last": False,
        "train.max_steps_per_epoch": None,
        "data.name": dataset,
        "model.backbone": backbone,
        "model.width": 64,
    }
    params.update(extra or {})
    return params


class StudyWriter:
    """Creates one experiment (the study) and writes parent and trial runs into it."""

    def __init__(self, tracking_uri: str, study: str, *, artifact_location: str | None = None):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.study = study
        existing = self.client.get_experiment_by_name(study)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            self.experiment_id = self.client.create_experiment(
                study, artifact_location=artifact_location
            )
        self.tracking_uri = tracking_uri
        self._clock_ms = 1_700_000_000_000
        self._trial_counter = 0

    @classmethod
    def in_new_store(cls, folder: str | os.PathLike, study: str) -> "StudyWriter":
        """A writer of `study` in a new SQLite store `folder/mlflow.db`, artifacts under `folder/artifacts`."""
        folder = Path(folder)
        return cls(new_sqlite_store(folder / "mlflow.db"), study, artifact_location=str(folder / "artifacts"))

    def start_parent(self, *, study_hash: str = "0" * 64) -> str:
        """A parent run for one launch of the study; returns its run id."""
        run = self.client.create_run(
            self.experiment_id,
            start_time=self._tick(1000),
            run_name=f"{self.study}@2024-01-01T00:00:00Z",
            tags={
                ROLE_TAG: "study",
                "study": self.study,
                "study_hash": study_hash,
                "study_file": f"studies/{self.study}.yaml",
            },
        )
        return run.info.run_id

    def finish_parent(self, parent_run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(parent_run_id, status=status, end_time=self._tick(1000))

    def add_trial(self, parent_run_id: str, spec: TrialSpec) -> str:
        """Writes one trial run (params, per-epoch metrics, final metrics, status); returns its id."""
        self._trial_counter += 1
        trial_id = spec.trial_id or f"t{self._trial_counter:05d}"
        start = self._tick(1000)
        end = start + int(spec.wall_time_s * 1000)
        name = "-".join(str(spec.params.get(k, "?")) for k in ("method", "backbone", "seed"))
        run = self.client.create_run(
            self.experiment_id,
            start_time=start,
            run_name=f"{name}-{trial_id}",
            tags={
                ROLE_TAG: "trial",
                PARENT_TAG: parent_run_id,
                "study": self.study,
                "trial_id": trial_id,
                "ray_node_id": "node0",
            },
        )
        run_id = run.info.run_id
        n = len(spec.top1)
        metrics = [
            Metric("top1", float(v), start + (e + 1) * 10, e + 1) for e, v in enumerate(spec.top1)
        ]
        for key, values in spec.extra_history.items():
            metrics += [
                Metric(key, float(v), start + (e + 1) * 10, e + 1) for e, v in enumerate(values)
            ]
        if spec.final_metrics and n:
            metrics.append(Metric("top1_final", float(spec.top1[-1]), end, n))
            metrics.append(Metric("top1_best", float(max(spec.top1)), end, n))
        params = [Param(k, _param_str(v)) for k, v in spec.params.items()]
        batches = max(-(-len(metrics) // _MAX_METRICS), -(-len(params) // _MAX_PARAMS), 1)
        for i in range(batches):
            self.client.log_batch(
                run_id,
                metrics=metrics[i * _MAX_METRICS : (i + 1) * _MAX_METRICS],
                params=params[i * _MAX_PARAMS : (i + 1) * _MAX_PARAMS],
                tags=[RunTag("mlflow.note.content", "synthetic trial")] if i == 0 else [],
            )
        if spec.status != "RUNNING":  # a new run is RUNNING until terminated
            self.client.set_terminated(run_id, status=spec.status, end_time=end)
        return run_id

    def _tick(self, ms: int) -> int:
        self._clock_ms += ms
        return self._clock_ms


def _param_str(value: object) -> str:
    # The study runner logs str(value) of the resolved config, as mlflow.log_param does.
    return str(value)


