"""The training loop, read top to bottom: build the run, resume it, then per epoch
``train_one_epoch`` -> ``evaluate`` -> ``epoch_metrics`` -> ``save_epoch`` (metrics line,
checkpoint, picture, report). ``automix.train.train`` sets up the device and process group around it."""
from __future__ import annotations

import itertools
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint, distributed, schedules
from .config import RunConfig, save_config, to_dict
from .distributed import DistInfo
from .ema import EMA
from .evaluate import evaluate
from .loaders import Loaders, build_loaders
from .meters import EpochMeter, all_reduce_max, peak_mem_mb
from .model import AutoMixNet, BaselineNet, build_net
from .optim import build_optimizer, group_lr
from .stepper import Schedule, Stepper, amp_context
from .visualize import save_mix_grid

log = logging.getLogger("automix")
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
LAST_PICTURE = "mix_last.png"  # in the checkpoint folder, overwritten every epoch


class Reporter(Protocol):
    def report(self, metrics: dict, checkpoint_dir: Path | None, artifacts: list[Path]) -> None: ...


def epoch_seed(cfg: RunConfig, epoch: int, rank: int) -> int:
    # Everything random in an epoch derives from (seed, epoch, rank): a resumed run replays exactly.
    return (cfg.train.seed * 1_000_003 + epoch * 1_009 + rank) % (2**63 - 1)


@dataclass
class Run:
    """What one training run holds from epoch to epoch."""
    cfg: RunConfig
    output_dir: Path
    device: torch.device
    dinfo: DistInfo
    loaders: Loaders
    iters: int  # iterations per epoch: full batches, capped by train.max_steps_per_epoch
    net: AutoMixNet | BaselineNet
    stepper: Stepper

    @property
    def main(self) -> bool:
        return self.dinfo.is_main

    @property
    def is_automix(self) -> bool:
        return isinstance(self.net, AutoMixNet)


@dataclass
class EpochResult:
    meter: EpochMeter
    last_x: Tensor | None  # the epoch's last batch (for the picture)
    train_time_s: float
    skipped_steps: int


def build_run(cfg: RunConfig, output_dir: Path, device: torch.device, dinfo: DistInfo) -> Run:
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    loaders = build_loaders(cfg, dinfo.rank, dinfo.world_size, device)
    iters = loaders.steps_per_epoch
    if cfg.train.max_steps_per_epoch is not None:
        iters = min(iters, cfg.train.max_steps_per_epoch)
    total = iters * cfg.train.epochs
    net = build_net(cfg, loaders.num_classes).to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = EMA(net.k, net.q) if isinstance(net, AutoMixNet) else None
    optimizer, lr_sched = build_optimizer(cfg, net, total)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    stepper = Stepper(net, net, optimizer, lr_sched, scaler, ema, Schedule(cfg, total),
                      amp_context(cfg.train.amp, device), check_finite_every=cfg.train.check_finite_every)
    return Run(cfg, output_dir, device, dinfo, loaders, iters, net, stepper)


