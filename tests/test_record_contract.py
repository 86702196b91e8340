"""The record contract (``automix/record.py``) as the study platform writes it.

- the end-of-run metrics, the name check and the error line, on made-up histories (no store);
- the parent run's finish, twice on a real SQLite store (a ``--resume`` finishes it again): the best
  finished trial, summed cost, counts, and no value logged twice;
- a real study whose trial fails after one epoch: its run holds the error (tag, description,
  ``error.txt``) and the picture of its last epoch.

The full contract over a whole smoke study, on SQLite and over http: tests/test_tune_tracking.py.
"""
from __future__ import annotations

import math
import subprocess

import pytest

from automix import record
from helpers.studies import PYTHON, REPO, runner_env, study_runs, write_study
from studyrunner import run_record
from studyrunner.parent_run import client_for, ensure_experiment, finish_parent

HISTORY = [  # three epochs of a 10-epoch run, as the trainer reports them
    {"epoch": 1, "top1": 10.0, "epoch_time_s": 2.0, "images_per_s": 100.0, "peak_mem_mb": 300.0},
    {"epoch": 2, "top1": 30.0, "epoch_time_s": 1.0, "images_per_s": 400.0, "peak_mem_mb": 500.0},
    {"epoch": 3, "top1": 20.0, "epoch_time_s": 1.0, "images_per_s": 400.0, "peak_mem_mb": 400.0},
]


def test_final_metrics_from_the_epochs():
    final = run_record.final_metrics(HISTORY, 10, wall_s=7200.0, devices=2)
    assert final[record.TOP1_SUMMARY] == 20.0  # median of the last 5 (here: all 3)
    assert final[record.TOP1_FINAL] == 20.0 and final[record.TOP1_BEST] == 30.0
    assert final[record.TRAIN_TIME_S] == 4.0
    assert final[record.IMAGES_PER_S] == (200 + 400 + 400) / 4.0  # images seen / train time
    assert final[record.PEAK_MEM_MB] == 500.0
    assert final[record.DEVICE_HOURS] == 4.0  # 2 h x 2 devices
    assert run_record.final_metrics([], 10, wall_s=0.0, devices=1) == {}
    assert run_record.devices_held(2, 4, 0) == 8 and run_record.devices_held(2, 4, 1) == 2


def test_a_metric_named_like_a_param_is_refused():
    run_record.check_names(["mix.alpha", "method"], ["top1", "sched_lr"])
    with pytest.raises(run_record.RecordError, match="mix.alpha"):
        run_record.check_names(["mix.alpha", "method"], ["top1", "mix.alpha"])
    # what the Tune callback logs of a result: the trainer's numbers, not Tune's bookkeeping
    metrics = run_record.epoch_metrics({"epoch": 2, "top1": 1.0, "done": False, "trial_id": "x",
                                        "numeric_retry": "bf16", "time_total_s": 3.0}, exclude={"time_total_s"})
    assert metrics == {"top1": 1.0}


def test_the_error_line_is_the_exception_not_rays_wrapper():
    text = ("Failure # 1 (occurred at 2026-01-01_00-00-00)\n"
            "ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1, actor_id=ab)\n"
            "KeyError: 'digits'\n\nThe above exception was the direct cause of the following exception:\n\n"
            "  File \"/x/trainable.py\", line 3, in automix_trial\n    raise ValueError('bad')\n"
            "ValueError: the digits ran out\n")
    assert run_record.error_line(text) == "ValueError: the digits ran out"


def _trial(client, exp: str, parent: str, trial_id: str, status: str, summary: float, hours: float) -> str:
    run = client.create_run(exp, tags={record.PARENT_TAG: parent, record.ROLE_TAG: record.ROLE_TRIAL,
                                       record.TAG_TRIAL_ID: trial_id, record.TAG_STATUS: status})
    client.log_metric(run.info.run_id, record.TOP1_SUMMARY, summary)
    client.log_metric(run.info.run_id, record.DEVICE_HOURS, hours)
    return run.info.run_id


def test_the_parent_names_its_best_finished_trial_once(tmp_path):
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = ensure_experiment(client, "contract")
    parent = client.create_run(exp, tags={record.ROLE_TAG: record.ROLE_STUDY}).info.run_id
    _trial(client, exp, parent, "t1", record.FINISHED, 50.0, 0.5)
    best = _trial(client, exp, parent, "t2", record.FINISHED, 60.0, 0.25)
    _trial(client, exp, parent, "t3", record.STOPPED_EARLY, 70.0, 0.125)  # fewer epochs: not compared
    _trial(client, exp, parent, "t4", record.FAILED, math.nan, 0.125)
    counts = {record.FINISHED: 2, record.STOPPED_EARLY: 1, record.FAILED: 1}

    for _ in range(2):  # the launch, then a --resume that found nothing new
        found = finish_parent(client, parent, exp, status="FINISHED", counts=counts, wall_time_s=12.0)
    assert (found.run_id, found.trial_id, found.top1_summary) == (best, "t2", 60.0)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags[record.TAG_BEST_RUN_ID] == best and run.data.tags[record.TAG_BEST_TRIAL_ID] == "t2"
    assert run.data.metrics == {record.TOP1_SUMMARY: 60.0, record.DEVICE_HOURS: 1.0, record.WALL_TIME_S: 12.0}
    assert {run.data.tags[t] for t in record.COUNT_TAGS.values()} == {"2", "1", "0"}
    for key in run.data.metrics:
        assert len(client.get_metric_history(parent, key)) == 1, f"{key} logged twice"


def test_a_failed_trial_records_its_error_and_last_picture(tmp_path):
    study = write_study(tmp_path / "failing.yaml", name="failing", num_samples=1, scheduler={"name": "none"},
                        failure={"max_failures": 0}, smoke={"set": {"train.mix_grid_every": 5}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    launch = ("import sys; from studyrunner.runner import Options, run; "
              f"sys.exit(run(Options(study={str(study)!r}, smoke_test=True, tracking_uri={uri!r}, "
              f"storage_path={str(tmp_path / 'ray')!r}, train_fn='tests.helpers.failing_train:train')).exit_code)")
    done = subprocess.run([PYTHON, "-c", launch], cwd=REPO, env=runner_env(), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=300, start_new_session=True)
    assert done.returncode == 1, done.stdout[-6000:]  # EXIT_TRIALS_FAILED

    runs = study_runs(uri, "failing")
    (trial,) = runs.children
    tags = trial.data.tags
    assert trial.info.status == "FAILED" and tags[record.TAG_STATUS] == record.FAILED
    assert tags[record.TAG_ERROR] == "ValueError: the digits ran out (test failure after epoch 1)"
    assert tags[record.TAG_ERROR] in tags["mlflow.note.content"]
    traceback = runs.client.download_artifacts(trial.info.run_id, record.ERROR_ARTIFACT, str(tmp_path))
    text = open(traceback).read()
    assert 'failing_train.py", line' in text and "ValueError: the digits ran out" in text  # the traceback
    assert "\x1b[" not in text  # no terminal colour codes
    assert "/tmp/ray/" not in tags[record.TAG_ERROR] + tags["mlflow.note.content"]
    assert trial.data.metrics[record.TOP1_SUMMARY] == runs.history(trial)[0][1]
    assert runs.artifacts(trial, record.MIX_ARTIFACT_DIR) == ["mix/mix_epoch0001.png"]
    parent = runs.parents[0]
    assert parent.data.tags[record.COUNT_TAGS[record.FAILED]] == "1"
    assert record.TAG_BEST_RUN_ID not in parent.data.tags  # no trial finished
