"""Launch, resume or clean up a study: the steps in the order they run.

1. read the study (or the snapshot of the launch to resume) and the options;
2. checks that need no cluster: the tracking server answers, the data roots hold their files;
3. start Ray (or attach), record its pids, check that a trial's resources exist in the cluster;
4. the parent run, the Tuner, its fit;
5. how every trial ended, the parent's end, the summary, the exit code.

Everything that can be wrong with the study file, the tracking server or the data is found before
Ray starts, so a typo costs a second, not a cluster start.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from automix import record

from . import preflight, ray_local
from .resume import LaunchError, find_launch, new_experiment_name, storage_path, write_state
from .smoke import smoke_variant
from .study import Study, StudyError, load_study, study_from_snapshot
from .uris import TrackingUnavailable, check_reachable, redact, resolve_tracking_uri

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_USAGE, EXIT_TRACKING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PARENT_STATUS = {EXIT_OK: "FINISHED", EXIT_TRIALS_FAILED: "FAILED", EXIT_USAGE: "FAILED",
                 EXIT_INTERRUPTED: "KILLED"}


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
    train_fn: str | None = None  # "module:function" instead of automix.train:train (benchmarks, tests)
    verbose: int = 1
    track: bool = True  # MLflow tracking (off only for benchmarks of the platform's own overhead)
    cleanup: str | None = None  # stop what a killed launch left running: "latest" or an experiment folder


@dataclass
class Outcome:
    exit_code: int
    experiment_path: str = ""
    tracking_uri: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    rows: list = field(default_factory=list)
    fit_wall_s: float = 0.0  # Tuner.fit() alone, without Ray's start


@dataclass
class Launch:
    """One launch being run: what it runs and where its records go."""
    opts: Options
    study: Study
    storage: str
    exp_name: str
    state: dict[str, Any]  # the state file's content (empty for a new launch until it is written)
    tracking_uri: str | None
    resumed: bool

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.exp_name}"

    def resume_command(self) -> str:
        return f"python tune_runner.py {self.opts.study} --resume {self.experiment_path}"


def run(opts: Options) -> Outcome:
    launch = None
    try:
        if opts.cleanup:
            return _cleanup(opts)
        launch = _prepare(opts)
        return _run(launch)
    except (StudyError, LaunchError, ray_local.AttachError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Outcome(EXIT_USAGE)
    except TrackingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Outcome(EXIT_TRACKING)
    except KeyboardInterrupt:  # outside Tuner.fit (which handles Ctrl-C itself): Ray's start, the summary
        print("\ninterrupted" + (f"; continue with:\n  {launch.resume_command()}" if launch and launch.state
                                 else ""), file=sys.stderr)
        return Outcome(EXIT_INTERRUPTED)


# --------------------------------------------------------------------------- 1. the study and options

def _prepare(opts: Options) -> Launch:
    storage = storage_path(opts.storage_path)
    if opts.resume:
        return _prepare_resume(opts, storage)
    study = load_study(opts.study, list(opts.overrides))
    if opts.smoke_test:
        study = smoke_variant(study)
    if opts.num_samples is not None or opts.max_concurrent_trials is not None:
        study = dataclasses.replace(study, num_samples=opts.num_samples or study.num_samples,
                                    max_concurrent_trials=opts.max_concurrent_trials or study.max_concurrent_trials)
    return Launch(opts, _absolute_data_root(study), storage, new_experiment_name(storage, study.name), {},
                  resolve_tracking_uri(opts.tracking_uri) if opts.track else None, resumed=False)


def _prepare_resume(opts: Options, storage: str) -> Launch:
    storage, exp_name, state = find_launch(storage, opts.study, opts.resume)
    study = study_from_snapshot(state["study"])
    tracking_uri = state["tracking_uri"]
    if opts.tracking_uri and resolve_tracking_uri(opts.tracking_uri) != tracking_uri:
        raise LaunchError(f"--resume continues the MLflow runs at {tracking_uri}; drop --tracking-uri "
                          f"or pass that one (got {redact(opts.tracking_uri)})")
    if opts.track and tracking_uri is None:
        raise LaunchError("this launch was run without MLflow tracking; resume it from Python with track=False")
    current = load_study(opts.study)  # still validated: a broken file is reported, not resumed over
    if current.sha256 != study.sha256:
        print(f"note: {opts.study} changed since this study was launched; resuming the launched "
              f"version (study_hash {study.sha256[:12]})", file=sys.stderr)
    return Launch(opts, study, storage, exp_name, state, tracking_uri, resumed=True)


def _absolute_data_root(study: Study) -> Study:
    """A relative ``data.root`` means the launch's working directory: trial processes run in their own
    folders (and on other nodes), so they get the absolute path."""
    root = study.base["data"]["root"]
    if "://" in root or Path(root).is_absolute():
        return study
    base = {**study.base, "data": {**study.base["data"], "root": str(Path(root).resolve())}}
    return dataclasses.replace(study, base=base)


# --------------------------------------------------------------------------- 2.-5. the launch

def _run(launch: Launch) -> Outcome:
    if launch.tracking_uri is not None:
        check_reachable(launch.tracking_uri)  # fail fast, before Ray starts
    preflight.check_data_roots(launch.study)
    if launch.resumed:
        _stop_leftovers_of(launch.state)
    started = ray_local.start_or_attach(launch.opts.address, preflight.placement_env(launch.study))
    try:
        _check_cluster(launch)
        return _tune(launch)
    finally:
        if started:
            import ray

            ray.shutdown()


def _check_cluster(launch: Launch) -> None:
    """Resources a trial can never get end the launch (exit 2); multi-worker trials run only as many
    at a time as the cluster holds (their Train runs would otherwise wait for workers)."""
    attached = launch.opts.address is not None
    autoscaling = attached and preflight.cluster_autoscales()
    nodes = preflight.alive_nodes()
    note = preflight.check_resources(launch.study, nodes, autoscaling=autoscaling,
                                     node_types=preflight.autoscaler_node_types() if attached else None)
    if note:
        print(note, file=sys.stderr)
    study = launch.study
    fit = preflight.concurrent_trials_that_fit(study, nodes)
    if study.resources.workers > 1 and not autoscaling and 1 <= fit < study.max_concurrent_trials:
        print(f"note: max_concurrent_trials = {study.max_concurrent_trials}: this cluster holds {fit} trials of "
              f"{study.resources.workers} workers at once; running {fit} at a time", file=sys.stderr)
        launch.study = dataclasses.replace(study, max_concurrent_trials=fit)


def _stop_leftovers_of(state: dict[str, Any]) -> None:
    """A driver that was SIGKILLed leaves its Ray running (agents ignore SIGTERM): stop it by pid."""
    if ray_local.driver_alive(state):
        raise LaunchError(f"this launch is still running (driver pid {state['driver']['pid']}); stop it "
                          f"first (Ctrl-C, then --resume)")
    stopped = ray_local.stop_leftovers(state.get("ray_processes", []), state.get("ray_session"))
    if stopped:
        print(f"note: stopped {len(stopped)} leftover Ray processes of the earlier run of this launch "
              f"(pids {', '.join(map(str, stopped))})", file=sys.stderr)


def _cleanup(opts: Options) -> Outcome:
    storage, exp_name, state = find_launch(storage_path(opts.storage_path), opts.study, opts.cleanup)
    _stop_leftovers_of(state)
    print(f"{storage.rstrip('/')}/{exp_name}: no processes of this launch left running")
    return Outcome(EXIT_OK, f"{storage.rstrip('/')}/{exp_name}")


def _tune(launch: Launch) -> Outcome:
    from . import launch as tune_launch
    from . import launch_tracking
    from .failures import clear_launch_problem

    study, path = launch.study, launch.experiment_path
    tracking = launch_tracking.open_parent(launch.tracking_uri, study, path, launch.state.get("parent_run_id"))
    _write_launch_state(launch, tracking)
    clear_launch_problem(path)  # a resumed launch starts without the last run's verdict
    base_config = tune_launch.write_base_config(study, path)
    print(f"study {study.name}: {study.total_trials()} trials, {study.max_concurrent_trials} at a time, "
          f"{tune_launch.resources_text(study)} each; Ray experiment {path}; {tracking.where()}", flush=True)

    plan = tune_launch.trial_plan(study, path, launch.state.get("train_fn"))
    if launch.resumed:
        tuner = tune_launch.restored_tuner(plan)
    else:
        tuner = tune_launch.new_tuner(study, plan, tracking.callbacks(study), launch.exp_name, launch.storage,
                                      launch.opts.verbose)
    t0 = time.monotonic()
    try:
        results, fit_wall_s = tune_launch.fit(tuner, launch.opts.verbose)
    except BaseException as exc:
        tracking.abort("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return _end(launch, results, tracking, base_config, fit_wall_s, time.monotonic() - t0)


def _write_launch_state(launch: Launch, tracking) -> None:
    """The state file: the study snapshot and MLflow ids (kept from the first launch on --resume), and
    the pids of this run's driver and local Ray, which a later --resume or --cleanup stops if left."""
    import ray

    state = launch.state or {
        "study": launch.study.to_dict(), "tracking_uri": launch.tracking_uri,
        "experiment_id": tracking.experiment_id, "parent_run_id": tracking.parent_run_id,
        "launched_at": datetime.now(timezone.utc).isoformat(), "train_fn": launch.opts.train_fn}
    state["driver"] = ray_local.driver_record()
    local = launch.opts.address is None and ray.is_initialized()
    state["ray_processes"] = ray_local.local_processes() if local else []
    state["ray_session"] = ray_local.session_name() if local else None
    write_state(launch.experiment_path, state)
    launch.state = state