def load_state(run: Run, resume_from: str | Path) -> list[dict]:
    """Restore weights, optimizer, LR scheduler and GradScaler; returns the checkpointed history."""
    state = checkpoint.load(resume_from, map_location=run.device)
    checkpoint.check_same_config(state["config"], to_dict(run.cfg), resume_from)
    s = run.stepper
    run.net.load_state_dict(state["net"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.lr_sched.load_state_dict(state["lr_scheduler"])
    s.scaler.load_state_dict(state["scaler"])
    if run.main:
        log.info("resumed from %s after epoch %d", resume_from, state["epoch"])
    return list(state["history"])


def distribute(run: Run) -> None:
    """Wrap the net in DDP when there are several processes (after a resume loaded its weights).

    One wrapper around the whole step: q (used twice) and the Mix Block (used twice, once detached)
    each get one gradient per backward, which DDP all-reduces; k has no gradients."""
    if run.dinfo.world_size > 1:
        ids = [run.device] if run.device.type == "cuda" else None
        run.stepper.model = DistributedDataParallel(run.net, device_ids=ids)


def start_outputs(run: Run, history: list[dict]) -> list[Path]:
    """Rank 0: the output folder, config.yaml (a new run), and metrics.jsonl holding exactly the
    epochs of ``history`` (a new run starts it empty: lines are never duplicated). Returns the
    artifacts to report with the first epoch."""
    if not run.main:
        return []
    run.output_dir.mkdir(parents=True, exist_ok=True)
    (run.output_dir / METRICS_FILE).write_text("".join(json.dumps(h) + "\n" for h in history))
    if history:
        return []
    if run.is_automix:
        msg = schedules.ema_horizon_warning(run.cfg.automix.momentum, run.stepper.sched.total)
        if msg:
            warnings.warn(msg, stacklevel=3)
    return [save_config(run.cfg, run.output_dir / "config.yaml")]


def fit(cfg: RunConfig, output_dir: Path, reporter: Reporter | None, resume_from: str | Path | None,
        device: torch.device, dinfo: DistInfo) -> list[dict]:
    """Train from the start or from ``resume_from`` to ``train.epochs``; returns every epoch's metrics."""
    run = build_run(cfg, output_dir, device, dinfo)
    history = load_state(run, resume_from) if resume_from is not None else []
    distribute(run)
    artifacts = start_outputs(run, history)
    for epoch in range(len(history) + 1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        result = train_one_epoch(run, epoch)
        acc = evaluate(run.net.eval_models(), run.loaders.test_batches(), device, dinfo.world_size,
                       run.stepper.amp_ctx, cfg.train.channels_last)
        metrics = epoch_metrics(run, epoch, result, acc, time.perf_counter() - t0)
        history.append(metrics)
        save_epoch(run, metrics, history, result.last_x, reporter, artifacts)
        artifacts = []
    return history


def train_one_epoch(run: Run, epoch: int) -> EpochResult:
    """``run.iters`` optimisation steps; losses and mask diagnostics summed on the device."""
    cfg, net, stepper = run.cfg, run.net, run.stepper
    t0 = time.perf_counter()
    seed = epoch_seed(cfg, epoch, run.dinfo.rank)
    torch.manual_seed(seed)  # per-sample augmentations in the main process
    run.loaders.set_epoch(epoch, seed)  # shuffling, and worker seeds when num_workers > 0
    rng = np.random.default_rng(seed)  # lam ~ Beta(alpha, alpha)
    gen = torch.Generator().manual_seed(seed)  # permutations, cutmix boxes
    meter = EpochMeter(run.device)
    skipped_before = stepper.skipped_steps
    bar = _bar(_progress_mode(run), run.iters, epoch, cfg.train.epochs)
    last_x = None
    for i, (x, y) in enumerate(itertools.islice(run.loaders.train_batches(), run.iters)):
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        draws = net.draw(x.shape[0], rng, gen, run.device, tuple(x.shape[-2:]))
        meter.add(stepper.step(x, y, draws, (epoch - 1) * run.iters + i, epoch))
        last_x = x
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    stepper.watch.check()  # one host sync per epoch; it also makes the clock below honest on a GPU
    return EpochResult(meter, last_x, time.perf_counter() - t0, stepper.skipped_steps - skipped_before)


def epoch_metrics(run: Run, epoch: int, result: EpochResult, acc: dict[str, float], epoch_time_s: float) -> dict:
    """The epoch's line of metrics.jsonl (names: automix/record.py), reduced over ranks."""
    world = run.dinfo.world_size
    s = run.stepper
    peak, skipped = all_reduce_max([peak_mem_mb(run.device), result.skipped_steps], run.device, world)
    metrics = {"epoch": epoch, "top1": acc["top1"], "top1_q": acc["top1_q"], **result.meter.means(world),
               "sched_lr": group_lr(s.optimizer, "q")}
    if run.is_automix:
        metrics.update(sched_mixblock_lr=group_lr(s.optimizer, "mixblock"), sched_ema_momentum=s.momentum,
                       sched_mask_weight=s.mask_weight)
    metrics.update({
        "skipped_steps": int(skipped), "iterations": epoch * run.iters, "world_size": world,
        "epoch_time_s": epoch_time_s,  # training and evaluation
        "images_per_s": run.iters * run.cfg.train.batch_size / max(result.train_time_s, 1e-9),  # all ranks
        "peak_mem_mb": peak,
        # cumulative over the run: unreadable images replaced under data.skip_corrupt, all ranks
        "skipped_images": int(distributed.all_reduce_sum([run.loaders.skipped_images], run.device, world)[0]),
    })
    return metrics


def save_epoch(run: Run, metrics: dict, history: list[dict], last_x: Tensor | None,
               reporter: Reporter | None, artifacts: list[Path]) -> None:
    """Rank 0: the picture, the metrics line and the checkpoint; every rank: the report."""
    ckpt_dir = None
    if run.main:
        epoch = metrics["epoch"]
        ckpt_dir = run.output_dir / CHECKPOINT_DIR
        if last_x is not None:
            artifacts = artifacts + save_pictures(run, epoch, last_x, ckpt_dir)
        checkpoint.save(checkpoint.training_state(
            epoch=epoch, config=to_dict(run.cfg), net=run.net, optimizer=run.stepper.optimizer,
            lr_sched=run.stepper.lr_sched, scaler=run.stepper.scaler, history=history), ckpt_dir)
        # After the checkpoint: a line in metrics.jsonl means the epoch can be resumed from.
        with (run.output_dir / METRICS_FILE).open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if _progress_mode(run) != "none":
            _log_epoch(run, metrics)
    if reporter is not None:
        reporter.report(metrics, ckpt_dir, artifacts if run.main else [])


def save_pictures(run: Run, epoch: int, x: Tensor, ckpt_dir: Path) -> list[Path]:
    """``mix_last.png`` in the checkpoint folder every epoch (a tracker can show the last picture of
    any trial, even one stopped early); ``mix_epochNNNN.png`` every ``train.mix_grid_every`` epochs
    and at the last. Returns the latter (artifacts)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = _draw_picture(run.net, x, run.cfg, ckpt_dir / LAST_PICTURE)
    every = run.cfg.train.mix_grid_every
    if not every or (epoch % every and epoch != run.cfg.train.epochs):
        return []
    path = run.output_dir / f"mix_epoch{epoch:04d}.png"
    path.write_bytes(last.read_bytes())
    return [path]


@torch.no_grad()
def _draw_picture(net: AutoMixNet | BaselineNet, x: Tensor, cfg: RunConfig, path: Path) -> Path:
    # A fixed draw so pictures of successive epochs show how the Mix Block changed, not the dice.
    rng = np.random.default_rng(cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    x = x[:8]
    draws = net.draw(x.shape[0], rng, gen, x.device, tuple(x.shape[-2:]))
    title = f"{cfg.method} | {cfg.data.name}"
    if draws is None:  # vanilla: nothing is mixed; show the images alone
        return save_mix_grid(x, None, None, None, path, cfg.data.name, title=f"{title} | no mixing")
    p = net.preview(x, draws)
    if isinstance(net, AutoMixNet):
        title += f" | drawn lam_mb={draws.lam_mb:.2f}; under each column: the share of x_i in it"
    else:
        title += " | under each column: lam, the share of x_i = the label weight of y_i"
    return save_mix_grid(p.x_i, p.x_j, p.mask, p.mixed, path, cfg.data.name, title=title)


def _log_epoch(run: Run, m: dict) -> None:
    extra = f" m {m['sched_ema_momentum']:.6f}" if run.is_automix else ""
    log.info("epoch %d/%d top1 %.2f top1_q %.2f loss %.4f lr %.4g%s %.1fs %.0f img/s", m["epoch"],
             run.cfg.train.epochs, m["top1"], m["top1_q"], m["train_loss"], m["sched_lr"], extra,
             m["epoch_time_s"], m["images_per_s"])


def _progress_mode(run: Run) -> str:
    if not run.main:
        return "none"
    mode = run.cfg.train.progress
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return mode


def _bar(mode: str, iters: int, epoch: int, epochs: int):
    if mode != "bar":
        return None
    from tqdm.auto import tqdm

    return tqdm(total=iters, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True)
