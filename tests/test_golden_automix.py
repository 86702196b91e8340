"""AutoMixNet and BaselineNet against the float64 reference of the spec (tests/golden_reference.py).

A tiny ResNet-18 (width 4, 16 px, batch 4) whose k has drifted away from q (as after some EMA steps:
otherwise "features of k" and "features of q" are the same numbers), a Mix Block with weights that
give a peaked attention and a mask far from 1/2, head biases that make the CE depend strongly on the
label, all-different labels and permutations that are neither the identity nor their own inverse.
The model runs in float32 (the Mix Block and the CE cast to float32 by design), the reference in
float64 from the same starting values.
"""
import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats

import golden_reference as ref
from automix.config import load_config
from automix.model import AutoMixDraws, build_net

NUM_CLASSES, N, SIZE = 5, 4, 16
PERM_MB = torch.tensor([1, 2, 3, 0])  # 4-cycles: no fixed point, perm != inverse(perm)
PERM_BB = torch.tensor([2, 3, 1, 0])
TOL = {"rtol": 2e-5, "atol": 2e-6}


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def build(automix: dict | None = None, method: str = "automix", seed: int = 0, alpha: float = 2.0,
          optim: dict | None = None):
    """(cfg, net) with k != q and a sharpened Mix Block."""
    cfg = load_config({"method": method, "mix": {"alpha": alpha}, "data": {"name": "fake", "image_size": SIZE},
                       "model": {"backbone": "resnet18", "width": 4}, "optim": optim or {}, "train": {"epochs": 1},
                       "automix": {"lambda_channel": True, "mask_loss_margin": 0.0, "mask_loss_weight": 0.5,
                                   **(automix or {})}})
    torch.manual_seed(seed)
    net = build_net(cfg, NUM_CLASSES)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for cls in ([net.q, net.k] if method == "automix" else [net.q]):
            for head in cls.heads.values():
                head.bias.copy_(torch.randn(head.bias.shape, generator=g) * 2.0)
        if method == "automix":
            for p in net.k.parameters():  # k has drifted from q
                scale = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 1.0
                p.add_(torch.randn(p.shape, generator=g) * 0.3 * scale)
            _sharpen(net)
    return cfg, net


def _sharpen(net) -> None:
    """Mix Block weights that give attention logits of about unit scale (a softmax neither flat nor
    one-hot, so its axis and scale both show) and a varied mask with mean ~0.7 (so mean(1 - s) and
    mean(s) are far apart), instead of the N(0, 0.01) init under which every softmax is flat.
    Centred on the mean of k's features on the test batch (ReLU features have a mean of ~1)."""
    g = torch.Generator().manual_seed(5)
    mu = copy.deepcopy(net.k).backbone.stage3(batch()[0]).mean(dim=(0, 2, 3))  # (C,)
    for conv, gain in ((net.mixblock.qk, 1.5), (net.mixblock.v, 3.0)):
        w = torch.randn(conv.weight.shape, generator=g) * gain / math.sqrt(conv.weight.shape[1])
        conv.weight.copy_(w)
        conv.bias.copy_(-(w[:, :len(mu), 0, 0] @ mu) + torch.randn(conv.bias.shape, generator=g) * 0.3)
    net.mixblock.v.bias.add_(1.0)


