"""Train one run: ``train(cfg, output_dir, reporter=...)`` runs the same way from the command line,
under ``torchrun`` (DDP, gloo on CPU / NCCL on GPU) and inside a Ray Train worker. Usage::

    python -m automix.train configs/digits_automix.yaml --set optim.lr=0.05 --output-dir runs/a
    torchrun --nproc-per-node 2 -m automix.train CONFIG.yaml --output-dir runs/ddp

The loop itself is in :mod:`automix.loop`, one step in :mod:`automix.stepper`, the command line in
:mod:`automix.cli`; the names below are re-exported for callers of this module.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from . import distributed
from .config import RunConfig
from .evaluate import evaluate
from .loop import Reporter, epoch_seed, fit
from .optim import build_optimizer
from .stepper import NonFiniteLossError, Schedule, Stepper, amp_context

__all__ = ["train", "main", "Reporter", "NonFiniteLossError", "Schedule", "Stepper", "amp_context",
           "build_optimizer", "evaluate", "epoch_seed"]

_seed = epoch_seed  # the name tests/test_ddp.py knows


def train(cfg: RunConfig, output_dir: str | Path, *, reporter: Reporter | None = None,
          resume_from: str | Path | None = None, device: torch.device | str | None = None) -> list[dict]:
    """Train one run; returns the per-epoch metrics. See docs/architecture.md for the contract."""
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    device = torch.device(device) if device is not None else distributed.pick_device(
        cfg.train.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dinfo = distributed.setup(device)
    try:
        return fit(cfg, Path(output_dir), reporter, resume_from, device, dinfo)
    finally:
        distributed.teardown(dinfo)


def main(argv: list[str] | None = None) -> int:
    """``python -m automix.train``: see :func:`automix.cli.main`."""
    from .cli import main as cli_main  # the command line imports this module: import it when called

    return cli_main(argv, train)


if __name__ == "__main__":
    sys.exit(main())
