"""The same study read through an `http://` tracking server: same frames as from the SQLite file,
and the report's files reach the parent run through the server's artifact proxy."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import build_results, load_experiment
from analysis.report import write_report
from analysis.history import PUBLIC_PATH, SQL_PATH
from analysis.runs import LAYOUT_FOREIGN
from analysis.synthetic import (PlainRun, StudyWriter, TrialSpec, new_sqlite_store, trial_params,
                                write_plain_study)

pytestmark = pytest.mark.servers

helpers = pytest.importorskip("helpers.procs")  # tests/helpers: start and stop servers by pid


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    db_uri = new_sqlite_store(root / "mlflow.db")
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    proc, url = helpers.start_mlflow_server(db_uri, root / "artifacts", root / "server.log",
                                            mlflow_bin=mlflow_bin)
    try:
        writer = StudyWriter(url, "over-http")  # created through the server: mlflow-artifacts: URIs
        parent = writer.start_parent()
        for alpha, seed, top1 in ((0.5, 0, [10.0, 20.0, 30.0]), (2.0, 0, [12.0, 24.0, 36.0]),
                                  (2.0, 1, [13.0, 25.0, 37.0]), (1.0, 0, [11.0, 22.0, 29.0])):
            params = trial_params(method="automix", backbone="resnet18", dataset="cifar10", epochs=3,
                                  seed=seed, alpha=alpha)
            writer.add_trial(parent, TrialSpec(params, top1, extra_history={"train_loss": [3.0, 2.0, 1.0]},
                                               mix_epochs=(1, 3) if seed == 1 else ()))
        writer.finish_parent(parent)
        write_plain_study(url, "plain-over-http", [
            PlainRun({"method": "mixup", "backbone": "resnet18", "dataset": "cifar10", "epochs": 3, "seed": s},
                     [1.0 + s, 2.0, 3.0 + s]) for s in range(2)])
        yield url, db_uri, parent
    finally:
        helpers.stop(proc)


def test_http_and_sqlite_give_the_same_study(server):
    url, db_uri, _ = server
    over_http = load_experiment(url, "over-http", history_keys=("top1", "train_loss"))
    direct = load_experiment(db_uri, "over-http", history_keys=("top1", "train_loss"))
    assert len(over_http.trials) == 4
    assert (over_http.history_path, direct.history_path) == (PUBLIC_PATH, SQL_PATH)
    pd.testing.assert_frame_equal(over_http.trials, direct.trials)
    pd.testing.assert_frame_equal(over_http.history, direct.history)
    results = build_results(over_http)
    assert results.loc[0, "selection"] == "best of 3 configs by mean top-1"
    assert results.loc[0, "config"] == {"mix.alpha": 2.0}
    assert results.loc[0, "top1_mean"] == pytest.approx((24.0 + 25.0) / 2)  # median of 3 epochs
    assert results.loc[0, "n_seeds"] == 2


def test_report_artifacts_go_through_the_server(server, tmp_path):
    url, _, parent = server
    report = write_report(load_experiment(url, "over-http", history_keys=("top1",)), tmp_path)
    assert report.logged_to == parent
    names = {Path(a.path).name for a in MlflowClient(url).list_artifacts(parent, "analysis")}
    assert {"paper_table.md", "curves.png", "sensitivity.png"} <= names
    # 4 trials: too few for fANOVA (analysis.sensitivity.MIN_IMPORTANCE_TRIALS), and the report says so.
    assert "importance.png" not in names and "needs at least" in report.sensitivity.note
    # The mask gallery: grids downloaded through the server's artifact proxy, the image uploaded back.
    assert [e.artifact for e in report.gallery.entries] == ["mix/mix_epoch0003.png"]
    assert [a.path for a in MlflowClient(url).list_artifacts(parent, "gallery")] == ["gallery/gallery.png"]


def test_plain_mlflow_runs_over_http_give_the_same_table(server):
    url, db_uri, _ = server
    over_http = load_experiment(url, "plain-over-http")
    direct = load_experiment(db_uri, "plain-over-http")
    assert over_http.layout == LAYOUT_FOREIGN and len(over_http.trials) == 2
    pd.testing.assert_frame_equal(over_http.trials, direct.trials)
    pd.testing.assert_frame_equal(over_http.history, direct.history)
    pd.testing.assert_frame_equal(build_results(over_http), build_results(direct))
    # The medians of [1, 2, 3] and [2, 2, 4].
    assert build_results(over_http).loc[0, "top1_mean"] == pytest.approx(2.0)
