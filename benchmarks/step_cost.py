"""Cost of one training step: vanilla, mixup and AutoMix, and AutoMix's necessary network passes.

ResNet-18 with the CIFAR stem, batch 64, 32 px, on the CPU in one process. Prints one JSON object
with the median seconds of each and the ratios:
  automix_over_passes  = AutoMix step / its network passes alone  (target <= 1.10)
  automix_over_vanilla = AutoMix step / vanilla step              (target <= 3.0)
All timings are taken interleaved in one run, so machine noise hits them alike.

    python benchmarks/step_cost.py [--repeats 7] [--batch 64] [--width 64] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from automix.config import load_config
from automix.ema import EMA
from automix.model import AutoMixNet, build_net
from automix.train import Schedule, Stepper, amp_context, build_optimizer

TOTAL = 10_000


def make_stepper(method: str, args) -> tuple[Stepper, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = load_config({"method": method, "data": {"name": "fake", "image_size": 32},
                       "model": {"backbone": "resnet18", "stem": "cifar", "width": args.width},
                       "automix": {"lambda_channel": False}, "train": {"device": "cpu"}})
    net = build_net(cfg, 100)
    opt, sched = build_optimizer(cfg, net, TOTAL)
    ema = EMA(net.k, net.q) if isinstance(net, AutoMixNet) else None
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stepper = Stepper(net, net, opt, sched, scaler, ema, Schedule(cfg, TOTAL), amp_context("none", torch.device("cpu")),
                      check_finite_every=cfg.train.check_finite_every)  # as the training loop builds it
    return stepper, net


def network_passes(net: AutoMixNet, x, y):
    """The passes AutoMix cannot avoid: k forward to stage 3 on x; k forward + backward to its input
    on a mixed batch; q forward + backward on x and on another mixed batch (no mixing, no attention,
    no optimizer, no EMA)."""
    with torch.no_grad():
        net.k.backbone.stage3(x)
    x_mb = x.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(net.k(x_mb, "mix"), y).backward()
    x_bb = x.flip(0)
    loss = torch.nn.functional.cross_entropy(net.q(x, "one"), y) + torch.nn.functional.cross_entropy(
        net.q(x_bb, "mix"), y)
    loss.backward()
    net.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 100, (args.batch,), generator=g)
    steppers = {m: make_stepper(m, args) for m in ("vanilla", "mixup", "automix")}
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)

    def run(name: str, t: int) -> None:
        if name == "automix_passes":
            network_passes(steppers["automix"][1], x, y)
            return
        stepper, net = steppers[name]
        stepper.step(x, y, net.draw(args.batch, rng, gen, "cpu", (32, 32)), t, 0)

    names = ["vanilla", "mixup", "automix", "automix_passes"]
    times = {n: [] for n in names}
    for r in range(args.warmup + args.repeats):
        for n in names:  # interleaved: every round times each once
            t0 = time.perf_counter()
            run(n, r)
            if r >= args.warmup:
                times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(json.dumps({
        "device": "cpu", "threads": torch.get_num_threads(), "backbone": "resnet18 (cifar stem)",
        "batch": args.batch, "image_size": 32, "repeats": args.repeats,
        **{f"{n}_s": round(v, 4) for n, v in med.items()},
        "automix_over_vanilla": round(med["automix"] / med["vanilla"], 3),
        "automix_over_passes": round(med["automix"] / med["automix_passes"], 3),
        "targets": {"automix_over_passes": "<= 1.10", "automix_over_vanilla": "<= 3.0"},
    }, indent=2))


if __name__ == "__main__":
    main()