def _end(launch: Launch, results, tracking, base_config: str, fit_wall_s: float, wall_s: float) -> Outcome:
    from . import report
    from .failures import launch_problem
    from .space import stopped_trials

    study, path = launch.study, launch.experiment_path
    rows = report.rows_from_results(results, study, stopped_trials(path))
    counts = report.counts(rows, study.total_trials())
    problem = launch_problem(path)
    if problem:
        code = EXIT_USAGE
    elif counts[record.INTERRUPTED]:
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_TRIALS_FAILED if counts[record.FAILED] else EXIT_OK
    mlflow_lines = tracking.finish(PARENT_STATUS[code], counts, wall_s)
    mlflow_lines.append(f"Ray Tune experiment (trial state, checkpoints): {path}")
    print(report.summary(rows, study, base_config_path=base_config, mlflow_lines=mlflow_lines,
                         top_n=launch.opts.top_n), flush=True)
    if problem:
        print(f"\nerror: {problem}", file=sys.stderr, flush=True)
    elif code == EXIT_INTERRUPTED:
        ended = study.total_trials() - counts[record.INTERRUPTED]
        print(f"\ninterrupted: {ended} of {study.total_trials()} trials ended. Continue with:\n"
              f"  {launch.resume_command()}", flush=True)
    return Outcome(code, path, launch.tracking_uri or "", tracking.experiment_id or "",
                   tracking.parent_run_id or "", rows, fit_wall_s)
