"""The Python half of scripts/gpu_check.sh (standard library only, so it runs before anything is
installed): find or install the study's packages, write the packed study file, and assemble the
one JSON report from the parts' outputs.

    python scripts/gpu_check_report.py setup PARTS BASE_PYTHON PYTHON WHEELS_DIR DRY
    python scripts/gpu_check_report.py study-file PATH DRY
    python scripts/gpu_check_report.py assemble PARTS MLFLOW_DB RESULT DRY
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What each part imports; the pip requirement comes from pyproject.toml by distribution name.
BENCH_MODULES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "yaml": "pyyaml"}
STUDY_MODULES = {"ray.tune": "ray", "ray.train": "ray", "optuna": "optuna", "mlflow": "mlflow", "pandas": "pandas",
                 "tqdm": "tqdm", "PIL": "pillow", "matplotlib": "matplotlib", "sklearn": "scikit-learn"}
# Never installed here: the machine's CUDA build of torch is the point of the check.
KEEP_MACHINES = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)==", re.I)
INSTALL_TIMEOUT_S = 90


PROBE = """\
import importlib, json, sys
out = {"python_version": sys.version.split()[0], "missing": []}
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception:
        out["missing"].append(m)
try:
    import torch
    out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
except Exception as e:
    out["torch_error"] = repr(e)
