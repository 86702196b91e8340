"""The data of a run: the named set of ``data.name`` (see :mod:`automix.datasets`), read from
``data.root`` or generated (``fake``, ``data.synthetic``), cut to ``data.train_per_class`` /
``data.train_subset`` / ``data.test_subset``.

Nothing is downloaded: a missing or malformed data set is a :class:`DataError` that names
``data.root``, what it should hold and what it holds. :func:`check_root` makes the same check without
reading any image, for a study to run before it starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from . import tensor_sets
from .config import ConfigError, DataConfig
from .datasets import SPECS, DataError, DatasetSpec, spec_for
from .folders import ClassFolders, class_folders, listed_samples, read_image_list, scan_class_folders
from .tensor_sets import TensorImages

__all__ = ["DataError", "DataSplits", "build_datasets", "check_root", "unnormalize", "labels_of", "MEAN_STD"]

MEAN_STD = {name: (s.mean, s.std) for name, s in SPECS.items()}


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset
    num_classes: int
    spec: DatasetSpec | None = None

    @property
    def skipped_images(self) -> int:
        """Unreadable images skipped so far (``data.skip_corrupt``), train and test."""
        return sum(getattr(_base(d), "skipped", 0) for d in (self.train, self.test))


def build_datasets(cfg: DataConfig) -> DataSplits:
    spec = spec_for(cfg.name)
    if cfg.synthetic or spec.source == "fake":
        splits = _tensor_splits(spec, cfg, tensor_sets.random_images(
            cfg.fake_train_size, cfg.fake_test_size, cfg.image_size, spec.num_classes or cfg.fake_num_classes))
    elif spec.source == "digits":
        splits = _tensor_splits(spec, cfg, tensor_sets.digits(cfg.image_size))
    elif spec.source == "cifar":
        check_root(cfg)
        if cfg.image_size != spec.stored_size:
            raise ConfigError(f"data.image_size = {cfg.image_size}: {cfg.name} images are {spec.stored_size} px; "
                              f"set data.image_size: {spec.stored_size}")
        splits = _tensor_splits(spec, cfg, tensor_sets.cifar(cfg.name, cfg.root))
    else:
        splits = _folder_splits(spec, cfg)
    if cfg.train_per_class is not None:
        splits.train = _subset(splits.train, first_per_class(labels_of(splits.train), cfg.train_per_class,
                                                             splits.num_classes, cfg.name))
    if cfg.train_subset is not None:
        splits.train = _subset(splits.train, list(range(min(cfg.train_subset, len(splits.train)))))
    if cfg.test_subset is not None:
        splits.test = _subset(splits.test, list(range(min(cfg.test_subset, len(splits.test)))))
    return splits


def _tensor_splits(spec: DatasetSpec, cfg: DataConfig, arrays: tensor_sets.Arrays) -> DataSplits:
    x_train, y_train, x_test, y_test = arrays
    num_classes = spec.num_classes or cfg.fake_num_classes
    return DataSplits(TensorImages(x_train, y_train, spec.train_transform(cfg.image_size)),
                      TensorImages(x_test, y_test, spec.test_transform(cfg.image_size)), num_classes, spec)


def _folder_splits(spec: DatasetSpec, cfg: DataConfig) -> DataSplits:
    classes = _checked_classes(cfg)
    root = Path(cfg.root)
    train_samples = scan_class_folders(root / "train", classes)
    val_list = _val_list(spec, root)
    test_samples = listed_samples(val_list, classes) if val_list else scan_class_folders(root / "val", classes)
    train = ClassFolders(train_samples, spec.train_transform(cfg.image_size), cfg.skip_corrupt)
    test = ClassFolders(test_samples, spec.test_transform(cfg.image_size), cfg.skip_corrupt)
    return DataSplits(train, test, len(classes), spec)


def _val_list(spec: DatasetSpec, root: Path) -> Path | None:
    """The set's list of validation images when data.root holds it (official Tiny-ImageNet)."""
    return root / spec.val_list if spec.val_list and (root / spec.val_list).is_file() else None


# --------------------------------------------------------------------------- cheap checks

def check_root(cfg: DataConfig) -> None:
    """Check that ``data.root`` holds the files of ``data.name`` without decoding any image. Raises
    DataError naming data.root, what was expected and what was found."""
    _checked_classes(cfg)


