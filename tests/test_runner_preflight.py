"""Checks before any trial starts: a study that cannot run ends with exit 2 and a message naming the
key -- missing data before Ray starts, resources the cluster lacks right after -- and a trial that
cannot be placed ends the launch after resources.placement_timeout_s instead of waiting forever."""
from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

import pytest

from helpers.studies import REPO, runner_cmd, runner_env, write_study
from studyrunner import preflight
from studyrunner.failures import LaunchGuard, launch_problem
from studyrunner.resume import LaunchError
from studyrunner.study import load_study


def _launch(study, tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    done = subprocess.run(runner_cmd(study, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                                     "--storage-path", str(tmp_path / "ray"), *args),
                          cwd=REPO, env=runner_env(), text=True, capture_output=True, timeout=240,
                          start_new_session=True)
    return done, time.monotonic() - t0


def test_a_missing_data_root_stops_the_launch_before_ray_starts(tmp_path):
    base = load_study(REPO / "studies" / "quickstart.yaml").base
    study = write_study(tmp_path / "nodata.yaml", name="nodata",
                        base={**base, "data": {"name": "cifar10", "root": str(tmp_path / "no_such_dir"),
                                               "image_size": 32}})
    done, took = _launch(study, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "data.root" in done.stderr and "no_such_dir" in done.stderr, done.stderr
    assert "Started a local Ray" not in done.stdout + done.stderr, "Ray started before the data check"
    assert "Traceback" not in done.stderr
    print(f"refused in {took:.1f}s")


def test_a_study_asking_for_a_gpu_this_machine_lacks_ends_at_once(tmp_path):
    base = load_study(REPO / "studies" / "quickstart.yaml").base
    study = write_study(tmp_path / "gpu.yaml", name="gpu_study",
                        base={**base, "train": {**base["train"], "device": "auto"}},
                        resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1})
    done, took = _launch(study, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "resources.gpus_per_worker = 1: this cluster has 0 GPUs (nodes: 127.0.0.1: CPU" in done.stderr, \
        done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    print(f"refused in {took:.1f}s")


NODE = {"name": "n1", "CPU": 8.0, "GPU": 2.0}


@pytest.mark.parametrize("resources, nodes, named", [
    ({"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}, [dict(NODE, GPU=0.0)],
     "resources.gpus_per_worker = 1: this cluster has 0 GPUs"),
    ({"workers": 1, "cpus_per_worker": 16, "gpus_per_worker": 0}, [NODE, NODE],
     "resources.cpus_per_worker = 16: no node has 16 CPUs for one worker (the largest has 8)"),
    ({"workers": 4, "cpus_per_worker": 1, "gpus_per_worker": 1}, [dict(NODE, GPU=1.0)] * 2,
     "resources.workers = 4: a trial needs 4 workers of 1 CPU, 1 GPU each and the cluster holds 2"),
])
def test_resources_a_trial_cannot_get_are_named(tmp_path, resources, nodes, named):
    study = load_study(write_study(tmp_path / "s.yaml", resources=resources,
                                   base={**load_study(REPO / "studies" / "quickstart.yaml").base,
                                         "train": {"device": "auto", "epochs": 2}}))
    with pytest.raises(LaunchError, match=named.replace("(", r"\(").replace(")", r"\)")):
        preflight.check_resources(study, nodes, node_types=None, autoscaling=False)
    # An autoscaler whose node types have room: no error. One whose node types are unknown: a note.
    big = [{"name": "node type gpu8", "CPU": 64.0, "GPU": 8.0, "max": 4}]
    assert preflight.check_resources(study, nodes, node_types=big, autoscaling=True) is None
    note = preflight.check_resources(study, nodes, node_types=None, autoscaling=True)
    assert "node types are not readable" in note and "placement_timeout_s = 300" in note
    fitting = [{"name": "n9", "CPU": 16.0, "GPU": 8.0}]
    assert preflight.check_resources(study, fitting, node_types=None, autoscaling=False) is None


def test_a_trial_that_waits_longer_than_the_placement_timeout_ends_the_launch(tmp_path):
    guard = LaunchGuard(str(tmp_path), placement_timeout_s=0.2, resources_text="1 worker(s) x (1 CPU, 1 GPU)")
    pending, running = SimpleNamespace(status="PENDING"), SimpleNamespace(status="RUNNING")
    guard.on_step_end(1, [pending, running])  # others run: the trial queues, it is not stuck
    time.sleep(0.3)
    guard.on_step_end(2, [pending, running])
    assert guard.problem is None
    guard.on_step_end(3, [pending])
    time.sleep(0.3)
    guard.on_step_end(4, [pending])
    assert guard.problem and "resources.placement_timeout_s = 0.2" in guard.problem
    assert launch_problem(str(tmp_path)) == guard.problem  # what the runner reports, exit 2
