"""Mask diagnostics: numbers that tell, epoch by epoch, whether the Mix Block's masks are collapsing
(all pixels near 0 or 1, whole-image masks, a share of x that ignores lam). Pure tensor functions
on the mb mask ``s`` (the share of x[perm] at each pixel, AUTOMIX_SPEC step 3); they return
tensors so the training loop can sum them on the device without a host sync per step."""
from __future__ import annotations

import torch
from torch import Tensor

SATURATION_LOW, SATURATION_HIGH = 0.05, 0.95
NAMES = ("mask_saturated", "mask_spatial_std", "mask_lam_gap")  # the order of mask_stats()


def saturated_share(s: Tensor, low: float = SATURATION_LOW, high: float = SATURATION_HIGH) -> Tensor:
    """Share of mask pixels with s < low or s > high (0-dim). s: (N, 1, H, W)."""
    return ((s < low) | (s > high)).float().mean()


def spatial_std(s: Tensor) -> Tensor:
    """Mean over samples of the (population) standard deviation of s over its pixels (0-dim).

    0 for a constant mask (mixup, or a whole-image mask); 0.5 for a half-and-half binary mask.
    s: (N, 1, H, W)."""
    return s.float().flatten(1).std(dim=1, correction=0).mean()


def lam_gap(s: Tensor, lam: float | Tensor) -> Tensor:
    """Mean over samples of |mean over pixels of (1 - s) - lam| (0-dim): how far each image's share
    of x is from the lam its label claims. s: (N, 1, H, W); lam: the drawn lam_mb."""
    share_x = 1.0 - s.float().flatten(1).mean(dim=1)  # (N,)
    return (share_x - lam).abs().mean()


def mask_stats(s: Tensor, lam: float | Tensor) -> Tensor:
    """The three diagnostics of one mask, stacked in the order of :data:`NAMES`: (3,) float32."""
    s = s.detach()
    return torch.stack([saturated_share(s), spatial_std(s), lam_gap(s, lam)])
