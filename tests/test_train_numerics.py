"""Truthful numerics of a step: a non-finite loss is caught late but named early (no per-step host
read), fp16 steps the GradScaler skips are counted and move neither the EMA nor the LR schedule,
the warm-up, the parameter groups by name, and the mask diagnostics on masks whose answer is known."""
import math

import numpy as np
import pytest
import torch

from automix import diagnostics, schedules
from automix.config import load_config
from automix.ema import EMA
from automix.model import build_net
from automix.optim import build_optimizer, group_lr, param_group
from automix.train import NonFiniteLossError, Schedule, Stepper, amp_context

CFG = {"method": "automix", "data": {"name": "fake", "image_size": 16}, "model": {"width": 8},
       "automix": {"lambda_channel": False}, "train": {"device": "cpu"}}


@pytest.fixture(autouse=True)
def _one_thread():
    # These steps are tiny: a second intra-op thread only spins on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stepper(check_every=1, fp16_scaler=False, total=10, method="automix"):
    torch.manual_seed(0)
    cfg = load_config({**CFG, "method": method})
    net = build_net(cfg, 10)
    opt, sched = build_optimizer(cfg, net, total)
    ema = EMA(net.k, net.q) if method == "automix" else None
    scaler = torch.amp.GradScaler("cpu", enabled=fp16_scaler)
    return Stepper(net, net, opt, sched, scaler, ema, Schedule(cfg, total), amp_context("none", torch.device("cpu")),
                   check_finite_every=check_every), net


def _batch(net, t):
    g = torch.Generator().manual_seed(t)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    return x, y, net.draw(8, np.random.default_rng(t), g, "cpu", (16, 16))


def test_nan_at_step_k_is_named_when_read_later():
    stepper, net = _stepper(check_every=4, method="mixup")
    for t in range(3):  # NaN enters at t=1; the flag is read only after t=3
        x, y, d = _batch(net, t)
        if t == 1:
            x[0, 0, 0, 0] = float("nan")
        stepper.step(x, y, d, t=t, epoch=1)  # no raise: nothing is read on the host yet
    x, y, d = _batch(net, 3)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, iteration 1 .*mix_ce nan"):
        stepper.step(x, y, d, t=3, epoch=1)


def test_end_of_epoch_check_names_the_first_bad_step():
    stepper, net = _stepper(check_every=1000, method="mixup")
    for t in range(4):
        x, y, d = _batch(net, t)
        if t >= 2:  # NaN at t=2 and t=3: the first one is reported
            x[:, 0] = float("nan")
        stepper.step(x, y, d, t=t, epoch=3)
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, iteration 2 "):
        stepper.watch.check()


def test_finite_steps_pass_the_check():
    stepper, net = _stepper(check_every=1, method="vanilla")
    for t in range(2):
        stepper.step(*_batch(net, t), t=t, epoch=1)
    stepper.watch.check()


def test_skipped_fp16_step_is_counted_and_moves_neither_ema_nor_lr():
    stepper, net = _stepper(fp16_scaler=True)
    stepper.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)  # a scale that does not overflow by itself
    k_before = lr_before = None
    for t in range(4):
        x, y, d = _batch(net, t)
        hook = None
        if t == 2:  # an overflowing gradient, as fp16 produces: the scaler must skip this step
            hook = next(net.q.parameters()).register_hook(lambda g: g * float("inf"))
            k_before = [p.detach().clone() for p in net.k.parameters()]
            q_before = [p.detach().clone() for p in net.q.parameters()]
            lr_before = group_lr(stepper.optimizer, "q")
        stepper.step(x, y, d, t=t, epoch=1)
        if hook is not None:
            hook.remove()
            assert all(torch.equal(a, b) for a, b in zip(k_before, net.k.parameters()))  # EMA did not move
            assert all(torch.equal(a, b) for a, b in zip(q_before, net.q.parameters()))  # nor did SGD
            assert group_lr(stepper.optimizer, "q") == lr_before  # nor the LR schedule
    assert stepper.skipped_steps == 1
    assert stepper.lr_sched.last_epoch == 3  # 4 iterations, 3 applied updates


