"""A study on a real two-node Ray cluster, tracked by a real MLflow server.

On this machine: `ray start --head` and `ray start --address` (one CPU each, token auth, every
port picked free, a private temp dir), `mlflow server` on 127.0.0.1, then
`tune_runner.py studies/quickstart.yaml --smoke-test --address ... --tracking-uri http://...`.
Checks that trials ran on both nodes (the `ray_node_id` tag of each trial run) and that the study's
parent run and every trial run reached the server. Only the processes started here are stopped,
by pid, whatever the outcome.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.procs import (free_ports, http_ok, start, start_mlflow_server, stop,  # noqa: E402
                           wait_mlflow_server, wait_until)

pytestmark = [pytest.mark.ray, pytest.mark.servers]

ROOT = Path(__file__).resolve().parent.parent
TUNE_RUNNER = ROOT / "tune_runner.py"
STUDY = ROOT / "studies" / "quickstart.yaml"
BIN = Path(sys.executable).parent
STUDY_TIMEOUT_S = 300


def _ray_env() -> dict[str, str]:
    """Environment for every Ray process of this test (nodes and driver).

    Token auth with a token of its own, so the result never depends on a ~/.ray/auth_token left
    by someone else (Ray 2.60 turns token auth on when that file exists).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_")) or k == "RAY_TMPDIR"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    return env


def _alive_nodes(dashboard: str, token: str) -> list[str]:
    """Ids of the ALIVE nodes, from the dashboard's state API (over HTTP, with the token)."""
    req = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=100",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            nodes = json.load(r)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return []
    return [n["node_id"] for n in nodes if n.get("state") == "ALIVE"]


def _node_cmd(extra: list[str], temp_dir: str) -> list[str]:
    agent, agent_grpc, metrics, runtime_env, node_manager, object_manager = free_ports(6)
    return [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1",
            "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
            *extra]


@pytest.fixture
def tune_runner() -> Path:
    # Checked before anything is started. A failure, not a skip: the cluster path is the point.
    if not TUNE_RUNNER.exists():
        pytest.fail("tune_runner.py is missing at the repository root "
                    "(the study platform's entry point)")
    return TUNE_RUNNER


@pytest.fixture
def mlflow_server(tmp_path):
    # Started first, without waiting: it comes up while the Ray nodes do.
    proc, url = start_mlflow_server(
        f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts",
        tmp_path / "logs" / "mlflow_server.log", mlflow_bin=str(BIN / "mlflow"), wait=False)
    try:
        yield SimpleNamespace(proc=proc, url=url)
    finally:
        stop(proc)


@pytest.fixture
def ray_cluster(tmp_path, mlflow_server):
    # A short private temp dir: Ray's Unix sockets live under it (108-byte path limit).
    temp_dir = tempfile.mkdtemp(prefix="r2n", dir="/tmp")
    env = _ray_env()
    gcs, dashboard_port, client = free_ports(3)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    logs = tmp_path / "logs"
    head = worker = None
    try:
        head = start(_node_cmd(["--head", f"--port={gcs}", "--include-dashboard=true",
                                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                                f"--ray-client-server-port={client}", "--disable-usage-stats"],
                               temp_dir), logs / "ray_head.log", name="ray head", env=env)
        wait_until(lambda: http_ok(f"{dashboard}/api/gcs_healthz"), timeout=90,
                   what="the Ray head's GCS", proc=head)
        worker = start(_node_cmd([f"--address=127.0.0.1:{gcs}"], temp_dir),
                       logs / "ray_worker.log", name="ray worker", env=env)
        nodes: list[str] = []

        def two_nodes() -> bool:
            nodes[:] = _alive_nodes(dashboard, env["RAY_AUTH_TOKEN"])
            return len(nodes) == 2

        wait_until(two_nodes, timeout=90, what="two alive Ray nodes", proc=worker)
        yield SimpleNamespace(address=f"127.0.0.1:{gcs}", dashboard=dashboard, env=env,
                              node_ids=set(nodes), temp_dir=temp_dir, logs=logs)
    finally:
        # Both nodes at once, SIGKILL after 2 s: a SIGTERM'd `ray start --block` would drain for
        # up to 30 s, which a throwaway test cluster does not need.
        stop(worker, head, timeout=2)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_study_runs_trials_on_both_nodes_and_logs_them_to_the_server(tune_runner, tmp_path,
                                                                     mlflow_server, ray_cluster):
    from mlflow import MlflowClient

    wait_mlflow_server(mlflow_server.proc, mlflow_server.url)
    storage = tmp_path / "ray_results"  # one machine: a local path is storage both nodes share
    cmd = [sys.executable, str(tune_runner), str(STUDY), "--smoke-test",
           "--address", ray_cluster.address, "--tracking-uri", mlflow_server.url,
           "--storage-path", str(storage),
           # Two trials at a time on two 1-CPU nodes: one per node.
           "--max-concurrent-trials", "2"]
    log = ray_cluster.logs / "tune_runner.log"
    started = time.monotonic()
    driver = start(cmd, log, name="tune_runner.py", env=ray_cluster.env, cwd=ROOT)
    try:
        rc = driver.popen.wait(timeout=STUDY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        stop(driver, timeout=10)
    elapsed = time.monotonic() - started
    assert rc == 0, (f"tune_runner.py {'timed out' if rc is None else f'exited with {rc}'} "
                     f"after {elapsed:.0f}s:\n{driver.tail(80)}")

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("quickstart")
    assert exp is not None, "no experiment 'quickstart' on the MLflow server"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("automix.role") == "study"]
    assert len(parents) == 1, f"expected one parent run for one launch, got {len(parents)}"
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.info.status
    assert parent.data.tags.get("smoke_test") == "true", "a --smoke-test launch is not marked as one"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1, "runs in the experiment that are not the study's trials"
    assert len(children) >= 2, f"a smoke study on two nodes ran {len(children)} trial(s)"

    trial_ids = [c.data.tags.get("trial_id") for c in children]
    assert None not in trial_ids and len(set(trial_ids)) == len(children), trial_ids
    for c in children:
        assert c.info.status == "FINISHED", f"{c.info.run_name}: {c.info.status}"
        assert c.data.tags.get("automix.role") == "trial"
        assert "top1" in c.data.metrics, f"{c.info.run_name} logged no top1"
        for p in ("mix.alpha", "optim.mixblock_lr", "automix.momentum"):  # the swept keys, dotted
            assert p in c.data.params, f"{c.info.run_name} lacks param {p}"
        assert c.data.tags.get("smoke_test") == "true", "a --smoke-test trial is not marked as one"
    # Every trial Tune ran (a trial_<id> folder with results in the shared storage) is a run on
    # the server, and nothing else is.
    tune_trials = {p.parent.name.removeprefix("trial_") for p in storage.rglob("result.json")}
    assert tune_trials == set(trial_ids), (sorted(tune_trials), sorted(trial_ids))

    nodes = {c.data.tags.get("ray_node_id") for c in children}
    assert None not in nodes, "a trial run has no ray_node_id tag"
    assert nodes <= ray_cluster.node_ids, (nodes, ray_cluster.node_ids)
    assert nodes == ray_cluster.node_ids, \
        f"trials ran on {len(nodes)} of the 2 nodes: {sorted(nodes)}"
    print(f"{len(children)} trials on {len(nodes)} nodes in {elapsed:.0f}s")
