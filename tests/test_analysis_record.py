"""The analysis reads the record of automix/record.py: the summary rule, logged summaries, cost,
trial statuses, parents, and smoke-test launches shown in the paper's layout but marked."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import build_results, load_experiment, paper_layout, render
from analysis.summary import summaries
from analysis.synthetic import StudyWriter, TrialSpec, trial_params
from automix import record

STUDY = "record"


def test_vectorised_summary_agrees_with_the_record_rule():
    rng = random.Random(7)
    rows, expected, windows = [], {}, {}
    for i in range(200):
        planned = rng.choice([1, 3, 5, 6, 99, 100, 101, 300, 800])
        n = rng.randint(1, min(planned, 40))
        values = [rng.uniform(0, 100) for _ in range(n)]
        run = f"r{i}"
        rows += [{"run_id": run, "epoch": e + 1, "top1": v} for e, v in enumerate(values)]
        expected[run] = record.top1_summary(values, planned)
        windows[run] = record.summary_window(planned)
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter
    got = summaries(frame, pd.Series(windows))
    assert got.to_dict() == pytest.approx(expected)


def setting(**changes):
    base = dict(method="automix", backbone="resnet18", dataset="imagenet", epochs=6, seed=0)
    return trial_params(**{**base, **changes})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    writer = StudyWriter.in_new_store(tmp_path_factory.mktemp("record"), STUDY)
    ids = {}
    parent = writer.start_parent()
    ids["a"] = writer.add_trial(parent, TrialSpec(setting(seed=0), [1, 2, 3, 4, 5, 6], device_hours=0.5))
    ids["b"] = writer.add_trial(parent, TrialSpec(setting(seed=1), [1, 2, 3, 4, 5, 8], device_hours=0.25))
    ids["stopped"] = writer.add_trial(parent, TrialSpec(setting(seed=2, alpha=0.1), [1, 2], device_hours=0.125))
    # Ran every epoch but the runner says a scheduler stopped it: the tag decides.
    ids["tagged"] = writer.add_trial(parent, TrialSpec(setting(seed=3, alpha=0.2), [9] * 6,
                                                       trial_status=record.STOPPED_EARLY))
    ids["unlogged"] = writer.add_trial(parent, TrialSpec(setting(method="mixup"), [10, 20, 30, 40, 50, 60],
                                                         final_metrics=False))
    writer.finish_parent(parent)
    smoke = writer.start_parent(smoke=True)
    ids["smoke"] = writer.add_trial(smoke, TrialSpec(setting(epochs=100), [0.5] * 100, smoke=True))
    writer.finish_parent(smoke)
    # A summary logged by the runner wins over the one recomputed from the history.
    MlflowClient(writer.tracking_uri).log_metric(ids["b"], record.TOP1_SUMMARY, 42.0, step=6)
    return writer.tracking_uri, ids, (parent, smoke)


@pytest.fixture(scope="module")
def study(store):
    return load_experiment(store[0], STUDY)


def trial(study, ids, name):
    return study.trials.set_index("run_id").loc[ids[name]]


def test_logged_summary_is_used_else_computed_by_the_rule(study, store):
    _, ids, _ = store
    assert trial(study, ids, "a")["top1_summary"] == record.top1_summary([1, 2, 3, 4, 5, 6], 6)
    assert trial(study, ids, "b")["top1_summary"] == 42.0
    assert trial(study, ids, "unlogged")["top1_summary"] == record.top1_summary([10, 20, 30, 40, 50, 60], 6)
    assert math.isnan(trial(study, ids, "unlogged")[record.DEVICE_HOURS])


def test_cost_and_status_tags_are_read(study, store):
    _, ids, _ = store
    a = trial(study, ids, "a")
    assert a[record.DEVICE_HOURS] == 0.5 and a[record.TRAIN_TIME_S] == 60.0
    assert a["trial_status"] == record.FINISHED and a["complete"]
    assert trial(study, ids, "stopped")["problem"] == "stopped early: epoch 2 of 6"
    assert trial(study, ids, "tagged")["problem"].startswith("stopped early")


def test_parents_carry_best_run_cost_and_counts(study, store):
    _, ids, (parent, smoke) = store
    parents = study.parents.set_index("run_id")
    assert parents.loc[parent, "best_run_id"] == ids["a"]  # as written: b's 42 was logged afterwards
    assert parents.loc[parent, record.DEVICE_HOURS] == pytest.approx(0.5 + 0.25 + 0.125 + 2 * 60 / 3600)
    assert parents.loc[parent, "trials_finished"] == 3 and parents.loc[parent, "trials_stopped_early"] == 2
    assert parents.loc[smoke, "smoke"] and not parents.loc[parent, "smoke"]


def test_cost_column_sums_every_trial_that_ran_in_the_cell(study, store):
    results = build_results(study)
    cell = results[(results["method"] == "automix") & ~results["smoke"]].iloc[0]
    # a, b (chosen config), stopped and tagged (other configs): failed or unfinished trials never ran here.
    assert cell["device_hours"] == pytest.approx(0.5 + 0.25 + 0.125 + 60 / 3600)
    assert cell["n_trials"] == 4
    mixup = results[results["method"] == "mixup"].iloc[0]
    assert math.isnan(mixup["device_hours"])  # no trial of the cell logged its cost
    assert "automix (device-h)" in render(results, "md", study).splitlines()[0]


def test_smoke_runs_show_the_published_number_and_are_marked(study):
    results = build_results(study)
    smoke = results[results["smoke"]]
    assert len(smoke) == 1 and smoke.iloc[0]["published"] == 70.50  # imagenet / resnet18 / 100 epochs
    layout = paper_layout(results)
    assert list(layout["note"]) == ["", "smoke test: not a result"] or list(layout["note"]) == [
        "smoke test: not a result", ""]
    text = render(results, "md", study)
    row = next(line for line in text.splitlines() if "| 100 |" in line)
    assert "| 0.50 | 70.50 | -70.00 |" in row and row.rstrip().endswith("| smoke test: not a result |")
    assert "--smoke-test launches" in text
    real = next(line for line in text.splitlines() if "| 6 |" in line)
    assert "smoke" not in real


def test_package_exports_are_not_shadowed_by_submodules():
    import importlib
    import types

    import analysis

    for module in set(analysis._EXPORTS.values()):
        importlib.import_module(module)  # importing a submodule sets it as an attribute of the package
    for name in analysis.__all__:
        assert not isinstance(getattr(analysis, name), types.ModuleType), name
