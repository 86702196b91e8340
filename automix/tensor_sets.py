"""Data sets held in memory as one uint8 tensor (N, 3, H, W): scikit-learn's digits, CIFAR-10/100 read
from the python pickles, and random images (``fake``, ``data.synthetic``)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import DataError

DIGITS_SPLIT_SEED = 20210325
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


class TensorImages(Dataset):
    """Images (N, 3, H, W) uint8 with labels (N,) long, transformed per sample."""

    def __init__(self, images: Tensor, labels: Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


Arrays = tuple[Tensor, Tensor, Tensor, Tensor]  # train images, train labels, test images, test labels


def digits(size: int) -> Arrays:
    """scikit-learn's 1,797 handwritten 8x8 digits, upscaled bilinearly to ``size``, grey to RGB, with
    a fixed seeded 80/20 train/test split (the same for every run)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = len(y) // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def cifar(name: str, root: str) -> Arrays:
    """CIFAR-10/100 from the python pickles under ``root`` (the official tarball's folder)."""
    folder, train_files, test_files, label_key = CIFAR_FILES[name]
    base = Path(root) / folder
    return (*_cifar_pickles(base, train_files, label_key), *_cifar_pickles(base, test_files, label_key))


def _cifar_pickles(base: Path, files: list[str], label_key: bytes) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for name in files:
        path = base / name
        try:
            with path.open("rb") as fh:
                entry = pickle.load(fh, encoding="bytes")
            data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry[label_key], dtype=np.int64)
        except FileNotFoundError:
            raise DataError(f"{path} is missing") from None
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path} is not a CIFAR python pickle ({type(exc).__name__}: {exc})") from None
        if len(data) != len(labels):
            raise DataError(f"{path} holds {len(data)} images but {len(labels)} labels")
        xs.append(torch.from_numpy(data))
        ys.append(torch.from_numpy(labels))
    return torch.cat(xs), torch.cat(ys)


def random_images(n_train: int, n_test: int, size: int, num_classes: int) -> Arrays:
    """Random images with random labels, fixed by a seed (tests, smoke runs, throughput benchmarks)."""
    g = torch.Generator().manual_seed(0)
    n = n_train + n_test
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
