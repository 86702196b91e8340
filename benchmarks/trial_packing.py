"""Trial packing: does running several small trials on one GPU (a study's ``gpus_per_worker: 0.25``)
give more images/s in total than one trial per GPU?

Ray gives a fractional-GPU trial the whole device (it only sets CUDA_VISIBLE_DEVICES), so packed
trials are separate processes time-sharing one GPU. This benchmark does exactly that, without Ray:
P processes, all pinned to the same device, each running the real training step
(``automix.train.Stepper``) of a CIFAR ResNet-18 trial on batches held in device memory. They build
and warm up apart, start together at a barrier, step for the same wall-clock window, and each
reports its images/s; the aggregate is their sum. Compared for P = 1 and P = 4 (``--packs``):

  packing_gain = aggregate images/s with 4 processes / images/s of 1 process

Above 1, packing small trials fills the GPU better than one trial can. Prints one JSON object.

    python benchmarks/trial_packing.py --device cuda [--method automix] [--seconds 20]
    python benchmarks/trial_packing.py --smoke        # CI: tiny, CPU, a few seconds per run
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from gpu_throughput import METHODS, SETTINGS, SMOKE_SETTINGS, Setting, build_step, run_config, synchronize


def trial_process(index: int, setting: Setting, method: str, amp: str, device_name: str, seconds: float,
                  warmup: int, threads: int, barrier, results) -> None:
    """One packed trial: build, warm up, wait for the others, step for ``seconds``, report."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    try:
        torch.manual_seed(index)
        cfg = run_config(setting, method, amp, device)
        stepper, net = build_step(cfg, setting.num_classes, device, compile_nets=False)
        g = torch.Generator(device=device).manual_seed(index)
        x = torch.randn(setting.batch, 3, setting.image_size, setting.image_size, generator=g, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, setting.num_classes, (setting.batch,), generator=g, device=device)
        rng, gen, size = np.random.default_rng(index), torch.Generator().manual_seed(index), tuple(x.shape[-2:])
        for t in range(warmup):
            stepper.step(x, y, net.draw(setting.batch, rng, gen, device, size), t, 0)
        synchronize(device)
    except Exception as exc:  # reported, so the parent does not wait at the barrier for nothing
        barrier.abort()
        results.put({"index": index, "error": f"{type(exc).__name__}: {exc}"})
        return
    try:
        barrier.wait()
    except threading.BrokenBarrierError:  # another trial failed before the start
        results.put({"index": index, "error": "another packed trial failed before the start"})
        return
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        stepper.step(x, y, net.draw(setting.batch, rng, gen, device, size), warmup + steps, 0)
        steps += 1
    synchronize(device)  # the queued steps count only once they have run
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    results.put({"index": index, "steps": steps, "seconds": round(elapsed, 3),
                 "images_per_s": round(steps * setting.batch / elapsed, 1),
                 "peak_mem_mb": None if peak is None else round(peak, 1)})


def run_packed(processes: int, setting: Setting, method: str, amp: str, device: str, seconds: float,
               warmup: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=trial_process, args=(i, setting, method, amp, device, seconds, warmup, threads,
                                                     barrier, results)) for i in range(processes)]
    for p in procs:
        p.start()
    rows = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    rows.sort(key=lambda r: r["index"])
    # The first real failure, not the "another trial failed" of the processes it stopped.
    errors = sorted((r["error"] for r in rows if "error" in r), key=lambda e: e.startswith("another"))
    if errors:
        return {"processes": processes, "error": errors[0]}
    return {"processes": processes, "aggregate_images_per_s": round(sum(r["images_per_s"] for r in rows), 1),
            "per_process": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--smoke", action="store_true", help="tiny network, CPU, short windows (CI)")
    p.add_argument("--method", choices=METHODS, default="automix")
    p.add_argument("--amp", choices=("none", "bf16"), default=None, help="default bf16; smoke none")
    p.add_argument("--batch", type=int, default=None, help="per-trial batch (default 256; smoke 16)")
    p.add_argument("--packs", type=int, nargs="+", default=[1, 4], help="processes per run, e.g. 1 4")
    p.add_argument("--seconds", type=float, default=None, help="timed window per run (default 20; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per process (default 10; smoke 1)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    setting = (SMOKE_SETTINGS if args.smoke else SETTINGS)[0]
    if args.batch is not None:
        setting = replace(setting, batch=args.batch)
    amp = args.amp or ("none" if args.smoke else "bf16")  # bf16 autocast is slow on CPUs
    seconds = args.seconds or (2.0 if args.smoke else 20.0)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 10)
    runs = [run_packed(n, setting, args.method, amp, device, seconds, warmup, args.threads)
            for n in args.packs]
    agg = {r["processes"]: r.get("aggregate_images_per_s") for r in runs}
    single = agg.get(1)
    report = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "smoke": args.smoke, "method": args.method, "amp": amp, "setting": asdict(setting),
        "seconds": seconds, "threads_per_process": args.threads, "runs": runs,
        **{f"packing_gain_{n}": round(a / single, 3) for n, a in agg.items() if n != 1 and a and single},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    for r in runs:
        print(f"{r['processes']} process(es): {r.get('aggregate_images_per_s', r.get('error'))} images/s in total",
              file=sys.stderr)
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
