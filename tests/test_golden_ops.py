"""The pure AutoMix ops against the float64 reference of the spec (tests/golden_reference.py).

Inputs are chosen so that each detail of the spec moves the answer far beyond float32 round-off:
Mix Block weights large enough that the attention is peaked (its default init of N(0, 0.01) makes every
softmax almost uniform, which hides the axis, the scale and the key), a mask whose mean is far from 1/2
(so 1 - s and s give different mask losses), lam far from 1/2, labels that all differ, and permutations
that are neither the identity nor their own inverse.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import golden_reference as ref
from automix import mixing
from automix.mixblock import MixBlock

PERM = torch.tensor([2, 0, 1])  # a 3-cycle: perm != its inverse, no fixed point


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _features(n=3, c=6, h=3, w=4, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _sharpen(mb: MixBlock, seed: int = 1, v_bias: float = 0.0) -> MixBlock:
    """Weights that give attention logits of about unit scale (a softmax neither flat nor one-hot, so
    the axis and the scale both show) and values of scale 2 (a varied mask), instead of N(0, 0.01)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv, gain in ((mb.qk, 1.5), (mb.v, 2.0)):
            fan_in = conv.weight.shape[1]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * gain / math.sqrt(fan_in))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.3)
        mb.v.bias.add_(v_bias)
    return mb


def _weights64(mb: MixBlock) -> dict:
    return {n: p.detach().double() for n, p in mb.named_parameters()}


@pytest.mark.parametrize("lambda_channel", [True, False])
@pytest.mark.parametrize("image_size", [(3, 4), (6, 12), (9, 8)])
def test_mixblock_matches_reference(lambda_channel, image_size):
    # Non-square maps and unequal ratios (2 and 3) catch a transposed flatten or a hard-coded factor.
    z = _features()
    mb = _sharpen(MixBlock(6, reduction=2, lambda_channel=lambda_channel))
    assert mb.qk.weight.shape[:2] == (3, 6 + lambda_channel) and mb.v.weight.shape[:2] == (1, 6 + lambda_channel)
    s = mb(z, 0.3, PERM, image_size)
    expected = ref.mixblock(z.double(), 0.3, PERM, _weights64(mb), image_size, lambda_channel)
    assert s.shape == (3, 1, *image_size)
    torch.testing.assert_close(s.double(), expected, rtol=0, atol=2e-6)


def test_mixblock_reference_is_sensitive_to_the_attention():
    # The check above is only worth something if the mask is far from flat: peaked attention.
    z = _features()
    mb = _sharpen(MixBlock(6, lambda_channel=True))
    s = ref.mixblock(z.double(), 0.3, PERM, _weights64(mb), (3, 4), True)
    assert float(s.std(dim=(2, 3)).min()) > 0.05  # every sample's mask varies over the image
    flat = ref.mixblock(z.double(), 0.3, torch.arange(3), _weights64(mb), (3, 4), True)
    assert float((s - flat).abs().max()) > 0.05  # the partner matters


def test_mixblock_init_is_spec():
    mb = MixBlock(64, reduction=2, lambda_channel=True)
    assert mb.qk.weight.shape == (32, 65, 1, 1) and mb.v.weight.shape == (1, 65, 1, 1)
    assert not mb.qk.bias.any() and not mb.v.bias.any()
    assert mb.qk.weight.std().item() == pytest.approx(0.01, rel=0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_mix_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 2, 4, 4, generator=g)
    s = torch.rand(3, 1, 4, 4, generator=g)
    torch.testing.assert_close(mixing.mix(x, s, PERM).double(), ref.mix(x.double(), s.double(), PERM))
    # the constant mask of plain mixup keeps the share lam of x
    lam = 0.8
    torch.testing.assert_close(mixing.mix(x, mixing.mixup_mask(lam, x), PERM).double(),
                               ref.mix(x.double(), torch.tensor(1.0 - lam, dtype=torch.float64), PERM))


