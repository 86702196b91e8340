"""How long the paper table takes for a large study, against a bare `mlflow.search_runs`.

Fills a SQLite store with RUNS trial runs of EPOCHS epochs each (every per-epoch metric of the
layout), then times, in one warm process:
  - bare:  `mlflow.search_runs(experiment_names=[study])`, the plain MLflow query of the experiment;
  - table: `load_experiment(..., history_keys=("top1",))` + `build_results` + `render`, i.e. what
           `python -m analysis.paper_table` does.
Prints JSON with the median seconds of REPEAT interleaved timings and the median ratio of table to
bare over those pairs (target: table <= 1.5 x bare), and the path the metric history was read
through (`sql`: the guarded fast path; `public`: MLflow's per-run API, with the reason).
One-time costs (imports, the first model built for the parameter count) are measured separately.

    python benchmarks/analysis_scale.py [--runs 2000] [--epochs 50] [--db PATH] [--repeat 3]

With --db PATH an existing store of the right size is reused, so a second run skips the fill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from analysis.history import metric_histories  # noqa: E402
from analysis.loading import TRIAL_FILTER, load_experiment  # noqa: E402
from analysis.rendering import render  # noqa: E402
from analysis.table import build_results, param_count_m  # noqa: E402
from analysis.synthetic import StudyWriter, TrialSpec, new_sqlite_store, trial_params  # noqa: E402

STUDY = "analysis-scale"
METHODS = ("vanilla", "mixup", "cutmix", "automix")
BACKBONES = ("resnet18", "resnet50")
ALPHAS = (0.5, 1.0, 2.0)
EXTRA_KEYS = ("top1_q", "train_loss", "sched_lr", "sched_ema_momentum", "epoch_time_s")


def fill(uri: str, runs: int, epochs: int) -> float:
    """Write `runs` finished trials (methods x backbones x alphas x seeds) under one parent run."""
    rng = random.Random(0)
    start = time.perf_counter()
    artifacts = Path(uri[len("sqlite:///"):]).parent / "artifacts"
    writer = StudyWriter(uri, STUDY, artifact_location=str(artifacts))
    parent = writer.start_parent()
    for i in range(runs):
        method = METHODS[i % len(METHODS)]
        backbone = BACKBONES[(i // len(METHODS)) % len(BACKBONES)]
        alpha = ALPHAS[(i // (len(METHODS) * len(BACKBONES))) % len(ALPHAS)]
        seed = i // (len(METHODS) * len(BACKBONES) * len(ALPHAS))
        ceiling = rng.uniform(70, 80)
        top1 = [ceiling * (1 - 0.9 ** (e + 1)) + rng.gauss(0, 0.3) for e in range(epochs)]
        extra = {key: [rng.random() for _ in range(epochs)] for key in EXTRA_KEYS}
        params = trial_params(method=method, backbone=backbone, dataset="cifar100", epochs=epochs,
                              seed=seed, alpha=alpha)
        writer.add_trial(parent, TrialSpec(params, top1, extra_history=extra))
        if (i + 1) % 250 == 0:
            print(f"filled {i + 1}/{runs} runs", file=sys.stderr, flush=True)
    writer.finish_parent(parent)
    return time.perf_counter() - start


def count_trials(uri: str) -> int:
    """Trials already in an existing store (0 when there is no such file: nothing is created)."""
    if not Path(uri[len("sqlite:///"):]).is_file():
        return 0
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(STUDY)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], TRIAL_FILTER, max_results=50_000)
    return len(runs)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--db", type=Path, help="store to (re)use; default: a fresh temp file")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    db = args.db or Path(tempfile.mkdtemp(prefix="analysis-scale-")) / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    mlflow.set_tracking_uri(uri)  # the bare query below goes to this store, not ./mlflow.db
    fill_s = None
    found = count_trials(uri)
    if found != args.runs:
        if db.is_file():
            raise SystemExit(f"{db} holds {found} trials of {STUDY!r}, not {args.runs}: pass another --db")
        new_sqlite_store(db)
        fill_s = fill(uri, args.runs, args.epochs)

    start = time.perf_counter()
    for backbone in BACKBONES:  # one-time: imports torch and builds each backbone once
        param_count_m(backbone)
    first_param_count_s = time.perf_counter() - start
    n_bare = len(mlflow.search_runs(experiment_names=[STUDY]))  # warm both paths once
    study = load_experiment(uri, STUDY, history_keys=("top1",))
    print(f"metric history read through: {study.history_path}", file=sys.stderr, flush=True)

    def table() -> str:
        loaded = load_experiment(uri, STUDY, history_keys=("top1",))
        return render(build_results(loaded), "md", loaded)

    # Interleaved, so that load from other processes hits both alike; the ratio is taken per pair.
    bare_all, table_all = [], []
    for _ in range(args.repeat):
        bare_all.append(timed(lambda: mlflow.search_runs(experiment_names=[STUDY])))
        table_all.append(timed(table))
    bare_s, table_s = statistics.median(bare_all), statistics.median(table_all)
    ratio = statistics.median(t / b for t, b in zip(table_all, bare_all, strict=True))
    full_s = timed(lambda: load_experiment(uri, STUDY))
    client = MlflowClient(tracking_uri=uri)
    reason = metric_histories(client, list(study.trials["run_id"][:1]), ["top1"]).reason
    print(json.dumps({
        "runs": len(study.trials),
        "runs_in_bare_query": n_bare,
        "epochs": args.epochs,
        "history_rows_top1": len(study.history),
        "fill_s": None if fill_s is None else round(fill_s, 1),
        "bare_search_runs_s": round(bare_s, 3),
        "table_s": round(table_s, 3),
        "ratio_table_to_bare": round(ratio, 3),
        "history_path": study.history_path,
        "history_path_reason": reason,
        "target_ratio": 1.5,
        "bare_all_s": [round(t, 3) for t in bare_all],
        "table_all_s": [round(t, 3) for t in table_all],
        "load_all_history_keys_s": round(full_s, 3),
        "first_param_count_s": round(first_param_count_s, 3),
        "db": str(db),
    }, indent=2))


if __name__ == "__main__":
    main()
