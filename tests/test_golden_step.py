"""Whole AutoMix iterations through the trainer's own Stepper, optimizer and schedules, against the
float64 reference step of the spec (tests/golden_reference.py): losses, SGD with momentum and weight
decay at each group's cosine LR of step t, then k <- m(t) k + (1 - m(t)) q with the updated q.

Three consecutive steps on a tiny ResNet-18 (see test_golden_automix.build) with a short run
(T = 8) and a large EMA rate (m0 = 0.5 -> 0.9, warm-up 25%), so that every schedule value of step t
differs clearly from that of t + 1, the SGD momentum buffer matters (steps 2 and 3) and the
lam-margin fallback is taken once (step 3: lam_bb = 0.05).
"""
import pytest
import torch

import golden_reference as ref
from automix.ema import EMA
from automix.train import Schedule, Stepper, amp_context, build_optimizer
from test_golden_automix import PERM_BB, PERM_MB, assert_rel_close, batch, build, draws, hyper, ref_draws

T = 8
STEP_DRAWS = [
    dict(lam_mb=0.3, lam_bb=0.65, perm_mb=PERM_MB, perm_bb=PERM_BB),
    dict(lam_mb=0.7, lam_bb=0.4, perm_mb=PERM_BB, perm_bb=torch.tensor([3, 0, 1, 2])),
    dict(lam_mb=0.45, lam_bb=0.05, perm_mb=torch.tensor([3, 2, 0, 1]), perm_bb=PERM_MB),
]
AUTOMIX = {"momentum": 0.5, "momentum_end": 0.9, "momentum_warmup": 0.25, "mask_loss_decay": "cosine"}
OPTIM = {"lr": 0.1, "min_lr": 0.02, "mixblock_lr": 0.05, "mixblock_min_lr": 0.01, "weight_decay": 0.01,
         "warmup_epochs": 0}


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def make_stepper(cfg, net, total: int) -> Stepper:
    """The Stepper as the trainer builds it (automix/loop.py), on the CPU, without autocast."""
    optimizer, lr_sched = build_optimizer(cfg, net, total)
    return Stepper(net, net, optimizer, lr_sched, torch.amp.GradScaler("cpu", enabled=False), EMA(net.k, net.q),
                   Schedule(cfg, total), amp_context("none", torch.device("cpu")))


def _snapshot(net) -> dict[str, torch.Tensor]:
    named = [("q." + n, p) for n, p in net.q.named_parameters()]
    named += [("k." + n, p) for n, p in net.k.named_parameters()]
    named += [("mb." + n, p) for n, p in net.mixblock.named_parameters()]
    named += [("kbuf." + n, b) for n, b in net.k.named_buffers()]
    return {n: p.detach().double().clone() for n, p in named}


def _ref_snapshot(state: ref.State) -> dict[str, torch.Tensor]:
    out = {"q." + n: p.detach().clone() for n, p in state.q.named_parameters()}
    out.update({"k." + n: p.detach().clone() for n, p in state.k.named_parameters()})
    out.update({"mb." + n: p.detach().clone() for n, p in state.mb.items()})
    out.update({"kbuf." + n: b.detach().double().clone() for n, b in state.k.named_buffers()})
    return out


