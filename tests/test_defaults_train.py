"""The library defaults train: a ResNet-18 of width 64 at lr 0.1 on digits (16 px, batch 64) learns in
its first two epochs instead of diverging to chance (the default linear LR warm-up of 2 epochs)."""
import json

import pytest

from automix.config import load_config
from automix.train import train


class _Stop(Exception):
    pass


class _StopAfter:
    """Ends the run after ``epoch`` epochs, so the schedule is the one of the full run."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def report(self, metrics, checkpoint_dir, artifacts):
        if metrics["epoch"] == self.epoch:
            raise _Stop


def test_default_optimizer_settings_learn_in_two_epochs(tmp_path):
    # Everything but the data, the batch and the run length is the library default. Without the
    # warm-up the loss jumps from 2.4 to ~8 within 10 steps and stays at chance (2.2-2.3).
    cfg = load_config(None, ["method=vanilla", "data.name=digits", "data.image_size=16", "train.batch_size=64",
                             "train.epochs=8", "train.device=cpu", "train.mix_grid_every=0",
                             "train.progress=none"])
    with pytest.raises(_Stop):
        train(cfg, tmp_path, reporter=_StopAfter(2))
    second = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    assert second["train_loss"] < 1.6, second  # measured 0.89 with the default 2-epoch warm-up
