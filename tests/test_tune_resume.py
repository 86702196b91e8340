"""An interrupted study continues with --resume: finished trials are not rerun, the number of trials is
num_samples, no MLflow run is duplicated and no epoch is logged twice."""
from __future__ import annotations

import pytest

import json
import signal
import time

from helpers.procs import start, stop, wait_until
from helpers.studies import (REPO, assert_one_run_per_trial, experiment_dirs, run_runner, runner_cmd,
                             runner_env, study_runs, tune_trial_ids, write_study)

pytestmark = pytest.mark.ray

NUM_SAMPLES = 4


def _finished_trials(uri: str) -> int:
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("resume_study")
        if exp is None:
            return 0
        return len(client.search_runs([exp.experiment_id],
                                      "tags.`automix.role` = 'trial' and attributes.status = 'FINISHED'"))
    except Exception:  # the database is being created
        return 0


def test_interrupted_study_resumes_without_duplicates(tmp_path):
    study = write_study(tmp_path / "resume.yaml", name="resume_study", num_samples=NUM_SAMPLES,
                        max_concurrent_trials=1, scheduler={"name": "none"},
                        smoke={"num_samples": NUM_SAMPLES, "set": {"train.epochs": 3}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--tracking-uri", uri, "--storage-path", str(tmp_path / "ray")]
    first = start(runner_cmd(study, "--smoke-test", *args), tmp_path / "first.log", name="tune_runner.py",
                  env=runner_env(), cwd=REPO)
    try:
        wait_until(lambda: _finished_trials(uri) >= 2, timeout=300, what="two finished trials", proc=first)
        first.popen.send_signal(signal.SIGINT)  # Ctrl-C of the driver only
        rc = first.popen.wait(timeout=120)
    finally:
        stop(first)
    log = first.tail(400)
    assert rc == 130, f"interrupted launch exited {rc}:\n{log}"
    assert "--resume" in log

    (launch,) = experiment_dirs(tmp_path / "ray", "resume_study")
    before = study_runs(uri, "resume_study")
    assert before.parents[0].info.status == "KILLED"
    finished_before = {r.data.tags["trial_id"] for r in before.children if r.info.status == "FINISHED"}
    assert 2 <= len(finished_before) < NUM_SAMPLES
    mtimes = {t: (launch / f"trial_{t}" / "result.json").stat().st_mtime for t in finished_before}

    t0 = time.monotonic()
    done = run_runner(study, "--resume", *args, timeout=420)
    assert done.returncode == 0, done.stdout[-8000:]

    runs = study_runs(uri, "resume_study")
    trial_ids = tune_trial_ids(launch)
    assert len(trial_ids) == NUM_SAMPLES, trial_ids
    assert_one_run_per_trial(runs, trial_ids)  # one parent (reused), one child per trial, epochs once
    assert runs.parents[0].info.run_id == before.parents[0].info.run_id
    assert runs.parents[0].info.status == "FINISHED"
    for run in runs.children:
        assert run.info.status == "FINISHED"
        assert [s for s, _ in runs.history(run)] == [1, 2, 3], run.info.run_name
    for t, mtime in mtimes.items():  # finished trials were not run again
        assert (launch / f"trial_{t}" / "result.json").stat().st_mtime == mtime, t
    state = json.loads((launch / "studyrunner.json").read_text())
    assert state["parent_run_id"] == runs.parents[0].info.run_id
    print(f"resume took {time.monotonic() - t0:.0f}s")
