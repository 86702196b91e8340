"""Bad input gives one clear line on stderr and exit status 2, never a traceback or a hang."""

from __future__ import annotations

import socket
import time
from contextlib import closing

import pytest

from analysis import ExperimentNotFound, NoResults, TrackingUnavailable, build_results, load_experiment
from analysis.paper_table import main as paper_table_main
from analysis.report import main as report_main
from analysis.synthetic import StudyWriter, TrialSpec, trial_params

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    writer = StudyWriter.in_new_store(root, "exists")
    uri = writer.tracking_uri
    parent = writer.start_parent()
    params = trial_params(method="automix", backbone="resnet18", dataset="cifar10", epochs=3, seed=0)
    writer.add_trial(parent, TrialSpec(params, [1.0, 2.0], status="FAILED", final_metrics=False))
    StudyWriter(uri, "empty", artifact_location=str(root / "artifacts"))
    return uri


def closed_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_experiment_names_it_and_lists_the_others(store):
    with pytest.raises(ExperimentNotFound, match=r"experiment 'nope' does not exist .*'exists'"):
        load_experiment(store, "nope")


def test_missing_sqlite_file_is_not_created(tmp_path):
    db = tmp_path / "typo.db"
    with pytest.raises(TrackingUnavailable, match="no MLflow database at"):
        load_experiment(f"sqlite:///{db}", "x")
    assert not db.exists()


def test_unreachable_server_fails_fast():
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="cannot reach the MLflow tracking server"):
        load_experiment(f"http://127.0.0.1:{closed_port()}", "x")
    assert time.monotonic() - start < 10


def test_file_store_uri_is_refused(tmp_path):
    with pytest.raises(TrackingUnavailable, match="file store"):
        load_experiment(str(tmp_path / "mlruns"), "x")


def test_study_without_complete_trials_says_why(store):
    study = load_experiment(store, "exists")
    with pytest.raises(NoResults, match=r"no trial that finished .*1 failed"):
        build_results(study)
    with pytest.raises(NoResults, match="0 trial runs"):
        build_results(load_experiment(store, "empty"))


@pytest.mark.parametrize("main", [paper_table_main, report_main])
def test_cli_prints_one_line_and_exits_2(main, store, capsys, tmp_path):
    cases = [
        ["--tracking-uri", store, "--experiment", "nope"],
        ["--tracking-uri", f"http://127.0.0.1:{closed_port()}", "--experiment", "x"],
        ["--tracking-uri", f"sqlite:///{tmp_path / 'missing.db'}", "--experiment", "x"],
    ]
    for argv in cases:
        if main is report_main:
            argv = [*argv, "--out-dir", str(tmp_path / "out")]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
        assert "Traceback" not in captured.err