print(json.dumps(out))
"""


def probe(python: str) -> dict:
    """One interpreter start: which of the parts' modules import, and the torch build."""
    modules = [*BENCH_MODULES, *STUDY_MODULES, "studyrunner.runner"]
    r = subprocess.run([python, "-c", PROBE, *modules], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return {"missing": modules, "error": r.stderr[-500:]}
    return json.loads(r.stdout)


def requirements(dists: set[str]) -> list[str]:
    """pyproject's requirement strings (extras and pins included) for these distributions."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    name = lambda d: re.match(r"[A-Za-z0-9_.\-]+", d).group(0).lower()  # noqa: E731
    return [d for d in deps if name(d) in dists]


def installed(python: str) -> set[str]:
    code = "import importlib.metadata as m\nfor d in m.distributions():\n    print(d.metadata['Name'])"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return {re.sub(r"[-_.]+", "-", n).lower() for n in r.stdout.split()}


def install(python: str, reqs: list[str], wheels: str, parts: Path) -> dict:
    """pip install ``reqs`` into PYTHON's venv, at the lock's versions except for what the machine
    already has (its versions stay, so nothing it ships is replaced or needed again)."""
    have = installed(python)
    lock = [ln for ln in (ROOT / "docker" / "requirements.lock").read_text().splitlines()
            if ln and not ln.startswith("#") and not KEEP_MACHINES.match(ln)]
    constraints = parts / "constraints.txt"
    constraints.write_text("\n".join(ln for ln in lock if ln.split("==")[0].lower() not in have) + "\n")
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--retries", "0",
           "--timeout", "15", "-c", str(constraints), *reqs]
    if wheels:
        cmd += ["--no-index", "--find-links", wheels]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        rc, log = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as exc:
        rc, log = 124, f"pip did not finish in {INSTALL_TIMEOUT_S} s: {exc}"
    (parts / "install.log").write_text(log)
    return {"command": " ".join(cmd[3:]), "source": f"wheels in {wheels}" if wheels else "package index",
            "exit_code": rc, "log_tail": log[-1500:]}


def setup(parts: Path, base: str, python: str, wheels: str, dry: bool) -> None:
    facts = probe(python)
    out = {"base_python": base, "python": python, **facts}
    missing = set(facts["missing"])
    installable = sorted(({STUDY_MODULES[m] for m in missing & set(STUDY_MODULES)}
                          | {BENCH_MODULES[m] for m in missing & set(BENCH_MODULES)}) - {"torch", "torchvision"})
    if installable and python != base:  # only ever into our own venv
        out["install"] = install(python, requirements(set(installable)), wheels, parts)
        out.update(probe(python))
    elif installable:
        out["install"] = {"exit_code": None, "log_tail": "no venv could be made; nothing installed"}
    bench_missing = [m for m in out["missing"] if m in BENCH_MODULES]
    study_missing = [m for m in out["missing"] if m not in BENCH_MODULES]
    cuda_ok = out.get("cuda_available") or dry
    out["bench_ready"] = bool(cuda_ok and not bench_missing)
    out["study_ready"] = not study_missing
    pip = out.get("install")
    out["summary"] = (
        f"python {out.get('python_version')} torch {out.get('torch')} (CUDA {out.get('torch_cuda')}, "
        f"available: {out.get('cuda_available')}); "
        + ("benchmarks can run" if cuda_ok and not bench_missing else
           f"benchmarks cannot run (missing {bench_missing}, CUDA available: {out.get('cuda_available')})")
        + "; " + ("study can run" if not study_missing else f"study cannot run: missing {study_missing}"
                  + ("" if pip is None else f" after pip (exit {pip['exit_code']}, from {pip.get('source')})")))
    (parts / "setup.json").write_text(json.dumps(out, indent=2))


STUDY = """\
name: gpu_check_packing
description: "{what}"
base:
  method: automix
  mix: {{alpha: 2.0}}
  automix: {{momentum: 0.8, momentum_end: 0.99, lambda_channel: false}}  # EMA horizon of a 80-step run
  optim: {{lr: 0.1, min_lr: 0.0, mixblock_lr: 0.1, mixblock_min_lr: 0.001, weight_decay: 0.0005}}
  train: {{epochs: 2, batch_size: {batch}, max_steps_per_epoch: {steps}, seed: 0, device: {device}, amp: {amp},
          channels_last: {channels_last}, num_workers: {workers}, mix_grid_every: 0, progress: none, threads: {threads}}}
  data: {{name: fake, image_size: 32, fake_train_size: {train_size}, fake_test_size: {test_size},
         fake_num_classes: 100}}
  model: {{backbone: resnet18, stem: cifar, width: {width}}}
space:
  mix.alpha: {{dist: loguniform, low: 0.5, high: 5.0}}
  optim.mixblock_lr: {{dist: loguniform, low: 0.01, high: 0.5}}
search: {{algorithm: random, seed: 0}}
scheduler: {{name: none}}
num_samples: 4
max_concurrent_trials: 4
resources: {{workers: 1, cpus_per_worker: {cpus}, gpus_per_worker: {gpus}}}
checkpoint: {{num_to_keep: 1}}
failure: {{max_failures: 0}}
"""


def study_file(path: Path, dry: bool) -> None:
    if dry:  # the same study, tiny and on the CPU
        values = dict(what="gpu_check dry run, 4 tiny AutoMix trials at once on the CPU.", batch=32, steps=3,
                      device="cpu", amp="none", channels_last="false", workers=0, threads=1, train_size=256,
                      test_size=64, width=8, cpus=0.5, gpus=0)
    else:
        values = dict(what="4 AutoMix trials packed on one GPU (gpus_per_worker 0.25), ResNet-18 CIFAR stem, "
                           "CIFAR-shaped fake data, bf16.", batch=256, steps=40, device="cuda", amp="bf16",
                      channels_last="true", workers=2, threads=2, train_size=10240, test_size=1024, width=64,
                      cpus=2, gpus=0.25)
    path.write_text(STUDY.format(**values))


def read_part(parts: Path, name: str) -> dict:
    rc_file = parts / f"{name}.rc"
    if not rc_file.exists():
        return {"ran": False, "reason": "skipped: " + json.loads((parts / "setup.json").read_text())["summary"]}
    rc = int(rc_file.read_text().strip() or -1)
    log = (parts / f"{name}.log").read_text(errors="replace") if (parts / f"{name}.log").exists() else ""
    part = {"ran": True, "exit_code": rc, "timed_out": rc == 124}
    try:
        part["result"] = json.loads((parts / f"{name}.json").read_text())
    except (OSError, json.JSONDecodeError):
        part["log_tail"] = log[-3000:]
    if rc != 0:
        part["log_tail"] = log[-3000:]
    return part


def study_outcome(parts: Path, db: Path) -> dict:
    part = read_part(parts, "study")
    if not part["ran"]:
        return part
    part.pop("result", None)
    log = (parts / "study.log").read_text(errors="replace")
    part["log_tail"] = log[-3000:]
    if not db.exists():
        part["trials"] = []
        return part
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT r.run_uuid, r.name, r.status, r.start_time, r.end_time FROM runs r JOIN tags t "
        "ON t.run_uuid = r.run_uuid WHERE t.key = 'automix.role' AND t.value = 'trial'").fetchall()
    trials = []
    for run_id, name, status, start, end in rows:
        tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
        params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
        metrics = dict(con.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall())
        trials.append({"name": name, "status": status, "trial_status": tags.get("trial_status"),
                       "device": params.get("train.device"), "gpus_per_worker": params.get("resources.gpus_per_worker"),
                       **{k: metrics.get(k) for k in ("top1_final", "images_per_s", "peak_mem_mb", "train_time_s")},
                       "start_ms": start, "end_ms": end})
    part["trials"] = trials
    part["max_trials_at_once"] = max_overlap([(t["start_ms"], t["end_ms"]) for t in trials if t["end_ms"]])
    part["ok"] = (part["exit_code"] == 0 and len(trials) == 4
                  and all(t["status"] == "FINISHED" for t in trials))
    return part


def max_overlap(spans: list[tuple[int, int]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda ev: (ev[0], ev[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def assemble(parts: Path, db: Path, result: Path, dry: bool) -> int:
    gpu_text = (parts / "gpu.txt").read_text().strip()
    fields = [f.strip() for f in gpu_text.splitlines()[0].split(",")] if gpu_text else []
    gpu = ({"name": fields[0], "memory": fields[1], "driver": fields[2]} if len(fields) == 3
           else {"name": None, "nvidia_smi": gpu_text})
    report = {"dry_run": dry, "gpu": gpu, "setup": json.loads((parts / "setup.json").read_text()),
              "throughput": read_part(parts, "throughput"), "packing": read_part(parts, "packing"),
              "study": study_outcome(parts, db)}
    # ok: every part ran and passed; a part that could not run (no CUDA, no packages) is not ok.
    report["ok"] = (all(report[k]["ran"] and report[k]["exit_code"] == 0 for k in ("throughput", "packing", "study"))
                    and report["study"].get("ok", False))
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: wrote {result} (ok: {report['ok']})")
    for name in ("throughput", "packing", "study"):
        p = report[name]
        print(f"  {name}: " + ("not run: " + p.get("reason", "") if not p["ran"] else f"exit {p['exit_code']}"))
    return 0 if report["ok"] else 1


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "setup":
        setup(Path(args[0]), args[1], args[2], args[3], args[4] == "1")
    elif cmd == "study-file":
        study_file(Path(args[0]), args[1] == "1")
    elif cmd == "assemble":
        return assemble(Path(args[0]), Path(args[1]), Path(args[2]), args[3] == "1")
    else:
        print(f"unknown command {cmd!r}: setup | study-file | assemble", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
