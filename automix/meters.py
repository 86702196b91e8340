"""What an epoch measured: the sums of its steps' losses and mask diagnostics, kept on the device
and read once at the epoch's end (no host sync per step), and its cost (throughput, peak memory)."""
from __future__ import annotations

import resource
import sys

import torch
import torch.distributed as dist
from torch import Tensor

from . import diagnostics, distributed
from .model import StepOutput


class EpochMeter:
    """Device-side float64 sums of ``train_loss``, each ``loss_<term>`` and (AutoMix) the mask
    diagnostics of :mod:`automix.diagnostics` over the steps of one epoch on this rank."""

    def __init__(self, device: torch.device):
        self.device = device
        self.steps = 0
        self._loss = torch.zeros((), dtype=torch.float64, device=device)
        self._terms: dict[str, Tensor] = {}
        self._mask: Tensor | None = None  # (3,) sums of diagnostics.mask_stats

    def add(self, out: StepOutput) -> None:
        self.steps += 1
        self._loss += out.loss.detach()
        for k, v in out.terms.items():
            self._terms[k] = self._terms.get(k, 0.0) + v.detach().double()
        if out.s_mb is not None:
            stats = diagnostics.mask_stats(out.s_mb, out.lam_mb).double()
            self._mask = stats if self._mask is None else self._mask + stats

    def means(self, world_size: int) -> dict[str, float]:
        """Means over the epoch's steps of every rank: one host read and one all-reduce."""
        keys = sorted(self._terms)
        names = ["train_loss", *(f"loss_{k}" for k in keys)]
        parts = [self._loss.reshape(1), *(self._terms[k].reshape(1) for k in keys)]
        if self._mask is not None:
            names += diagnostics.NAMES
            parts.append(self._mask)
        sums = distributed.all_reduce_sum(torch.cat(parts).tolist() + [self.steps], self.device, world_size)
        steps = max(sums[-1], 1.0)
        return {name: s / steps for name, s in zip(names, sums)}


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory of this process so far: GPU memory allocated by torch on a GPU, else the
    process's maximum resident set size (CPU runs keep tensors in host memory)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def all_reduce_max(values: list[float], device: torch.device, world_size: int) -> list[float]:
    """The largest value of each over all ranks (peak memory, skipped steps)."""
    if world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()
