#!/usr/bin/env python
"""Run a hyperparameter study of AutoMix on Ray Tune + Optuna, tracked in MLflow.

    python tune_runner.py studies/quickstart.yaml                 # local Ray, ./mlflow.db, ./ray_results
    python tune_runner.py studies/quickstart.yaml --smoke-test    # seconds per trial (CI)
    python tune_runner.py studies/cifar100_sweep.yaml --address auto \\
        --tracking-uri http://mlflow:5000 --storage-path /shared/ray_results
    python tune_runner.py studies/quickstart.yaml --resume        # continue the newest interrupted launch
    python tune_runner.py studies/quickstart.yaml --cleanup       # stop what a killed launch left running

Exit codes: 0 all trials ended, 1 some trials failed, 2 bad study file, arguments, data or resources
(also: a trial could not be placed within resources.placement_timeout_s), 3 tracking server
unreachable, 130 interrupted (continue with --resume).
"""
from __future__ import annotations

import argparse
import sys

from studyrunner.runner import Options, run


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="tune_runner.py",
        description="Run a study file (studies/*.yaml): many AutoMix trials scheduled by Ray Tune "
                    "(Optuna TPE / random / grid search, ASHA early stopping), each trial a data-parallel "
                    "run of automix.train, every trial a nested MLflow run under one parent run per launch.",
        epilog="After a run: mlflow ui --backend-store-uri sqlite:///mlflow.db, then open the runs view "
               "(#/experiments/<id>/runs) printed at the end. Exit codes: 0 done, 1 some trials failed, "
               "2 bad study, arguments, data or resources, 3 tracking server unreachable, "
               "130 interrupted (use --resume).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="the study file, e.g. studies/quickstart.yaml")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny version for CI: 2 epochs of 4 steps on 256 images, width 8, at most 3 trials; "
                        "studies on GPUs or on data sets with files keep their data.name with synthetic images "
                        "on the CPU; every run is tagged smoke_test=true")
    p.add_argument("--address", default=None,
                   help="attach to a running Ray cluster ('auto' or ray://HOST:10001); default: start Ray "
                        "locally on 127.0.0.1")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI: sqlite:///PATH.db or http://HOST:PORT (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                        "in the working directory). An unreachable server stops the launch before Ray starts")
    p.add_argument("--storage-path", default=None,
                   help="where Ray keeps trial state and checkpoints (default ./ray_results); on a cluster a "
                        "shared folder or s3://bucket/prefix")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="EXPERIMENT_DIR",
                   help="continue an interrupted launch: the newest launch of this study under --storage-path, "
                        "or the folder given. Finished trials are kept, the same MLflow runs continue; Ray "
                        "processes a killed earlier run left behind are stopped first")
    p.add_argument("--cleanup", nargs="?", const="latest", default=None, metavar="EXPERIMENT_DIR",
                   help="stop the Ray processes that a killed launch (the newest of this study, or the folder "
                        "given) left running, by the pids in its studyrunner.json, and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the study's base run config, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--num-samples", type=int, default=None, help="override the study's num_samples")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="override the study's max_concurrent_trials")
    p.add_argument("--top", type=int, default=10, dest="top_n", help="trials in the final table (default 10)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="console output: 0 only the final summary, 1 a table of the trials when one changes "
                        "status and every 30 s (default), 2 also Ray's own per-result lines")
    a = p.parse_args(argv)
    if a.resume and a.cleanup:
        p.error("--resume already stops what an earlier run left behind; pass one of --resume and --cleanup")
    if a.resume and (a.overrides or a.smoke_test or a.num_samples or a.max_concurrent_trials):
        p.error("--resume continues a launch as it was launched: drop --set, --smoke-test, --num-samples "
                "and --max-concurrent-trials")
    for name in ("num_samples", "max_concurrent_trials"):
        value = getattr(a, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return Options(study=a.study, smoke_test=a.smoke_test, address=a.address, tracking_uri=a.tracking_uri,
                   storage_path=a.storage_path, resume=a.resume, cleanup=a.cleanup, overrides=a.overrides,
                   num_samples=a.num_samples, max_concurrent_trials=a.max_concurrent_trials, top_n=a.top_n,
                   verbose=a.verbose)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv)).exit_code


if __name__ == "__main__":
    sys.exit(main())
