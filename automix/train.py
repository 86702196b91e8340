"""The training loop: one function, ``train(cfg, output_dir, reporter=...)``, that runs the same way
from the command line, under ``torchrun`` (DDP, gloo on CPU / NCCL on GPU) and inside a Ray Train
worker. Usage::

    python -m automix.train configs/digits_automix.yaml --set optim.lr=0.05 --output-dir runs/a
    torchrun --nproc-per-node 2 -m automix.train CONFIG.yaml --output-dir runs/ddp
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from . import checkpoint, distributed, schedules
from .config import ConfigError, RunConfig, load_config, save_config, to_dict
from .data import DataError, build_datasets
from .ema import EMA
from .model import AutoMixNet, build_net
from .visualize import save_mix_grid

log = logging.getLogger("automix")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; training stops rather than silently dropping it."""


class Reporter(Protocol):
    def report(self, metrics: dict, checkpoint_dir: Path | None, artifacts: list[Path]) -> None: ...


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


def _seed(cfg: RunConfig, epoch: int, rank: int) -> int:
    # Everything random in an epoch derives from (seed, epoch, rank): a resumed run replays exactly.
    return (cfg.train.seed * 1_000_003 + epoch * 1_009 + rank) % (2**63 - 1)


@dataclass
class Stepper:
    """One optimisation step: forward of the whole step, backward, SGD, LR schedule, EMA of k."""
    model: nn.Module  # net, or its DDP wrapper
    net: nn.Module
    optimizer: torch.optim.Optimizer
    lr_sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: EMA | None
    sched: Schedule
    amp_ctx: object
    momentum: float = float("nan")  # EMA momentum of the last step (AutoMix)

    def step(self, x, y, draws, t: int, epoch: int):
        with self.amp_ctx():
            out = self.model(x, y, draws, self.sched.mask_weight(t) if self.ema is not None else 0.0)
        if not torch.isfinite(out.loss):
            bad = {k: float(v.detach()) for k, v in out.terms.items()}
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch}, iteration {t}: terms {bad}. Lower optim.lr or "
                f"optim.mixblock_lr, or use train.amp=bf16 instead of fp16")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_sched.step()
        if self.ema is not None:
            self.momentum = self.sched.momentum(t)
            self.ema.update(self.momentum)
        return out