def _checked_classes(cfg: DataConfig) -> list[str]:
    """:func:`check_root`, returning the class folder names of a folder set (``[]`` otherwise)."""
    spec = spec_for(cfg.name)
    if cfg.synthetic or spec.source in ("fake", "digits"):
        return []
    root = Path(cfg.root)
    if spec.source == "cifar":
        folder, train_files, test_files, _ = tensor_sets.CIFAR_FILES[cfg.name]
        missing = [f for f in (*train_files, *test_files) if not (root / folder / f).is_file()]
        if missing:
            _fail(cfg, spec, f"{root / folder} lacks {', '.join(missing)}")
        return []
    splits = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            _fail(cfg, spec, f"there is no folder {root / split}")
        splits[split] = class_folders(root / split)
        val_list = _val_list(spec, root) if split == "val" else None
        if val_list:
            # A list may name fewer classes; each one it names needs a train/ folder (no image is opened).
            unknown = sorted({cls for _, cls in read_image_list(val_list)} - set(splits["train"]))
            if unknown:
                _fail(cfg, spec, f"{spec.val_list} names classes without a train/ folder: {', '.join(unknown[:5])}")
            splits[split] = splits["train"]
        if not splits[split]:
            _fail(cfg, spec, f"{root / split} holds no class folders")
    if splits["train"] != splits["val"]:
        only = sorted(set(splits["train"]) ^ set(splits["val"]))
        _fail(cfg, spec, f"train/ has {len(splits['train'])} class folders and val/ {len(splits['val'])}; "
                         f"not in both: {', '.join(only[:5])}{' ...' if len(only) > 5 else ''}")
    if spec.num_classes is not None and len(splits["train"]) != spec.num_classes:
        _fail(cfg, spec, f"{len(splits['train'])} class folders, not {spec.num_classes} (for a part of "
                         f"{cfg.name} use data.name: imagefolder)")
    return splits["train"]


def _fail(cfg: DataConfig, spec: DatasetSpec, found: str) -> None:
    root = Path(cfg.root)
    if root.is_dir():
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        holds = f"it holds {', '.join(entries[:8])}{' ...' if len(entries) > 8 else ''}" if entries else "it is empty"
    else:
        holds = "it does not exist"
    raise DataError(f"data.name={cfg.name} expects under data.root={cfg.root!r} {spec.layout}; found: {found} "
                    f"({holds}). Set data.root to the folder that holds it; nothing is downloaded.")


# --------------------------------------------------------------------------- subsets

def _base(ds: Dataset) -> Dataset:
    while isinstance(ds, Subset):
        ds = ds.dataset
    return ds


def _subset(ds: Dataset, indices: list[int]) -> Subset:
    """A Subset of the underlying set (not nested), so its labels and tensors stay reachable."""
    if isinstance(ds, Subset):
        return Subset(ds.dataset, [ds.indices[i] for i in indices])
    return Subset(ds, indices)


def indices_of(ds: Dataset) -> list[int] | range:
    return ds.indices if isinstance(ds, Subset) else range(len(ds))


def labels_of(ds: Dataset) -> torch.Tensor:
    """Labels (N,) of a data set of this module without reading its images."""
    base = _base(ds)
    labels = base.labels if isinstance(base, TensorImages) else torch.as_tensor(base.targets)
    return labels[torch.as_tensor(list(indices_of(ds)), dtype=torch.long)] if isinstance(ds, Subset) else labels


def first_per_class(labels: torch.Tensor, n: int, num_classes: int, name: str) -> list[int]:
    """Indices of the first ``n`` samples of each class, in the set's order (low-data regime)."""
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) < n:
        c = int(counts.argmin())
        raise ConfigError(f"data.train_per_class = {n}: class {c} of {name} has only {int(counts[c])} training "
                          f"images; use at most {int(counts.min())}")
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts  # where each class begins in the sorted order
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts[labels[order]]  # the k-th sample of its class
    return torch.nonzero(rank < n).flatten().tolist()


def unnormalize(x: torch.Tensor, name: str) -> torch.Tensor:
    """Back to [0, 1] for pictures. x: (N, 3, H, W)."""
    spec = spec_for(name)
    mean, std = (torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) for v in (spec.mean, spec.std))
    return (x * std + mean).clamp(0, 1)
