#!/usr/bin/env python
"""How much of a study's wall time is training: the platform's own overhead, with MLflow on and off.

A study of 16 trials (the quickstart study's search, scheduler off so every trial runs to the end)
whose trainer does a fixed amount of CPU work per epoch instead of AutoMix, through the real
platform: Tune function trainable, per-epoch reports with a checkpoint and artifacts, the MLflow
callback. Prints JSON per mode:

    wall_s            Tuner.fit() of the study (Ray's start is reported apart, as ray_start_s)
    train_s           the sum of the trials' own training time (their epochs' epoch_time_s)
    utilization       train_s / (wall_s x concurrent trials)
    overhead_per_trial_s  (wall_s x concurrent - train_s) / trials
    mlflow_added_wall_fraction  wall per training second with MLflow / without, minus 1

    python benchmarks/tune_overhead.py                       # 16 trials of ~30 s, MLflow on and off
    python benchmarks/tune_overhead.py --trial-seconds 5     # quicker
Target: utilization >= 0.8 for 30 s trials, MLflow adding < 5% wall time.
Run it on a quiet machine: other processes slow the work down unevenly between the two studies.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORK_ENV = "TUNE_OVERHEAD_ITERS_PER_EPOCH"
SIZE = 192  # matmul size of one unit of work


def _unit(a):
    return a @ a


def calibrate(seconds: float = 2.0) -> float:
    """Units of work per second on one thread of this machine."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(SIZE, SIZE)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _unit(a)
        n += 1
    return n / (time.perf_counter() - t0)


def fixed_work_train(cfg, output_dir, *, reporter=None, resume_from=None, device=None):
    """Stands in for automix.train.train: the same contract, a fixed amount of work per epoch."""
    import torch

    out = Path(output_dir)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    iters = int(os.environ[WORK_ENV])
    start = 1
    if resume_from is not None:
        start = json.loads((Path(resume_from) / "state.pt").read_text())["epoch"] + 1
    a = torch.randn(SIZE, SIZE)
    history = []
    for epoch in range(start, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        for _ in range(iters):
            _unit(a)
        metrics = {"epoch": epoch, "top1": float(epoch), "top1_q": float(epoch), "train_loss": 1.0 / epoch,
                   "sched_lr": 0.1, "sched_ema_momentum": 0.99, "world_size": 1}
        artifacts = []
        if epoch == start:
            (out / "config.yaml").write_text(f"epochs: {cfg.train.epochs}\n")
            artifacts.append(out / "config.yaml")
        (out / "checkpoint" / "state.pt").write_text(json.dumps({"epoch": epoch}))
        metrics["epoch_time_s"] = time.perf_counter() - t0
        history.append(metrics)
        if reporter is not None:
            reporter.report(metrics, out / "checkpoint", artifacts)
    return history


def training_seconds(experiment_path: str) -> tuple[float, int]:
    """Sum of epoch_time_s over every result of every trial, and the number of trials."""
    total, trials = 0.0, 0
    for result in Path(experiment_path).glob("trial_*/result.json"):
        trials += 1
        for line in result.read_text().splitlines():
            if line.strip():
                total += float(json.loads(line).get("epoch_time_s", 0.0))
    return total, trials


def run_mode(track: bool, args, work_dir: Path) -> dict:
    import yaml

    from studyrunner.runner import Options, run

    data = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())
    data.update(name=f"tune_overhead_{'mlflow' if track else 'nomlflow'}", num_samples=args.trials,
                max_concurrent_trials=args.concurrency, scheduler={"name": "none"})
    data["base"]["train"]["epochs"] = args.epochs
    data["tracking"] = {"log_checkpoint": True}
    study = work_dir / f"{data['name']}.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    t0 = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        outcome = run(Options(study=str(study), tracking_uri=f"sqlite:///{work_dir / 'mlflow.db'}",
                              storage_path=str(work_dir / "ray"),
                              train_fn=f"{Path(__file__).stem}:fixed_work_train", track=track, verbose=args.verbose))
    total = time.monotonic() - t0
    if outcome.exit_code != 0:
        raise SystemExit(f"the study failed (exit {outcome.exit_code})")
    train_s, trials = training_seconds(outcome.experiment_path)
    wall = outcome.fit_wall_s
    return {"mlflow": track, "trials": trials, "concurrent_trials": args.concurrency,
            "wall_s": round(wall, 2), "ray_start_and_setup_s": round(total - wall, 2),
            "train_s": round(train_s, 2),
            "utilization": round(train_s / (wall * args.concurrency), 3),
            "overhead_per_trial_s": round((wall * args.concurrency - train_s) / max(trials, 1), 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--trial-seconds", type=float, default=30.0, help="training work per trial (default 30)")
    p.add_argument("--epochs", type=int, default=10, help="reports (and checkpoints) per trial")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--mode", choices=("both", "mlflow", "nomlflow"), default="both")
    p.add_argument("--verbose", type=int, default=0)
    args = p.parse_args(argv)
    rate = calibrate()
    os.environ[WORK_ENV] = str(max(1, int(rate * args.trial_seconds / args.epochs)))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    results = {"trial_seconds_target": args.trial_seconds, "epochs": args.epochs, "units_per_s": round(rate, 1)}
    modes = {"both": (False, True), "mlflow": (True,), "nomlflow": (False,)}[args.mode]
    with tempfile.TemporaryDirectory(prefix="tune_overhead-") as tmp:
        for track in modes:
            results["mlflow_on" if track else "mlflow_off"] = run_mode(track, args, Path(tmp))
    if len(modes) == 2:
        on, off = results["mlflow_on"], results["mlflow_off"]
        # Per unit of training work: the two studies' work can run at different speeds on a shared
        # machine, so raw wall times are not comparable; wall per training second is.
        results["mlflow_added_wall_fraction"] = round(
            (on["wall_s"] / on["train_s"]) / (off["wall_s"] / off["train_s"]) - 1.0, 4)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
