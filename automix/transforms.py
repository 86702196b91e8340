"""Per-sample image transforms of the named data sets (the spec's "Defaults per setting").

Each builder takes the output size and returns the geometric part of the pipeline; :func:`compose`
adds the conversion to float and the normalisation. Inputs are PIL images (folder sets) or uint8
tensors (3, H, W) for the sets held in memory.
"""
from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

# size -> list of geometric transforms
Geometry = Callable[[int], list]
TEST_CROP_RATIO = 0.875  # resize to size / 0.875, centre-crop size (224 <- 256), the usual ImageNet test view


def pad_crop(size: int) -> list:
    """CIFAR-style: random crop of ``size`` from the image zero-padded by size/8 (32 px: pad 4)."""
    return [v2.RandomCrop(size, padding=size // 8)]


def resized_crop(size: int) -> list:
    """ImageNet-style RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) to ``size``."""
    return [v2.RandomResizedCrop(size, antialias=True)]


def resize_resized_crop(size: int) -> list:
    """Fine-grained sets (CUB, Aircraft), as the reference configs (``sz224_bs16``): resize the short
    side to size/0.875, then a RandomResizedCrop of ``size`` keeping at least half of the area (a bird
    or an aircraft should stay in the view; the ImageNet default of 8 % loses it)."""
    return [v2.Resize(int(size / TEST_CROP_RATIO), antialias=True),
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True)]


def center_view(size: int) -> list:
    """Test view of the 224 px sets: resize the short side to size/0.875, centre crop ``size``."""
    return [v2.Resize(int(size / TEST_CROP_RATIO), antialias=True), v2.CenterCrop(size)]


def resize_view(size: int) -> list:
    """Test view of a small folder set (Tiny-ImageNet, 64 px): the whole image at ``size``."""
    return [v2.Resize(size, antialias=True), v2.CenterCrop(size)]


def plain(size: int) -> list:
    """Test view of an in-memory set already stored at ``size``: nothing to do."""
    return []


def pad_crop_up_to_64(size: int) -> list:
    """Sets without a fixed resolution (fake, imagefolder): CIFAR-style up to 64 px, ImageNet-style above."""
    return pad_crop(size) if size <= 64 else resized_crop(size)


def folder_crop_up_to_64(size: int) -> list:
    """Any other folder set (imagefolder): up to 64 px the whole image brought to ``size``, then the
    CIFAR-style padded crop; ImageNet-style above."""
    return resize_view(size) + pad_crop(size) if size <= 64 else resized_crop(size)


def plain_up_to_64(size: int) -> list:
    """Test view of fake data (stored at ``size``): as stored up to 64 px, the centre view above."""
    return plain(size) if size <= 64 else center_view(size)


def resize_up_to_64(size: int) -> list:
    """Test view of any other folder set: the whole image up to 64 px, the centre view above."""
    return resize_view(size) if size <= 64 else center_view(size)


def compose(geometry: list, flip: bool, mean: tuple, std: tuple) -> v2.Compose:
    flips = [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose([v2.ToImage(), *geometry, *flips, v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std)])
