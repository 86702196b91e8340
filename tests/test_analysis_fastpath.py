"""The SQL fast path for metric histories runs only after its checks, says so, and falls back to
MLflow's public API on any error with the same frames."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import sqlalchemy

from analysis import history, load_experiment
from analysis.synthetic import StudyWriter, TrialSpec, trial_params

STUDY = "fast"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    writer = StudyWriter.in_new_store(tmp_path_factory.mktemp("fast"), STUDY)
    parent = writer.start_parent()
    for seed in range(4):
        params = trial_params(method="automix", backbone="resnet18", dataset="cifar10", epochs=3, seed=seed)
        loss = [math.nan if seed == 0 else 2.0, 1.5, 1.0]  # MLflow stores NaN apart (is_nan)
        writer.add_trial(parent, TrialSpec(params, [10.0 + seed, 20.0, 30.0 - seed],
                                           extra_history={"train_loss": loss, "sched_lr": [0.1, 0.05, 0.0]}))
    writer.finish_parent(parent)
    return writer.tracking_uri


KEYS = ("top1", "train_loss", "sched_lr")


def assert_same(a, b):
    pd.testing.assert_frame_equal(a.trials, b.trials)
    pd.testing.assert_frame_equal(a.history, b.history)


def test_fast_path_runs_on_sqlite_and_says_so(store, caplog):
    with caplog.at_level("INFO", logger="analysis.history"):
        study = load_experiment(store, STUDY, history_keys=KEYS)
    assert study.history_path == history.SQL_PATH
    assert "SQL fast path" in caplog.text
    assert study.history["train_loss"].isna().sum() == 1


@pytest.mark.parametrize("broken", ["check_sql_schema", "sql_histories", "sql_engine"])
def test_any_error_on_the_fast_path_falls_back_to_the_same_frames(store, monkeypatch, caplog, broken):
    fast = load_experiment(store, STUDY, history_keys=KEYS)

    def boom(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("no such column: metrics.is_nan"))

    monkeypatch.setattr(history, broken, boom)
    with caplog.at_level("INFO", logger="analysis.history"):
        slow = load_experiment(store, STUDY, history_keys=KEYS)
    assert slow.history_path == history.PUBLIC_PATH
    assert "public API (SQL fast path unavailable (OperationalError" in caplog.text
    assert_same(fast, slow)


def test_forced_public_path_gives_the_same_frames(store):
    fast = load_experiment(store, STUDY, history_keys=KEYS)
    slow = load_experiment(store, STUDY, history_keys=KEYS, bulk_history=False)
    assert slow.history_path == history.PUBLIC_PATH
    assert_same(fast, slow)


def test_another_mlflow_major_version_is_not_trusted(store, monkeypatch):
    monkeypatch.setattr(history.mlflow, "__version__", "4.0.0")
    assert load_experiment(store, STUDY, history_keys=KEYS).history_path == history.PUBLIC_PATH


def test_schema_check_names_the_missing_column(tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE metrics (key TEXT, value REAL, timestamp INTEGER, "
                                     "run_uuid TEXT, step INTEGER)"))
    with pytest.raises(RuntimeError, match=r"lacks columns \['is_nan'\]"):
        history.check_sql_schema(engine)
