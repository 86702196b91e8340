"""Ctrl-C (or SIGTERM) while the last trials run: the launch exits 130, prints the --resume command, calls the
trials interrupted (not "stopped early": no scheduler stopped them) and leaves the parent run KILLED
with the counts. Fake trainer (tests/helpers/fake_train.py), about a minute per signal."""
from __future__ import annotations

import signal

import pytest
import yaml

from helpers.procs import start, stop, wait_until
from helpers.studies import REPO, attempts, fake_runner_cmd, fake_runner_env, study_runs

pytestmark = pytest.mark.ray

STUDY = {
    "name": "interrupt_study",
    "base": {"method": "mixup", "train": {"epochs": 20, "batch_size": 32, "device": "cpu"},
             "data": {"name": "digits", "image_size": 16}, "model": {"width": 8}},
    "space": {"train.seed": {"dist": "grid", "values": [5, 6]}},  # both trials at once: the last ones
    "search": {"algorithm": "grid"}, "scheduler": {"name": "asha", "grace_period": 10},
    "max_concurrent_trials": 2,
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_while_the_last_trials_run_exits_130(tmp_path, sig):
    study = tmp_path / "interrupt.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    log, uri = tmp_path / "attempts.log", f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = start(fake_runner_cmd(study, "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray")),
                 tmp_path / "launch.log", name="tune_runner.py", env=fake_runner_env(log, FAKE_TRAIN_EPOCH_S="1"),
                 cwd=REPO)
    try:
        wait_until(lambda: len(attempts(log)) == 2 and "epoch" in proc.tail(40) and "2 running" in proc.tail(40),
                   timeout=240, what="both trials running", proc=proc)
        proc.popen.send_signal(sig)  # the driver only (Ctrl-C, or `docker stop` / a batch scheduler)
        rc = proc.popen.wait(timeout=120)
    finally:
        stop(proc)
    out = proc.tail(200)
    assert rc == 130, f"exit {rc}:\n{out}"
    assert "0 finished, 0 stopped early, 0 failed, 2 interrupted" in out, out
    assert "--resume" in out and "interrupted: 0 of 2 trials ended" in out, out

    (parent,) = study_runs(uri, "interrupt_study").parents
    assert parent.info.status == "KILLED"
    tags = parent.data.tags
    assert (tags["trials_interrupted"], tags["trials_stopped_early"], tags["trials_finished"]) == ("2", "0", "0")
