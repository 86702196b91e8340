#!/usr/bin/env bash
# GPU check, one prepared script for a one-GPU machine (< 8 minutes):
#   (a) AutoMix vs vanilla, ResNet-18 on fake 32 px data, 200 steps each (2 epochs x 100 steps,
#       batch 128), bf16 autocast + channels_last: prints images/s of both (steady epoch: the 2nd);
#   (b) a 1-worker GPU study through tune_runner.py (2 trials, 1 GPU each, one after the other,
#       tracked in a local MLflow store), checked: every trial finished on the GPU and was logged.
# A 2-worker (data-parallel) trial needs two GPUs, so it is not tried here.
#
#   bash scripts/gpu_check.sh                # results in $OUT (default runs/gpu_check)
#   PYTHON=/path/to/python bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$PWD/runs/gpu_check}
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)   # checkpoints stay here, out of $OUT
mkdir -p "$OUT"
trap 'rm -rf "$WORK"' EXIT

"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 supported: {torch.cuda.is_bf16_supported()}", flush=True)
PY

echo "== (a) throughput: vanilla vs AutoMix, ResNet-18, fake 32 px, bf16 + channels_last"
timeout 240 "$PY" - "$WORK/throughput" "$OUT/throughput.json" <<'PY'
import json, sys
from automix.config import load_config
from automix.train import train

work, out = sys.argv[1], sys.argv[2]
BATCH, STEPS_PER_EPOCH, EPOCHS = 128, 100, 2
results = {}
for method in ("vanilla", "automix"):
    cfg = load_config({
        "method": method,
        # m0 0.97: an EMA horizon that fits a 200-step run (throughput does not depend on it)
        "automix": {"lambda_channel": False, "momentum": 0.97, "momentum_end": 0.999},
        "train": {"epochs": EPOCHS, "batch_size": BATCH, "max_steps_per_epoch": STEPS_PER_EPOCH,
                  "device": "cuda", "amp": "bf16", "channels_last": True, "num_workers": 4,
                  "mix_grid_every": 0, "progress": "none", "eval_batch_size": 512},
        "data": {"name": "fake", "image_size": 32, "fake_train_size": BATCH * STEPS_PER_EPOCH,
                 "fake_test_size": 512, "fake_num_classes": 100},
        "model": {"backbone": "resnet18", "stem": "cifar"},
    })
    history = train(cfg, f"{work}/{method}")
    steady = history[-1]  # epoch 1 pays for cuDNN autotuning and allocator warm-up
    per_epoch = [round(STEPS_PER_EPOCH * BATCH / h["epoch_time_s"], 1) for h in history]
    results[method] = {"images_per_s": per_epoch[-1], "images_per_s_by_epoch": per_epoch,
                       "steps": STEPS_PER_EPOCH * EPOCHS, "train_loss": steady["train_loss"],
                       "top1": steady["top1"]}
    print(f"{method:8s} {per_epoch[-1]:9.1f} images/s (epochs: {per_epoch}), "
          f"loss {steady['train_loss']:.3f}", flush=True)
ratio = results["vanilla"]["images_per_s"] / results["automix"]["images_per_s"]
results["automix_step_cost_over_vanilla"] = round(ratio, 2)
print(f"AutoMix costs {ratio:.2f}x a vanilla step", flush=True)
json.dump(results, open(out, "w"), indent=2)
PY

echo "== (b) a 1-worker GPU study through tune_runner.py"
cat > "$WORK/gpu_smoke.yaml" <<'YAML'
name: gpu_smoke
description: ResNet-18 AutoMix on fake 32 px data, 1 GPU per trial, bf16 + channels_last.
base:
  method: automix
  mix: {alpha: 2.0}
  automix: {momentum: 0.97, momentum_end: 0.999, lambda_channel: false}
  optim: {lr: 0.1, min_lr: 0.0, mixblock_lr: 0.1, mixblock_min_lr: 0.001, weight_decay: 0.0005}
  train: {epochs: 2, batch_size: 128, max_steps_per_epoch: 50, seed: 0, device: cuda, amp: bf16,
          channels_last: true, num_workers: 2, mix_grid_every: 1, progress: none}
  data: {name: fake, image_size: 32, fake_train_size: 6400, fake_test_size: 512}
  model: {backbone: resnet18, stem: cifar}
space:
  mix.alpha: {dist: loguniform, low: 0.5, high: 5.0}
  optim.mixblock_lr: {dist: loguniform, low: 0.01, high: 0.5}
  automix.momentum: {dist: uniform, low: 0.9, high: 0.975}
search: {algorithm: optuna, seed: 0}
scheduler: {name: none}
num_samples: 2
max_concurrent_trials: 1
resources: {workers: 1, cpus_per_worker: 4, gpus_per_worker: 1}
checkpoint: {num_to_keep: 1}
failure: {max_failures: 0}
YAML
cp "$WORK/gpu_smoke.yaml" "$OUT/"
set +e
timeout 300 "$PY" tune_runner.py "$WORK/gpu_smoke.yaml" \
    --tracking-uri "sqlite:///$OUT/mlflow.db" --storage-path "$WORK/ray_results" --verbose 1 \
    > "$OUT/tune_runner.log" 2>&1
rc=$?
set -e
tail -n 25 "$OUT/tune_runner.log"
echo "tune_runner.py exit code: $rc"
"$PY" - "$OUT/mlflow.db" "$rc" <<'PY'
import sys
from mlflow import MlflowClient
db, rc = sys.argv[1], int(sys.argv[2])
c = MlflowClient(tracking_uri=f"sqlite:///{db}")
exp = c.get_experiment_by_name("gpu_smoke")
runs = c.search_runs([exp.experiment_id]) if exp else []
trials = [r for r in runs if r.data.tags.get("automix.role") == "trial"]
for r in trials:
    print(f"  {r.info.run_name}: {r.info.status}, top1 {r.data.metrics.get('top1')}, "
          f"epoch_time_s {r.data.metrics.get('epoch_time_s')}, device {r.data.params.get('train.device')}")
ok = rc == 0 and len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials) \
    and all(r.data.params.get("train.device") == "cuda" for r in trials)
print("GPU study:", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
