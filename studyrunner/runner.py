"""Launch or resume a study: validate, check tracking, start Ray, fit the Tuner, summarise.

The order matters: everything that can be wrong with the study file or the tracking server is found
before Ray starts, so a typo costs a second, not a cluster start.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .study import METRIC, MODE, Study, StudyError, load_study, smoke_variant, study_from_snapshot
from .tracking import TrackingUnavailable, check_reachable, resolve_tracking_uri

log = logging.getLogger("studyrunner")

STATE_FILE = "studyrunner.json"  # in the Ray experiment folder: the study snapshot and MLflow ids
EXIT_OK, EXIT_TRIALS_FAILED, EXIT_USAGE, EXIT_TRACKING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FAULT_ENV = "AUTOMIX_FAULT_INJECT_EPOCH"
FAULT_RANK_ENV = "AUTOMIX_FAULT_INJECT_RANK"


@dataclass
class Options:
    study: str
    smoke_test: bool = False
    address: str | None = None
    tracking_uri: str | None = None
    storage_path: str | None = None
    resume: str | None = None  # None, "latest" or an experiment folder
    overrides: Sequence[str] = ()
    num_samples: int | None = None
    max_concurrent_trials: int | None = None
    top_n: int = 10
    train_fn: str | None = None  # "module:function" instead of automix.train:train (benchmarks)
    verbose: int = 1
    track: bool = True  # MLflow tracking (off only for benchmarks of the platform's own overhead)


@dataclass
class Outcome:
    exit_code: int
    experiment_path: str = ""
    tracking_uri: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    rows: list = field(default_factory=list)
    fit_wall_s: float = 0.0  # Tuner.fit() alone, without Ray's start


class LaunchError(RuntimeError):
    """A problem with the launch itself (paths, resume); exit code 2."""


def run(opts: Options) -> Outcome:
    try:
        return _run(opts)
    except (StudyError, LaunchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Outcome(EXIT_USAGE)
    except TrackingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Outcome(EXIT_TRACKING)


def _run(opts: Options) -> Outcome:
    storage = _storage_path(opts.storage_path)
    if opts.resume:
        storage, exp_name, state = _find_previous(storage, opts)
        study = study_from_snapshot(state["study"])
        tracking_uri = state["tracking_uri"]
        if opts.tracking_uri and resolve_tracking_uri(opts.tracking_uri) != tracking_uri:
            raise LaunchError(f"--resume continues the MLflow runs at {tracking_uri}; drop --tracking-uri "
                              f"or pass that one (got {opts.tracking_uri})")
        current = load_study(opts.study)  # still validated: a broken file is reported, not resumed over
        if current.sha256 != study.sha256:
            print(f"note: {opts.study} changed since this study was launched; resuming the launched "
                  f"version (study_hash {study.sha256[:12]})", file=sys.stderr)
    else:
        study = load_study(opts.study, list(opts.overrides))
        if opts.smoke_test:
            study = smoke_variant(study)
        if opts.num_samples is not None or opts.max_concurrent_trials is not None:
            study = dataclasses.replace(study, num_samples=opts.num_samples or study.num_samples,
                                        max_concurrent_trials=opts.max_concurrent_trials
                                        or study.max_concurrent_trials)
        study = _absolute_data_root(study)
        tracking_uri = resolve_tracking_uri(opts.tracking_uri)
        exp_name, state = _new_experiment_name(storage, study.name), {}
    if opts.track:
        if tracking_uri is None:
            raise LaunchError("this launch was run without MLflow tracking; resume it from Python with track=False")
        check_reachable(tracking_uri)  # fail fast, before Ray starts

    import ray

    try:
        started_ray = _init_ray(opts.address)
    except ConnectionError as exc:
        raise LaunchError(f"cannot attach to the Ray cluster at --address {opts.address}: {exc}") from None
    try:
        return _tune(opts, study, storage, exp_name, state, tracking_uri)
    finally:
        if started_ray:
            ray.shutdown()


def _tune(opts: Options, study: Study, storage: str, exp_name: str, state: dict, tracking_uri: str) -> Outcome:
    import ray.tune

    from . import report, space, tracking
    from .trainable import TrialPlan, automix_trial

    experiment_path = f"{storage.rstrip('/')}/{exp_name}"
    client = experiment_id = parent = None
    if opts.track:
        client = tracking.client_for(tracking_uri)
        experiment_id = tracking.ensure_experiment(client, study.name)
    if state:
        parent = state["parent_run_id"]
        if client is not None and parent:
            tracking.reopen_parent(client, parent)
    else:
        if client is not None:
            parent = tracking.start_parent(client, experiment_id, study, experiment_path)
        state = {"study": study.to_dict(), "tracking_uri": tracking_uri if opts.track else None,
                 "experiment_id": experiment_id, "parent_run_id": parent,
                 "launched_at": datetime.now(timezone.utc).isoformat(), "train_fn": opts.train_fn}
        _write_state(experiment_path, state)
    where = (f"MLflow experiment {study.name!r} (id {experiment_id}), parent run {parent} at {tracking_uri}"
             if opts.track else "MLflow tracking off")
    print(f"study {study.name}: {study.total_trials()} trials, {study.max_concurrent_trials} at a time, "
          f"{study.resources.workers} worker(s) each; Ray experiment {experiment_path}; {where}", flush=True)

    fault_epoch, fault_rank = os.environ.get(FAULT_ENV), os.environ.get(FAULT_RANK_ENV)
    train_fn = state.get("train_fn") or opts.train_fn
    plan = TrialPlan(
        base=study.base, workers=study.resources.workers, cpus_per_worker=study.resources.cpus_per_worker,
        gpus_per_worker=study.resources.gpus_per_worker, max_failures=study.failure.max_failures,
        num_to_keep=study.checkpoint.num_to_keep, experiment_path=experiment_path,
        train_storage=f"{experiment_path}/ray_train",
        fault_inject_epoch=int(fault_epoch) if fault_epoch else None,
        fault_inject_rank=int(fault_rank) if fault_rank else None,
        **({"train_fn": train_fn} if train_fn else {}))
    trainable = ray.tune.with_resources(ray.tune.with_parameters(automix_trial, plan=plan), plan.resources())

    if opts.resume:
        # The Tuner's settings (search algorithm state, scheduler, MLflow callback) come back from the
        # experiment folder; the callback finds each trial's run by its trial_id tag.
        tuner = ray.tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
    else:
        callbacks = [tracking.MlflowTrialCallback(tracking_uri, experiment_id, parent, study)] if opts.track else []
        tuner = ray.tune.Tuner(
            trainable,
            param_space=space.param_space(study),
            tune_config=ray.tune.TuneConfig(
                metric=METRIC, mode=MODE, search_alg=space.search_algorithm(study),
                scheduler=space.scheduler(study), num_samples=study.num_samples,
                max_concurrent_trials=study.max_concurrent_trials,
                reuse_actors=study.resources.workers == 1, trial_dirname_creator=trial_dirname),
            run_config=ray.tune.RunConfig(
                name=exp_name, storage_path=storage, callbacks=callbacks,
                failure_config=ray.tune.FailureConfig(max_failures=_tune_max_failures(study)),
                checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=study.checkpoint.num_to_keep),
                verbose=opts.verbose),
        )

    _forward_sigterm()
    # Every epoch is checkpointed and num_to_keep is small, so Tune snapshots its experiment state
    # often (good for --resume) and would warn about it every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    t0 = time.monotonic()
    results = tuner.fit()
    fit_wall_s = time.monotonic() - t0

    rows = report.rows_from_results(results, study)
    ended = [r for r in rows if r.status in ("finished", "stopped early", "failed")]
    interrupted = len(ended) < study.total_trials()
    failed = [r for r in rows if r.status == "failed"]
    best = report.ranked(rows)[0] if rows and not interrupted else None
    mlflow_lines = []
    if client is not None:
        tracking.finish_parent(client, parent, "KILLED" if interrupted else "FINISHED",
                               {"top1": best.top1, "trial_id": best.trial_id}
                               if best is not None and best.top1 == best.top1 else None)
        mlflow_lines = [
            f"MLflow: experiment {study.name!r} (id {experiment_id}) at {tracking_uri}",
            f"  parent run {parent} (one child run per trial, tag trial_id)",
            "  " + tracking.ui_hint(tracking_uri, experiment_id),
        ]
    mlflow_lines.append(f"Ray Tune experiment (trial state, checkpoints): {experiment_path}")
    print(report.summary(rows, study, mlflow_lines=mlflow_lines, top_n=opts.top_n), flush=True)
    outcome = Outcome(EXIT_OK, experiment_path, tracking_uri, experiment_id or "", parent or "", rows, fit_wall_s)
    if interrupted:
        print(f"\ninterrupted: {len(ended)} of {study.total_trials()} trials ended. Continue with:\n"
              f"  python tune_runner.py {opts.study} --resume {experiment_path}", flush=True)
        outcome.exit_code = EXIT_INTERRUPTED
    elif failed:
        outcome.exit_code = EXIT_TRIALS_FAILED
    return outcome


def _absolute_data_root(study: Study) -> Study:
    """A relative ``data.root`` means the launch's working directory: trial processes run in their own
    folders (and on other nodes), so they get the absolute path."""
    root = study.base["data"]["root"]
    if "://" in root or Path(root).is_absolute():
        return study
    base = {**study.base, "data": {**study.base["data"], "root": str(Path(root).resolve())}}
    return dataclasses.replace(study, base=base)


def _tune_max_failures(study: Study) -> int:
    """Retries of the trial process. Multi-worker trials retry their worker group inside Ray Train
    (failure.max_failures times, from Train's checkpoint); Tune retries the driving process once more,
    not max_failures times again (that would multiply the attempts of a deterministic error)."""
    return study.failure.max_failures if study.resources.workers == 1 else min(study.failure.max_failures, 1)


def trial_dirname(trial) -> str:
    """Short trial folders (the default repeats every sampled value in the name)."""
    return f"trial_{trial.trial_id}"


def _forward_sigterm() -> None:
    """SIGTERM (a scheduler, `docker stop`) ends the study like Ctrl-C: Tune saves the experiment state
    and stops the trials, so --resume can continue. Tune itself handles SIGINT and SIGUSR1."""
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGUSR1))


def _init_ray(address: str | None) -> bool:
    """Start a local Ray (or attach to a cluster) such that Ray's State API finds *this* cluster.

    Ray Train's PlacementGroupCleaner asks the State API whether a Train controller is still alive;
    when a trial is stopped (ASHA, or at max_t) that is what frees its workers' placement group. With
    no address configured, the State API client guesses the cluster from the local processes and
    fails when a second Ray instance runs on the machine ("Found multiple active Ray instances"): the
    cleaner dies and the next multi-worker trial waits forever for its workers. So the address is
    pinned for every Ray process: RAY_API_SERVER_ADDRESS (our dashboard) locally, RAY_ADDRESS in the
    job's runtime env on a cluster.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phone-home from laptops and CI
    if address:
        env_vars = {}
        # Inside `ray job submit` the job's runtime env already carries its settings (and a second
        # env_vars would conflict with it); the job's own address is then the cluster's.
        if not address.startswith("ray://") and not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
            if address == "auto":
                from ray._private.services import canonicalize_bootstrap_address_or_die

                address = canonicalize_bootstrap_address_or_die(address)
            _probe(address)
            env_vars["RAY_ADDRESS"] = address
        ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": env_vars} if env_vars else None)
        return True
    # A local Ray on the loopback address, dashboard on 127.0.0.1 (Ray's gRPC servers still listen on
    # all interfaces; its token authentication guards them). The dashboard stays on: the State API
    # above is served by it. Workers import automix/studyrunner from the driver's script folder and
    # working directory, which Ray puts on their sys.path.
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=port, log_to_driver=True)
    return True


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Ray retries an unreachable GCS for minutes; say so at once instead."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {address} within {timeout_s:.0f}s ({exc}); start the "
                              f"head with `ray start --head` or pass its HOST:PORT") from None


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- storage and resume

