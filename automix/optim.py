"""The optimizer of a run: SGD with one named parameter group per sub-network, each with its own
learning-rate schedule (linear warm-up, then cosine; AUTOMIX_SPEC "Schedules")."""
from __future__ import annotations

import torch
from torch import nn

from . import schedules
from .config import RunConfig


def build_optimizer(cfg: RunConfig, net: nn.Module, total_iters: int):
    """SGD with the group ``"q"`` (backbone + heads, lr -> min_lr) and, for AutoMix, ``"mixblock"``
    (mixblock_lr -> mixblock_min_lr), each warmed up linearly over ``optim.warmup_epochs`` and then
    annealed by its own cosine, per iteration. Returns (optimizer, LambdaLR scheduler)."""
    o = cfg.optim
    # total_iters = iterations per epoch x train.epochs, so the warm-up in iterations follows from it.
    warmup = round(o.warmup_epochs * total_iters / cfg.train.epochs)
    groups = [{"params": [p for p in net.q.parameters() if p.requires_grad], "lr": o.lr, "name": "q"}]
    factors = [schedules.cosine_lr_factor(o.lr, o.min_lr, total_iters, warmup)]
    mixblock = getattr(net, "mixblock", None)
    if mixblock is not None:
        groups.append({"params": list(mixblock.parameters()), "lr": o.mixblock_lr, "name": "mixblock"})
        factors.append(schedules.cosine_lr_factor(o.mixblock_lr, o.mixblock_min_lr, total_iters, warmup))
    opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factors)


def param_group(optimizer: torch.optim.Optimizer, name: str) -> dict:
    """The parameter group called ``name`` ("q", "mixblock"); a KeyError names the groups there are."""
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return group
    names = [g.get("name") for g in optimizer.param_groups]
    raise KeyError(f"no parameter group {name!r} in the optimizer (groups: {names})")


def group_lr(optimizer: torch.optim.Optimizer, name: str) -> float:
    return float(param_group(optimizer, name)["lr"])
