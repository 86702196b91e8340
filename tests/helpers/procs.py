"""Start servers for a test and stop exactly those, by process id.

Every process is started in its own session, and stopping walks that process's own
descendants (collected before the first signal, because children re-parent once their
parent dies). Nothing is ever matched by name, so servers started by other tests or other
people on the same machine are never touched.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Callable, Sequence

import psutil


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct free ports, all held open together while picking so none repeats."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Started:
    """A process this test started; `log` holds its stdout and stderr."""

    def __init__(self, popen: subprocess.Popen, log: Path, name: str):
        self.popen = popen
        self.log = log
        self.name = name

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def start(cmd: Sequence[str], log: Path, *, name: str, env: dict | None = None,
          cwd: str | os.PathLike | None = None) -> Started:
    """Run `cmd` in a new session with output going to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")
    try:
        popen = subprocess.Popen(
            list(cmd), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )
    finally:
        fh.close()
    return Started(popen, log, name)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(*procs: Started | None, timeout: float = 20.0) -> None:
    """SIGTERM each process and every descendant it has, then SIGKILL what is left.

    Only pids reachable from the given processes are signalled, plus members of the sessions
    that `start` created for them (sid == their pid), which catches daemons that double-fork but
    keep the session. Several processes are stopped together: one grace period for all.
    """
    roots = [p for p in procs if p is not None]
    if not roots:
        return
    victims: dict[int, psutil.Process] = {}
    for root in roots:
        victims.update((p.pid, p) for p in _tree(root.pid))
    sids = {root.pid for root in roots}
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) in sids:
                victims.setdefault(p.pid, p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    # Collect grandchildren of every member too, before anything dies.
    for p in list(victims.values()):
        for c in _tree(p.pid)[1:]:
            victims.setdefault(c.pid, c)
    for p in victims.values():
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(victims.values()), timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    for root in roots:
        try:
            root.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               proc: Started | None = None, interval: float = 0.5) -> None:
    """Poll `check` until it is true; fail with `what` and the log tail otherwise.

    Fails early when `proc` exits, since it will then never become ready.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with code {proc.popen.returncode} before {what}:\n"
                f"{proc.tail()}")
        time.sleep(interval)
    tail = f"\n--- {proc.name} log ---\n{proc.tail()}" if proc is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_mlflow_server(backend_store_uri: str, artifacts_dir: Path, log: Path,
                        *, mlflow_bin: str, port: int | None = None,
                        timeout: float = 90.0, wait: bool = True,
                        app_name: str | None = None, env: dict | None = None) -> tuple[Started, str]:
    """`mlflow server` on 127.0.0.1, serving artifacts from `artifacts_dir`.

    Returns the process and its http URL once `/health` answers (at once with `wait=False`;
    then call `wait_mlflow_server`). `app_name="basic-auth"`: the login-protected server (its
    settings, e.g. MLFLOW_AUTH_CONFIG_PATH, go in `env`, added to this process's environment).
    """
    port = port or free_port()
    cmd = [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_store_uri,
           "--serve-artifacts", "--artifacts-destination", str(artifacts_dir),
           "--workers", "1", *(["--app-name", app_name] if app_name else [])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", **(env or {})}
    proc = start(cmd, log, name="mlflow server", env=env)
    url = f"http://127.0.0.1:{port}"
    if wait:
        try:
            wait_mlflow_server(proc, url, timeout)
        except BaseException:
            stop(proc)
            raise
    return proc, url


def wait_mlflow_server(proc: Started, url: str, timeout: float = 90.0) -> None:
    wait_until(lambda: http_ok(f"{url}/health"), timeout=timeout,
               what=f"mlflow server at {url}/health", proc=proc)
