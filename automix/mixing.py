"""Pure, device-agnostic mixing ops shared by AutoMix, mixup and cutmix.

Every method reduces to ``x_mix = (1 - s) * x + s * x[perm]`` with a mask ``s`` in [0, 1] of shape
(N, 1, H, W) (or broadcastable to it) and the label ``lam * y + (1 - lam) * y[perm]``, where lam is
the share of x (mean of ``1 - s``). Randomness only comes from a passed ``torch.Generator``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def sample_lam(alpha: float, rng: np.random.Generator) -> float:
    """lam ~ Beta(alpha, alpha), drawn from a seeded numpy Generator (torch's Beta sampler only
    uses the global RNG, which a replayable run must not depend on)."""
    if alpha <= 0:
        raise ValueError(f"mix.alpha must be > 0, got {alpha}")
    return float(rng.beta(alpha, alpha))


def sample_perm(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """A random permutation of the batch (within one process)."""
    return torch.randperm(n, generator=generator).to(device)


def mix(x: Tensor, mask: Tensor, perm: Tensor) -> Tensor:
    """``(1 - s) * x + s * x[perm]``. x: (N, C, H, W); mask s: (N, 1, H, W) or a broadcastable scalar."""
    mask = mask.to(x.dtype)
    return x + mask * (x[perm] - x)


def mixup_mask(lam: float, like: Tensor) -> Tensor:
    """The constant mask of plain mixup: s = 1 - lam everywhere, shape (1, 1, 1, 1)."""
    return torch.full((1, 1, 1, 1), 1.0 - lam, dtype=like.dtype, device=like.device)


def cutmix_mask(lam: float, height: int, width: int, generator: torch.Generator,
                device: torch.device | str = "cpu") -> tuple[Tensor, float]:
    """A CutMix box mask (1 inside the pasted box from x[perm]) and lam corrected to the box area.

    The box has area ~ (1 - lam) * H * W and a uniformly drawn centre, clipped to the image
    (Yun et al. 2019). Returns (mask (1, 1, H, W), lam_adjusted = 1 - box area / image area)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    mask = torch.zeros((1, 1, height, width), device=device)
    mask[..., y0:y1, x0:x1] = 1.0
    lam_adjusted = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
    return mask, lam_adjusted


def mixup_ce(logits: Tensor, y: Tensor, perm: Tensor, lam: float | Tensor) -> Tensor:
    """lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm]), computed in float32 even under autocast."""
    logits = logits.float()
    return lam * F.cross_entropy(logits, y) + (1.0 - lam) * F.cross_entropy(logits, y[perm])


def mixed_targets(y: Tensor, perm: Tensor, lam: float, num_classes: int) -> Tensor:
    """Soft targets lam * onehot(y) + (1 - lam) * onehot(y[perm]); each row sums to 1."""
    one = F.one_hot(y, num_classes).float()
    return lam * one + (1.0 - lam) * one[perm]


def mask_loss(mask_x: Tensor, lam: float, margin: float, per_sample: bool = False) -> Tensor:
    """max(|mean(1 - s) - lam| - margin, 0): the share of x in the mixed image should be lam.

    ``mask_x`` (N, 1, H, W) is the mask of x (1 - s). By default (the reference) the mean is over the
    whole batch and all pixels, which whole-image masks for a lam-share of the batch satisfy exactly;
    ``per_sample`` takes each sample's own share and averages the per-sample losses."""
    if not per_sample:
        return torch.clamp((mask_x.float().mean() - lam).abs() - margin, min=0.0)
    share = mask_x.float().flatten(1).mean(dim=1)  # (N,)
    return torch.clamp((share - lam).abs() - margin, min=0.0).mean()
