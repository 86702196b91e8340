"""One optimisation step (forward of the whole step, backward, SGD, LR schedule, EMA of k), and the
device-side watch for non-finite losses that lets a step run without waiting for the device."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import schedules
from .config import RunConfig
from .ema import EMA
from .model import StepOutput


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; training stops rather than silently dropping it."""


@dataclass
class Schedule:
    """Global-iteration schedules of one run (spec "Schedules")."""
    cfg: RunConfig
    total: int  # T: iterations of the whole run

    def momentum(self, t: int) -> float:
        a = self.cfg.automix
        return schedules.ema_momentum(t, self.total, a.momentum, a.momentum_end, a.momentum_warmup)

    def mask_weight(self, t: int) -> float:
        a = self.cfg.automix
        return schedules.mask_loss_weight(t, self.total, a.mask_loss_weight, a.mask_loss_decay)


class FiniteWatch:
    """The first step whose loss was not finite, recorded on the device.

    ``observe`` only queues a few tiny kernels (no ``.item()``: on a GPU the host keeps queueing
    steps); ``check`` reads the record, one host sync, and raises :class:`NonFiniteLossError` naming
    that first bad step and its loss terms, however many steps later it is called."""

    def __init__(self) -> None:
        self._epoch: Tensor | None = None  # 0-dim int64, -1 while every loss was finite
        self._t: Tensor | None = None  # 0-dim int64: the global iteration of the first bad step
        self._values: Tensor | None = None  # (1 + K,) float32: loss and terms of the first bad step
        self._names: tuple[str, ...] = ()

    def observe(self, out: StepOutput, t: int, epoch: int) -> None:
        values = torch.stack([out.loss.detach().float(), *(v.detach().float() for v in out.terms.values())])
        if self._t is None:
            self._names = ("loss", *out.terms)
            self._epoch = torch.full((), -1, dtype=torch.int64, device=values.device)
            self._t = torch.full((), -1, dtype=torch.int64, device=values.device)
            self._values = torch.zeros_like(values)
        first = ~torch.isfinite(values[0]) & (self._t < 0)  # bad, and nothing recorded before
        self._epoch = torch.where(first, epoch, self._epoch)
        self._t = torch.where(first, t, self._t)
        self._values = torch.where(first, values, self._values)

    def check(self) -> None:
        if self._t is None or int(self._t) < 0:
            return
        terms = ", ".join(f"{k} {v:.4g}" for k, v in zip(self._names, self._values.tolist()))
        raise NonFiniteLossError(
            f"non-finite loss at epoch {int(self._epoch)}, iteration {int(self._t)} (the first bad step; "
            f"iterations count from 0 over the run): {terms}. Lower optim.lr or optim.mixblock_lr, "
            f"raise optim.warmup_epochs, or use train.amp=bf16 instead of fp16")


@dataclass
class Stepper:
    """One optimisation step: forward of the whole step, backward, SGD, LR schedule, EMA of k.

    Non-finite losses are recorded on the device and read every ``check_finite_every`` steps (1:
    before the backward of every step, the strict mode tests use; the loop passes
    ``train.check_finite_every`` and calls ``watch.check()`` at each epoch's end).

    fp16: a step the GradScaler skips (inf/NaN gradients) is counted in ``skipped_steps``; it does
    not advance the EMA of k (nothing was learned that k could average) nor the LR scheduler: the
    schedule counts the optimizer updates actually applied, so the run still goes through the whole
    warm-up and cosine, the last few iterations of a run that skipped n steps using the LR of n
    iterations earlier. The EMA momentum and the mask-loss weight stay functions of the iteration."""
    model: nn.Module  # net, or its DDP wrapper
    net: nn.Module
    optimizer: torch.optim.Optimizer
    lr_sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: EMA | None
    sched: Schedule
    amp_ctx: object
    momentum: float = float("nan")  # EMA momentum of the last applied step (AutoMix)
    check_finite_every: int = 1
    mask_weight: float = float("nan")  # L_mask weight of the last step (AutoMix)
    skipped_steps: int = 0  # optimizer steps the fp16 GradScaler skipped, since construction
    watch: FiniteWatch = field(default_factory=FiniteWatch)

    def step(self, x: Tensor, y: Tensor, draws, t: int, epoch: int) -> StepOutput:
        """x: (N, C, H, W), y: (N,) on the device; draws from ``net.draw``; t: global iteration."""
        self.mask_weight = self.sched.mask_weight(t) if self.ema is not None else 0.0
        with self.amp_ctx():
            out = self.model(x, y, draws, self.mask_weight)
        self.watch.observe(out, t, epoch)
        if (t + 1) % self.check_finite_every == 0:
            self.watch.check()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        if self._optimizer_step():
            self.lr_sched.step()
            if self.ema is not None:
                self.momentum = self.sched.momentum(t)
                self.ema.update(self.momentum)
        return out

    def _optimizer_step(self) -> bool:
        """SGD through the GradScaler; False when fp16 found inf/NaN gradients and skipped the step.

        Only under fp16 is anything read on the host: torch's GradScaler.step already syncs on its
        found-inf flag, so reading the scale it then backs off (GradScaler requires backoff < 1, so
        the scale falls exactly when a step was skipped) adds no stall. bf16 and fp32 read nothing."""
        if not self.scaler.is_enabled():
            self.optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        skipped = self.scaler.get_scale() < before
        self.skipped_steps += int(skipped)
        return not skipped


def amp_context(amp: str, device: torch.device):
    """A factory of autocast contexts for train.amp (none | bf16 | fp16)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def ctx():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)
    return ctx
