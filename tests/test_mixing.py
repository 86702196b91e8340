"""Property tests of the pure mixing ops (AUTOMIX_SPEC steps 1, 4-6)."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from automix import mixing

lams = st.floats(0.0, 1.0, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)


def _batch(n=6, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g), torch.randint(0, 5, (n,), generator=g)


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(0.05, 20.0), seed=seeds)
def test_lam_in_unit_interval_and_replayable(alpha, seed):
    a = mixing.sample_lam(alpha, np.random.default_rng(seed))
    b = mixing.sample_lam(alpha, np.random.default_rng(seed))
    assert 0.0 <= a <= 1.0 and a == b


@settings(max_examples=40, deadline=None)
@given(lam=lams, seed=seeds, h=st.integers(4, 40), w=st.integers(4, 40))
def test_cutmix_mask_is_binary_and_lam_matches_area(lam, seed, h, w):
    mask, lam_adj = mixing.cutmix_mask(lam, h, w, torch.Generator().manual_seed(seed))
    assert mask.shape == (1, 1, h, w)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs((1 - mask.mean().item()) - lam_adj) < 1e-6
    assert 0.0 <= lam_adj <= 1.0


@settings(max_examples=40, deadline=None)
@given(seed=seeds)
def test_mix_with_mask_in_unit_interval_stays_between_the_pair(seed):
    x, _ = _batch(seed=seed)
    perm = mixing.sample_perm(len(x), torch.Generator().manual_seed(seed))
    mask = torch.rand(len(x), 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    out = mixing.mix(x, mask, perm)
    lo, hi = torch.minimum(x, x[perm]), torch.maximum(x, x[perm])
    assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()


def test_zero_mask_and_lam_one_are_the_identity():
    x, y = _batch()
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    assert torch.equal(mixing.mix(x, torch.zeros(6, 1, 8, 8), perm), x)
    assert torch.equal(mixing.mix(x, mixing.mixup_mask(1.0, x), perm), x)
    logits = torch.randn(6, 5)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(mixing.mixup_ce(logits, y, perm, 1.0), ce)
    mask, lam = mixing.cutmix_mask(1.0, 8, 8, torch.Generator().manual_seed(0))
    assert lam == 1.0 and mask.sum() == 0


@settings(max_examples=40, deadline=None)
@given(lam=lams, seed=seeds)
def test_mixed_targets_sum_to_one_and_are_checkable(lam, seed):
    # label = index, so every mixed label can be checked by hand (torchvision's reference habit)
    n = 6
    y = torch.arange(n)
    perm = mixing.sample_perm(n, torch.Generator().manual_seed(seed))
    t = mixing.mixed_targets(y, perm, lam, n)
    assert torch.allclose(t.sum(1), torch.ones(n))
    for i in range(n):
        if perm[i] == i:
            assert abs(t[i, i].item() - 1.0) < 1e-6
        else:
            assert abs(t[i, i].item() - lam) < 1e-6 and abs(t[i, perm[i]].item() - (1 - lam)) < 1e-6


@settings(max_examples=40, deadline=None)
@given(lam=lams, share=lams, margin=st.floats(0.0, 0.3))
def test_mask_loss_zero_inside_margin_and_linear_outside(lam, share, margin):
    mask_x = torch.full((4, 1, 8, 8), share)
    loss = mixing.mask_loss(mask_x, lam, margin).item()
    gap = abs(share - lam)
    if gap <= margin - 1e-6:
        assert loss == 0.0
    else:
        assert abs(loss - max(gap - margin, 0.0)) < 1e-5


def test_mixup_ce_is_float32_under_autocast():
    x = torch.randn(4, 5, dtype=torch.bfloat16)
    y = torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixing.mixup_ce(x, y, torch.tensor([1, 0, 3, 2]), 0.3)
    assert out.dtype == torch.float32
