"""Training throughput (images/s) of vanilla, mixup, cutmix and AutoMix on one device, through the
real training step, and of the two data paths (DataLoader vs data set held on the device).

Each figure is the step the training loop runs (``automix.train.Stepper``: forward of the whole
step, backward, SGD, LR schedule, EMA of k, plus the per-step draws), on synthetic batches already
in device memory, so the data loader is out of the measurement. Two settings:

  resnet18_cifar_32px   ResNet-18 with the CIFAR stem, 32 px, batch 256, 100 classes
  resnet50_224px        ResNet-50 (ImageNet stem), 224 px, batch 64, 1000 classes

each with train.amp none and bf16, channels_last on. GPU timing: warm-up steps first (cuDNN
autotuning, allocator, compilation), ``torch.cuda.synchronize()`` on both sides of the timed
region, the median of several timed repeats. Peak memory per method is
``torch.cuda.max_memory_allocated`` after a reset (model, optimizer state and activations); on the
CPU it is not measured per method (null) and the process's max RSS is given once.

Prints one JSON object on stdout (a table with the targets on stderr):
  results: one object per (setting, amp, method): images_per_s, step_ms, peak_mem_mb, ...
  ratios:  per (setting, amp): automix_over_vanilla = vanilla images/s / AutoMix images/s
  data_path: images/s of iterating the training batches with data.on_device off and on
Targets (printed, not asserted): AutoMix/vanilla time <= 2.1; vanilla ResNet-18 CIFAR >= 20,000
images/s in bf16 on an H100-class GPU.

    python benchmarks/gpu_throughput.py --device cuda [--compile] [--out FILE]
    python benchmarks/gpu_throughput.py --smoke          # CI: tiny, CPU, < 1 minute
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from automix.config import ConfigError, RunConfig, load_config
from automix.ema import EMA
from automix.loaders import build_loaders
from automix.model import AutoMixNet, build_net
from automix.train import Schedule, Stepper, amp_context, build_optimizer

METHODS = ("vanilla", "mixup", "cutmix", "automix")
AMPS = ("none", "bf16")
TARGET_AUTOMIX_OVER_VANILLA = 2.1
TARGET_VANILLA_R18_BF16 = 20_000  # images/s, H100-class GPU
# Iterations the LR/EMA schedules are built for: far more than a benchmark runs, so the learning
# rate stays near its start value and every timed step does the same work.
SCHEDULE_ITERS = 100_000


@dataclass(frozen=True)
class Setting:
    name: str
    backbone: str
    stem: str
    image_size: int
    batch: int
    num_classes: int
    width: int = 64


SETTINGS = (
    Setting("resnet18_cifar_32px", "resnet18", "cifar", 32, 256, 100),
    Setting("resnet50_224px", "resnet50", "imagenet", 224, 64, 1000),
)
# --smoke: the same two shapes of network, narrow and small, so the CPU runs every code path fast.
SMOKE_SETTINGS = (
    Setting("resnet18_cifar_32px", "resnet18", "cifar", 32, 16, 10, width=8),
    Setting("resnet50_224px", "resnet50", "imagenet", 64, 4, 10, width=8),
)


@dataclass(frozen=True)
class Timing:
    warmup: int  # untimed steps before the first timed repeat
    steps: int  # steps per timed repeat
    repeats: int  # timed repeats; the median is reported


def run_config(setting: Setting, method: str, amp: str, device: torch.device, **data) -> RunConfig:
    """The run config a study trial of this setting would use (CIFAR recipe: no lambda channel)."""
    return load_config({
        "method": method,
        "automix": {"lambda_channel": setting.image_size > 64},
        "train": {"batch_size": setting.batch, "device": device.type, "amp": amp, "channels_last": True},
        "data": {"name": "fake", "image_size": setting.image_size, "fake_num_classes": setting.num_classes,
                 **data},
        "model": {"backbone": setting.backbone, "stem": setting.stem, "width": setting.width},
    })


def build_step(cfg: RunConfig, num_classes: int, device: torch.device, compile_nets: bool):
    """(stepper, net) set up as the training loop sets up a one-process run (``automix.loop.build_run``)."""
    net = build_net(cfg, num_classes).to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = EMA(net.k, net.q) if isinstance(net, AutoMixNet) else None
    optimizer, lr_sched = build_optimizer(cfg, net, SCHEDULE_ITERS)
    if compile_nets:
        # The classifiers, not the whole step: the step's inputs include Python floats (lam, the
        # mask-loss weight) that would make dynamo recompile the step graph at every new draw.
        for classifier in (net.q, getattr(net, "k", None)):
            if classifier is not None:
                classifier.compile()
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    # The loop's non-finite watch too: read on the host every train.check_finite_every steps.
    stepper = Stepper(net, net, optimizer, lr_sched, scaler, ema, Schedule(cfg, SCHEDULE_ITERS),
                      amp_context(cfg.train.amp, device), check_finite_every=cfg.train.check_finite_every)
    return stepper, net


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(stepper: Stepper, net, x: torch.Tensor, y: torch.Tensor, timing: Timing,
               device: torch.device) -> list[float]:
    """Seconds of each timed repeat of ``timing.steps`` training steps (draws included)."""
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    size = tuple(x.shape[-2:])
    t = 0

    def steps(n: int) -> None:
        nonlocal t
        for _ in range(n):
            stepper.step(x, y, net.draw(x.shape[0], rng, gen, device, size), t, 0)
            t += 1

    steps(timing.warmup)
    seconds = []
    for _ in range(timing.repeats):
        synchronize(device)  # nothing queued from before may land in the timed region
        start = time.perf_counter()
        steps(timing.steps)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_method(setting: Setting, method: str, amp: str, device: torch.device, timing: Timing,
                   compile_nets: bool) -> dict:
    """One (setting, amp, method) row: images/s of the median repeat and the peak memory."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    cfg = run_config(setting, method, amp, device)
    stepper, net = build_step(cfg, setting.num_classes, device, compile_nets)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(setting.batch, 3, setting.image_size, setting.image_size, generator=g, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, setting.num_classes, (setting.batch,), generator=g, device=device)
    seconds = time_steps(stepper, net, x, y, timing, device)
    median = statistics.median(seconds)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    del stepper, net, x, y
    gc.collect()
    return {
        "setting": setting.name, "backbone": setting.backbone, "image_size": setting.image_size,
        "batch": setting.batch, "width": setting.width, "amp": amp, "method": method,
        "images_per_s": round(setting.batch * timing.steps / median, 1),
        "step_ms": round(1000 * median / timing.steps, 3),
        "step_ms_spread": [round(1000 * s / timing.steps, 3) for s in sorted(seconds)],
        "peak_mem_mb": None if peak is None else round(peak, 1),
    }


