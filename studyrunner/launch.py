"""The Ray Tune side of a launch: the trial plan, the Tuner (new or restored) and its fit.

Everything here runs once Ray is up and the checks of :mod:`studyrunner.preflight` passed.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from automix.config import dump_yaml

from . import space
from .console import StudyProgress
from .failures import GuardStopper, LaunchGuard
from .resume import filesystem
from .study import METRIC, MODE, Study
from .trainable import TrialPlan, automix_trial

FAULT_ENV = "AUTOMIX_FAULT_INJECT_EPOCH"
FAULT_RANK_ENV = "AUTOMIX_FAULT_INJECT_RANK"
BASE_CONFIG_FILE = "base_config.yaml"  # in the experiment folder: what the rerun command starts from


def trial_plan(study: Study, experiment_path: str, train_fn: str | None) -> TrialPlan:
    fault_epoch, fault_rank = os.environ.get(FAULT_ENV), os.environ.get(FAULT_RANK_ENV)
    r = study.resources
    return TrialPlan(
        base=study.base, workers=r.workers, cpus_per_worker=r.cpus_per_worker, gpus_per_worker=r.gpus_per_worker,
        num_to_keep=study.checkpoint.num_to_keep, experiment_path=experiment_path,
        train_storage=f"{experiment_path}/ray_train", numeric_retry=study.failure.numeric_retry,
        fault_inject_epoch=int(fault_epoch) if fault_epoch else None,
        fault_inject_rank=int(fault_rank) if fault_rank else None,
        **({"train_fn": train_fn} if train_fn else {}))


def trainable(plan: TrialPlan):
    import ray.tune

    return ray.tune.with_resources(ray.tune.with_parameters(automix_trial, plan=plan), plan.resources())


def resources_text(study: Study) -> str:
    r = study.resources
    return f"{r.workers} worker(s) x ({r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU)"


def new_tuner(study: Study, plan: TrialPlan, callbacks: list, exp_name: str, storage: str, verbose: int):
    import ray.tune

    guard = LaunchGuard(plan.experiment_path, study.resources.placement_timeout_s, resources_text(study))
    return ray.tune.Tuner(
        trainable(plan),
        param_space=space.param_space(study),
        tune_config=ray.tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=space.search_algorithm(study),
            scheduler=space.scheduler(study, plan.experiment_path), num_samples=study.num_samples,
            # Grid and random search bound concurrency themselves (space.search_algorithm); Tune would
            # ignore the setting for them with a warning.
            max_concurrent_trials=study.max_concurrent_trials if study.search.algorithm == "optuna" else None,
            reuse_actors=study.resources.workers == 1, trial_dirname_creator=trial_dirname),
        run_config=ray.tune.RunConfig(
            name=exp_name, storage_path=storage, callbacks=[guard, *callbacks], stop=GuardStopper(guard),
            # Tune's retries are for transient errors; the guard takes them away from deterministic ones.
            failure_config=ray.tune.FailureConfig(max_failures=study.failure.max_failures),
            checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=study.checkpoint.num_to_keep),
            progress_reporter=StudyProgress([p.key for p in study.sampled], study.epochs, plan.experiment_path),
            verbose=verbose),
    )


def restored_tuner(plan: TrialPlan):
    """The Tuner's settings (search state, scheduler, callbacks, guard) come back from the experiment
    folder; unfinished and errored trials continue from their checkpoints."""
    import ray.tune

    return ray.tune.Tuner.restore(plan.experiment_path, trainable=trainable(plan), resume_unfinished=True,
                                  resume_errored=True)


def fit(tuner, verbose: int) -> tuple[Any, float]:
    """(ResultGrid, seconds in Tuner.fit). Ctrl-C and SIGTERM stop the trials and save the experiment
    state (Tune handles SIGINT and SIGUSR1; SIGTERM from a scheduler or `docker stop` becomes SIGUSR1)."""
    # Ray 2.60's default console prints a box per result; the classic loop prints our progress table.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Every epoch is checkpointed and num_to_keep is small, so Tune snapshots its experiment state
    # often (good for --resume) and would warn about it every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if verbose < 2:  # "Wrote the latest version of all result files ...", "Total run time ..."
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        # A failed trial's traceback (40 lines each time); the guard prints its one-line cause and what
        # happens next, and the full text is in the trial's error.txt and its MLflow run.
        logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGUSR1))
    t0 = time.monotonic()
    try:
        return tuner.fit(), time.monotonic() - t0
    finally:
        signal.signal(signal.SIGTERM, previous)


def trial_dirname(trial) -> str:
    """Short trial folders (the default repeats every sampled value in the name)."""
    return f"trial_{trial.trial_id}"


def write_base_config(study: Study, experiment_path: str) -> str:
    """The resolved base run config next to the results; the summary's rerun command starts from it."""
    path = f"{experiment_path.rstrip('/')}/{BASE_CONFIG_FILE}"
    fs, fs_path = filesystem(path)
    with fs.open_output_stream(fs_path) as out:
        out.write(dump_yaml(study.base_config()).encode())
    return path
