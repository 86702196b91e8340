"""The batches of a run: train and test batches of this process's shard, behind one small interface
that the training loop uses whatever feeds it:

- :class:`HostLoaders`: DataLoaders over per-sample CPU transforms (every set);
- :class:`DeviceLoaders`: an in-memory uint8 set held on the device, augmented a batch at a time
  there (``data.on_device``; digits, CIFAR, fake, synthetic data).

Both take the sample order from DistributedSampler (shuffle with ``train.seed + epoch``, drop_last,
strided rank shards), so ``set_epoch`` + the batches of an epoch are the same on every replay.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .config import ConfigError, RunConfig
from .data import DataSplits, build_datasets, indices_of, labels_of
from .device_data import DeviceImages, DeviceTestBatches, DeviceTrainBatches
from .tensor_sets import TensorImages

ON_DEVICE_AUTO_MAX_BYTES = 2 << 30  # data.on_device auto: sets up to 2 GiB of uint8 go to the GPU


@dataclass
class Loaders:
    """train_batches: (x (n, C, H, W) float, y (n,) long) of this rank, on ``device``, ``local_batch_size``
    each, ``steps_per_epoch`` of them (before train.max_steps_per_epoch); test_batches: this rank's
    disjoint slice of the test set (counts summed over ranks are exact)."""
    splits: DataSplits
    steps_per_epoch: int
    local_batch_size: int
    device: torch.device
    on_device: bool = field(default=False, init=False)  # which feed this is, for the record

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    @property
    def skipped_images(self) -> int:
        """Unreadable images skipped so far (data.skip_corrupt), counted across DataLoader workers."""
        return self.splits.skipped_images

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Shuffle for ``epoch``; ``seed`` (derived from seed, epoch, rank) drives the augmentation draws."""
        raise NotImplementedError

    def train_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError


@dataclass
class HostLoaders(Loaders):
    train: DataLoader | None = None
    test: DataLoader | None = None
    sampler: DistributedSampler | None = None
    generator: torch.Generator | None = None

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(seed)  # DataLoader worker seeds and in-process transform draws

    def train_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.train:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.test:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass
class DeviceLoaders(Loaders):
    train: DeviceTrainBatches | None = None
    test: DeviceTestBatches | None = None

    def __post_init__(self) -> None:
        self.on_device = True

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.train.set_epoch(epoch, seed)

    def train_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.train)

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.test)


def build_loaders(cfg: RunConfig, rank: int, world_size: int, device: torch.device) -> Loaders:
    splits = build_datasets(cfg.data)
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} must be divisible by the number of "
                          f"data-parallel processes ({world_size})")
    local_bs = cfg.train.batch_size // world_size
    if len(splits.train) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} is larger than the training set "
                          f"({len(splits.train)} images of {cfg.data.name})")
    held = None if cfg.data.on_device == "off" else _in_memory(splits)
    if _use_device(cfg, splits, held, device):
        return _device_loaders(cfg, splits, held, rank, world_size, device, local_bs)
    sampler = DistributedSampler(splits.train, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=cfg.train.seed, drop_last=True)
    pin = device.type == "cuda"
    generator = torch.Generator()
    train = DataLoader(splits.train, batch_size=local_bs, sampler=sampler, drop_last=True,
                       num_workers=cfg.train.num_workers, pin_memory=pin, generator=generator)
    shard = Subset(splits.test, range(rank, len(splits.test), world_size))
    test = DataLoader(shard, batch_size=cfg.train.eval_batch_size, shuffle=False,
                      num_workers=cfg.train.num_workers, pin_memory=pin)
    return HostLoaders(splits, len(train), local_bs, device, train=train, test=test, sampler=sampler,
                       generator=generator)


def _tensors(ds) -> tuple[Tensor, Tensor] | None:
    """(images uint8 (N, 3, H, W), labels (N,)) of an in-memory set or a subset of one; None otherwise."""
    base = ds.dataset if isinstance(ds, Subset) else ds
    if not isinstance(base, TensorImages):
        return None
    if not isinstance(ds, Subset):
        return base.images, base.labels
    index = torch.as_tensor(list(indices_of(ds)), dtype=torch.long)
    return base.images[index], labels_of(ds)


InMemory = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]] | None  # (train, test) images and labels


def _in_memory(splits: DataSplits) -> InMemory:
    train, test = _tensors(splits.train), _tensors(splits.test)
    return None if train is None or test is None else (train, test)


def _use_device(cfg: RunConfig, splits: DataSplits, held: InMemory, device: torch.device) -> bool:
    mode = cfg.data.on_device
    if mode == "off":
        return False
    size = cfg.data.image_size
    if held is None or not splits.spec.batched_augment_ok(size):
        if mode == "on":
            raise ConfigError(
                f"data.on_device = on: {cfg.data.name} at {size} px cannot be augmented on the device (it does "
                f"the padded random crop + flip of sets held in memory up to 64 px: digits, cifar10, cifar100, "
                f"fake, data.synthetic); set data.on_device: auto or off")
        return False
    if mode == "on":
        return True
    nbytes = sum(images.numel() for images, _ in held)  # uint8: one byte per element
    return device.type == "cuda" and nbytes <= ON_DEVICE_AUTO_MAX_BYTES


def _device_loaders(cfg: RunConfig, splits: DataSplits, held: InMemory, rank: int, world_size: int,
                    device: torch.device, local_bs: int) -> DeviceLoaders:
    spec, size = splits.spec, cfg.data.image_size
    (train_x, train_y), (test_x, test_y) = held
    train = DeviceImages(train_x, train_y, spec.mean, spec.std, device)
    test = DeviceImages(test_x, test_y, spec.mean, spec.std, device)
    batches = DeviceTrainBatches(train, local_bs, rank, world_size, cfg.train.seed, pad=size // 8, flip=spec.flip)
    return DeviceLoaders(splits, len(batches), local_bs, device, train=batches,
                         test=DeviceTestBatches(test, cfg.train.eval_batch_size, rank, world_size))
