"""End to end: a tiny study on class folders named `imagenet` through `tune_runner.py`, then
`python -m analysis.paper_table` on its store, whose row `imagenet | resnet18 | 100` shows the
published 70.50 for AutoMix.

The set's check wants ImageNet's 1000 class folders under train/ and val/; each holds one 32 px PNG
(hard links of one file), and every epoch is a single step of 4 images, so 100 epochs stay cheap.
"""

from __future__ import annotations

import pytest

import os
import subprocess
import time

import numpy as np
import yaml

from helpers.studies import PYTHON, REPO, run_runner, runner_env

pytestmark = pytest.mark.ray

CLASSES = 1000  # automix.datasets: imagenet has 1000 classes, checked before a study starts


def class_folders(root):
    from matplotlib.image import imsave

    root.mkdir(parents=True)
    source = root / "one.png"
    rng = np.random.default_rng(0)
    imsave(source, rng.random((32, 32, 3)))
    for split in ("train", "val"):
        for c in range(CLASSES):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            os.link(source, folder / "0.png")
    return root


def tiny_study(path, data_root):
    study = {
        "name": "imagenet_tiny",
        "description": "100 epochs of one step on class folders named imagenet: the table's end to end test",
        "base": {
            "method": "automix",
            "train": {"epochs": 100, "max_steps_per_epoch": 1, "batch_size": 4, "seed": 0, "device": "cpu",
                      "mix_grid_every": 0, "progress": "none", "threads": 1, "eval_batch_size": 4},
            "data": {"name": "imagenet", "root": str(data_root), "image_size": 32, "test_subset": 4},
            "model": {"backbone": "resnet18", "width": 4, "stem": "cifar"},
        },
        "space": {"train.seed": {"dist": "grid", "values": [0]}},
        "search": {"algorithm": "grid"},
        "scheduler": {"name": "none"},
        "num_samples": 1,
        "max_concurrent_trials": 1,
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "checkpoint": {"num_to_keep": 1},
        "tracking": {"log_checkpoint": False},
    }
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_tiny_imagenet_study_shows_the_published_number(tmp_path):
    data = class_folders(tmp_path / "imagenet")
    study = tiny_study(tmp_path / "imagenet_tiny.yaml", data)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.monotonic()
    done = run_runner(study, "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"), timeout=600)
    runner_s = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-6000:]
    table = subprocess.run([PYTHON, "-m", "analysis.paper_table", "--tracking-uri", uri, "--experiment",
                            "imagenet_tiny"], cwd=REPO, env=runner_env(), text=True, capture_output=True,
                           timeout=300)
    assert table.returncode == 0, table.stderr[-3000:]
    lines = table.stdout.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(ln for ln in lines if ln.startswith("| imagenet | resnet18 |"))
    cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True))
    assert cells["Epochs"] == "100"
    assert cells["automix (paper)"] == "70.50"
    assert 0.0 <= float(cells["automix"]) <= 100.0
    assert cells["Note"] == ""  # a real (tiny) run, not a --smoke-test launch
    print(f"tune_runner: {runner_s:.0f} s ({trial_seconds(uri)}), "
          f"paper_table: {time.monotonic() - start - runner_s:.0f} s")


def trial_seconds(uri: str) -> str:
    """Where the runner's time went: the trial's own training time against the launch's wall time."""
    from mlflow.tracking import MlflowClient

    from automix import record

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("imagenet_tiny").experiment_id])
    trial = next(r for r in runs if r.data.tags.get(record.ROLE_TAG) == record.ROLE_TRIAL)
    parent = next(r for r in runs if r.data.tags.get(record.ROLE_TAG) == record.ROLE_STUDY)
    return (f"trial train_time_s {trial.data.metrics.get(record.TRAIN_TIME_S, float('nan')):.0f}, "
            f"launch wall_time_s {parent.data.metrics.get(record.WALL_TIME_S, float('nan')):.0f}")
