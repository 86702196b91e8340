"""Where runs are tracked: the tracking URI, whether it answers before anything runs, the login it
needs, and the links a person opens afterwards.

Standard library only (no Ray, MLflow or pyarrow): the launch checks its tracking store in a second,
before Ray starts, and a single `python -m automix.train` run does the same without importing Ray.

Credentials: MLflow's client reads ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or
``MLFLOW_TRACKING_TOKEN`` (and ``~/.mlflow/credentials``). A URI written ``http://user:pass@host``
works too: :func:`resolve_tracking_uri` moves the user and password into those variables of this
process and returns the URI without them, so no password lands in a message, a summary, the study's
state file or a pickled callback.
"""
from __future__ import annotations

import base64
import configparser
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from automix import record

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"
_SERVER_SCHEMES = ("http", "https")
_DATABASE_SCHEMES = ("databricks", "postgresql", "mysql", "mssql")
LOCAL_UI = "http://127.0.0.1:5000"
_USERINFO = re.compile(r"([A-Za-z][\w+.-]*://)([^/\s:@]*):([^/\s@]*)@")


class TrackingUnavailable(RuntimeError):
    """The tracking URI names no store this process can write to (exit code 3)."""


# --------------------------------------------------------------------------- resolving the URI

def resolve_tracking_uri(uri: str | None) -> str:
    """``None`` -> ``$MLFLOW_TRACKING_URI`` if set, else the embedded SQLite file ``mlflow.db`` in the
    working directory. SQLite paths are made absolute (Ray changes the working directory of trial
    processes, and a resumed study may be started elsewhere). ``user:password@`` in an http(s) URI
    is moved into the environment (module docstring) and dropped from the returned URI."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise TrackingUnavailable(f"tracking URI {uri!r}: write SQLite URIs as sqlite:///relative/path.db "
                                      f"or sqlite:////absolute/path.db")
        path = uri[len("sqlite:///"):]
        if path != ":memory:":
            return "sqlite:///" + str(Path(path).expanduser().resolve())
        return uri
    if scheme in _SERVER_SCHEMES:
        return _move_credentials_to_env(uri)
    if scheme in _DATABASE_SCHEMES:
        return uri
    raise TrackingUnavailable(
        f"tracking URI {redact(uri)!r} is not supported: use sqlite:///mlflow.db (embedded) or "
        f"http://HOST:PORT (an `mlflow server`); MLflow 3 no longer writes the ./mlruns file store")


def _move_credentials_to_env(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username is None:
        return uri
    os.environ[USERNAME_ENV] = unquote(parts.username)
    if parts.password is not None:
        os.environ[PASSWORD_ENV] = unquote(parts.password)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ``***``
    (database URIs carry them too)."""
    return _USERINFO.sub(r"\1\2:***@", text)


# --------------------------------------------------------------------------- the pre-launch check

