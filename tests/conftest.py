"""Shared fixtures.

``smoke_study_store``: one real study, run once per test session and shared by every test that
needs an MLflow store filled the way ``tune_runner.py`` fills it (the study platform's end-to-end
test, the analysis tests, the cluster tests)::

    def test_something(smoke_study_store):
        runs = mlflow.search_runs(experiment_names=[smoke_study_store.experiment],
                                  filter_string="tags.`automix.role` = 'trial'")
        ...  # MlflowClient(tracking_uri=smoke_study_store.tracking_uri)

Process helpers (start a server in its own session on a free 127.0.0.1 port, wait until it answers,
stop it by pid): ``tests/helpers/procs.py``; running ``tune_runner.py`` and reading its runs back:
``tests/helpers/studies.py``.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from helpers import ...` in every test

from helpers.studies import REPO, experiment_dirs, run_runner  # noqa: E402


@dataclass(frozen=True)
class StudyStore:
    """What ``tune_runner.py studies/quickstart.yaml --smoke-test`` left behind."""
    tracking_uri: str  # sqlite:///<tmp>/mlflow.db
    experiment: str  # the MLflow experiment ("quickstart")
    storage_path: Path  # Ray's storage (one folder per launch: quickstart-<UTC time>/)
    experiment_path: Path  # this launch's Ray Tune experiment folder
    completed: subprocess.CompletedProcess  # stdout holds stdout and stderr together
    wall_s: float

    @property
    def output(self) -> str:
        return self.completed.stdout


def pytest_collection_modifyitems(items):
    """Every test that reads the smoke study's store starts Ray (through ``tune_runner.py``): mark it,
    so ``make test-fast`` (``-m "not ray and not servers"``) leaves it out."""
    for item in items:
        if "smoke_study_store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of tiny-tensor tests: faster, and on a shared 2-core
    machine threads that spin for a busy core make such tests many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_study_store(tmp_path_factory) -> StudyStore:
    root = tmp_path_factory.mktemp("smoke_study")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    storage = root / "ray"
    t0 = time.monotonic()
    done = run_runner(REPO / "studies" / "quickstart.yaml", "--smoke-test", "--tracking-uri", uri,
                      "--storage-path", str(storage), timeout=420)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        pytest.fail(f"tune_runner.py studies/quickstart.yaml --smoke-test exited {done.returncode}:\n"
                    f"{done.stdout[-6000:]}")
    launches = experiment_dirs(storage, "quickstart")
    assert len(launches) == 1, launches
    return StudyStore(uri, "quickstart", storage, launches[0], done, wall)