def test_fp16_autocast_run_counts_skips_for_real(tmp_path, monkeypatch):
    # A GradScaler starting at 2**40 overflows every fp16 gradient of these few steps: all are skipped.
    import functools

    from automix.train import train
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0**40))
    cfg = load_config({**CFG, "method": "vanilla", "data": {"name": "fake", "image_size": 16, "fake_train_size": 64,
                                                            "fake_test_size": 16},
                       "optim": {"lr": 0.1, "warmup_epochs": 0},
                       "train": {"device": "cpu", "epochs": 1, "batch_size": 16, "amp": "fp16", "threads": 1,
                                 "mix_grid_every": 0, "progress": "none"}})
    last = train(cfg, tmp_path)[-1]
    assert last["iterations"] == 4 and last["skipped_steps"] == 4
    assert last["sched_lr"] == 0.1  # the schedule did not advance: no update was applied


def test_warmup_is_linear_then_cosine():
    total, warmup = 100, 10
    lrs = [schedules.warmup_cosine(t, total, warmup, 0.4, 0.0) for t in range(total + 1)]
    assert lrs[0] == pytest.approx(0.4 / 11)  # a small first step, not exactly 0
    steps = np.diff(lrs[:warmup + 1])
    assert np.allclose(steps, 0.4 / 11)  # linear up to the base LR ...
    assert lrs[warmup] == pytest.approx(0.4)
    assert lrs[55] == pytest.approx(0.2)  # ... then the cosine over the remaining 90 iterations
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)
    assert schedules.warmup_cosine(30, total, 0, 0.4, 0.0) == schedules.cosine(30, total, 0.4, 0.0)


def test_warmup_epochs_apply_to_both_groups():
    cfg = load_config({**CFG, "optim": {"lr": 0.2, "mixblock_lr": 0.1, "warmup_epochs": 2},
                       "train": {"epochs": 10, "device": "cpu"}})
    net = build_net(cfg, 10)
    opt, sched = build_optimizer(cfg, net, total_iters=100)  # 10 per epoch: a 20-iteration warm-up
    assert group_lr(opt, "q") == pytest.approx(0.2 / 21) and group_lr(opt, "mixblock") == pytest.approx(0.1 / 21)
    for _ in range(20):
        opt.step()
        sched.step()
    assert group_lr(opt, "q") == pytest.approx(0.2) and group_lr(opt, "mixblock") == pytest.approx(0.1)


def test_param_groups_are_found_by_name():
    net = build_net(load_config({**CFG, "method": "mixup"}), 10)
    opt, _ = build_optimizer(load_config({**CFG, "method": "mixup"}), net, 10)
    opt.param_groups.reverse()  # positions carry no meaning
    assert param_group(opt, "q")["params"][0] is next(p for p in net.q.parameters())
    with pytest.raises(KeyError, match="mixblock"):
        param_group(opt, "mixblock")


def test_mask_diagnostics_on_known_masks():
    half = torch.zeros(2, 1, 4, 4)
    half[..., :, 2:] = 1.0  # binary, half from x_j: share of x = 0.5
    assert diagnostics.saturated_share(half) == 1.0
    assert diagnostics.spatial_std(half) == pytest.approx(0.5)
    assert diagnostics.lam_gap(half, 0.3) == pytest.approx(0.2)
    flat = torch.full((2, 1, 4, 4), 0.25)  # mixup-like: share of x = 0.75, no spatial structure
    assert diagnostics.saturated_share(flat) == 0.0
    assert diagnostics.spatial_std(flat) == pytest.approx(0.0)
    assert diagnostics.lam_gap(flat, 0.75) == pytest.approx(0.0)
    mixed = torch.stack([half[0], flat[0]])  # per-sample gaps 0.2 and 0.05 around lam 0.7: mean 0.125
    assert diagnostics.lam_gap(mixed, 0.7) == pytest.approx((0.2 + 0.05) / 2)
    assert diagnostics.saturated_share(mixed) == pytest.approx(0.5)
    edge = torch.tensor([0.04, 0.05, 0.95, 0.96]).view(1, 1, 2, 2)  # strict thresholds
    assert diagnostics.saturated_share(edge) == pytest.approx(0.5)
    assert diagnostics.mask_stats(mixed, 0.7).shape == (len(diagnostics.NAMES),)


def test_step_output_carries_the_mb_mask():
    stepper, net = _stepper()
    x, y, d = _batch(net, 0)
    out = stepper.step(x, y, d, t=0, epoch=1)
    assert out.s_mb.shape == (8, 1, 16, 16) and not out.s_mb.requires_grad
    assert out.lam_mb == d.lam_mb and math.isfinite(out.lam_mb)
