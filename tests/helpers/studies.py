"""Running ``tune_runner.py`` from tests and reading back what it wrote to MLflow."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def runner_env(**extra: str) -> dict[str, str]:
    """The environment of a tune_runner subprocess: the repository importable, no inherited MLflow or
    fault-injection settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AUTOMIX_FAULT_INJECT")) and k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


def runner_cmd(study: str | Path, *args: str) -> list[str]:
    return [PYTHON, str(REPO / "tune_runner.py"), str(study), *args]


def fake_runner_cmd(study: str | Path, *args: str) -> list[str]:
    """tune_runner.py's command line with the trainer replaced by ``helpers/fake_train.py``."""
    return [PYTHON, str(REPO / "tests" / "helpers" / "fake_runner.py"), str(study), *args]


def fake_runner_env(log: Path, **extra: str) -> dict[str, str]:
    """:func:`runner_env` for :func:`fake_runner_cmd`: ``helpers`` importable in Ray's workers, the fake
    trainer's attempt log at ``log``."""
    env = runner_env(FAKE_TRAIN_LOG=str(log), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env["PYTHONPATH"]])
    return env


def attempts(log: Path) -> list[str]:
    """The fake trainer's attempt log: one ``<seed> <amp>`` line per attempt that trained."""
    return log.read_text().split("\n")[:-1] if log.exists() else []


def run_runner(study: str | Path, *args: str, timeout: float = 300, env: Mapping[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """Run tune_runner.py to the end (its own session, so nothing it starts outlives a timeout kill)."""
    return subprocess.run(runner_cmd(study, *args), cwd=REPO, env=dict(env or runner_env()), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                          start_new_session=True)


def write_study(path: Path, source: str | Path = REPO / "studies" / "quickstart.yaml",
                **changes: Any) -> Path:
    """A copy of a study file with top-level keys replaced (``name=..., resources={...}``)."""
    data = yaml.safe_load(Path(source).read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class StudyRuns:
    parents: list
    children: list
    client: Any

    def history(self, run, key: str = "top1") -> list[tuple[int, float]]:
        return sorted((int(m.step), m.value) for m in self.client.get_metric_history(run.info.run_id, key))

    def artifacts(self, run, path: str | None = None) -> list[str]:
        return sorted(a.path for a in self.client.list_artifacts(run.info.run_id, path))


def study_runs(tracking_uri: str, experiment: str) -> StudyRuns:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {tracking_uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("automix.role") == "study"]
    children = [r for r in runs if r.data.tags.get("automix.role") == "trial"]
    return StudyRuns(parents, children, client)


def assert_one_run_per_trial(runs: StudyRuns, trial_ids: Sequence[str] | None = None) -> None:
    """Every trial has exactly one child run under the one parent, and no epoch was logged twice."""
    assert len(runs.parents) == 1, [r.info.run_name for r in runs.parents]
    parent = runs.parents[0].info.run_id
    ids = [r.data.tags["trial_id"] for r in runs.children]
    assert len(ids) == len(set(ids)), f"duplicate child runs: {sorted(ids)}"
    if trial_ids is not None:
        assert sorted(ids) == sorted(trial_ids)
    for run in runs.children:
        assert run.data.tags["mlflow.parentRunId"] == parent
        steps = [s for s, _ in runs.history(run)]
        assert steps == sorted(set(steps)), f"{run.info.run_name}: an epoch was logged twice: {steps}"
        assert steps == list(range(1, len(steps) + 1)), f"{run.info.run_name}: epochs missing: {steps}"


def tune_trial_ids(experiment_path: Path) -> list[str]:
    """Trial ids of a Ray Tune experiment folder (one ``trial_<id>`` folder per trial)."""
    return sorted(p.name[len("trial_"):] for p in Path(experiment_path).iterdir()
                  if p.is_dir() and p.name.startswith("trial_"))


def experiment_dirs(storage: Path, study: str) -> list[Path]:
    return sorted(p for p in Path(storage).glob(f"{study}-*") if (p / "studyrunner.json").is_file())
