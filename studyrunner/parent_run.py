"""The parent run of a study launch: one per launch, its trials nest under it (tag
``mlflow.parentRunId``). When the launch ends it says what the launch found: the best finished
trial (``top1_summary`` and the tags ``best_run_id`` / ``best_trial_id``), the summed cost and how
the trials ended. ``--resume`` reopens the same parent and finishes it again without logging any
value twice.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

from automix import record
from automix.config import dump_yaml

from .uris import TrackingUnavailable, share_runs_view

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .study import Study

PARAM_BATCH = 100  # MLflow's log_batch takes at most 100 params
# Columns of the printed runs URL besides the swept params.
VIEW_METRICS = (record.TOP1_SUMMARY, record.TOP1_BEST, record.DEVICE_HOURS)


@dataclass(frozen=True)
class BestTrial:
    """The launch's best finished trial, by ``top1_summary``."""
    run_id: str
    trial_id: str
    top1_summary: float


def client_for(uri: str) -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client: "MlflowClient", name: str) -> str:
    """The id of experiment ``name``, created on first use. With SQLite the artifacts go next to the
    database (``mlartifacts/<name>``) rather than into the working directory."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise TrackingUnavailable(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments "
                                      f"restore --experiment-id {exp.experiment_id}) or choose another name")
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


def log_params(client: "MlflowClient", run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), PARAM_BATCH):
        client.log_batch(run_id, params=items[i:i + PARAM_BATCH])


# --------------------------------------------------------------------------- start, reopen

def start_parent(client: "MlflowClient", experiment_id: str, study: "Study", experiment_path: str) -> str:
    now = datetime.now(timezone.utc)
    swept = ",".join(p.key for p in study.sampled)
    run = client.create_run(
        experiment_id, run_name=f"{study.name}@{now:%Y-%m-%dT%H:%M:%SZ}",
        tags={record.ROLE_TAG: record.ROLE_STUDY, record.TAG_STUDY: study.name,
              record.TAG_STUDY_HASH: study.sha256, record.TAG_STUDY_FILE: study.source,
              record.TAG_SMOKE: str(study.smoke_test).lower(), record.TAG_SWEPT: swept,
              "ray_experiment_path": experiment_path,
              "mlflow.note.content": study.description or f"study {study.name}"})
    r = study.resources
    log_params(client, run.info.run_id, record.run_params({
        "search_algorithm": study.search.algorithm, "search_seed": study.search.seed,
        "scheduler": study.scheduler.name, "num_samples": study.num_samples,
        "total_trials": study.total_trials(), "max_concurrent_trials": study.max_concurrent_trials,
        "space": "; ".join(f"{p.key}~{p.dist}" for p in study.sampled) or "none",
    }, {"workers": r.workers, "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": r.gpus_per_worker}))
    with tempfile.TemporaryDirectory() as tmp:
        if Path(study.source).is_file():
            client.log_artifact(run.info.run_id, study.source)
        base = Path(tmp) / "base_config.yaml"
        base.write_text(dump_yaml(study.base_config()))
        client.log_artifact(run.info.run_id, str(base))
    share_runs_view(client, experiment_id, [p.key for p in study.sampled] or list(record.REQUIRED_PARAMS),
                    VIEW_METRICS)
    return run.info.run_id


def reopen_parent(client: "MlflowClient", run_id: str) -> None:
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "resumed_at", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


# --------------------------------------------------------------------------- finish

def finish_parent(client: "MlflowClient", parent_run_id: str, experiment_id: str, *, status: str,
                  counts: Mapping[str, int], wall_time_s: float) -> BestTrial | None:
    """Record what the launch found on its parent run and terminate it with ``status``
    (``FINISHED`` only when every trial ended; the runner passes ``FAILED`` or ``KILLED`` otherwise).

    ``counts``: trials per status word (:data:`automix.record.COUNT_TAGS` keys). The best trial is
    the finished trial (tag ``trial_status=finished``) with the highest ``top1_summary``; trials
    stopped early ran fewer epochs and do not compete. Returns it, or None when no trial finished.
    """
    from mlflow.entities import RunTag

    children = list(_children(client, experiment_id, parent_run_id))
    best = _best(children)
    device_hours = sum(c.data.metrics.get(record.DEVICE_HOURS, 0.0) for c in children)
    metrics = {record.DEVICE_HOURS: device_hours, record.WALL_TIME_S: float(wall_time_s)}
    tags = {record.COUNT_TAGS[k]: str(int(counts.get(k, 0))) for k in record.COUNT_TAGS}
    if best is not None:
        metrics[record.TOP1_SUMMARY] = best.top1_summary
        tags[record.TAG_BEST_RUN_ID] = best.run_id
        tags[record.TAG_BEST_TRIAL_ID] = best.trial_id
    _log_new_values(client, parent_run_id, metrics)
    client.log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(parent_run_id, status)
    return best


def _children(client: "MlflowClient", experiment_id: str, parent_run_id: str) -> Iterator:
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{record.PARENT_TAG}` = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _best(children) -> BestTrial | None:
    finished = [c for c in children if c.data.tags.get(record.TAG_STATUS) == record.FINISHED
                and math.isfinite(c.data.metrics.get(record.TOP1_SUMMARY, math.nan))]
    if not finished:
        return None
    top = max(finished, key=lambda c: c.data.metrics[record.TOP1_SUMMARY])
    return BestTrial(top.info.run_id, top.data.tags.get(record.TAG_TRIAL_ID, ""),
                     float(top.data.metrics[record.TOP1_SUMMARY]))


def _log_new_values(client: "MlflowClient", run_id: str, metrics: Mapping[str, float]) -> None:
    """Log each metric unless its history already ends with that value (a resumed launch that found
    nothing new); a changed value is logged at the next step, so the history shows every launch."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = []
    for key, value in metrics.items():
        if not math.isfinite(value):
            continue
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if history and history[-1].value == value:
            continue
        batch.append(Metric(key, float(value), now, history[-1].step + 1 if history else 0))
    if batch:
        client.log_batch(run_id, metrics=batch)
