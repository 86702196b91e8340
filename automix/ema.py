"""EMA update of the momentum encoder (AUTOMIX_SPEC "Networks": k <- m k + (1 - m) q)."""
from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Fused EMA over a fixed list of parameter pairs: one ``_foreach_lerp_`` per step, no Python
    loop over parameters. Buffers (BatchNorm statistics) are not averaged: k keeps its own."""

    def __init__(self, target: nn.Module, source: nn.Module):
        t = dict(target.named_parameters())
        s = dict(source.named_parameters())
        if t.keys() != s.keys():
            raise ValueError("EMA target and source must have the same parameters")
        self.target = [t[k] for k in t]
        self.source = [s[k] for k in t]

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        # lerp(k, q, w) = k + w (q - k) = (1 - w) k + w q with w = 1 - m
        torch._foreach_lerp_(self.target, self.source, 1.0 - momentum)
