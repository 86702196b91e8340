"""Small real runs on the built-in digits data: they must learn, and resume must be exact."""
import json

import pytest

from automix.config import load_config, to_dict
from automix.train import train

BASE = {"data": {"name": "digits", "image_size": 16}, "model": {"backbone": "resnet18", "width": 16},
        "optim": {"lr": 0.1, "weight_decay": 5e-4},
        "train": {"batch_size": 32, "device": "cpu", "mix_grid_every": 0, "progress": "none"}}


@pytest.mark.parametrize("method, epochs", [("vanilla", 4), ("automix", 5)])
def test_digits_reaches_90_percent(tmp_path, method, epochs):
    cfg = load_config(BASE, [f"method={method}", f"train.epochs={epochs}", "automix.momentum=0.97",
                             "automix.momentum_end=0.999", "automix.lambda_channel=false"])
    history = train(cfg, tmp_path)
    assert history[-1]["top1"] >= 90.0, history[-1]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, epochs + 1))
    for key in ("top1", "top1_q", "train_loss", "sched_lr", "epoch_time_s", "images_per_s", "peak_mem_mb",
                "skipped_steps", "iterations", "world_size"):
        assert key in lines[-1]
    automix_keys = {"sched_mixblock_lr", "sched_ema_momentum", "sched_mask_weight", "mask_saturated",
                    "mask_spatial_std", "mask_lam_gap", "loss_mix_q", "loss_one_q", "loss_mix_k", "loss_mask"}
    assert (automix_keys <= set(lines[-1])) == (method == "automix")
    assert not {"lr", "mixblock_lr", "momentum"} & set(lines[-1])  # the names before automix/record.py
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "checkpoint" / "state.pt").is_file()


class _Crash(Exception):
    pass


class _CrashAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def report(self, metrics, checkpoint_dir, artifacts):
        if metrics["epoch"] == self.epoch:
            raise _Crash


def test_resume_is_exact(tmp_path):
    cfg = load_config(BASE, ["method=automix", "train.epochs=3", "train.max_steps_per_epoch=4",
                             "data.train_subset=256", "data.test_subset=128", "automix.momentum=0.9",
                             "train.mix_grid_every=1"])
    full = train(cfg, tmp_path / "full")
    with pytest.raises(_Crash):
        train(cfg, tmp_path / "cut", reporter=_CrashAfter(1))
    # threads and progress do not change what is computed: a resume may change them
    # progress does not change what is computed: a resume may change it (threads may too, but
    # another intra-op thread count reorders float sums, so the run is then no longer bit-exact)
    resumed = train(load_config(to_dict(cfg), ["train.progress=log"]), tmp_path / "cut",
                    resume_from=tmp_path / "cut" / "checkpoint")
    cost = {"epoch_time_s", "images_per_s", "peak_mem_mb"}  # measured, not computed
    strip = lambda h: [{k: v for k, v in m.items() if k not in cost} for m in h]  # noqa: E731
    assert strip(resumed) == strip(full)
    logged = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert strip(logged) == strip(full)
    assert sorted(p.name for p in (tmp_path / "full").glob("mix_epoch*.png")) == [
        "mix_epoch0001.png", "mix_epoch0002.png", "mix_epoch0003.png"]
    assert (tmp_path / "full" / "checkpoint" / "mix_last.png").read_bytes() == (
        tmp_path / "full" / "mix_epoch0003.png").read_bytes()
