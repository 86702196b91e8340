"""Per-epoch metric histories of many runs, through a guarded SQL fast path or MLflow's public API.

MLflow's public per-run `get_metric_history` costs one round trip per (run, metric); for a study of
thousands of trials that is many times a whole `search_runs`. On a SQL-backed store (SQLite,
PostgreSQL, MySQL) one query per chunk of runs reads the metrics table instead. That table is not
MLflow's public API, so the fast path runs only after checking the MLflow major version and the
table's columns, and *any* error on it falls back to the public path. Which path ran is returned
(`History.path`), logged, and kept on the loaded study (`StudyData.history_path`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("run_id", "key", "step", "value", "timestamp")
SQL_PATH = "sql"  # one query per chunk of runs on the store's metrics table
PUBLIC_PATH = "public"  # MlflowClient.get_metric_history per (run, key)
# The MLflow major version and metrics columns the fast path was written against (MLflow 3.x).
SQL_MLFLOW_MAJOR = 3
SQL_METRIC_COLUMNS = ("run_uuid", "key", "step", "value", "timestamp", "is_nan")
_SQL_CHUNK = 900  # run ids per `IN (...)` list: far below SQLite's bound-parameter limit


@dataclass(frozen=True)
class History:
    """Logged values (columns HISTORY_COLUMNS), the path that read them and why that path."""

    frame: pd.DataFrame
    path: str
    reason: str


def metric_histories(
    client: MlflowClient, run_ids: Sequence[str], keys: Sequence[str], *, bulk: bool = True
) -> History:
    """Every logged value of `keys` for `run_ids`. `bulk=False` forces the public path."""
    run_ids, keys = list(run_ids), list(keys)
    if not run_ids or not keys:
        return History(empty_history(), PUBLIC_PATH, "nothing to read")
    reason = "bulk reading turned off" if not bulk else ""
    if bulk:
        try:
            engine = sql_engine(client)
            check_sql_schema(engine)
            frame = sql_histories(engine, run_ids, keys)
        except Exception as e:  # noqa: BLE001 - a private layout changed: the public path still works
            reason = f"SQL fast path unavailable ({type(e).__name__}: {e})"
        else:
            why = f"SQL fast path (MLflow {mlflow.__version__}, metrics table checked)"
            log.info("metric history: %s", why)
            return History(frame, SQL_PATH, why)
    log.info("metric history: public API (%s)", reason)
    return History(public_histories(client, run_ids, keys), PUBLIC_PATH, reason)


def empty_history() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": pd.Series(dtype=object),
        "key": pd.Series(dtype=object),
        "step": pd.Series(dtype="int64"),
        "value": pd.Series(dtype="float64"),
        "timestamp": pd.Series(dtype="int64"),
    })


def sql_engine(client: MlflowClient):
    """The SQLAlchemy engine behind `client`; raises when there is none (an http:// store)."""
    major = int(str(mlflow.__version__).split(".")[0])
    if major != SQL_MLFLOW_MAJOR:
        raise RuntimeError(f"written for MLflow {SQL_MLFLOW_MAJOR}.x, found {mlflow.__version__}")
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None:
        raise RuntimeError(f"{type(store).__name__} store has no SQL engine")
    return engine


def check_sql_schema(engine) -> None:
    """Raise unless the store's `metrics` table has the columns the fast path reads."""
    from sqlalchemy import inspect

    found = {c["name"] for c in inspect(engine).get_columns("metrics")}
    missing = [c for c in SQL_METRIC_COLUMNS if c not in found]
    if missing:
        raise RuntimeError(f"metrics table lacks columns {missing} (has {sorted(found)})")


def sql_histories(engine, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    from sqlalchemy import column, select, table

    metrics = table("metrics", *(column(c) for c in SQL_METRIC_COLUMNS))
    rows: list = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for i in range(0, len(run_ids), _SQL_CHUNK):
            chunk = run_ids[i : i + _SQL_CHUNK]
            stmt = select(*metrics.c).where(metrics.c.run_uuid.in_(chunk), metrics.c.key.in_(keys))
            # Compiled with its values inlined (escaped by the dialect) and run on the DB-API cursor:
            # at 10^5-10^6 values SQLAlchemy's per-row processing costs twice the query itself.
            cursor.execute(str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})))
            rows.extend(cursor.fetchall())
    finally:
        raw.close()
    if not rows:
        return empty_history()
    frame = pd.DataFrame(rows, columns=[*HISTORY_COLUMNS, "is_nan"])
    # MLflow stores NaN as (value 0, is_nan true) because the column is NOT NULL.
    frame["value"] = frame["value"].astype("float64").mask(frame.pop("is_nan").astype(bool))
    return frame.astype({"step": "int64", "timestamp": "int64"})


def public_histories(client: MlflowClient, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    pairs = [(run_id, key) for run_id in run_ids for key in keys]

    def fetch(pair: tuple[str, str]) -> list[tuple]:
        run_id, key = pair
        return [(run_id, key, m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = [row for chunk in pool.map(fetch, pairs) for row in chunk]
    if not rows:
        return empty_history()
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.astype({"step": "int64", "value": "float64", "timestamp": "int64"})
