"""Experiment driver for docs/mask_collapse.md: trains small digits runs (2 at a time, 1 thread each)
and prints a table. Re-runnable: a run whose output folder already holds its last epoch is not
trained again, only measured.

    python scripts/collapse_sweep.py collapse            # the mask-collapse table
    python scripts/collapse_sweep.py methods             # low-data digits, 4 methods x 3 seeds
    python scripts/collapse_sweep.py methods_long        # the same, 60 epochs with a 1-epoch warm-up
    python scripts/collapse_sweep.py defaults            # width 64, lr 0.1, batch 64, 8 epochs, 3 seeds
    python scripts/collapse_sweep.py collapse --only base16 sample16 --out runs/sweep

Mask diagnostics (of the mb mask s, the share of x[perm] per pixel), on the first 128 test images
and 4 fixed draws of (lam, perm), the Mix Block and k as they are at the end of training:
  mask_saturated    share of pixels with s < 0.05 or s > 0.95
  mask_spatial_std  mean over samples of the spatial std of s (0: one constant per image)
  mask_lam_gap      mean over samples of |mean(1 - s) - lam| (per sample, so whole-image picking
                    shows up as a gap even when the batch share is exactly lam)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from automix import checkpoint, diagnostics  # noqa: E402
from automix.config import load_config  # noqa: E402
from automix.data import build_datasets  # noqa: E402
from automix.model import AutoMixNet, build_net  # noqa: E402

DIGITS = "configs/digits_automix.yaml"
# Low-data digits: the first 20 training images of each class, 30 epochs of 6 steps (180 in all, so
# the EMA momentum starts at 0.9: a horizon of 10 iterations). Mixing matters most with little data.
LOW_DATA = ["data.train_per_class=20", "train.epochs=30", "train.mix_grid_every=0", "automix.momentum=0.9"]

# The spec's Mix Block settings (configs/digits_automix.yaml now departs from them): every collapse
# run starts from these, then changes one thing (or the named few).
SPEC_MIXBLOCK = ["automix.qk_init_std=0.01", "optim.mixblock_lr=0.1", "optim.mixblock_min_lr=0.001"]
_COLLAPSE_CHANGES = {
    "base16": [],
    "base32": ["data.image_size=32"],
    "momentum_0.9": ["automix.momentum=0.9", "automix.momentum_end=0.99"],
    "mixblock_lr_0.01": ["optim.mixblock_lr=0.01", "optim.mixblock_min_lr=0.0001"],
    "lambda_channel": ["automix.lambda_channel=true"],
    "mask_weight_1": ["automix.mask_loss_weight=1.0"],
    "bilinear": ["automix.upsample=bilinear"],
    "sample_loss": ["automix.mask_loss_mode=sample"],
    "sample_loss_w1": ["automix.mask_loss_mode=sample", "automix.mask_loss_weight=1.0"],
    "qk_init_0.07_sample_w1": ["automix.qk_init_std=0.07", "automix.mask_loss_mode=sample",
                               "automix.mask_loss_weight=1.0"],
    "qk_init_0.1_mixblock_lr_0.01": ["automix.qk_init_std=0.1", "optim.mixblock_lr=0.01",
                                     "optim.mixblock_min_lr=0.0001"],
    "qk_init_0.1_mixblock_lr_0.01_sample_w1": [
        "automix.qk_init_std=0.1", "optim.mixblock_lr=0.01", "optim.mixblock_min_lr=0.0001",
        "automix.mask_loss_mode=sample", "automix.mask_loss_weight=1.0"],
    **{f"qk_init_0.1_mixblock_lr_0.01_seed{s}": ["automix.qk_init_std=0.1", "optim.mixblock_lr=0.01",
                                                 "optim.mixblock_min_lr=0.0001", f"train.seed={s}"] for s in (1, 2)},
}
# name -> (config file, overrides)
COLLAPSE = {name: (DIGITS, [*SPEC_MIXBLOCK, *changes]) for name, changes in _COLLAPSE_CHANGES.items()}

METHODS = {
    f"{m}_s{s}": (DIGITS, [f"method={m}", f"train.seed={s}", *LOW_DATA])
    for m in ("vanilla", "mixup", "cutmix", "automix") for s in (0, 1, 2)
}

# The same, twice as long and with a 1-epoch warm-up (a pilot: are the methods further apart
# than the seeds once the mixing methods have had time to fit?).
LOW_DATA_LONG = ["data.train_per_class=20", "train.epochs=60", "train.mix_grid_every=0", "automix.momentum=0.95",
                 "optim.warmup_epochs=1"]
METHODS_LONG = {
    f"{m}_s{s}": (DIGITS, [f"method={m}", f"train.seed={s}", *LOW_DATA_LONG])
    for m in ("vanilla", "mixup", "cutmix", "automix") for s in (0, 1, 2)
}
# AutoMix variants on the long low-data runs, where the masks of plain `automix` still collapse late.
METHODS_LONG.update({
    f"automix_{name}_s{s}": (DIGITS, ["method=automix", f"train.seed={s}", *LOW_DATA_LONG, *changes])
    for name, changes in {"sample_w1": ["automix.mask_loss_mode=sample", "automix.mask_loss_weight=1.0"],
                          "mblr_0.003": ["optim.mixblock_lr=0.003", "optim.mixblock_min_lr=0.00003"]}.items()
    for s in (0, 1, 2)
})

# Library defaults (ResNet-18 width 64, lr 0.1, 2-epoch warm-up) at batch 64; AutoMix with the
# short-run momentum. 3 seeds: with a 1-epoch warm-up seed 0 passed 90% for every method, seed 1 not.
DEFAULTS = {
    f"{m}_s{s}": (None, [f"method={m}", f"train.seed={s}", "data.image_size=16", "train.batch_size=64",
                         "train.epochs=8", "train.device=cpu", "train.mix_grid_every=0",
                         "automix.momentum=0.97", "automix.momentum_end=0.999"])
    for m in ("vanilla", "mixup", "cutmix", "automix") for s in (0, 1, 2)
}

GROUPS = {"collapse": COLLAPSE, "methods": METHODS, "methods_long": METHODS_LONG, "defaults": DEFAULTS}


def _finished(out: Path) -> bool:
    cfg_file, metrics = out / "config.yaml", out / "metrics.jsonl"
    if not (cfg_file.is_file() and metrics.is_file()):
        return False
    lines = metrics.read_text().splitlines()
    return bool(lines) and json.loads(lines[-1])["epoch"] == load_config(cfg_file).train.epochs


def _command(config: str | None, overrides: list[str], out: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "automix.train"] + ([config] if config else [])
    for item in [*overrides, *extra, "train.threads=1", "train.progress=none"]:
        cmd += ["--set", item]
    return cmd + ["--output-dir", str(out)]


def run_all(runs: dict, root: Path, jobs: int, extra: list[str]) -> None:
    """Train every unfinished run, at most ``jobs`` at a time; the wall time goes to OUT/wall_s."""
    todo = [(name, spec) for name, spec in runs.items() if not _finished(root / name)]
    active: list[tuple[str, subprocess.Popen, float, object]] = []
    while todo or active:
        while todo and len(active) < jobs:
            name, (config, overrides) = todo.pop(0)
            out = root / name
            if out.exists():  # an interrupted run: start it again from scratch
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            log = (root / f"{name}.log").open("w")
            proc = subprocess.Popen(_command(config, overrides, out, extra), cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(f"started {name} (pid {proc.pid})", flush=True)
            active.append((name, proc, time.perf_counter(), log))
        time.sleep(2)
        for item in list(active):
            name, proc, t0, log = item
            if proc.poll() is not None:
                log.close()
                (root / name / "wall_s").write_text(f"{time.perf_counter() - t0:.1f}\n")
                print(f"finished {name}: exit {proc.returncode}", flush=True)
                active.remove(item)


@torch.no_grad()
def mask_diagnostics(out: Path, n_images: int = 128, n_draws: int = 4) -> dict[str, float]:
    """The three mask diagnostics of a finished AutoMix run (module docstring), from its checkpoint."""
    cfg = load_config(out / "config.yaml")
    splits = build_datasets(cfg.data)
    net = build_net(cfg, splits.num_classes)
    net.load_state_dict(checkpoint.load(out / "checkpoint", map_location="cpu")["net"])
    assert isinstance(net, AutoMixNet)
    x = torch.stack([splits.test[i][0] for i in range(min(n_images, len(splits.test)))])
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    stats = []
    for _ in range(n_draws):
        d = net.draw(len(x), rng, gen, "cpu", tuple(x.shape[-2:]))
        s_mb, _ = net.masks(x, d)
        stats.append(diagnostics.mask_stats(s_mb, d.lam_mb))
    return dict(zip(diagnostics.NAMES, torch.stack(stats).mean(0).tolist()))


def summarize(out: Path) -> dict:
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = hist[-1]
    wall = out / "wall_s"
    row = {"top1": last["top1"], "top1_q": last["top1_q"],
           "train_s": sum(h["epoch_time_s"] for h in hist),
           "wall_s": float(wall.read_text()) if wall.is_file() else float("nan")}
    if load_config(out / "config.yaml").method == "automix":
        row.update(mask_diagnostics(out))
    return row


def print_table(runs: dict, root: Path, group: str) -> None:
    rows = {name: summarize(root / name) for name in runs if _finished(root / name)}
    cols = ["mask_saturated", "mask_spatial_std", "mask_lam_gap", "top1", "top1_q", "train_s"]
    print("| setting | " + " | ".join("runtime_s" if c == "train_s" else c for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.3f}" if c.startswith("mask") and c in row else
                 f"{row[c]:.1f}" if c in row else "-" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if group.startswith("methods") or group == "defaults":
        print("\n| method | top1 mean | std | min | seeds |")
        print("|---|---|---|---|---|")
        by_setting: dict[str, list[float]] = {}
        for name, row in rows.items():  # "<method or variant>_s<seed>"
            by_setting.setdefault(name.rsplit("_s", 1)[0], []).append(row["top1"])
        for m, vals in by_setting.items():
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
                print(f"| {m} | {statistics.mean(vals):.2f} | {sd:.2f} | {min(vals):.2f} | {len(vals)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("group", choices=sorted(GROUPS))
    parser.add_argument("--only", nargs="*", help="run names of the group (default: all)")
    parser.add_argument("--out", default="runs/collapse_sweep", help="root folder of the runs")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="an override added to every run (KEY=VALUE, repeatable)")
    parser.add_argument("--table-only", action="store_true", help="measure finished runs, train none")
    args = parser.parse_args()
    runs = GROUPS[args.group]
    if args.only:
        unknown = sorted(set(args.only) - set(runs))
        if unknown:
            print(f"error: unknown run {unknown[0]!r}; {args.group} has: {', '.join(runs)}", file=sys.stderr)
            return 2
        runs = {k: runs[k] for k in args.only}  # in the order given
    root = Path(args.out) / args.group
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if not args.table_only:
        run_all(runs, root, args.jobs, args.extra)
    print_table(runs, root, args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