def _storage_path(path: str | None) -> str:
    if path is None:
        return str(Path("ray_results").resolve())
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)


def _new_experiment_name(storage: str, study_name: str) -> str:
    """``<study>-<UTC time>``: one Ray experiment folder per launch (a second launch never overwrites)."""
    import pyarrow.fs

    name = f"{study_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    fs, fs_path = _fs(storage)
    taken = {i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(fs_path, allow_not_found=True))}
    suffix = 1
    candidate = name
    while candidate in taken:
        suffix += 1
        candidate = f"{name}-{suffix}"
    return candidate


def _write_state(experiment_path: str, state: dict[str, Any]) -> None:
    fs, fs_path = _fs(experiment_path)
    fs.create_dir(fs_path, recursive=True)
    with fs.open_output_stream(f"{fs_path}/{STATE_FILE}") as out:
        out.write(json.dumps(state, indent=2, default=str).encode())


def _read_state(experiment_path: str) -> dict[str, Any] | None:
    fs, fs_path = _fs(experiment_path)
    try:
        with fs.open_input_stream(f"{fs_path}/{STATE_FILE}") as src:
            return json.loads(src.read().decode())
    except (FileNotFoundError, OSError):
        return None


def _find_previous(storage: str, opts: Options) -> tuple[str, str, dict[str, Any]]:
    """(storage path, experiment folder name, saved state) of the launch to resume: the folder given
    to --resume, or the newest launch of this study under the storage path."""
    if opts.resume != "latest":
        path = _storage_path(opts.resume).rstrip("/")
        state = _read_state(path)
        if state is None:
            raise LaunchError(f"--resume {opts.resume}: no {STATE_FILE} there; pass a folder printed by an "
                              f"earlier launch, or --resume alone for the newest launch under --storage-path")
        parent, _, name = path.rpartition("/")
        return parent, name, state
    import pyarrow.fs

    name = load_study(opts.study).name
    fs, fs_path = _fs(storage)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(fs_path, allow_not_found=True))
    launches = sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                      and i.base_name.startswith(f"{name}-"))
    for candidate in reversed(launches):
        state = _read_state(f"{storage.rstrip('/')}/{candidate}")
        if state is not None and state["study"]["name"] == name:
            return storage, candidate, state
    raise LaunchError(f"--resume: no earlier launch of study {name!r} under {storage} (folders {name}-*/ "
                      f"with {STATE_FILE}); pass --storage-path if it ran elsewhere")