def _run_and_compare(mask_loss_mode: str) -> None:
    cfg, net = build({**AUTOMIX, "mask_loss_mode": mask_loss_mode}, optim=OPTIM)
    stepper = make_stepper(cfg, net, T)
    hp = hyper(cfg, T)
    x, y = batch()
    sgd_buffers: dict[str, torch.Tensor] = {}
    for t, kw in enumerate(STEP_DRAWS):
        d = draws(**kw)
        # Each step starts the reference from the model's weights (its own float64 SGD momentum
        # buffers carry over): the gradient of the Mix Block through k's BatchNorm amplifies float32
        # round-off of the weights ~1000x, so two free-running copies part after one step.
        state = ref.State.copy_of(net.q, net.k, net.mixblock)
        state.sgd_buffers = sgd_buffers
        before = _snapshot(net)
        lrs = {g["name"]: g["lr"] for g in stepper.optimizer.param_groups}  # the LR this step will use
        assert abs(lrs["q"] - ref.cosine(t, T, hp.lr, hp.min_lr)) < 1e-12
        assert abs(lrs["mixblock"] - ref.cosine(t, T, hp.mixblock_lr, hp.mixblock_min_lr)) < 1e-12
        out = stepper.step(x, y, d, t=t, epoch=1)
        ref_terms = ref.step(state, x.double(), y, ref_draws(d), t, hp)
        for name, value in ref_terms.items():
            torch.testing.assert_close(out.terms[name].double(), value, rtol=2e-5, atol=2e-6,
                                       msg=f"step {t}: loss term {name}")
        after, expected = _snapshot(net), _ref_snapshot(state)
        for name in after:
            if name.startswith("kbuf."):  # k's BatchNorm statistics: its own forwards, never averaged
                assert_rel_close(after[name], expected[name], 1e-4, f"step {t}: {name}")
                continue
            # compare the change of each parameter (float32 round-off is relative to the change)
            assert_rel_close(after[name] - before[name], expected[name] - before[name], 2e-4,
                             f"step {t}: update of {name}")
        assert stepper.momentum == ref.ema_momentum(t, T, hp.m0, hp.m_end, hp.m_warmup)


def test_three_steps_match_the_reference_step():
    _run_and_compare("batch")


def test_three_steps_match_the_reference_step_with_per_sample_mask_loss():
    _run_and_compare("sample")


def _fitted_momentum(k_old, q_new, k_new) -> float:
    """m from k_new = m k_old + (1 - m) q_new, by least squares over every parameter."""
    num = sum(float(((kn - qn) * (ko - qn)).sum()) for ko, qn, kn in zip(k_old, q_new, k_new))
    den = sum(float(((ko - qn) ** 2).sum()) for ko, qn in zip(k_old, q_new))
    return num / den


def test_ema_momentum_as_the_stepper_applies_it():
    # The default warm-up (10% of T) then the cosine, at the step's own t, after the SGD step. The
    # momentum is read off the parameters of k and q, not from the Stepper's bookkeeping.
    cfg, net = build({"momentum": 0.5, "momentum_end": 0.9})
    assert cfg.automix.momentum_warmup == 0.1
    total = 20
    stepper = make_stepper(cfg, net, total)
    x, y = batch()
    for t in (0, 1, 2, 3, 10, 19):
        k_old = [p.detach().clone() for p in net.k.parameters()]
        stepper.step(x, y, draws(), t=t, epoch=1)
        q_new = [p.detach() for p in net.q.parameters()]
        k_new = [p.detach() for p in net.k.parameters()]
        expected = ref.ema_momentum(t, total, 0.5, 0.9, 0.1)
        assert abs(_fitted_momentum(k_old, q_new, k_new) - expected) < 1e-4, t


def test_mask_loss_weight_as_the_stepper_applies_it():
    cfg, net = build({"mask_loss_decay": "cosine", "mask_loss_weight": 0.5})
    total = 8
    stepper = make_stepper(cfg, net, total)
    x, y = batch()
    state = ref.State.copy_of(net.q, net.k, net.mixblock)
    d = draws()
    out = stepper.step(x, y, d, t=3, epoch=1)
    z = ref.body_stage3(state.k, x.double())
    s_mb = ref.mixblock(z, d.lam_mb, d.perm_mb, state.mb, (x.shape[-2], x.shape[-1]), True).detach()
    expected = ref.mask_weight(3, total, 0.5, "cosine") * ref.mask_loss(1.0 - s_mb, d.lam_mb, 0.0)
    torch.testing.assert_close(out.terms["mask"].double(), expected, rtol=2e-5, atol=1e-7)
