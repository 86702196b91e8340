"""End to end: `tune_runner.py studies/quickstart.yaml --smoke-test`, then MLflow read back directly.

SQLite: the session's `smoke_study_store` (run once for the whole suite). HTTP: a real
`mlflow server` on a free 127.0.0.1 port, with a trial whose process kills itself once after epoch 2
(test-only fault injection), which Tune retries from its checkpoint: still one run per trial, every
epoch logged once.
"""
from __future__ import annotations

import pytest

import sys
from pathlib import Path

import mlflow

from helpers.contract import check_parent_record, check_trial_record
from helpers.procs import start_mlflow_server, stop
from helpers.studies import (assert_one_run_per_trial, experiment_dirs, run_runner, runner_env,
                             study_runs, tune_trial_ids, write_study)

pytestmark = [pytest.mark.ray, pytest.mark.servers]

SWEPT = ["mix.alpha", "optim.mixblock_lr", "automix.momentum"]  # studies/quickstart.yaml's space


def _check_trial_run(runs, run, *, study: str, workers: int = 1) -> None:
    tags, params = run.data.tags, run.data.params
    name = run.info.run_name
    assert run.info.status == "FINISHED", (name, run.info.status)
    assert tags["study"] == study and tags["trial_id"] and tags["smoke_test"] == "true", tags
    assert tags.get("ray_node_id"), f"{name}: no ray_node_id tag"
    assert params["method"] == "automix" and params["data.name"] == "digits"
    assert params["resources.workers"] == str(workers)
    check_trial_record(runs, run, SWEPT)
    assert "config.yaml" in runs.artifacts(run)
    assert runs.artifacts(run, "checkpoint") == ["checkpoint/state.pt"]


def test_smoke_study_on_sqlite(smoke_study_store):
    store = smoke_study_store
    runs = study_runs(store.tracking_uri, store.experiment)
    trial_ids = tune_trial_ids(store.experiment_path)
    assert len(trial_ids) == 3, trial_ids
    assert_one_run_per_trial(runs, trial_ids)

    parent = runs.parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "quickstart" and len(parent.data.tags["study_hash"]) == 64
    assert parent.data.tags["study_file"].endswith("studies/quickstart.yaml")
    for run in runs.children:
        _check_trial_run(runs, run, study="quickstart")
    assert any(len(runs.history(r)) == 2 for r in runs.children), "no trial ran all smoke epochs"
    check_parent_record(runs, parent, runs.children)

    # The same through the fluent API, as an analysis notebook would read it.
    mlflow.set_tracking_uri(store.tracking_uri)
    df = mlflow.search_runs(experiment_names=["quickstart"], filter_string="tags.`automix.role` = 'trial'")
    assert len(df) == 3 and {"params.mix.alpha", "params.optim.mixblock_lr", "metrics.top1_summary"} <= set(df)

    out = store.output
    assert "best trial" in out and "mix.alpha:" in out and "top 3 trials" in out
    assert f"parent run {parent.info.run_id}" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "#/experiments/" in out and "/runs" in out
    best = parent.data.tags["best_run_id"]
    assert f"#/experiments/{parent.info.experiment_id}/runs/{best}" in out  # the best run's page
    print(f"quickstart --smoke-test: {store.wall_s:.0f}s")


def test_http_tracking_server_and_a_trial_that_crashes_once(tmp_path):
    study = write_study(tmp_path / "http_study.yaml", name="http_study", num_samples=2,
                        scheduler={"name": "none"}, smoke={"set": {"train.epochs": 3}})
    server, url = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts",
                                      tmp_path / "mlflow_server.log", mlflow_bin=str(Path(sys.executable).parent / "mlflow"))
    try:
        done = run_runner(study, "--smoke-test", "--tracking-uri", url, "--storage-path", str(tmp_path / "ray"),
                          env=runner_env(AUTOMIX_FAULT_INJECT_EPOCH="2"), timeout=420)
        assert done.returncode == 0, done.stdout[-6000:]
        assert "killing this worker (rank 0) of trial" in done.stdout

        runs = study_runs(url, "http_study")
        (launch,) = experiment_dirs(tmp_path / "ray", "http_study")
        trial_ids = tune_trial_ids(launch)
        assert len(trial_ids) == 2
        assert_one_run_per_trial(runs, trial_ids)
        crashed = (launch / "fault_injected_epoch2").read_text().strip()  # once per launch: one trial
        assert crashed in trial_ids
        for run in runs.children:
            _check_trial_run(runs, run, study="http_study")
            assert [s for s, _ in runs.history(run)] == [1, 2, 3], run.info.run_name
            # the crashed trial was retried by Tune from its epoch-1 checkpoint, in the same run
            retried = run.data.tags["trial_id"] == crashed
            assert run.data.tags.get("retries") == ("1" if retried else None), run.data.tags
        assert runs.parents[0].info.status == "FINISHED"
        check_parent_record(runs, runs.parents[0], runs.children)
        # artifacts went through the server into its --artifacts-destination
        assert list((tmp_path / "artifacts").rglob("mix_epoch0003.png"))
    finally:
        stop(server)
