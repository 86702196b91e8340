"""Checkpoints: one ``state.pt`` per epoch, written atomically (a crash never leaves half a file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


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