def batch(seed: int = 1):
    x = torch.randn(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(N)  # label = index: every mixed label can be told apart


def draws(lam_mb=0.3, lam_bb=0.65, perm_mb=PERM_MB, perm_bb=PERM_BB) -> AutoMixDraws:
    return AutoMixDraws(lam_mb=lam_mb, lam_bb=lam_bb, perm_mb=perm_mb.clone(), perm_bb=perm_bb.clone())


def hyper(cfg, total: int) -> ref.Hyper:
    """The reference's inputs, read from the config's values (not its code)."""
    a, o = cfg.automix, cfg.optim
    return ref.Hyper(total=total, lr=o.lr, min_lr=o.min_lr, mixblock_lr=o.mixblock_lr,
                     mixblock_min_lr=o.mixblock_min_lr, weight_decay=o.weight_decay, sgd_momentum=o.momentum,
                     m0=a.momentum, m_end=a.momentum_end, m_warmup=a.momentum_warmup, weight_mix_q=a.weight_mix_q,
                     weight_one_q=a.weight_one_q, weight_mix_k=a.weight_mix_k, mask_w0=a.mask_loss_weight,
                     mask_decay=a.mask_loss_decay, mask_margin=a.mask_loss_margin,
                     mask_per_sample=a.mask_loss_mode == "sample", lam_margin=a.lam_margin,
                     lambda_channel=a.lambda_channel, reduction=a.reduction)


def assert_rel_close(got: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """max |got - expected| <= rel * max |expected|: float32 round-off is relative to a tensor's scale,
    so small entries of a gradient are compared with the tensor's largest, not with themselves."""
    scale = float(expected.abs().max())
    err = float((got.double() - expected).abs().max())
    assert err <= rel * scale + 1e-12, f"{what}: max error {err:.3g} vs scale {scale:.3g} (rel {rel})"


def ref_draws(d: AutoMixDraws) -> ref.Draws:
    return ref.Draws(d.lam_mb, d.lam_bb, d.perm_mb, d.perm_bb)


def test_masks_come_from_k_features():
    cfg, net = build()
    state = ref.State.copy_of(net.q, net.k, net.mixblock)
    x, _ = batch()
    d = draws()
    s_mb, s_bb = net.masks(x, d)
    z = ref.body_stage3(state.k, x.double())
    for s, lam, perm in ((s_mb, d.lam_mb, PERM_MB), (s_bb, d.lam_bb, PERM_BB)):
        expected = ref.mixblock(z, lam, perm, state.mb, (SIZE, SIZE), True)
        torch.testing.assert_close(s.double(), expected, **TOL)
    assert float(s_mb.detach().std(dim=(2, 3)).min()) > 0.02  # a mask with spatial structure, not a constant
    # the same Mix Block on q's features gives another mask: the check above can tell k from q
    z_q = ref.body_stage3(state.q, x.double())
    other = ref.mixblock(z_q, d.lam_mb, PERM_MB, state.mb, (SIZE, SIZE), True).detach()
    assert float((other - s_mb.detach().double()).abs().max()) > 1e-3


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_loss_terms_match_reference(mode):
    cfg, net = build({"mask_loss_mode": mode})
    state = ref.State.copy_of(net.q, net.k, net.mixblock)
    x, y = batch()
    d = draws()
    out = net(x, y, d, mask_weight=0.5)
    expected = ref.losses(state, x.double(), y, ref_draws(d), 0, hyper(cfg, 100))
    for name, value in expected.items():
        torch.testing.assert_close(out.terms[name].double(), value.detach(), **TOL, msg=f"term {name}")
    torch.testing.assert_close(out.loss.double(), sum(expected.values()).detach(), **TOL)
    assert float(expected["mask"].detach()) > 0.01  # the mask term is active, so its side of lam is checked


def test_gradients_match_reference():
    # Every parameter's gradient of the whole loss: routing (k gets none, bb is detached) and values.
    cfg, net = build()
    state = ref.State.copy_of(net.q, net.k, net.mixblock)
    x, y = batch()
    d = draws()
    out = net(x, y, d, mask_weight=0.5)
    q_params, mb_params = list(net.q.parameters()), list(net.mixblock.parameters())
    grads = torch.autograd.grad(out.loss, q_params + mb_params)
    expected = ref.losses(state, x.double(), y, ref_draws(d), 0, hyper(cfg, 100))
    ref_params = list(state.q.parameters()) + list(state.mb.values())
    ref_grads = torch.autograd.grad(sum(expected.values()), ref_params)
    names = [f"q.{n}" for n, _ in net.q.named_parameters()]
    names += [f"mixblock.{n}" for n, _ in net.mixblock.named_parameters()]
    for name, g, e in zip(names, grads, ref_grads):
        assert_rel_close(g, e, 1e-4, f"gradient of {name}")
    assert all(p.grad is None for p in net.k.parameters())


def test_bb_mask_is_detached_and_mix_k_reaches_only_the_mixblock():
    _, net = build()
    x, y = batch()
    out = net(x, y, draws(), mask_weight=0.5)
    mb_params, q_params = list(net.mixblock.parameters()), list(net.q.parameters())
    for term in ("mix_q", "one_q"):
        grads = torch.autograd.grad(out.terms[term], mb_params, allow_unused=True, retain_graph=True)
        assert all(g is None or not g.any() for g in grads), f"{term} reaches the Mix Block"
    for term in ("mix_k", "mask"):
        grads = torch.autograd.grad(out.terms[term], q_params, allow_unused=True, retain_graph=True)
        assert all(g is None or not g.any() for g in grads), f"{term} reaches q"
        grads = torch.autograd.grad(out.terms[term], mb_params, allow_unused=True, retain_graph=True)
        assert any(g is not None and g.any() for g in grads), f"{term} does not reach the Mix Block"


@pytest.mark.parametrize("lam_bb, plain", [(0.08, True), (0.05, True), (0.92, True), (0.97, True),
                                           (0.081, False), (0.919, False)])
def test_lam_margin_falls_back_to_plain_mixup(lam_bb, plain):
    # spec step 5: lam_bb <= 0.08 or 1 - lam_bb <= 0.08 -> plain mixup, x keeps the share lam_bb
    _, net = build({"lam_margin": 0.08})
    x, y = batch()
    _, s_bb = net.masks(x, draws(lam_bb=lam_bb))
    if plain:
        share_x = (1.0 - s_bb).expand(N, 1, SIZE, SIZE)
        torch.testing.assert_close(share_x, torch.full_like(share_x, lam_bb))
    else:
        assert float(s_bb.std()) > 1e-3  # the Mix Block's mask


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_draw_lams_are_independent_beta_alpha_alpha(alpha):
    _, net = build(alpha=alpha)
    rng, gen = np.random.default_rng(7), torch.Generator().manual_seed(7)
    lams_mb, lams_bb, same_perm = [], [], 0
    for _ in range(2000):
        d = net.draw(N, rng, gen, "cpu", (SIZE, SIZE))
        lams_mb.append(d.lam_mb)
        lams_bb.append(d.lam_bb)
        assert sorted(d.perm_mb.tolist()) == list(range(N)) and sorted(d.perm_bb.tolist()) == list(range(N))
        same_perm += bool(torch.equal(d.perm_mb, d.perm_bb))
    mean, var = ref.beta_moments(alpha)
    for lams in (np.array(lams_mb), np.array(lams_bb)):
        assert abs(lams.mean() - mean) < 0.025 and abs(lams.var() - var) < 0.012
        assert stats.kstest(lams, "beta", args=(alpha, alpha)).pvalue > 1e-3
    assert abs(np.corrcoef(lams_mb, lams_bb)[0, 1]) < 0.1  # two independent draws
    assert same_perm < 2000 * 0.2  # 1/24 by chance for N = 4


@pytest.mark.parametrize("method", ["mixup", "cutmix"])
def test_baseline_labels_follow_the_share_of_x(method):
    # x's share of the mixed image is lam, and lam goes with y (not y[perm]) in the loss
    cfg, net = build(method=method)
    x, y = batch()
    rng, gen = np.random.default_rng(3), torch.Generator().manual_seed(3)
    for _ in range(5):
        d = net.draw(N, rng, gen, "cpu", (SIZE, SIZE))
        if d.lam < 0.05 or d.lam > 0.95 or abs(d.lam - 0.5) < 0.1:
            continue  # too close to the ends or the middle for lam vs 1 - lam to show
        share_x = float((1.0 - d.mask).expand(N, 1, SIZE, SIZE).mean())
        assert share_x == pytest.approx(d.lam, abs=1e-6)
        perm = torch.tensor([1, 2, 3, 0])
        d.perm = perm
        q64 = copy.deepcopy(net.q).double()
        loss = net(x, y, d).loss
        x_mix = ref.mix(x.double(), d.mask.double().expand(N, 1, SIZE, SIZE), perm)
        expected = ref.mixup_ce(ref.logits(q64, x_mix, "one"), y, perm, d.lam)
        torch.testing.assert_close(loss.double(), expected.detach(), **TOL)
        break
    else:
        pytest.fail("no usable draw")
