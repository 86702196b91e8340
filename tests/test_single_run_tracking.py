"""A single run tracked in MLflow: ``python -m automix.train ... --tracking-uri URI``.

The run lands in its experiment as ``automix.role=run`` with the params, per-epoch metrics, final
metrics and pictures of a trial (``automix/record.py``); an unreachable store ends the command with
exit 3 before training; a run interrupted and resumed continues the same MLflow run, each epoch
logged once.
"""
from __future__ import annotations

import json
import subprocess

from automix import record
from automix.config import load_config
from automix.loop import CHECKPOINT_DIR, METRICS_FILE
from automix.train import train
from helpers.procs import free_port
from helpers.studies import PYTHON, REPO, runner_env
from studyrunner.parent_run import client_for
from studyrunner.single_run import RUN_FILE, open_tracker

CONFIG = REPO / "configs" / "digits_automix.yaml"
TINY = ["train.epochs=3", "train.max_steps_per_epoch=2", "data.train_subset=64", "data.test_subset=64",
        "model.width=8", "train.threads=1", "train.mix_grid_every=2", "train.progress=none",
        "automix.momentum=0.5", "automix.momentum_end=0.9"]


def _train_cli(*args: str) -> subprocess.CompletedProcess:
    sets = [a for s in TINY for a in ("--set", s)]
    return subprocess.run([PYTHON, "-m", "automix.train", str(CONFIG), *sets, *args], cwd=REPO, env=runner_env(),
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)


def test_a_tracked_run_from_the_command_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = _train_cli("--output-dir", str(tmp_path / "run"), "--tracking-uri", uri, "--experiment", "single")
    assert done.returncode == 0, done.stdout[-4000:]

    client = client_for(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    assert json.loads((tmp_path / "run" / RUN_FILE).read_text())["run_id"] == run.info.run_id
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and tags[record.ROLE_TAG] == record.ROLE_RUN
    assert tags[record.TAG_STATUS] == record.FINISHED and tags[record.TAG_EPOCHS_DONE] == "3"
    assert params["mix.alpha"] == "2.0" and params[record.EPOCHS] == "3" and "alpha" not in params
    assert set(record.RESOURCE_PARAMS) <= set(params) and not set(params) & set(metrics)
    top1 = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, record.TOP1))
    assert [s for s, _ in top1] == [1, 2, 3]
    assert metrics[record.TOP1_SUMMARY] == record.top1_summary([v for _, v in top1], 3)
    for key in record.COST_METRICS:
        assert metrics[key] > 0, key
    pictures = [a.path for a in client.list_artifacts(run.info.run_id, record.MIX_ARTIFACT_DIR)]
    assert pictures == ["mix/mix_epoch0002.png", "mix/mix_epoch0003.png"]
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_an_unreachable_store_stops_the_run_before_training(tmp_path):
    done = _train_cli("--output-dir", str(tmp_path / "run"), "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 3, done.stdout[-4000:]
    assert "cannot reach the MLflow tracking server" in done.stdout and "Traceback" not in done.stdout
    assert not (tmp_path / "run" / METRICS_FILE).exists()


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch:
    def __init__(self, tracker):
        self.tracker = tracker

    def report(self, metrics, checkpoint_dir, artifacts):
        self.tracker.report(metrics, checkpoint_dir, artifacts)
        raise _Interrupt


def test_a_resumed_run_continues_its_mlflow_run(tmp_path):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    cfg = load_config(CONFIG, TINY + ["train.mix_grid_every=0"])
    first = open_tracker(uri, None, cfg, out)
    try:
        train(cfg, out, reporter=_StopAfterFirstEpoch(first))
    except _Interrupt:
        history = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
        first.close("KILLED", history)
    client = client_for(uri)
    assert client.get_run(first.run_id).data.tags[record.TAG_STATUS] == record.INTERRUPTED
    # the picture of the last epoch before the interruption, from the checkpoint's mix_last.png
    assert [a.path for a in client.list_artifacts(first.run_id, "mix")] == ["mix/mix_epoch0001.png"]

    again = open_tracker(uri, None, cfg, out, resume=True)
    assert again.run_id == first.run_id
    again.report({"epoch": 1, "top1": 99.0}, None, [])  # a replayed epoch is not logged twice
    history = train(cfg, out, reporter=again, resume_from=out / CHECKPOINT_DIR)
    again.close("FINISHED", history)

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.experiment_id == client.get_experiment_by_name(
        record.DEFAULT_EXPERIMENT).experiment_id
    for key in (record.TOP1, "sched_lr", "epoch_time_s"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3], key
    assert [a.path for a in client.list_artifacts(run.info.run_id, "mix")] == ["mix/mix_epoch0001.png",
                                                                                 "mix/mix_epoch0003.png"]
    assert run.data.tags[record.TAG_STATUS] == record.FINISHED