def auth_headers() -> dict[str, str]:
    """The Authorization header MLflow's client would send: Basic from user/password (environment,
    else ``~/.mlflow/credentials``), else Bearer from the token; none without credentials."""
    user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if not (user and password):
        user, password = _credentials_file()
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if os.environ.get(TOKEN_ENV):
        return {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"}
    return {}


def _credentials_file() -> tuple[str | None, str | None]:
    path = Path("~/.mlflow/credentials").expanduser()
    if not path.is_file():
        return None, None
    parser = configparser.ConfigParser()
    parser.read(path)
    if "mlflow" not in parser:
        return None, None
    section = parser["mlflow"]
    return section.get(USERNAME_ENV.lower()), section.get(PASSWORD_ENV.lower())


def check_reachable(uri: str, timeout_s: float = 10.0, login_timeout_s: float = 30.0) -> None:
    """Fail fast, before any trial runs: an http server must answer ``/health`` within ``timeout_s``
    and, with this process's credentials, its REST API within ``login_timeout_s`` (a login-protected
    server hashes the password on a first request: seconds on a busy machine); a SQLite file must be
    creatable."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in _SERVER_SCHEMES:
        _check_server(uri, timeout_s, login_timeout_s)
    elif scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        if path != ":memory:":
            parent = Path(path).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingUnavailable(f"tracking URI {uri}: cannot create {parent}: {exc}") from None
            if not os.access(parent, os.W_OK):
                raise TrackingUnavailable(f"tracking URI {uri}: {parent} is not writable")


def _check_server(uri: str, timeout_s: float, login_timeout_s: float) -> None:
    base = resolve_tracking_uri(uri).rstrip("/")  # credentials in the URI become headers below
    shown = redact(base)
    headers = auth_headers()
    for what, path, timeout in (("/health", "/health", timeout_s),
                                ("the REST API", "/api/2.0/mlflow/experiments/search?max_results=1", login_timeout_s)):
        request = urllib.request.Request(base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status == 200:
                    continue
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) and "Invalid Host header" not in _body(exc):
                raise TrackingUnavailable(_login_message(shown, exc.code, bool(headers))) from None
            reason = f"HTTP {exc.code} {exc.reason}"
            if exc.code == 403:
                reason += " (an `mlflow server` reached under another host name needs --allowed-hosts)"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = redact(str(getattr(exc, "reason", exc)))
        raise TrackingUnavailable(
            f"cannot reach the MLflow tracking server at {shown}: {what} did not answer 200 within "
            f"{timeout:.0f}s ({reason}). Start it (mlflow server --host 127.0.0.1 --port 5000 "
            f"--backend-store-uri sqlite:///mlflow.db) or pass --tracking-uri sqlite:///mlflow.db")


def _body(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(2000).decode(errors="replace")
    except OSError:
        return ""


def _login_message(shown: str, code: int, sent: bool) -> str:
    if sent:
        return (f"the MLflow tracking server at {shown} refused the login (HTTP {code}): check "
                f"{USERNAME_ENV}/{PASSWORD_ENV} (or {TOKEN_ENV}) and that this user may write to the "
                f"experiment (EDIT permission)")
    return (f"the MLflow tracking server at {shown} requires a login (HTTP {code}): set {USERNAME_ENV} "
            f"and {PASSWORD_ENV} (or {TOKEN_ENV}) in the environment of this command")


# --------------------------------------------------------------------------- links for people

# The MLflow UI (3.17) keeps the runs table's columns and chart settings in the browser, but opens a
# "shared view" stored as the experiment tag ``mlflow.sharedViewState.<key>`` when the URL carries
# ``?viewStateShareKey=<key>``: sort order, chosen columns, and which runs the charts draw.
VIEW_KEY = "automix"
_VIEW_TAG = "mlflow.sharedViewState."


def runs_view_state(params: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """The shared view: sorted by ``top1_summary`` (best first), ``params`` and ``metrics`` as
    columns, every run drawn in the charts (the UI draws only the 10 newest by default)."""
    return {
        "orderByKey": f"metrics.`{record.TOP1_SUMMARY}`", "orderByAsc": False,
        "selectedColumns": [f"params.`{p}`" for p in params] + [f"metrics.`{m}`" for m in metrics],
        "runsHiddenMode": "SHOW_ALL",
    }


def share_runs_view(client: Any, experiment_id: str, params: Sequence[str], metrics: Sequence[str]) -> bool:
    """Store :func:`runs_view_state` on the experiment (an ``MlflowClient``); False when the store
    refuses it (a login without EDIT on the experiment): the plain runs URL still works."""
    try:
        client.set_experiment_tag(experiment_id, _VIEW_TAG + VIEW_KEY, json.dumps(runs_view_state(params, metrics)))
    except Exception:  # noqa: BLE001 - a convenience, never a reason to stop a launch
        return False
    return True


def _ui_base(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme.lower() not in _SERVER_SCHEMES:
        return LOCAL_UI
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")


def runs_url(uri: str, experiment_id: str, *, shared_view: bool = True) -> str:
    """The experiment's runs table (MLflow 3 opens an experiment on another page), in the shared
    view of :func:`share_runs_view`."""
    url = f"{_ui_base(uri)}/#/experiments/{experiment_id}/runs"
    return f"{url}?viewStateShareKey={VIEW_KEY}" if shared_view else url


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """One run's page in the MLflow UI."""
    return f"{_ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_hint(uri: str, experiment_id: str) -> str:
    """How a person opens this experiment's runs and compares them (MLflow 3.17's UI)."""
    if urlsplit(uri).scheme.lower() in _SERVER_SCHEMES:
        where = f"open {_ui_base(uri)}"
    else:
        where = f"mlflow ui --backend-store-uri {redact(uri)} --host 127.0.0.1   # then open {LOCAL_UI}"
    return "\n".join([
        where,
        f"  runs, best first: {runs_url(uri, experiment_id)}",
        "    (sorted by top1_summary, the swept values and top1_summary as columns, every run in the charts;",
        "    click a study's row to unfold its trials; if the GenAI view opens instead, switch to",
        "    'Model training' at the top left)",
        "  by hand: 'Sort' > top1_summary; 'Columns' > Parameters > the dotted keys (mix.alpha, ...);",
        "    charts of every run: the eye icon above the run list > 'Show all runs' (the default draws the 10 newest)",
        "  compare trials: tick them in the table, then 'Compare'",
    ])
