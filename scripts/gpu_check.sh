#!/usr/bin/env bash
# GPU check: one prepared script for a bare one-GPU machine, well under 8 minutes, that writes ONE
# JSON file ($OUT/gpu_check.json when $OUT is set, else ./gpu_check.json) holding:
#   gpu         nvidia-smi's name, memory and driver
#   setup       the Python used, how the study's packages were found or installed, or why not
#   throughput  benchmarks/gpu_throughput.py: images/s and peak memory of vanilla, mixup, cutmix,
#               AutoMix; ResNet-18 CIFAR 32 px b256 and ResNet-50 224 px b64; amp none and bf16;
#               DataLoader vs data.on_device
#   packing     benchmarks/trial_packing.py: 4 AutoMix trials sharing the GPU vs 1 trial
#   study       tune_runner.py on a 4-trial study with resources.gpus_per_worker 0.25 (4 trials at
#               once on the one GPU), CIFAR-shaped fake data, bf16: each trial's status and top-1
#               from its MLflow record, and how many trials ran at the same time
#
#   bash scripts/gpu_check.sh
#   GPU_CHECK_DRY_RUN=1 bash scripts/gpu_check.sh   # the same steps smoke-sized on the CPU (CI, laptops)
# Environment:
#   PYTHON=...            interpreter to start from (default: .venv/bin/python when it imports
#                         torch, else python3 - on a GPU image, the one that holds CUDA torch)
#   GPU_CHECK_WHEELS=DIR  install missing packages from the wheels in DIR only (a machine with no
#                         package index); without it pip tries the index once, briefly
#
# The machine's own torch is used, never replaced: a venv with --system-site-packages sees it, and
# only packages that are missing (ray, optuna, mlflow, ... for the study) are installed into the
# venv, at the versions of docker/requirements.lock. The project itself is not installed (its
# Python pin may differ from the machine's); it is imported from this checkout via PYTHONPATH.
# Each part has its own time limit; a part that fails or cannot run says why in the JSON and the
# others still run. Exit status 0 when every part ran and succeeded (the JSON's "ok").
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DRY=${GPU_CHECK_DRY_RUN:-0}
RESULT=${OUT:+$OUT/gpu_check.json}
RESULT=${RESULT:-$PWD/gpu_check.json}
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PARTS=$WORK/parts
mkdir -p "$PARTS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
started=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - started ))s] $*"; }

# ---------------------------------------------------------------- the GPU
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$PARTS/gpu.txt" 2>&1
else
    echo "nvidia-smi not found" > "$PARTS/gpu.txt"
fi
say "GPU: $(head -n 1 "$PARTS/gpu.txt")"

# ---------------------------------------------------------------- Python and packages
if [ -n "${PYTHON:-}" ]; then
    BASE=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    BASE=.venv/bin/python
else
    BASE=$(command -v python3 || echo python3)
fi
# A venv of our own for what is missing, which sees every package of BASE through a .pth file
# (--system-site-packages would not: on GPU images python3 is itself a venv). pip installs into it
# only; BASE is never changed.
PY=$BASE
if ! "$BASE" -c "import torch, torchvision, ray.tune, ray.train, optuna, mlflow, pandas" >/dev/null 2>&1; then
    VENV=$WORK/venv
    if "$BASE" -m venv "$VENV" > "$PARTS/venv.log" 2>&1; then
        PY=$VENV/bin/python
        "$BASE" -c "import site, sys; print('\n'.join(p for p in sys.path if p.endswith('-packages')))" \
            > "$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_gpu_check_base.pth"
    fi
fi
"$PY" scripts/gpu_check_report.py setup "$PARTS" "$BASE" "$PY" "${GPU_CHECK_WHEELS:-}" "$DRY"
say "setup: $("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['summary'])" "$PARTS/setup.json")"

run_part() {  # run_part NAME SECONDS COMMAND...: stdout to NAME.json, stderr to NAME.log, rc to NAME.rc
    local name=$1 limit=$2
    shift 2
    say "$name: $* (limit ${limit}s)"
    timeout "$limit" "$@" > "$PARTS/$name.json" 2> "$PARTS/$name.log"
    echo $? > "$PARTS/$name.rc"
    say "$name: exit $(cat "$PARTS/$name.rc")"
    tail -n 30 "$PARTS/$name.log"
}

# ---------------------------------------------------------------- benchmarks
# Time limits: on the GPU they add up to under 8 minutes with setup's 90 s of pip; a dry run on a
# small shared CPU machine gets more room, since it checks that the steps work, not their speed.
ready() {  # ready KEY: setup.json says KEY is true
    "$PY" -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))[sys.argv[2]] else 1)" \
        "$PARTS/setup.json" "$1"
}
if [ "$DRY" = 1 ]; then
    LIMIT_BENCH=400 LIMIT_PACK=300 LIMIT_STUDY=600
else
    LIMIT_BENCH=150 LIMIT_PACK=90 LIMIT_STUDY=140
fi
if ! ready bench_ready; then
    say "benchmarks: skipped, no CUDA torch or its packages (see setup in the JSON)"
elif [ "$DRY" = 1 ]; then
    run_part throughput $LIMIT_BENCH "$PY" benchmarks/gpu_throughput.py --smoke --threads 1
    run_part packing $LIMIT_PACK "$PY" benchmarks/trial_packing.py --smoke --packs 1 4 --seconds 1
else
    run_part throughput $LIMIT_BENCH "$PY" benchmarks/gpu_throughput.py --device cuda
    run_part packing $LIMIT_PACK "$PY" benchmarks/trial_packing.py --device cuda --packs 1 4 --seconds 15
fi

# ---------------------------------------------------------------- a packed study
if ready study_ready && { [ "$DRY" = 1 ] || ready bench_ready; }; then
    "$PY" scripts/gpu_check_report.py study-file "$WORK/gpu_check_study.yaml" "$DRY"
    say "study: 4 trials, gpus_per_worker $([ "$DRY" = 1 ] && echo 0 || echo 0.25), 4 at once"
    timeout $LIMIT_STUDY "$PY" tune_runner.py "$WORK/gpu_check_study.yaml" \
        --tracking-uri "sqlite:///$WORK/mlflow.db" --storage-path "$WORK/ray_results" --verbose 1 \
        > "$PARTS/study.log" 2>&1
    echo $? > "$PARTS/study.rc"
    say "study: exit $(cat "$PARTS/study.rc")"
    tail -n 20 "$PARTS/study.log"
else
    say "study: skipped, its packages or CUDA are missing (see setup in the JSON)"
fi

"$PY" scripts/gpu_check_report.py assemble "$PARTS" "$WORK/mlflow.db" "$RESULT" "$DRY"