def ratios(results: list[dict]) -> list[dict]:
    """automix_over_vanilla per (setting, amp): how many vanilla steps' time one AutoMix step takes."""
    by_key = {(r["setting"], r["amp"], r["method"]): r["images_per_s"] for r in results}
    out = []
    for setting, amp in dict.fromkeys((r["setting"], r["amp"]) for r in results):
        vanilla, automix = by_key.get((setting, amp, "vanilla")), by_key.get((setting, amp, "automix"))
        if vanilla and automix:
            ratio = round(vanilla / automix, 3)
            out.append({"setting": setting, "amp": amp, "automix_over_vanilla": ratio,
                        "target": f"<= {TARGET_AUTOMIX_OVER_VANILLA}",
                        "meets_target": ratio <= TARGET_AUTOMIX_OVER_VANILLA})
    return out


def time_data_path(on_device: str, device: torch.device, batch: int, batches: int, workers: int,
                   train_size: int) -> dict:
    """images/s of iterating ``build_loaders(...).train_batches()`` for ``batches`` batches of
    CIFAR-shaped fake data (after a few warm-up batches), ending with the batches on the device."""
    setting = replace(SETTINGS[0], batch=batch)
    cfg = run_config(setting, "vanilla", "none", device, on_device=on_device, fake_train_size=train_size,
                     fake_test_size=batch)
    cfg = replace(cfg, train=replace(cfg.train, num_workers=workers))
    row = {"on_device": on_device, "batch": batch, "num_workers": workers, "train_size": train_size}
    try:
        loaders = build_loaders(cfg, 0, 1, device)
    except (ConfigError, ValueError, RuntimeError) as exc:  # e.g. a path this device cannot take
        return {**row, "error": str(exc)}
    row["path"] = type(loaders.train).__name__
    warmup, seen, epoch, start = 3, 0, 0, None
    while seen < batches + warmup:
        epoch += 1
        loaders.set_epoch(epoch, epoch)
        for x, _ in loaders.train_batches():
            seen += 1
            if seen == warmup:  # worker processes started, first batches transferred
                synchronize(device)
                start = time.perf_counter()
            if seen >= batches + warmup:
                break
    x.sum().item()  # the last batch has really arrived (and is not a lazy view)
    synchronize(device)
    elapsed = time.perf_counter() - start
    return {**row, "batches": batches, "images_per_s": round(batches * loaders.local_batch_size / elapsed, 1)}


