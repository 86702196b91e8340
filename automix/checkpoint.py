"""Checkpoints: one ``state.pt`` per epoch, written atomically (a crash never leaves half a file),
holding everything a resumed run needs to continue exactly as an uninterrupted one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

STATE_FILE = "state.pt"
# Settings that do not change what is computed: a resumed run may change them.
RESUMABLE_CHANGES = ("threads", "progress")


def save(state: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / STATE_FILE)
    return directory


def load(directory: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume from")
    return torch.load(path, map_location=map_location, weights_only=False)


def training_state(*, epoch: int, config: dict, net, optimizer, lr_sched, scaler, history: list[dict]) -> dict:
    """The state of a run after ``epoch`` (1-based): weights of q, k and the Mix Block, the optimizer's
    momentum buffers, the LR scheduler's step count, the GradScaler's scale and the metrics so far."""
    return {"epoch": epoch, "config": config, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_sched.state_dict(), "scaler": scaler.state_dict(), "history": list(history)}


def check_same_config(saved: dict, current: dict, where: str | Path) -> None:
    """A checkpoint resumes only under the config that wrote it (but for RESUMABLE_CHANGES)."""
    if _computed(saved) != _computed(current):
        raise ConfigError(f"the checkpoint in {where} was written with another config; resume with the same "
                          f"config (its config.yaml) or start a new output directory")


def _computed(cfg_dict: dict) -> dict:
    train_cfg = {k: v for k, v in cfg_dict["train"].items() if k not in RESUMABLE_CHANGES}
    return {**cfg_dict, "train": train_cfg}
