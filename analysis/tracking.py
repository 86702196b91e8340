"""Reading an MLflow tracking store: connect with a clear error, page through runs, bulk metric history.

This is the only module of `analysis` that talks to MLflow's client; an MLflow API change lands here.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from mlflow.entities import Experiment, Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.errors import ExperimentNotFound, TrackingUnavailable

# `search_runs` returns at most this many runs per call on every backend (SEARCH_MAX_RESULTS_THRESHOLD).
MAX_PAGE_SIZE = 50_000
HISTORY_COLUMNS = ("run_id", "key", "step", "value", "timestamp")
# Run ids per SQL `IN (...)` list: far below SQLite's 32,766 bound-parameter limit.
_SQL_CHUNK = 900


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


def metric_histories(
    client: MlflowClient, run_ids: Sequence[str], keys: Sequence[str], *, bulk: bool = True
) -> pd.DataFrame:
    """Every logged value of `keys` for `run_ids`: columns run_id, key, step, value, timestamp.

    On a SQL-backed store (SQLite, PostgreSQL, MySQL) one query per chunk of runs reads the metric
    table directly: MLflow's own bulk call builds an entity per value and is several times slower
    than a whole `search_runs`. Other stores (an `http://` server) go through the public per-run
    `get_metric_history`, in a thread pool. `bulk=False` forces that path.
    """
    run_ids, keys = list(run_ids), list(keys)
    if not run_ids or not keys:
        return _empty_history()
    engine = _sql_engine(client) if bulk else None
    if engine is not None:
        return _sql_histories(engine, run_ids, keys)
    return _per_run_histories(client, run_ids, keys)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": pd.Series(dtype=object),
            "key": pd.Series(dtype=object),
            "step": pd.Series(dtype="int64"),
            "value": pd.Series(dtype="float64"),
            "timestamp": pd.Series(dtype="int64"),
        }
    )


def _sql_engine(client: MlflowClient):
    # The SQLAlchemy store behind a client is not public API; anything unexpected means "use the
    # public path", never an error.
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None:
        return None
    try:
        from mlflow.store.tracking.dbmodels.models import SqlMetric  # noqa: F401
    except ImportError:
        return None
    return engine


def _sql_histories(engine, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy import select

    columns = (SqlMetric.run_uuid, SqlMetric.key, SqlMetric.step, SqlMetric.value,
               SqlMetric.timestamp, SqlMetric.is_nan)
    rows: list = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for i in range(0, len(run_ids), _SQL_CHUNK):
            chunk = run_ids[i : i + _SQL_CHUNK]
            stmt = select(*columns).where(SqlMetric.run_uuid.in_(chunk), SqlMetric.key.in_(keys))
            # Compiled with its values inlined (escaped by the dialect) and run on the DB-API cursor:
            # at 10^5-10^6 values SQLAlchemy's per-row processing costs twice the query itself.
            cursor.execute(str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})))
            rows.extend(cursor.fetchall())
    finally:
        raw.close()
    if not rows:
        return _empty_history()
    frame = pd.DataFrame(rows, columns=[*HISTORY_COLUMNS, "is_nan"])
    # MLflow stores NaN as (value 0, is_nan true) because the column is NOT NULL.
    frame["value"] = frame["value"].astype("float64").mask(frame.pop("is_nan").astype(bool))
    return frame.astype({"step": "int64", "timestamp": "int64"})


def _per_run_histories(client: MlflowClient, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    pairs = [(run_id, key) for run_id in run_ids for key in keys]

    def fetch(pair: tuple[str, str]) -> list[tuple]:
        run_id, key = pair
        return [(run_id, key, m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = [row for chunk in pool.map(fetch, pairs) for row in chunk]
    if not rows:
        return _empty_history()
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.astype({"step": "int64", "value": "float64", "timestamp": "int64"})


def log_files(client: MlflowClient, run_id: str, paths: Sequence[Path], artifact_path: str) -> None:
    """Attach local files to a run as artifacts under `artifact_path` (shown in the MLflow UI)."""
    try:
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    except MlflowException as e:
        raise TrackingUnavailable(f"logging artifacts to run {run_id} failed: {e.message}") from e
