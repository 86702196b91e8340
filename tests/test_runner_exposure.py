"""What a local launch exposes: every port of its Ray listens on the loopback interface, the Ray token
file is private (0600), and after the driver is SIGKILLed `tune_runner.py --cleanup` stops the Ray
processes it left behind, by the pids in the launch's state file. One launch, about a minute."""
from __future__ import annotations

import pytest

import ipaddress
import json
import os
import signal
import subprocess
import time

import psutil
import yaml

from helpers.procs import start, stop, wait_until
from helpers.studies import REPO, attempts, experiment_dirs, fake_runner_cmd, fake_runner_env, runner_cmd, \
    runner_env
from studyrunner.ray_local import TOKEN_FILE, session_processes

pytestmark = pytest.mark.ray

STUDY = {
    "name": "exposure_study",
    "base": {"method": "mixup", "train": {"epochs": 50, "batch_size": 32, "device": "cpu"},
             "data": {"name": "digits", "image_size": 16}, "model": {"width": 8}},
    "space": {"train.seed": {"dist": "grid", "values": [7]}},
    "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
}


def _listening(pids: list[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket those processes listen on."""
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out += [(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return out


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def test_ray_listens_on_loopback_only_and_cleanup_stops_a_killed_launch(tmp_path):
    study = tmp_path / "exposure.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    log, storage = tmp_path / "attempts.log", tmp_path / "ray"
    args = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(storage)]
    proc = start(fake_runner_cmd(study, *args), tmp_path / "launch.log", name="tune_runner.py",
                 env=fake_runner_env(log, FAKE_TRAIN_EPOCH_S="1"), cwd=REPO)
    try:
        wait_until(lambda: attempts(log) and experiment_dirs(storage, "exposure_study"), timeout=240,
                   what="a running trial", proc=proc)
        (launch,) = experiment_dirs(storage, "exposure_study")
        state = json.loads((launch / "studyrunner.json").read_text())
        time.sleep(5)  # the agents and dashboard modules open their ports a moment after the raylet
        pids = sorted({r["pid"] for r in state["ray_processes"]}
                      | {p.pid for p in session_processes(state["ray_session"])}
                      | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)})
        assert len(pids) >= 4, state["ray_processes"]  # GCS, raylet, dashboard, agents, workers
        listening = _listening(pids + [proc.pid])
        exposed = [entry for entry in listening if not _loopback(entry[0])]
        print("\n".join(f"{ip}:{port} {name}" for ip, port, name in sorted(listening)))
        assert len(listening) >= 5, listening
        assert not exposed, f"listening beyond the loopback interface: {exposed}"
        if TOKEN_FILE.exists():
            assert TOKEN_FILE.stat().st_mode & 0o777 == 0o600, oct(TOKEN_FILE.stat().st_mode)

        os.kill(proc.pid, signal.SIGKILL)  # the driver dies without a word; Ray's agents stay
        proc.popen.wait(timeout=30)
        time.sleep(2)
        left = [p for p in pids if _running(p)]
        assert left, "nothing was left behind: the cleanup below is untested"
        done = subprocess.run(runner_cmd(study, "--cleanup", str(launch), *args), cwd=REPO, env=runner_env(),
                              text=True, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "stopped" in done.stderr and str(min(left)) in done.stderr, done.stderr
        alive = [p for p in pids if _running(p)]
        assert not alive, f"still running after --cleanup: {alive}"
    finally:
        stop(proc)
