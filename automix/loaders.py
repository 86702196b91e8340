"""The batches of a run: train and test loaders for this process's shard, behind one small interface
that the training loop uses whatever feeds it (a DataLoader over per-sample CPU transforms, or a
uint8 data set held on the device with batched augmentation, ``data.on_device``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .config import ConfigError, RunConfig
from .data import DataSplits, build_datasets


@dataclass
class Loaders:
    """train: yields (x (n, C, H, W), y (n,)) batches of this rank, on ``device``; test: this rank's
    disjoint slice of the test set (the counts summed over ranks are exact)."""
    splits: DataSplits
    train: Iterable[tuple[Tensor, Tensor]]
    test: Iterable[tuple[Tensor, Tensor]]
    steps_per_epoch: int  # full batches per epoch on each rank (before train.max_steps_per_epoch)
    local_batch_size: int
    device: torch.device
    _sampler: DistributedSampler | None = None
    _generator: torch.Generator | None = None

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Shuffle for ``epoch``; ``seed`` (derived from seed, epoch, rank) drives worker seeds."""
        if self._sampler is not None:
            self._sampler.set_epoch(epoch)
        if self._generator is not None:
            self._generator.manual_seed(seed)

    def train_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.train:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.test:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def build_loaders(cfg: RunConfig, rank: int, world_size: int, device: torch.device) -> Loaders:
    splits = build_datasets(cfg.data)
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} must be divisible by the number of "
                          f"data-parallel processes ({world_size})")
    local_bs = cfg.train.batch_size // world_size
    if len(splits.train) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} is larger than the training set "
                          f"({len(splits.train)} images of {cfg.data.name})")
    sampler = DistributedSampler(splits.train, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=cfg.train.seed, drop_last=True)
    pin = device.type == "cuda"
    generator = torch.Generator()
    train_loader = DataLoader(splits.train, batch_size=local_bs, sampler=sampler, drop_last=True,
                              num_workers=cfg.train.num_workers, pin_memory=pin, generator=generator)
    shard = Subset(splits.test, range(rank, len(splits.test), world_size))
    test_loader = DataLoader(shard, batch_size=cfg.train.eval_batch_size, shuffle=False,
                             num_workers=cfg.train.num_workers, pin_memory=pin)
    return Loaders(splits, train_loader, test_loader, len(train_loader), local_bs, device, sampler, generator)
