"""Starting Ray for a launch (or attaching to a cluster), keeping a local Ray on the loopback
interface, and stopping what a killed driver left behind.

What a local launch listens on (checked by tests/test_runner_exposure.py; README "What listens where"):
every port of the local Ray -- GCS and raylet gRPC, object manager, dashboard (HTTP + its metrics),
dashboard agent (HTTP, gRPC, metrics), runtime-env agent, autoscaler metrics, worker gRPC -- is bound to
127.0.0.1. Ray 2.60 replaces ``_node_ip_address="127.0.0.1"`` with the interface address unless it
believes clusters are off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the laptop mode of macOS/Windows):
then the node address is the loopback one, and every server that binds "the node address" -- including
the three Prometheus endpoints, which otherwise listen on 0.0.0.0 without the token -- follows it.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import psutil

LOOPBACK = "127.0.0.1"
CLUSTER_MODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TOKEN_FILE = Path.home() / ".ray" / "auth_token"


class AttachError(ConnectionError):
    """Nothing answers at --address."""


def start_or_attach(address: str | None, env_vars: dict[str, str]) -> bool:
    """Start a local Ray on 127.0.0.1 (``address`` None) or attach to a cluster, with ``env_vars`` in
    every Ray process; True when this call started or attached Ray (and so must shut it down), False
    when Ray was already initialised."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phone-home from laptops and CI
    if address:
        _attach(address, env_vars)
    else:
        os.environ.update(env_vars)  # the local Ray's processes inherit the driver's environment
        _start_local()
    _protect_token_file()
    return True


def _attach(address: str, env_vars: dict[str, str]) -> None:
    """Ray's State API (Ray Train's placement-group cleaner uses it) must find *this* cluster, not
    another Ray instance on the machine: the address is pinned in the job's runtime env."""
    import ray

    env_vars = dict(env_vars)
    # Inside `ray job submit` the job's runtime env already carries its settings (and a second
    # env_vars would conflict with it); the job's own address is then the cluster's.
    if not address.startswith("ray://") and not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        if address == "auto":
            from ray._private.services import canonicalize_bootstrap_address_or_die

            address = canonicalize_bootstrap_address_or_die(address)
        _probe(address)
        env_vars["RAY_ADDRESS"] = address
    # Inside `ray job submit` the job's runtime env wins; its env vars are the job's to set.
    in_job = bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))
    ray.init(address=address, log_to_driver=True,
             runtime_env={"env_vars": env_vars} if env_vars and not in_job else None)


def _start_local() -> None:
    """A local Ray bound to 127.0.0.1 (see the module docstring). The dashboard stays on: Ray Train's
    placement-group cleaner needs the State API it serves; RAY_API_SERVER_ADDRESS pins the State API
    client of every Ray process to it (with a second Ray on the machine it would guess)."""
    import ray
    from ray._private import ray_constants

    os.environ[CLUSTER_MODE_ENV] = "0"  # for every process Ray starts (they inherit the environment)
    # This process imported Ray already; the constant is read when Ray resolves the node address.
    ray_constants.ENABLE_RAY_CLUSTER = False
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://{LOOPBACK}:{port}"
    ray.init(_node_ip_address=LOOPBACK, include_dashboard=True, dashboard_host=LOOPBACK,
             dashboard_port=port, log_to_driver=True)


def _protect_token_file() -> None:
    """Ray 2.60 writes ~/.ray/auth_token world-readable (0644); the token opens every Ray port."""
    try:
        if TOKEN_FILE.is_file() and TOKEN_FILE.stat().st_mode & 0o077:
            TOKEN_FILE.chmod(0o600)
            TOKEN_FILE.parent.chmod(0o700)
    except OSError as exc:
        print(f"warning: could not make {TOKEN_FILE} private ({exc}); run chmod 600 on it", file=sys.stderr)


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Ray retries an unreachable GCS for minutes; say so at once instead."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise AttachError(f"nothing answers at {address} within {timeout_s:.0f}s ({exc}); start the "
                          f"head with `ray start --head` or pass its HOST:PORT") from None


# Ports Ray takes by default for its own components (dashboard agent HTTP, dashboard and autoscaler
# metrics, dashboard): a port for the dashboard must not be one of them, or Ray refuses to start
# ("port 52365 is used by other components"), which the kernel's ephemeral range can hand out.
_RAY_DEFAULT_PORTS = frozenset({52365, 44217, 44227, 8265})


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in _RAY_DEFAULT_PORTS:
            return port


# --------------------------------------------------------------------------- leftover processes

def session_name() -> str:
    """The local Ray's session folder name (``session_<time>_<pid>``): every process Ray starts for it
    carries that folder in its command line, agents that outlive a killed driver included."""
    import ray

    return Path(ray._private.worker.global_worker.node.get_session_dir_path()).name


def session_processes(session: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(session in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def local_processes() -> list[dict[str, Any]]:
    """The processes of the local Ray this driver started (GCS, raylet, dashboard, agents, workers)."""
    found = {p.pid: p for p in psutil.Process().children(recursive=True)}
    found.update((p.pid, p) for p in session_processes(session_name()))
    out = []
    for p in found.values():
        try:
            out.append({"pid": p.pid, "create_time": p.create_time(), "name": p.name()})
        except psutil.Error:
            continue
    return sorted(out, key=lambda d: d["pid"])


def driver_record() -> dict[str, Any]:
    me = psutil.Process()
    return {"pid": me.pid, "create_time": me.create_time()}


def _same_process(record: dict[str, Any]) -> psutil.Process | None:
    """The recorded process if it still runs (the pid not reused: same start time)."""
    try:
        p = psutil.Process(int(record["pid"]))
        return p if abs(p.create_time() - float(record["create_time"])) < 1.0 else None
    except (psutil.Error, KeyError, ValueError):
        return None


def driver_alive(state: dict[str, Any]) -> bool:
    return bool(state.get("driver")) and _same_process(state["driver"]) is not None


def stop_leftovers(records: list[dict[str, Any]], session: str | None, timeout_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, the recorded processes that still run and those Ray started later for the
    same session (a dashboard module, an agent); their pids. Agents of a Ray whose driver was SIGKILLed
    ignore SIGTERM, hence the second signal."""
    found = {p.pid: p for p in (_same_process(r) for r in records) if p is not None}
    if session:
        found.update((p.pid, p) for p in session_processes(session))
    procs = sorted(found.values(), key=lambda p: p.pid)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]
