"""The table from a real study: `tune_runner.py studies/quickstart.yaml --smoke-test`.

`smoke_study_store` (tests/conftest.py, session scope) runs that study once and yields an object with
`tracking_uri` and `experiment`. Numbers are recomputed here through MLflow's own client.
"""

from __future__ import annotations

import math
import statistics

import pytest
from mlflow.tracking import MlflowClient

from analysis import build_results, load_experiment, render
from analysis.paper_table import main as paper_table_main
from analysis.published import load_reference
from analysis.report import write_report

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def smoke(smoke_study_store):
    return smoke_study_store.tracking_uri, smoke_study_store.experiment


@pytest.fixture(scope="module")
def study(smoke):
    return load_experiment(*smoke)


def test_every_trial_is_loaded_and_the_finished_ones_are_complete(study, smoke):
    client = MlflowClient(smoke[0])
    experiment = client.get_experiment_by_name(smoke[1])
    runs = client.search_runs([experiment.experiment_id], "tags.`automix.role` = 'trial'")
    assert len(study.trials) == len(runs) > 0
    finished = study.trials[study.trials["status"] == "FINISHED"]
    assert not study.complete_trials.empty, study.trials[["run_name", "status", "problem"]].to_string()
    assert set(study.complete_trials["run_id"]) <= set(finished["run_id"])
    assert len(study.parents) >= 1


def test_summaries_match_mlflow_history(study, smoke):
    client = MlflowClient(smoke[0])
    for _, trial in study.complete_trials.iterrows():
        by_epoch = {}
        for m in sorted(client.get_metric_history(trial["run_id"], "top1"), key=lambda m: m.timestamp):
            by_epoch[m.step] = m.value  # a re-logged epoch (resume): the later value
        values = [by_epoch[e] for e in sorted(by_epoch)]
        window = 5 if trial["epochs_planned"] <= 100 else 10
        assert trial["epochs_run"] == max(by_epoch)
        assert trial["top1_summary"] == pytest.approx(statistics.median(values[-window:]))
        logged = client.get_run(trial["run_id"]).data.metrics
        if "top1_final" in logged:
            assert trial["top1_final"] == pytest.approx(logged["top1_final"])
        if "top1_best" in logged:
            assert trial["top1_best"] == pytest.approx(logged["top1_best"])


def test_table_cells_average_their_trials(study):
    results = build_results(study)
    complete = study.complete_trials.set_index("run_id")
    reference = load_reference()
    assert set().union(*map(set, results["run_ids"])) <= set(complete.index)
    for _, row in results.iterrows():
        summaries = complete.loc[list(row["run_ids"]), "top1_summary"]
        assert row["n_seeds"] == len(summaries)
        assert row["top1_mean"] == pytest.approx(summaries.mean())
        assert 0.0 <= row["top1_mean"] <= 100.0
        hit = reference[(reference["dataset"] == row["dataset"]) & (reference["backbone"] == row["backbone"])
                        & (reference["epochs"] == row["epochs"]) & (reference["method"] == row["method"])]
        if hit.empty:
            assert math.isnan(row["published"])  # e.g. digits: no published row, an empty cell
        else:
            assert row["published"] == hit["top1"].iloc[0]
    text = render(results, "md", study)
    assert text.startswith("| Dataset | Backbone | Params (M) | Epochs |")
    # A --smoke-test launch: shown in the paper's layout, every row marked as not a result.
    assert results["smoke"].all()
    rows = [line for line in text.splitlines()[2:] if line.startswith("|")]
    assert rows and all(line.rstrip().endswith("| smoke test: not a result |") for line in rows)


def test_cli_and_report_on_the_smoke_study(smoke, tmp_path, capsys):
    assert paper_table_main(["--tracking-uri", smoke[0], "--experiment", smoke[1], "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("| Dataset |")
    # The store is shared with other tests: write files, but do not attach them to its parent run.
    report = write_report(load_experiment(*smoke), tmp_path, log_to_mlflow=False)
    assert report.logged_to is None
    assert (tmp_path / "paper_table.md").is_file() and "curves" in report.sensitivity.figures
