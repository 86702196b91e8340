"""Which trial failures are retried, and when a launch gives up waiting for resources.

Ray Tune retries a failed trial ``max_failures`` times whatever the error (``FailureConfig`` has no
per-error setting in Ray 2.60), and Ray Train retries a worker group the same way. A deterministic error
-- a bad config, missing data, a non-finite loss -- fails identically every time, so retrying it only
wastes the retries' time. The split:

- in the trial (:func:`remember_deterministic`): such an error is written to the trial's folder in
  Ray storage before it propagates; a retry Tune or Train insists on re-raises it at once
  (:func:`raise_if_remembered`) without training again;
- on the driver (:class:`LaunchGuard`, a Tune callback): when Tune schedules that retry, the trial's
  ``max_failures`` drops to 0, so the re-raised error ends the trial. Transient errors (a killed
  worker, a lost node, an out-of-memory kill) keep the study's ``failure.max_failures``.

The guard also ends a launch whose trials cannot be placed: no trial of the launch runs and one has
waited longer than ``resources.placement_timeout_s`` (or a Ray Train run gave up starting its workers).
It stops the experiment through :class:`GuardStopper` and leaves its message in the experiment folder.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from automix.config import ConfigError
from automix.data import DataError
from automix.train import NonFiniteLossError

from .resume import filesystem
from .study import StudyError

DETERMINISTIC = (ConfigError, DataError, NonFiniteLossError, StudyError)
ERROR_FILE = "deterministic_error.txt"  # in the trial's folder: the one-line cause
PROBLEM_FILE = "launch_problem.txt"  # in the experiment folder: why the guard ended the launch


class DeterministicTrialError(RuntimeError):
    """Re-raised by a retry of a trial whose first attempt hit a deterministic error."""


class PlacementTimeout(RuntimeError):
    """A trial's workers could not be placed within resources.placement_timeout_s."""


def trial_folder(experiment_path: str, trial_id: str) -> str:
    return f"{experiment_path.rstrip('/')}/trial_{trial_id}"


def _write(path: str, text: str) -> None:
    fs, fs_path = filesystem(path)
    fs.create_dir(fs_path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(fs_path) as out:
        out.write(text.encode())


def _read(path: str) -> str | None:
    fs, fs_path = filesystem(path)
    try:
        with fs.open_input_stream(fs_path) as src:
            return src.read().decode()
    except (FileNotFoundError, OSError):
        return None


def remember_deterministic(experiment_path: str, trial_id: str, exc: BaseException) -> None:
    """Line 1: the error's class (``module:name``), line 2: its message."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    _write(f"{trial_folder(experiment_path, trial_id)}/{ERROR_FILE}",
           f"{type(exc).__module__}:{type(exc).__qualname__}\n{message}\n")


def raise_if_remembered(experiment_path: str, trial_id: str) -> None:
    """Raise the remembered error again, as the same class with the same message (so the trial's
    recorded error is the cause, not this re-raise)."""
    text = _read(f"{trial_folder(experiment_path, trial_id)}/{ERROR_FILE}")
    if not text:
        return
    kind, _, message = text.partition("\n")
    module, _, name = kind.partition(":")
    cls = getattr(importlib.import_module(module), name, None) if module else None
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = DeterministicTrialError
    raise cls(message.strip())


def clear_launch_problem(experiment_path: str) -> None:
    fs, fs_path = filesystem(f"{experiment_path.rstrip('/')}/{PROBLEM_FILE}")
    try:
        fs.delete_file(fs_path)
    except (FileNotFoundError, OSError):
        pass


def launch_problem(experiment_path: str) -> str | None:
    text = _read(f"{experiment_path.rstrip('/')}/{PROBLEM_FILE}")
    return text.strip() if text else None


class LaunchGuard(Callback):
    """Driver side: no retries of deterministic errors; an end to waiting for unplaceable trials."""

    def __init__(self, experiment_path: str, placement_timeout_s: float, resources_text: str):
        self.experiment_path = experiment_path
        self.placement_timeout_s = placement_timeout_s
        self.resources_text = resources_text  # e.g. "2 workers x (1 CPU, 1 GPU)", for the message
        self.problem: str | None = None
        self._waiting_since: float | None = None

    def __getstate__(self) -> dict[str, Any]:  # restored by --resume from the experiment folder
        return {**self.__dict__, "problem": None, "_waiting_since": None}

    def on_trial_recover(self, iteration, trials, trial, **info):
        if _read(f"{trial_folder(self.experiment_path, trial.trial_id)}/{ERROR_FILE}"):
            trial.max_failures = 0  # the retry re-raises at once; that error ends the trial
            return
        print(f"trial {trial.trial_id}: {_error_line(trial)}; retrying from its last checkpoint "
              f"(failure {trial.run_metadata.num_failures} of at most {trial.max_failures + 1})", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"trial {trial.trial_id} failed: {_error_line(trial)}", flush=True)
        text = _read(f"{trial_folder(self.experiment_path, trial.trial_id)}/{ERROR_FILE}") or ""
        kind, _, message = text.partition("\n")
        if kind.endswith(PlacementTimeout.__name__):
            self._give_up(message.strip())

    def on_step_end(self, iteration, trials, **info):
        running = any(t.status == "RUNNING" for t in trials)
        pending = any(t.status == "PENDING" for t in trials)
        if running or not pending:
            self._waiting_since = None
            return
        now = time.monotonic()
        self._waiting_since = self._waiting_since or now
        if now - self._waiting_since > self.placement_timeout_s:
            self._give_up(f"resources.placement_timeout_s = {self.placement_timeout_s:g}: no trial could be "
                          f"placed for {now - self._waiting_since:.0f} s; a trial asks for "
                          f"{self.resources_text} and the cluster never had them free")

    def _give_up(self, message: str) -> None:
        if self.problem is None:
            self.problem = message
            _write(f"{self.experiment_path.rstrip('/')}/{PROBLEM_FILE}", message + "\n")


def _error_line(trial) -> str:
    """The last exception line of the trial's newest failure (Tune's error file, on the driver)."""
    from .run_record import error_line

    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        text = ""
    return error_line(text.rsplit("Failure #", 1)[-1]) if text else "unknown error"


class GuardStopper(Stopper):
    """Ends the experiment once the guard gave up (Tune asks ``stop_all`` after every step)."""

    def __init__(self, guard: LaunchGuard):
        self.guard = guard

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return self.guard.problem is not None
