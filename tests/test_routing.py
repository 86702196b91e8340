"""Gradient routing of one AutoMix step (AUTOMIX_SPEC step 6) and the EMA update (step 7)."""
import pytest
import torch

from automix.config import load_config
from automix.ema import EMA
from automix.model import AutoMixDraws, build_net
from automix.train import build_optimizer


def _setup(**automix):
    torch.manual_seed(0)
    cfg = load_config({"method": "automix", "data": {"name": "fake", "image_size": 16},
                       "model": {"width": 8}, "automix": {"mask_loss_margin": 0.0, **automix}})
    net = build_net(cfg, 5)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 16, 16, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    d = AutoMixDraws(lam_mb=0.35, lam_bb=0.6, perm_mb=torch.randperm(8, generator=g),
                     perm_bb=torch.randperm(8, generator=g))
    return cfg, net, x, y, d


def _nonzero(grads):
    return any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("term, reaches", [("mix_q", "q"), ("one_q", "q"), ("mix_k", "mixblock"),
                                           ("mask", "mixblock")])
def test_each_loss_term_reaches_only_its_sub_network(term, reaches):
    _, net, x, y, d = _setup()
    out = net(x, y, d, mask_weight=0.1)
    q_params = [p for p in net.q.parameters()]
    mb_params = list(net.mixblock.parameters())
    grads = torch.autograd.grad(out.terms[term], q_params + mb_params, allow_unused=True)
    q_grads, mb_grads = grads[:len(q_params)], grads[len(q_params):]
    assert out.terms[term].item() > 0
    if reaches == "q":
        assert _nonzero(q_grads) and not _nonzero(mb_grads)
    else:
        assert _nonzero(mb_grads) and not _nonzero(q_grads)


def test_k_gets_no_gradient_and_follows_the_ema():
    cfg, net, x, y, d = _setup()
    opt, _ = build_optimizer(cfg, net, 10)
    ema = EMA(net.k, net.q)
    k_old = [p.detach().clone() for p in net.k.parameters()]
    out = net(x, y, d, mask_weight=0.1)
    out.loss.backward()
    assert all(p.grad is None for p in net.k.parameters())
    assert all(p.grad is not None for p in net.mixblock.parameters())
    opt.step()
    m = 0.9
    ema.update(m)
    for k_new, k0, q in zip(net.k.parameters(), k_old, net.q.parameters()):
        torch.testing.assert_close(k_new, m * k0 + (1 - m) * q.detach(), rtol=1e-5, atol=1e-6)


def test_lam_margin_turns_bb_into_plain_mixup():
    _, net, x, y, d = _setup(lam_margin=0.08)
    d.lam_bb = 0.05
    _, s_bb = net.masks(x, d)
    assert torch.allclose(s_bb, torch.full_like(s_bb, 0.95))


def test_non_finite_loss_stops_with_a_clear_error():
    from automix.train import NonFiniteLossError, Schedule, Stepper, amp_context

    cfg, net, x, y, d = _setup()
    opt, sched = build_optimizer(cfg, net, 10)
    stepper = Stepper(net, net, opt, sched, torch.amp.GradScaler("cpu", enabled=False), EMA(net.k, net.q),
                      Schedule(cfg, 10), amp_context("none", torch.device("cpu")))
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="mix_q"):
        stepper.step(x, y, d, t=0, epoch=1)
