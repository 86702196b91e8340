"""The mask gallery (the last mixed-sample grid of the best trials) and accuracy against cost, both
logged to the study's parent run by `analysis.report`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import load_experiment, pareto_front
from analysis.gallery import make_gallery
from analysis.report import main as report_main
from analysis.report import write_report
from analysis.synthetic import StudyWriter, TrialSpec, trial_params
from automix import record

PNG = b"\x89PNG\r\n\x1a\n"
# name: (top1 per epoch, device-hours, epochs with a mix grid)
TRIALS = {
    "best": ([50, 60, 70], 4.0, (1, 2, 3)),
    "second": ([50, 55, 65], 1.0, (3, 1)),  # logged out of order: the highest epoch still wins
    "no-grid": ([60, 62, 64], 0.5, ()),
    "worst": ([10, 20, 30], 2.0, (2,)),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    writer = StudyWriter.in_new_store(tmp_path_factory.mktemp("gallery"), "gallery")
    parent = writer.start_parent()
    ids = {}
    for i, (name, (top1, hours, grids)) in enumerate(TRIALS.items()):
        params = trial_params(method="automix", backbone="resnet18", dataset="cifar10", epochs=3, seed=i)
        ids[name] = writer.add_trial(parent, TrialSpec(params, top1, trial_id=name, device_hours=hours,
                                                       mix_epochs=grids))
    writer.finish_parent(parent)
    return writer.tracking_uri, ids, parent


def test_gallery_takes_the_last_grid_of_the_best_trials(store, tmp_path):
    uri, ids, _ = store
    gallery = make_gallery(load_experiment(uri, "gallery"), tmp_path / "g.png", max_trials=2)
    assert [e.run_id for e in gallery.entries] == [ids["best"], ids["second"]]  # no-grid is skipped
    assert [e.artifact for e in gallery.entries] == ["mix/mix_epoch0003.png", "mix/mix_epoch0003.png"]
    assert gallery.entries[0].top1_summary == 60.0
    assert gallery.path.read_bytes()[:8] == PNG


def test_pareto_front():
    trials = pd.DataFrame({record.DEVICE_HOURS: [1.0, 2.0, 2.0, 3.0, 0.5, float("nan")],
                           "top1_summary": [70.0, 72.0, 71.0, 72.0, 60.0, 99.0]})
    assert pareto_front(trials).tolist() == [True, True, False, False, True, False]


def test_report_logs_gallery_and_cost_to_the_parent(store, tmp_path):
    uri, ids, parent = store
    report = write_report(load_experiment(uri, "gallery"), tmp_path)
    assert report.logged_to == parent and report.cost_figure == tmp_path / "cost.png"
    client = MlflowClient(uri)
    gallery = client.list_artifacts(parent, record.GALLERY_ARTIFACT_DIR)
    assert [a.path for a in gallery] == ["gallery/gallery.png"]
    logged = {Path(a.path).name for a in client.list_artifacts(parent, "analysis")}
    assert {"cost.png", "trials.png", "paper_table.md"} <= logged


def test_report_cli_names_the_gallery(store, tmp_path, capsys):
    uri, _, _ = store
    assert report_main(["--tracking-uri", uri, "--experiment", "gallery", "--out-dir", str(tmp_path),
                        "--no-log"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "gallery.png") in out and str(tmp_path / "cost.png") in out
    assert "automix (device-h)" in out.splitlines()[0]
