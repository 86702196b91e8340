"""Top-1 accuracy on the test set, summed exactly over the data-parallel ranks."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from . import distributed


@torch.no_grad()
def evaluate(models: dict[str, nn.Module], batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
             world_size: int, amp_ctx, channels_last: bool = False) -> dict[str, float]:
    """Top-1 (%) of each model's one-hot head on this rank's batches (x: (n, C, H, W), y: (n,), on
    ``device``), summed over ranks. ``models`` maps a metric name to a model; a model listed under
    two names (a baseline's q is both top1 and top1_q) is run once. Counts stay on the device until
    the end (no host sync per batch)."""
    unique: dict[int, nn.Module] = {id(m): m for m in models.values()}
    was_training = {k: m.training for k, m in unique.items()}
    correct = {k: torch.zeros((), dtype=torch.int64, device=device) for k in unique}
    count = 0
    for m in unique.values():
        m.eval()
    try:
        for x, y in batches:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp_ctx():
                for key, m in unique.items():
                    correct[key] += (m(x, "one").argmax(1) == y).sum()
            count += len(y)
    finally:
        for key, m in unique.items():
            m.train(was_training[key])
    keys = list(unique)
    counts = torch.stack([correct[k] for k in keys]).tolist() if keys else []
    sums = distributed.all_reduce_sum(counts + [count], device, world_size)
    total = max(sums[-1], 1.0)
    acc = {k: 100.0 * s / total for k, s in zip(keys, sums[:-1])}
    return {name: acc[id(m)] for name, m in models.items()}
