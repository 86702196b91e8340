"""Data sets: scikit-learn's digits (built in), CIFAR-10/100, ImageNet-style folders, and fake data.

Nothing is downloaded: a missing data set is a :class:`DataError` that names ``data.root``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from .config import DataConfig

MEAN_STD = {
    "digits": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "fake": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class DataError(RuntimeError):
    """A data set is missing or malformed; the message says which setting to change."""


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset
    num_classes: int


def train_transform(cfg: DataConfig, mean_std) -> v2.Compose:
    """Standard augmentation per resolution: crop + flip up to 64 px, RandomResizedCrop above."""
    size = cfg.image_size
    if size <= 64:
        crop = v2.RandomCrop(size, padding=size // 8)
    else:
        crop = v2.RandomResizedCrop(size, antialias=True)
    flip = [] if cfg.name == "digits" else [v2.RandomHorizontalFlip()]  # a flipped digit is another symbol
    return v2.Compose([v2.ToImage(), crop, *flip, v2.ToDtype(torch.float32, scale=True), v2.Normalize(*mean_std)])


def test_transform(cfg: DataConfig, mean_std) -> v2.Compose:
    size = cfg.image_size
    resize = [] if size <= 64 else [v2.Resize(int(size / 0.875), antialias=True), v2.CenterCrop(size)]
    return v2.Compose([v2.ToImage(), *resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(*mean_std)])


class TensorImages(Dataset):
    """Images held as one uint8 tensor (N, 3, H, W) with labels, transformed per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def _digits(cfg: DataConfig) -> DataSplits:
    """scikit-learn's 1,797 handwritten 8x8 digits, upscaled bilinearly to image_size, grey to RGB,
    with a fixed seeded 80/20 train/test split (the same for every run)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(20210325))
    n_test = len(y) // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    ms = MEAN_STD["digits"]
    return DataSplits(TensorImages(x[train_idx], y[train_idx], train_transform(cfg, ms)),
                      TensorImages(x[test_idx], y[test_idx], test_transform(cfg, ms)), 10)


def _cifar(cfg: DataConfig) -> DataSplits:
    cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    ms = MEAN_STD[cfg.name]
    try:
        train = cls(cfg.root, train=True, download=False, transform=train_transform(cfg, ms))
        test = cls(cfg.root, train=False, download=False, transform=test_transform(cfg, ms))
    except RuntimeError as exc:
        folder = "cifar-10-batches-py" if cfg.name == "cifar10" else "cifar-100-python"
        raise DataError(
            f"{cfg.name} not found under data.root={cfg.root!r} ({exc}). Put the python version of "
            f"the data set there (the folder {folder}/ from the official tarball), or set data.root "
            f"to the folder that holds it; nothing is downloaded at run time.") from None
    return DataSplits(train, test, 10 if cfg.name == "cifar10" else 100)


def _imagefolder(cfg: DataConfig) -> DataSplits:
    root = Path(cfg.root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"data.name=imagefolder expects class folders under {root / split} "
                            f"(data.root={cfg.root!r} must hold train/ and val/)")
    ms = MEAN_STD["imagefolder"]
    try:
        train = datasets.ImageFolder(str(root / "train"), transform=train_transform(cfg, ms))
        test = datasets.ImageFolder(str(root / "val"), transform=test_transform(cfg, ms))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"cannot read image folders under data.root={cfg.root!r}: {exc}") from None
    if train.classes != test.classes:
        raise DataError(f"train/ and val/ under data.root={cfg.root!r} have different class folders")
    return DataSplits(train, test, len(train.classes))


def _fake(cfg: DataConfig) -> DataSplits:
    """Random images with random labels (for tests and throughput benchmarks), fixed by a seed."""
    g = torch.Generator().manual_seed(0)
    n = cfg.fake_train_size + cfg.fake_test_size
    x = torch.randint(0, 256, (n, 3, cfg.image_size, cfg.image_size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, cfg.fake_num_classes, (n,), generator=g)
    ms = MEAN_STD["fake"]
    k = cfg.fake_train_size
    return DataSplits(TensorImages(x[:k], y[:k], train_transform(cfg, ms)),
                      TensorImages(x[k:], y[k:], test_transform(cfg, ms)), cfg.fake_num_classes)


def build_datasets(cfg: DataConfig) -> DataSplits:
    builders = {"digits": _digits, "cifar10": _cifar, "cifar100": _cifar,
                "imagefolder": _imagefolder, "fake": _fake}
    splits = builders[cfg.name](cfg)
    if cfg.train_subset is not None:
        splits.train = Subset(splits.train, range(min(cfg.train_subset, len(splits.train))))
    if cfg.test_subset is not None:
        splits.test = Subset(splits.test, range(min(cfg.test_subset, len(splits.test))))
    return splits


def unnormalize(x: torch.Tensor, name: str) -> torch.Tensor:
    """Back to [0, 1] for pictures. x: (N, 3, H, W)."""
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in MEAN_STD[name])
    return (x * std + mean).clamp(0, 1)
