"""Trials of 2 data-parallel workers (Ray Train TorchTrainer, gloo on CPU).

The first trial's rank-1 worker kills itself once after training epoch 2, before reporting it: Tune
retries the trial (a transient error), whose Train run -- named after the trial -- continues from its
last reported checkpoint (epoch 1), and the trial still ends after all 3 epochs, with one MLflow run. ASHA stops each trial at max_t, which frees its workers only through
Ray Train's placement-group cleaner and Ray's State API; a second Ray instance runs on the machine
meanwhile, the case where the State API used to guess the wrong cluster and the next trial waited
forever for its workers.
"""
from __future__ import annotations

import pytest

import sys

from helpers.procs import start, stop, wait_until
from helpers.studies import (assert_one_run_per_trial, experiment_dirs, run_runner, runner_env, study_runs,
                             tune_trial_ids, write_study)

pytestmark = pytest.mark.ray

OTHER_RAY = ("import ray, time; ray.init(num_cpus=0, include_dashboard=False); "
             "print('other ray up', flush=True); time.sleep(900)")


def test_two_worker_trials_run_ddp_and_survive_a_worker_crash(tmp_path):
    study = write_study(tmp_path / "ddp.yaml", name="ddp_study", num_samples=2, max_concurrent_trials=1,
                        resources={"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
                        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
                        smoke={"set": {"train.epochs": 3}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    other = start([sys.executable, "-c", OTHER_RAY], tmp_path / "other_ray.log", name="another Ray instance",
                  env=runner_env())
    try:
        wait_until(lambda: "other ray up" in other.tail(), timeout=120, what="another Ray instance", proc=other)
        done = run_runner(study, "--smoke-test", "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"),
                          env=runner_env(AUTOMIX_FAULT_INJECT_EPOCH="2"), timeout=480)
    finally:
        stop(other)
    assert done.returncode == 0, done.stdout[-8000:]
    assert "killing this worker (rank 1) of trial" in done.stdout, "the fault was not injected"
    assert "WorkerGroupStartupTimeout" not in done.stdout

    (launch,) = experiment_dirs(tmp_path / "ray", "ddp_study")
    trial_ids = tune_trial_ids(launch)
    runs = study_runs(uri, "ddp_study")
    assert len(trial_ids) == 2
    assert_one_run_per_trial(runs, trial_ids)
    crashed = (launch / "fault_injected_epoch2").read_text().strip()
    for run in runs.children:
        assert run.info.status == "FINISHED" and run.data.params["resources.workers"] == "2"
        epochs = [s for s, _ in runs.history(run)]
        assert epochs[0] == 1 and len(epochs) <= 3
        assert {v for _, v in runs.history(run, "world_size")} == {2.0}, "not a DDP run of 2 processes"
        assert runs.artifacts(run, "checkpoint") == ["checkpoint/state.pt"]
        # The Train run is named after the trial and kept its checkpoints under the launch folder.
        assert (launch / "ray_train" / run.data.tags["trial_id"]).is_dir()
    (first,) = [r for r in runs.children if r.data.tags["trial_id"] == crashed]
    assert [s for s, _ in runs.history(first)] == [1, 2, 3], "the crashed trial did not finish its epochs"
