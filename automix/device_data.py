"""An in-memory data set held on the device as uint8, augmented a whole batch at a time there
(``data.on_device``): no DataLoader, no per-sample Python, no host-to-device copy per step.

The order of the samples is the DataLoader path's: :class:`~torch.utils.data.DistributedSampler`
(shuffle with ``seed + epoch``, ``drop_last``, every rank its strided shard), so a resumed run sees the
same batches. The padded random crop and the flip are drawn from a device-side generator seeded per
epoch, the same draws on every replay of that epoch.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DistributedSampler


def pad_crop_flip(x: Tensor, pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Per sample: a random (H, W) crop of ``x`` zero-padded by ``pad`` on each side (all 2 pad + 1
    offsets equally likely, as torchvision's RandomCrop), mirrored left-right with probability 1/2.
    x: (N, C, H, W) of any dtype -> the same shape and dtype."""
    n, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        x = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev)
    rows = oy + torch.arange(h, device=dev)  # (N, H) source rows of each sample's crop
    cols = ox + torch.arange(w, device=dev)  # (N, W)
    if flip:
        mirrored = torch.rand(n, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    # Two gathers (rows, then columns) instead of one 4-d fancy index: ~1.6x faster on a CPU.
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, x.shape[3]))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


class DeviceImages:
    """uint8 images (N, C, H, W) and labels (N,) on ``device``, batched and normalised there."""

    def __init__(self, images: Tensor, labels: Tensor, mean: tuple, std: tuple, device: torch.device):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.labels)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 -> float32 as ToDtype(scale=True) then Normalize(mean, std)."""
        return (x.float() - self.mean) / self.std


class DeviceTrainBatches:
    """This rank's training batches of one epoch: indices from DistributedSampler, augmented on the device."""

    def __init__(self, data: DeviceImages, batch_size: int, rank: int, world_size: int, seed: int,
                 pad: int, flip: bool):
        self.data, self.batch_size, self.pad, self.flip = data, batch_size, pad, flip
        # The sampler only needs len(); it gives exactly the DataLoader path's order.
        self.sampler = DistributedSampler(range(len(data)), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.generator = torch.Generator(device=data.images.device)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # drop_last

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long).to(self.data.images.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = pad_crop_flip(self.data.images[idx], self.pad, self.flip, self.generator)
            yield self.data.normalize(x), self.data.labels[idx]


class DeviceTestBatches:
    """This rank's disjoint test slice (``rank::world_size``), in order, normalised on the device."""

    def __init__(self, data: DeviceImages, batch_size: int, rank: int, world_size: int):
        self.data, self.batch_size = data, batch_size
        self.indices = torch.arange(rank, len(data), world_size, device=data.images.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.indices), self.batch_size):
            idx = self.indices[start:start + self.batch_size]
            yield self.data.normalize(self.data.images[idx]), self.data.labels[idx]