def test_mixup_ce_matches_reference_and_gives_lam_to_y():
    y = torch.tensor([0, 1, 2])  # label = index: y and y[perm] differ everywhere
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(3)) * 3
    for lam in (0.1, 0.3, 0.9):
        got = mixing.mixup_ce(logits, y, PERM, lam)
        torch.testing.assert_close(got.double(), ref.mixup_ce(logits.double(), y, PERM, lam))
    # Meaning, not only numbers: an image that is 90% x must cost less when the logits say y than
    # when they say y[perm].
    say_y = torch.nn.functional.one_hot(y, 4).float() * 10
    say_partner = torch.nn.functional.one_hot(y[PERM], 4).float() * 10
    assert mixing.mixup_ce(say_y, y, PERM, 0.9) < mixing.mixup_ce(say_partner, y, PERM, 0.9) - 5


def test_mixed_targets_give_lam_to_y():
    t = mixing.mixed_targets(torch.tensor([0, 1, 2]), PERM, 0.8, 3)
    assert t[0, 0] == pytest.approx(0.8) and t[0, 2] == pytest.approx(0.2)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("lam, margin", [(0.3, 0.0), (0.3, 0.05), (0.7, 0.1), (0.55, 0.1)])
def test_mask_loss_matches_reference(per_sample, lam, margin):
    # Samples with different shares: batch and sample modes differ, and mean(1 - s) != mean(s).
    s = torch.stack([torch.full((1, 4, 4), v) for v in (0.9, 0.6, 0.75)])
    s[1, 0, :2] = 0.1
    got = mixing.mask_loss(1.0 - s, lam, margin, per_sample=per_sample)
    expected = ref.mask_loss(1.0 - s.double(), lam, margin, per_sample)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-6)


def test_mask_loss_modes_differ():
    # Two whole-image masks (0 and 1) with lam 1/2: the batch share is right, no sample's share is.
    mask_x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    assert float(mixing.mask_loss(mask_x, 0.5, 0.1)) == 0.0
    assert float(mixing.mask_loss(mask_x, 0.5, 0.1, per_sample=True)) == pytest.approx(0.4)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_sample_lam_is_beta_alpha_alpha(alpha):
    rng = np.random.default_rng(1234)
    draws = np.array([mixing.sample_lam(alpha, rng) for _ in range(4000)])
    mean, var = ref.beta_moments(alpha)
    # 4000 draws: the standard error of the mean is < 0.006, of the variance < 0.003.
    assert abs(draws.mean() - mean) < 0.02
    assert abs(draws.var() - var) < 0.01
    assert stats.kstest(draws, "beta", args=(alpha, alpha)).pvalue > 1e-3
    # and not Beta(alpha, alpha) of another alpha (the test has the power to tell)
    other = 2.0 if alpha == 0.5 else 0.5
    assert stats.kstest(draws, "beta", args=(other, other)).pvalue < 1e-6


@pytest.mark.parametrize("t", [0, 1, 5, 10, 11, 30, 99, 100])
def test_schedule_functions_match_reference(t):
    from automix import schedules

    total = 100
    assert schedules.ema_momentum(t, total, 0.99, 0.9999, 0.1) == pytest.approx(
        ref.ema_momentum(t, total, 0.99, 0.9999, 0.1), abs=1e-12)
    assert schedules.ema_momentum(t, total, 0.99, 0.9999, 0.3) == pytest.approx(
        ref.ema_momentum(t, total, 0.99, 0.9999, 0.3), abs=1e-12)
    assert schedules.mask_loss_weight(t, total, 0.1, "cosine") == pytest.approx(
        ref.mask_weight(t, total, 0.1, "cosine"), abs=1e-12)
    assert schedules.cosine(t, total, 0.2, 0.05) == pytest.approx(ref.cosine(t, total, 0.2, 0.05), abs=1e-12)


def test_momentum_warmup_is_ten_percent_by_default():
    from automix import schedules
    from automix.config import AutoMixConfig

    warm = AutoMixConfig().momentum_warmup
    assert warm == 0.1
    # constant m0 strictly before 10% of T, cosine from there on (the spec's formula)
    assert schedules.ema_momentum(9, 100, 0.9, 0.99, warm) == 0.9
    assert schedules.ema_momentum(10, 100, 0.9, 0.99, warm) == pytest.approx(
        0.99 - 0.09 * (1 + math.cos(math.pi * 0.1)) / 2)
