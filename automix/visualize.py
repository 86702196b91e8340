"""Pictures of the mixing a person can read: rows x_i, x_j, the mask of x_j and the mixed image, tiles
enlarged to at least 64 px (nearest, so mask pixels stay sharp), each row labelled, and under each
column the share lam of x_i in that mixed image."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .data import unnormalize

MIN_TILE = 64  # px: a 16 px digit enlarged 4x
PAD = 2
LABEL_W = 52  # the column of row labels
TEXT_H = 14  # the title bar and the caption row


def save_mix_grid(x_i: torch.Tensor, x_j: torch.Tensor | None, mask: torch.Tensor | None,
                  mixed: torch.Tensor | None, path: str | Path, dataset: str, max_images: int = 8,
                  title: str = "") -> Path:
    """Save a PNG with the rows x_i, x_j = x[perm], mask s (white = from x_j) and mixed, and each
    column's lam = mean(1 - s) (the share of x_i, which is the label weight of y_i for mixup and
    CutMix; for AutoMix the share the Mix Block produced, next to the drawn lam_mb in ``title``).
    With ``mask`` None (vanilla: nothing is mixed) only the row x_i is drawn.

    x_i, x_j, mixed: (N, 3, H, W) normalised images; mask: (N, 1, H, W) in [0, 1]."""
    n = min(max_images, x_i.shape[0])
    rows = [("x_i" if mask is not None else "x", unnormalize(x_i[:n].float(), dataset))]
    captions = None
    if mask is not None:
        s = mask[:n].float().clamp(0, 1)
        rows += [("x_j", unnormalize(x_j[:n].float(), dataset)), ("mask", s.expand(-1, 3, -1, -1)),
                 ("mixed", unnormalize(mixed[:n].float(), dataset))]
        captions = [f"lam={v:.2f}" for v in (1.0 - s.flatten(1).mean(dim=1)).tolist()]
    image = render_rows(rows, captions, title)
    return _save_atomically(image, Path(path))


def render_rows(rows: list[tuple[str, torch.Tensor]], captions: list[str] | None, title: str) -> Image.Image:
    """A labelled grid: one row per (label, images (n, 3, H, W) in [0, 1]), a title bar on top and
    an optional caption under each column."""
    n, _, h, w = rows[0][1].shape
    scale = max(1, math.ceil(MIN_TILE / min(h, w)))
    th, tw = h * scale, w * scale
    width = LABEL_W + n * (tw + PAD) + PAD
    height = TEXT_H + len(rows) * (th + PAD) + PAD + (TEXT_H if captions else 0)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((PAD, 1), title, fill="black", font=font)
    for r, (label, images) in enumerate(rows):
        top = TEXT_H + PAD + r * (th + PAD)
        draw.text((PAD, top + th // 2 - 6), label, fill="black", font=font)
        tiles = F.interpolate(images.cpu(), scale_factor=scale, mode="nearest") if scale > 1 else images.cpu()
        for c in range(n):
            canvas.paste(_to_pil(tiles[c]), (LABEL_W + PAD + c * (tw + PAD), top))
    if captions:
        top = TEXT_H + PAD + len(rows) * (th + PAD)
        for c, text in enumerate(captions):
            draw.text((LABEL_W + PAD + c * (tw + PAD), top), text, fill="black", font=font)
    return canvas


def _to_pil(img: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> an RGB image."""
    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(arr, "RGB")


def _save_atomically(image: Image.Image, path: Path) -> Path:
    # mix_last.png is overwritten every epoch while a tracker may be reading the last one.
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