def device_info(device: torch.device) -> dict:
    info = {"device_type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=props.name, cuda=torch.version.cuda, memory_mb=round(props.total_memory / 2**20),
                    cudnn_benchmark=torch.backends.cudnn.benchmark, cudnn_tf32=torch.backends.cudnn.allow_tf32,
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info["device"] = "cpu"
    return info


def targets(results: list[dict], device: torch.device) -> dict:
    vanilla = next((r["images_per_s"] for r in results if r["setting"] == "resnet18_cifar_32px"
                    and r["amp"] == "bf16" and r["method"] == "vanilla" and r["width"] == 64), None)
    check = None if vanilla is None or device.type != "cuda" else vanilla >= TARGET_VANILLA_R18_BF16
    return {
        "automix_over_vanilla": f"<= {TARGET_AUTOMIX_OVER_VANILLA} (every setting and amp)",
        "vanilla_resnet18_cifar_bf16_images_per_s": f">= {TARGET_VANILLA_R18_BF16} on an H100-class GPU",
        "vanilla_resnet18_cifar_bf16_measured": vanilla,
        # Judged only on a GPU at full size; on the CPU or in --smoke the figure says nothing about it.
        "vanilla_resnet18_cifar_bf16_meets_target": check,
    }


def print_table(report: dict) -> None:
    err = sys.stderr
    print(f"# {report['device']} ({report['device_type']}), torch {report['torch']}, "
          f"compile={report['compile']}, smoke={report['smoke']}", file=err)
    print(f"{'setting':22s} {'amp':5s} {'method':8s} {'images/s':>10s} {'step ms':>9s} {'peak MB':>9s}", file=err)
    for r in report["results"]:
        peak = "n/a" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        print(f"{r['setting']:22s} {r['amp']:5s} {r['method']:8s} {r['images_per_s']:10.1f} "
              f"{r['step_ms']:9.2f} {peak:>9s}", file=err)
    for r in report["ratios"]:
        print(f"AutoMix/vanilla time {r['setting']} {r['amp']}: {r['automix_over_vanilla']:.2f} "
              f"(target {r['target']})", file=err)
    t = report["targets"]
    print(f"vanilla ResNet-18 CIFAR bf16: {t['vanilla_resnet18_cifar_bf16_measured']} images/s "
          f"(target {t['vanilla_resnet18_cifar_bf16_images_per_s']})", file=err)
    for d in report["data_path"]:
        print(f"data path on_device={d['on_device']}: {d.get('images_per_s', d.get('error'))} images/s "
              f"({d.get('path', '-')})", file=err)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--smoke", action="store_true", help="tiny networks and few steps on the CPU (CI)")
    p.add_argument("--compile", action="store_true", help="torch.compile the classifiers (longer warm-up)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="set torch.backends.cudnn.benchmark")
    p.add_argument("--settings", nargs="+", choices=[s.name for s in SETTINGS], default=None)
    p.add_argument("--amp", nargs="+", choices=AMPS, default=list(AMPS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per method")
    p.add_argument("--steps", type=int, default=None, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    p.add_argument("--data-batches", type=int, default=None, help="batches timed per data path (0: skip)")
    p.add_argument("--loader-workers", type=int, default=None, help="DataLoader workers of the CPU path")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    settings = [s for s in (SMOKE_SETTINGS if args.smoke else SETTINGS)
                if args.settings is None or s.name in args.settings]
    default = Timing(1, 2, 1) if args.smoke else Timing(15 if args.compile else 10, 30, 3)
    timing = Timing(args.warmup if args.warmup is not None else default.warmup,
                    args.steps or default.steps, args.repeats or default.repeats)
    results = [measure_method(s, m, amp, device, timing, args.compile)
               for s in settings for amp in args.amp for m in args.methods]
    data_batches = args.data_batches if args.data_batches is not None else (4 if args.smoke else 300)
    workers = args.loader_workers if args.loader_workers is not None else (0 if args.smoke else 8)
    batch = 16 if args.smoke else 256
    data = [time_data_path(mode, device, batch, data_batches, workers if mode == "off" else 0,
                           batch * (8 if args.smoke else 196))
            for mode in ("off", "on")] if data_batches else []
    report = {
        **device_info(device), "smoke": args.smoke, "compile": args.compile, "channels_last": True,
        "timing": asdict(timing), "results": results, "ratios": ratios(results), "data_path": data,
        "targets": targets(results, device),
        "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
