"""`python -m automix.train` as a person meets it: every mistake is exit 2 and one `error:` line (no
traceback), an output folder holding a run is never silently appended to, Ctrl-C says how to resume,
and --tracking-uri hands the run to the single-run tracker (a stand-in here: no MLflow needed)."""
import json
import signal
import subprocess
import sys
import time
import types

import pytest
import yaml

from automix.train import main

TINY = {"method": "automix", "data": {"name": "fake", "image_size": 16, "fake_train_size": 64, "fake_test_size": 16},
        "model": {"width": 8}, "automix": {"momentum": 0.5, "momentum_end": 0.6},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "max_steps_per_epoch": 2, "mix_grid_every": 0,
                  "progress": "none", "threads": 1}}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _one_error_line(capsys, needle):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: ") and needle in lines[-1], err
    assert sum(x.startswith("error: ") for x in lines) == 1
    return lines[-1]


def test_output_dir_that_is_a_file(tmp_path, config_file, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    assert main([str(config_file), "--output-dir", str(f)]) == 2
    _one_error_line(capsys, "is a file")


def test_output_dir_under_a_file(tmp_path, config_file, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    assert main([str(config_file), "--output-dir", str(f / "run")]) == 2
    _one_error_line(capsys, f"{f} is a file")


def test_unwritable_output_dir(tmp_path, config_file, capsys, monkeypatch):
    # chmod cannot stop root (the test container's user): stand in for the OS refusing the write.
    import automix.cli

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(automix.cli.tempfile, "TemporaryFile", refuse)
    assert main([str(config_file), "--output-dir", str(tmp_path / "ro")]) == 2
    _one_error_line(capsys, "is not writable (Permission denied)")


@pytest.mark.parametrize("text, needle", [(None, "does not exist"), ("optim: {lr: [0.1\n", "")])
def test_missing_or_broken_config(tmp_path, capsys, text, needle):
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    assert main([str(path), "--output-dir", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, needle or "c.yaml")


def test_bad_flags_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--resume", "--overwrite", "--output-dir", str(tmp_path)])
    assert exc.value.code == 2
    _one_error_line(capsys, "--overwrite")


def test_existing_run_needs_resume_or_overwrite(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    assert main([str(config_file), "--output-dir", str(out), "--set", "train.mix_grid_every=1"]) == 0
    assert (out / "mix_epoch0001.png").is_file()
    assert main([str(config_file), "--output-dir", str(out)]) == 2
    line = _one_error_line(capsys, str(out))
    assert "--resume" in line and "--overwrite" in line
    (out / "notes.txt").write_text("mine")
    assert main([str(config_file), "--output-dir", str(out), "--overwrite", "--set", "train.epochs=2"]) == 0
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # the old run's line is gone, none is duplicated
    assert not (out / "mix_epoch0001.png").exists()  # nor does an old picture pass for the new run's
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are cleared
    assert (out / "checkpoint" / "mix_last.png").is_file()  # the picture of the last epoch, every epoch


def test_resume_without_a_run(tmp_path, capsys):
    assert main(["--output-dir", str(tmp_path / "empty"), "--resume"]) == 2
    _one_error_line(capsys, "--resume")


def test_non_finite_loss_is_one_line(tmp_path, config_file, capsys):
    rc = main([str(config_file), "--output-dir", str(tmp_path / "out"), "--set", "optim.lr=1e30",
               "--set", "train.max_steps_per_epoch=4", "--set", "train.check_finite_every=100"])
    assert rc == 2
    _one_error_line(capsys, "non-finite loss at epoch 1, iteration")


def test_corrupt_image_is_one_line(tmp_path, capsys):
    root = tmp_path / "folder"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                (root / split / cls / f"{i}.png").write_bytes(b"not a png")
    rc = main(["--output-dir", str(tmp_path / "out"), "--set", f"data.root={root}", "--set", "data.name=imagefolder",
               "--set", "data.image_size=16", "--set", "train.batch_size=2", "--set", "model.width=8",
               "--set", "train.device=cpu", "--set", "train.epochs=1"])
    assert rc == 2
    _one_error_line(capsys, "cannot read image")


class _FakeTracker:
    def __init__(self):
        self.reports, self.closed = [], None

    def report(self, metrics, checkpoint_dir, artifacts):
        self.reports.append(metrics["epoch"])

    def close(self, status, history, error=None):
        self.closed = (status, [h["epoch"] for h in history], error)


@pytest.fixture
def fake_single_run(monkeypatch):
    module = types.ModuleType("studyrunner.single_run")
    module.calls, module.tracker, module.fail = [], _FakeTracker(), None

    def open_tracker(uri, experiment, cfg, output_dir, *, resume=None):
        module.calls.append((uri, experiment, cfg.method, output_dir, resume))
        if module.fail:
            raise module.fail
        return module.tracker
    module.open_tracker = open_tracker
    monkeypatch.setitem(sys.modules, "studyrunner.single_run", module)
    return module


def test_tracked_run_reports_and_closes(tmp_path, config_file, fake_single_run):
    out = tmp_path / "out"
    rc = main([str(config_file), "--output-dir", str(out), "--tracking-uri", "sqlite:///t.db", "--experiment", "e",
               "--set", "train.epochs=2"])
    assert rc == 0
    assert fake_single_run.calls == [("sqlite:///t.db", "e", "automix", out, False)]
    assert fake_single_run.tracker.reports == [1, 2]
    assert fake_single_run.tracker.closed == ("FINISHED", [1, 2], None)


def test_tracked_failure_closes_failed(tmp_path, config_file, fake_single_run, capsys):
    rc = main([str(config_file), "--output-dir", str(tmp_path / "out"), "--tracking-uri", "sqlite:///t.db",
               "--set", "optim.lr=1e30", "--set", "train.max_steps_per_epoch=4"])
    assert rc == 2
    status, _, error = fake_single_run.tracker.closed
    assert status == "FAILED" and "non-finite" in error


def test_interrupted_tracked_run_closes_killed(tmp_path, config_file, fake_single_run, capsys):
    def interrupt(metrics, checkpoint_dir, artifacts):  # Ctrl-C arriving once epoch 1 was saved
        raise KeyboardInterrupt
    fake_single_run.tracker.report = interrupt
    out = tmp_path / "out"
    assert main([str(config_file), "--output-dir", str(out), "--tracking-uri", "sqlite:///t.db",
                 "--set", "train.epochs=3"]) == 130
    assert fake_single_run.tracker.closed[:2] == ("KILLED", [1])
    assert f"--output-dir {out} --resume" in capsys.readouterr().err


def test_unreachable_tracking_store_is_exit_3(tmp_path, config_file, fake_single_run, capsys):
    from studyrunner.uris import TrackingUnavailable
    fake_single_run.fail = TrackingUnavailable("tracking URI http://127.0.0.1:9 does not answer")
    assert main([str(config_file), "--output-dir", str(tmp_path / "out"), "--tracking-uri", "http://127.0.0.1:9"]) == 3
    _one_error_line(capsys, "does not answer")


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, config_file):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "automix.train", str(config_file), "--output-dir", str(out),
                             "--set", "train.epochs=500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "checkpoint" / "state.pt").is_file():
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and f"--output-dir {out} --resume" in last
