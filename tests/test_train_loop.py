"""The loop's record: metric names from automix/record.py, mask diagnostics in range, pictures a
person can read (and that do not change the run), metrics.jsonl without duplicated lines, and (on
a GPU only) steps that never wait for the device."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from automix import record
from automix.config import load_config
from automix.model import build_net
from automix.train import train
from automix.visualize import MIN_TILE, save_mix_grid

TINY = {"data": {"name": "fake", "image_size": 16, "fake_train_size": 64, "fake_test_size": 16},
        "model": {"width": 8}, "automix": {"momentum": 0.5, "momentum_end": 0.6, "mask_loss_decay": "none"},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "max_steps_per_epoch": 2, "mix_grid_every": 0,
                  "progress": "none", "threads": 1}}


def test_automix_epoch_metrics_use_the_contract_names(tmp_path):
    history = train(load_config(TINY, ["method=automix"]), tmp_path)
    last = history[-1]
    loss_terms = {k for k in last if k.startswith("loss_")}
    assert set(last) == {"epoch", *record.EPOCH_METRICS, "peak_mem_mb", *loss_terms}
    assert loss_terms == {"loss_mix_q", "loss_one_q", "loss_mix_k", "loss_mask"}
    assert 0.0 <= last["mask_saturated"] <= 1.0 and 0.0 <= last["mask_spatial_std"] <= 0.5
    assert 0.0 <= last["mask_lam_gap"] <= 1.0
    assert last["iterations"] == 4 and last["skipped_steps"] == 0 and last["world_size"] == 1
    assert last["images_per_s"] > 0 and last["peak_mem_mb"] > 10
    assert last["sched_mask_weight"] == pytest.approx(0.1)


def test_a_second_run_into_the_same_folder_does_not_duplicate_lines(tmp_path):
    cfg = load_config(TINY, ["method=mixup", "train.epochs=1"])
    train(cfg, tmp_path)
    history = train(cfg, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1] and "mask_saturated" not in history[-1]


def test_picture_does_not_change_the_run():
    cfg = load_config(TINY, ["method=automix"])
    net = build_net(cfg, 10)
    x = torch.randn(8, 3, 16, 16)
    d = net.draw(8, np.random.default_rng(0), torch.Generator().manual_seed(0), "cpu", (16, 16))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.preview(x, d)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_picture_is_enlarged_and_labelled(tmp_path):
    x = torch.rand(8, 3, 16, 16)
    mask = torch.zeros(8, 1, 16, 16)
    mask[..., 8:] = 1.0  # half of each image from x_j: lam = 0.5 under every column
    path = save_mix_grid(x, x.flip(0), mask, x, tmp_path / "m.png", "fake", title="t")
    img = Image.open(path)
    assert img.width >= 8 * MIN_TILE and img.height >= 4 * MIN_TILE
    grey = np.asarray(img.convert("L"))
    assert (grey < 128).any(axis=0)[:40].any()  # the row labels are drawn left of the tiles
    vanilla = Image.open(save_mix_grid(x, None, None, None, tmp_path / "v.png", "fake", title="t"))
    assert MIN_TILE <= vanilla.height < 2 * MIN_TILE  # one row: nothing is mixed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are a GPU matter")
def test_training_steps_never_wait_for_the_gpu():
    from automix.ema import EMA
    from automix.optim import build_optimizer
    from automix.stepper import Schedule, Stepper, amp_context
    from automix.meters import EpochMeter

    cfg = load_config(TINY, ["method=automix", "train.device=cuda", "train.check_finite_every=1000"])
    dev = torch.device("cuda")
    net = build_net(cfg, 10).to(dev)
    opt, sched = build_optimizer(cfg, net, 100)
    stepper = Stepper(net, net, opt, sched, torch.amp.GradScaler("cuda", enabled=False), EMA(net.k, net.q),
                      Schedule(cfg, 100), amp_context("bf16", dev), check_finite_every=1000)
    meter = EpochMeter(dev)
    x, y = torch.randn(16, 3, 16, 16, device=dev), torch.randint(0, 10, (16,), device=dev)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    meter.add(stepper.step(x, y, net.draw(16, rng, gen, dev, (16, 16)), 0, 1))  # warm-up: lazy inits
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in range(1, 4):
            meter.add(stepper.step(x, y, net.draw(16, rng, gen, dev, (16, 16)), t, 1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    stepper.watch.check()
