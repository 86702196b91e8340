"""Reading an MLflow tracking store: connect with a clear error, page through runs, artifacts.

With `analysis.history` (per-epoch metrics), the only modules of `analysis` that talk to MLflow's
client; an MLflow API change lands here.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import Experiment, Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.errors import ExperimentNotFound, TrackingUnavailable

# `search_runs` returns at most this many runs per call on every backend (SEARCH_MAX_RESULTS_THRESHOLD).
MAX_PAGE_SIZE = 50_000


def connect(tracking_uri: str, *, timeout_s: float = 5.0) -> MlflowClient:
    """A client for `tracking_uri`, after checking that the store is there.

    MLflow would otherwise create an empty SQLite database for a mistyped path, and retry an
    unreachable server for minutes; both become a `TrackingUnavailable` naming the URI.
    """
    parsed = urlparse(tracking_uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        _probe_server(tracking_uri, timeout_s)
    elif scheme == "sqlite":
        path = tracking_uri[len("sqlite:///") :] if tracking_uri.startswith("sqlite:///") else ""
        if path and path != ":memory:" and not Path(path).is_file():
            raise TrackingUnavailable(
                f"no MLflow database at {Path(path).resolve()} (tracking URI {tracking_uri!r}); "
                "check --tracking-uri or run a study first"
            )
    elif scheme in ("", "file"):
        raise TrackingUnavailable(
            f"tracking URI {tracking_uri!r} is a file store, which MLflow 3 no longer reads; "
            "use sqlite:///PATH/mlflow.db or http://HOST:PORT"
        )
    return MlflowClient(tracking_uri=tracking_uri)


def _probe_server(tracking_uri: str, timeout_s: float) -> None:
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        reason = f"HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = str(getattr(e, "reason", e))
    raise TrackingUnavailable(
        f"cannot reach the MLflow tracking server at {tracking_uri} ({reason}); "
        "is `mlflow server` running there?"
    )


def find_experiment(client: MlflowClient, name: str) -> Experiment:
    """The active experiment called `name`, or an error listing the experiments that exist."""
    try:
        experiment = client.get_experiment_by_name(name)
    except MlflowException as e:
        raise TrackingUnavailable(f"cannot read experiments from {client.tracking_uri}: {e}") from e
    if experiment is None or experiment.lifecycle_stage != "active":
        existing = [e.name for e in client.search_experiments(max_results=100)]
        shown = ", ".join(repr(n) for n in existing[:20]) or "none"
        state = "was deleted" if experiment is not None else "does not exist"
        raise ExperimentNotFound(
            f"experiment {name!r} {state} at {client.tracking_uri}; experiments there: {shown}"
        )
    return experiment


def iter_runs(
    client: MlflowClient, experiment_id: str, filter_string: str = "", *, page_size: int = 1000
) -> Iterator[Run]:
    """Every active run of the experiment matching `filter_string`, one `search_runs` page at a time.

    A single `search_runs` call stops at `max_results`; following `page_token` is what makes a
    study of thousands of trials load completely.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be in [1, {MAX_PAGE_SIZE}], got {page_size}")
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=page_size,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def log_files(client: MlflowClient, run_id: str, paths: Sequence[Path], artifact_path: str) -> None:
    """Attach local files to a run as artifacts under `artifact_path` (shown in the MLflow UI)."""
    try:
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    except MlflowException as e:
        raise TrackingUnavailable(f"logging artifacts to run {run_id} failed: {e.message}") from e


def list_artifact_paths(client: MlflowClient, run_id: str, folder: str) -> list[str]:
    """Paths of the files directly under `folder` of a run's artifacts ([] when there are none)."""
    try:
        return [a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir]
    except (MlflowException, OSError):
        return []


def download_artifact(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path:
    """One artifact of a run, copied into the folder `dst`; returns the local file."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except MlflowException as e:
        raise TrackingUnavailable(f"downloading {path} of run {run_id} failed: {e.message}") from e
