"""Pictures of the mixing: rows of x_i, x_j, the mask of x_j and the mixed image."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from .data import unnormalize


def save_mix_grid(x_i: torch.Tensor, x_j: torch.Tensor, mask: torch.Tensor, mixed: torch.Tensor,
                  path: str | Path, dataset: str, max_images: int = 8) -> Path:
    """Save a PNG with four rows: x_i, x_j = x[perm], mask s (white = from x_j), mixed image.

    x_i, x_j, mixed: (N, 3, H, W) normalised images; mask: (N, 1, H, W) in [0, 1]."""
    n = min(max_images, x_i.shape[0])
    rows = [unnormalize(x_i[:n].float(), dataset), unnormalize(x_j[:n].float(), dataset),
            mask[:n].float().expand(-1, 3, -1, -1).clamp(0, 1), unnormalize(mixed[:n].float(), dataset)]
    grid = make_grid(torch.cat([r.cpu() for r in rows]), nrow=n, padding=2, pad_value=1.0)
    path = Path(path)
    save_image(grid, path)
    return path
