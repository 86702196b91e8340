"""Process-group plumbing: the same trainer runs alone, under torchrun and inside Ray Train workers."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    owns_group: bool  # True when this module created the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistInfo:
    """Join the existing process group (Ray Train, a caller) or create one from torchrun's env."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)
    return DistInfo(0, 1, 0, owns_group=False)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(setting: str, local_rank: int) -> torch.device:
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    if torch.cuda.is_available() and setting in ("cuda", "auto"):
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def all_reduce_sum(values: list[float], device: torch.device, world_size: int) -> list[float]:
    """Sum a few floats over all ranks (float64 so counts stay exact)."""
    if world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
