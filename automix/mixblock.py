"""The Mix Block: a learned generator of pixel mixing masks (AutoMix Sec. 3.2, AUTOMIX_SPEC step 3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MixBlock(nn.Module):
    """Cross-attention from the features of x_i (query) to those of its partner x_j (key, value).

    Input z: (N, C, h, w) stage-3 features of the k encoder; output s: (N, 1, H, W) in (0, 1), the
    share of x[perm] at each pixel (the mask of x itself is 1 - s).
    """

    def __init__(self, in_channels: int, reduction: int = 2, lambda_channel: bool = True,
                 upsample: str = "nearest", qk_init_std: float = 0.01):
        super().__init__()
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample {upsample!r} is not one of: nearest | bilinear")
        self.lambda_channel = lambda_channel
        self.upsample = upsample
        c_in = in_channels + (1 if lambda_channel else 0)
        self.inter = max(in_channels // reduction, 1)
        self.qk = nn.Conv2d(c_in, self.inter, kernel_size=1)  # shared by query and key
        self.v = nn.Conv2d(c_in, 1, kernel_size=1)
        for conv, std in ((self.qk, qk_init_std), (self.v, 0.01)):
            nn.init.normal_(conv.weight, 0.0, std)
            nn.init.zeros_(conv.bias)

    def forward(self, z: Tensor, lam: float, perm: Tensor, image_size: tuple[int, int]) -> Tensor:
        n, _, h, w = z.shape
        z_i, z_j = z, z[perm]
        if self.lambda_channel:
            z_i = torch.cat([z_i, z_i.new_full((n, 1, h, w), lam)], dim=1)
            z_j = torch.cat([z_j, z_j.new_full((n, 1, h, w), 1.0 - lam)], dim=1)
        # The HW x HW attention overflows in fp16: compute it in float32 whatever autocast says.
        with torch.autocast(device_type=z.device.type, enabled=False):
            q = self.qk(z_i.float()).flatten(2)  # (N, C', hw)
            k = self.qk(z_j.float()).flatten(2)  # (N, C', hw)
            v = self.v(z_j.float()).flatten(2)  # (N, 1, hw)
            attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(self.inter), dim=-1)  # (N, hw_i, hw_j)
            a = (attn @ v.transpose(1, 2)).view(n, 1, h, w)
            a = self._upsample(a, image_size)
            return torch.sigmoid(a)

    def _upsample(self, a: Tensor, image_size: tuple[int, int]) -> Tensor:
        if tuple(a.shape[-2:]) == tuple(image_size):
            return a
        # The factor is the ratio of image to feature size, derived from the data, never hard-coded.
        if self.upsample == "nearest":
            return F.interpolate(a, size=image_size, mode="nearest")
        return F.interpolate(a, size=image_size, mode="bilinear", align_corners=False)
