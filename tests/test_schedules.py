"""Momentum, learning-rate and mask-loss schedules against the spec's formulas."""
import math

import pytest

from automix import schedules
from automix.config import load_config
from automix.model import build_net
from automix.train import build_optimizer

T = 1000


@pytest.mark.parametrize("t", [0, 50, 99, 100, 101, 400, 500, 999, 1000])
def test_ema_momentum_matches_spec(t):
    m0, m_end = 0.999, 0.99999
    got = schedules.ema_momentum(t, T, m0, m_end)
    expected = m0 if t < 0.1 * T else m_end - (m_end - m0) * (1 + math.cos(math.pi * t / T)) / 2
    assert got == pytest.approx(expected, abs=1e-12)
    assert m0 <= got <= m_end


def test_ema_momentum_reaches_end():
    assert schedules.ema_momentum(T, T, 0.99, 0.999) == pytest.approx(0.999)


@pytest.mark.parametrize("t", [0, 1, 250, 500, 750, 1000])
def test_cosine_lr_per_group(t):
    cfg = load_config({"method": "automix", "data": {"name": "fake", "image_size": 16},
                       "model": {"width": 8}, "optim": {"lr": 0.2, "min_lr": 0.05,
                                                         "mixblock_lr": 0.1, "mixblock_min_lr": 1e-3, "warmup_epochs": 0}})
    net = build_net(cfg, 10)
    opt, sched = build_optimizer(cfg, net, T)
    for _ in range(t):
        opt.step()
        sched.step()
    c = (1 + math.cos(math.pi * t / T)) / 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 + (0.2 - 0.05) * c)
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-3 + (0.1 - 1e-3) * c)


@pytest.mark.parametrize("t", [0, 100, 500, 900, 1000])
def test_mask_loss_weight_true_cosine(t):
    assert schedules.mask_loss_weight(t, T, 0.1, "none") == 0.1
    expected = 0.1 * (1 + math.cos(math.pi * t / T)) / 2
    assert schedules.mask_loss_weight(t, T, 0.1, "cosine") == pytest.approx(expected)


def test_ema_horizon_warning():
    assert schedules.ema_horizon_warning(0.999, 10**6) is None
    msg = schedules.ema_horizon_warning(0.999, 350)
    assert msg and "automix.momentum" in msg and "top1_q" in msg
