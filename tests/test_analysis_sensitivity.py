"""Sensitivity plots and fANOVA importances of a sweep whose answer is known: only alpha matters."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution

from analysis import analyse, build_results, load_experiment, sweep_parameters
from analysis.importance import param_axes, param_importances, to_optuna_study
from analysis.report import write_report
from analysis.synthetic import StudyWriter, TrialSpec, trial_params

PNG = b"\x89PNG\r\n\x1a\n"
ALPHAS = (0.2, 1.0, 2.0, 4.0)


def score(alpha: float) -> float:
    return 70.0 - 8.0 * abs(math.log2(alpha))  # best at alpha = 1


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    writer = StudyWriter.in_new_store(root, "sweep")
    uri = writer.tracking_uri
    parent = writer.start_parent()
    rng = random.Random(1)
    for i in range(16):
        alpha = ALPHAS[i % 4]
        lr = 10 ** rng.uniform(-3, -1)
        momentum = 1 - 10 ** rng.uniform(-4, -2)
        top = score(alpha) + rng.gauss(0, 0.05)
        params = trial_params(method="automix", backbone="resnet18", dataset="cifar10", epochs=4, seed=i // 4,
                              alpha=alpha, mixblock_lr=lr, momentum=momentum)
        writer.add_trial(parent, TrialSpec(params, [top - 3, top - 2, top - 1, top]))
    failed = trial_params(method="automix", backbone="resnet18", dataset="cifar10", epochs=4, seed=9,
                          alpha=1.0)
    writer.add_trial(parent, TrialSpec(failed, [99.0], status="FAILED", final_metrics=False))
    # Stopped by the scheduler after 2 of 4 epochs (ASHA): FINISHED, but not a result.
    stopped = trial_params(method="automix", backbone="resnet18", dataset="cifar10", epochs=4, seed=0,
                           alpha=0.2, mixblock_lr=0.5, momentum=0.9)
    writer.add_trial(parent, TrialSpec(stopped, [20.0, 21.0]))
    writer.finish_parent(parent)
    return uri, parent


@pytest.fixture(scope="module")
def study(store):
    return load_experiment(store[0], "sweep")


def test_swept_parameters_one_name_each(study):
    assert sweep_parameters(study) == ["mix.alpha", "optim.mixblock_lr", "automix.momentum"]


def test_axes_use_the_search_scales(study):
    axes = {a.column: a for a in param_axes(study.complete_trials, sweep_parameters(study))}
    assert axes["mix.alpha"].scale == "linear"
    assert axes["optim.mixblock_lr"].scale == "log"
    assert axes["automix.momentum"].scale == "log1m"
    assert axes["automix.momentum"].label == "1 - automix.momentum"


def test_optuna_study_mirrors_the_complete_trials(study):
    trials = study.complete_trials
    axes = param_axes(trials, sweep_parameters(study))
    optuna_study = to_optuna_study(trials, axes)
    assert len(optuna_study.trials) == 16  # neither the failed nor the stopped trial
    first = optuna_study.trials[0]
    run = trials.set_index("run_id").loc[first.user_attrs["mlflow_run_id"]]
    assert first.value == pytest.approx(run["top1_summary"])
    assert first.params["1 - automix.momentum"] == pytest.approx(1 - run["automix.momentum"])
    assert first.distributions["optim.mixblock_lr"] == FloatDistribution(
        trials["optim.mixblock_lr"].min(), trials["optim.mixblock_lr"].max(), log=True)


def test_fanova_finds_alpha(study):
    trials = study.complete_trials
    importances = param_importances(trials, param_axes(trials, sweep_parameters(study)))
    assert set(importances.index) == {"mix.alpha", "optim.mixblock_lr", "1 - automix.momentum"}
    assert importances.sum() == pytest.approx(1.0)
    assert importances.index[0] == "mix.alpha" and importances["mix.alpha"] > 0.5
    assert importances["mix.alpha"] > 2 * importances.drop("mix.alpha").max()


def test_table_picks_the_best_alpha(study):
    row = build_results(study).iloc[0]
    assert row["n_configs"] == 16  # every trial has its own lr and momentum
    assert row["selection"] == "best of 16 configs by mean top-1, 1 more stopped early"
    assert row["config"]["mix.alpha"] == 1.0
    assert row["top1_mean"] == pytest.approx(study.complete_trials["top1_summary"].max())


def test_selection_note_counts_configs_stopped_early():
    from analysis.table import selection_note

    assert selection_note(1, 0) == ""
    assert selection_note(3, 0) == "best of 3 configs by mean top-1"
    assert selection_note(1, 2) == "only 1 of 3 configs ran all epochs (2 stopped early)"


def test_stopped_trials_are_flagged_not_dropped(study):
    stopped = study.stopped_trials
    assert len(stopped) == 1 and stopped.iloc[0]["problem"] == "stopped early: epoch 2 of 4"
    assert stopped.iloc[0]["status"] == "FINISHED"


def test_figures_are_written_and_logged_to_the_parent(study, store, tmp_path):
    report = analyse(study, tmp_path / "plots")
    assert set(report.figures) == {"curves", "sensitivity", "parallel", "importance"}
    for path in report.figures.values():
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    written = write_report(study, tmp_path / "report")
    assert written.logged_to == store[1]
    logged = {Path(a.path).name for a in MlflowClient(store[0]).list_artifacts(store[1], "analysis")}
    assert {"sensitivity.png", "parallel.png", "importance.png", "curves.png", "importance.csv",
            "paper_table.md", "paper_table.csv"} <= logged


def test_report_cli_prints_table_and_plot_paths(store, tmp_path, capsys):
    from analysis.report import main

    argv = ["--tracking-uri", store[0], "--experiment", "sweep", "--out-dir", str(tmp_path), "--no-log"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| Dataset | Backbone |" in out
    for name in ("sensitivity.png", "parallel.png", "importance.png", "curves.png"):
        assert str(tmp_path / name) in out
    assert "mix.alpha:" in out  # the importances