def amp_context(amp: str, device: torch.device):
    """A factory of autocast contexts for train.amp (none | bf16 | fp16)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def ctx():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)
    return ctx


def build_optimizer(cfg: RunConfig, net: nn.Module, total_iters: int):
    """SGD with the backbone+heads group (lr -> min_lr) and the Mix Block group (mixblock_lr ->
    mixblock_min_lr), each annealed by its own cosine per iteration."""
    o = cfg.optim
    groups = [{"params": [p for p in net.q.parameters() if p.requires_grad], "lr": o.lr, "name": "q"}]
    factors = [schedules.cosine_lr_factor(o.lr, o.min_lr, total_iters)]
    if isinstance(net, AutoMixNet):
        groups.append({"params": list(net.mixblock.parameters()), "lr": o.mixblock_lr, "name": "mixblock"})
        factors.append(schedules.cosine_lr_factor(o.mixblock_lr, o.mixblock_min_lr, total_iters))
    opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factors)


@torch.no_grad()
def evaluate(models: dict[str, nn.Module], loader: DataLoader, device: torch.device, world_size: int,
             amp_ctx, channels_last: bool) -> dict[str, float]:
    """Top-1 (%) of each model's one-hot head on this rank's shard, summed over ranks."""
    unique: dict[int, nn.Module] = {id(m): m for m in models.values()}
    correct = {k: 0 for k in unique}
    count = 0
    for m in unique.values():
        m.eval()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp_ctx():
            for key, m in unique.items():
                correct[key] += int((m(x, "one").argmax(1) == y).sum())
        count += len(y)
    for m in unique.values():
        m.train()
    keys = list(unique)
    sums = distributed.all_reduce_sum([correct[k] for k in keys] + [count], device, world_size)
    total = max(sums[-1], 1.0)
    acc = {k: 100.0 * s / total for k, s in zip(keys, sums[:-1])}
    return {name: acc[id(m)] for name, m in models.items()}


def _loaders(cfg: RunConfig, dinfo, device):
    splits = build_datasets(cfg.data)
    if cfg.train.batch_size % dinfo.world_size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} must be divisible by the number of "
                          f"data-parallel processes ({dinfo.world_size})")
    local_bs = cfg.train.batch_size // dinfo.world_size
    if len(splits.train) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} is larger than the training set "
                          f"({len(splits.train)} images of {cfg.data.name})")
    sampler = DistributedSampler(splits.train, num_replicas=dinfo.world_size, rank=dinfo.rank, shuffle=True,
                                 seed=cfg.train.seed, drop_last=True)
    pin = device.type == "cuda"
    loader_gen = torch.Generator()
    train_loader = DataLoader(splits.train, batch_size=local_bs, sampler=sampler, drop_last=True,
                              num_workers=cfg.train.num_workers, pin_memory=pin, generator=loader_gen)
    # Test shard: every rank a disjoint slice, no padding, so the summed counts are exact.
    shard = Subset(splits.test, range(dinfo.rank, len(splits.test), dinfo.world_size))
    test_loader = DataLoader(shard, batch_size=cfg.train.eval_batch_size, shuffle=False,
                             num_workers=cfg.train.num_workers, pin_memory=pin)
    return splits, sampler, loader_gen, train_loader, test_loader


def train(cfg: RunConfig, output_dir: str | Path, *, reporter: Reporter | None = None,
          resume_from: str | Path | None = None, device: torch.device | str | None = None) -> list[dict]:
    """Train one run; returns the per-epoch metrics. See docs/architecture.md for the contract."""
    output_dir = Path(output_dir)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    device = torch.device(device) if device is not None else distributed.pick_device(
        cfg.train.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dinfo = distributed.setup(device)
    try:
        return _train(cfg, output_dir, reporter, resume_from, device, dinfo)
    finally:
        distributed.teardown(dinfo)


def _train(cfg, output_dir: Path, reporter, resume_from, device, dinfo) -> list[dict]:
    main = dinfo.is_main
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    splits, sampler, loader_gen, train_loader, test_loader = _loaders(cfg, dinfo, device)
    iters = len(train_loader) if cfg.train.max_steps_per_epoch is None else min(
        len(train_loader), cfg.train.max_steps_per_epoch)
    total = iters * cfg.train.epochs
    sched = Schedule(cfg, total)

    net = build_net(cfg, splits.num_classes).to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    is_automix = isinstance(net, AutoMixNet)
    ema = EMA(net.k, net.q) if is_automix else None
    optimizer, lr_sched = build_optimizer(cfg, net, total)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    amp_ctx = amp_context(cfg.train.amp, device)

    history: list[dict] = []
    start_epoch = 1
    if resume_from is not None:
        state = checkpoint.load(resume_from, map_location=device)
        if _schedule_relevant(state["config"]) != _schedule_relevant(to_dict(cfg)):
            raise ConfigError(f"the checkpoint in {resume_from} was written with another config; resume with "
                              f"the same config (its config.yaml) or start a new output directory")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        start_epoch = state["epoch"] + 1
        if main:  # the log of the checkpointed epochs, without lines of an epoch that is re-run
            (output_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        if main:
            log.info("resumed from %s at epoch %d", resume_from, start_epoch)

    if is_automix and main and start_epoch == 1:
        msg = schedules.ema_horizon_warning(cfg.automix.momentum, total)
        if msg:
            warnings.warn(msg, stacklevel=2)

    model = net
    if dinfo.world_size > 1:
        # One wrapper around the whole step: q (used twice) and the Mix Block (used twice, once
        # detached) each get one gradient per backward, which DDP all-reduces; k has no gradients.
        model = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)

    stepper = Stepper(model, net, optimizer, lr_sched, scaler, ema, sched, amp_ctx)
    artifacts_pending: list[Path] = []
    if main and start_epoch == 1:
        artifacts_pending.append(save_config(cfg, output_dir / "config.yaml"))
    progress = _progress_mode(cfg, main)

    for epoch in range(start_epoch, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        seed = _seed(cfg, epoch, dinfo.rank)
        torch.manual_seed(seed)  # per-sample augmentations in the main process
        loader_gen.manual_seed(seed)  # worker seeds when num_workers > 0
        sampler.set_epoch(epoch)
        rng = np.random.default_rng(seed)  # lam ~ Beta(alpha, alpha)
        gen = torch.Generator().manual_seed(seed)  # permutations, cutmix boxes
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        term_sums: dict[str, torch.Tensor] = {}
        bar = _bar(progress, iters, epoch, cfg.train.epochs)
        last_x = None
        for i, (x, y) in enumerate(train_loader):
            if i >= iters:
                break
            t = (epoch - 1) * iters + i
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            draws = net.draw(x.shape[0], rng, gen, device, tuple(x.shape[-2:]))
            out = stepper.step(x, y, draws, t, epoch)
            loss_sum += out.loss.detach()
            for k, v in out.terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + v.detach().double()
            last_x = x
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

        acc = evaluate(net.eval_models(), test_loader, device, dinfo.world_size, amp_ctx, cfg.train.channels_last)
        term_keys = sorted(term_sums)
        sums = distributed.all_reduce_sum(
            [float(loss_sum)] + [float(term_sums[k]) for k in term_keys], device, dinfo.world_size)
        n_steps = iters * dinfo.world_size
        metrics = {
            "epoch": epoch,
            "top1": acc["top1"],
            "top1_q": acc["top1_q"],
            "train_loss": sums[0] / n_steps,
            **{f"loss_{k}": s / n_steps for k, s in zip(term_keys, sums[1:])},
            "lr": optimizer.param_groups[0]["lr"],
            "iterations": epoch * iters,
            "world_size": dinfo.world_size,
            "skipped_steps": 0,
        }
        if is_automix:
            metrics["mixblock_lr"] = optimizer.param_groups[1]["lr"]
            metrics["momentum"] = stepper.momentum
        artifacts = artifacts_pending
        artifacts_pending = []
        every = cfg.train.mix_grid_every
        if main and every and last_x is not None and (epoch % every == 0 or epoch == cfg.train.epochs):
            artifacts.append(_save_preview(net, last_x, cfg, output_dir / f"mix_epoch{epoch:04d}.png"))
        metrics["epoch_time_s"] = time.perf_counter() - t0
        history.append(metrics)
        ckpt_dir = None
        if main:
            with (output_dir / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(metrics) + "\n")
            ckpt_dir = checkpoint.save({
                "epoch": epoch, "config": to_dict(cfg), "net": net.state_dict(),
                "optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict(),
                "scaler": scaler.state_dict(), "history": history,
            }, output_dir / "checkpoint")
            if progress != "none":
                log.info("epoch %d/%d top1 %.2f top1_q %.2f loss %.4f lr %.4g%s %.1fs", epoch, cfg.train.epochs,
                         metrics["top1"], metrics["top1_q"], metrics["train_loss"], metrics["lr"],
                         f" m {metrics['momentum']:.6f}" if is_automix else "", metrics["epoch_time_s"])
        if reporter is not None:
            reporter.report(metrics, ckpt_dir, artifacts if main else [])
    return history


def _schedule_relevant(cfg_dict: dict) -> dict:
    """The config without the settings that do not change what is computed (threads, progress)."""
    train_cfg = {k: v for k, v in cfg_dict["train"].items() if k not in ("threads", "progress")}
    return {**cfg_dict, "train": train_cfg}


@torch.no_grad()
def _save_preview(net, x, cfg: RunConfig, path: Path) -> Path:
    # A fixed draw so pictures of successive epochs show how the Mix Block changed, not the dice.
    rng = np.random.default_rng(cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    x = x[:8]
    draws = net.draw(x.shape[0], rng, gen, x.device, tuple(x.shape[-2:]))
    if draws is None:  # vanilla: nothing is mixed; show the images alone
        z = torch.zeros_like(x[:, :1])
        return save_mix_grid(x, x, z, x, path, cfg.data.name)
    p = net.preview(x, draws)
    return save_mix_grid(p.x_i, p.x_j, p.mask, p.mixed, path, cfg.data.name)


def _progress_mode(cfg: RunConfig, main: bool) -> str:
    if not main:
        return "none"
    mode = cfg.train.progress
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return mode


def _bar(mode: str, iters: int, epoch: int, epochs: int):
    if mode != "bar":
        return None
    from tqdm.auto import tqdm

    return tqdm(total=iters, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m automix.train", description="Train one AutoMix or baseline run.")
    parser.add_argument("config", nargs="?", help="YAML run config (defaults apply to missing keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set mix.alpha=1.0 (repeatable)")
    parser.add_argument("--output-dir", required=True, help="where metrics.jsonl, config.yaml and checkpoints go")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.output_dir)
    try:
        if args.resume:
            saved = out / "config.yaml"
            if not saved.is_file():
                raise ConfigError(f"--resume: {saved} does not exist; run without --resume first")
            cfg = load_config(saved, args.overrides)
        else:
            cfg = load_config(args.config, args.overrides)
        resume = out / "checkpoint" if args.resume else None
        history = train(cfg, out, resume_from=resume)
    except (ConfigError, DataError, FileNotFoundError, NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if history:
        last = history[-1]
        print(json.dumps({"epoch": last["epoch"], "top1": last["top1"], "top1_q": last["top1_q"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
