"""A login-protected tracking server: `mlflow server --app-name basic-auth` on 127.0.0.1.

Without credentials a launch stops before Ray starts (exit 3) and says which variables to set; with a
study user that an admin created and granted EDIT on the study's experiment (the README's recipe),
a smoke study is tracked, its password given inside the URI and never printed or stored.
"""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

from automix import record
from helpers.procs import start_mlflow_server, stop
from helpers.studies import experiment_dirs, run_runner, runner_env, study_runs, write_study
from studyrunner import uris

pytestmark = [pytest.mark.ray, pytest.mark.servers]

ADMIN_PASSWORD = "admin-pw-for-tests-1"
STUDY_USER, STUDY_PASSWORD = "study-bot", "study-pw-for-tests-2"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth_server")
    ini = root / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{root / 'users.db'}\n"
                   f"admin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   # each request would otherwise hash the password again (seconds on a busy machine)
                   "auth_cache_ttl_seconds = 600\n")
    server, url = start_mlflow_server(
        f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root / "server.log",
        mlflow_bin=str(Path(sys.executable).parent / "mlflow"), app_name="basic-auth", timeout=300,
        env={"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    try:
        yield url
    finally:
        stop(server)


def _as(monkeypatch, user: str | None, password: str | None) -> None:
    for name, value in ((uris.USERNAME_ENV, user), (uris.PASSWORD_ENV, password), (uris.TOKEN_ENV, None)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_without_credentials_the_launch_stops_and_says_how_to_log_in(auth_server, tmp_path):
    done = run_runner(write_study(tmp_path / "s.yaml", name="auth_none"), "--smoke-test", "--tracking-uri",
                      auth_server, "--storage-path", str(tmp_path / "ray"), timeout=120)
    assert done.returncode == 3, done.stdout[-3000:]
    assert "requires a login" in done.stdout
    assert uris.USERNAME_ENV in done.stdout and uris.PASSWORD_ENV in done.stdout
    assert "0.0.0.0" not in done.stdout and "Traceback" not in done.stdout
    assert not (tmp_path / "ray").exists()  # stopped before Ray

    wrong = run_runner(tmp_path / "s.yaml", "--smoke-test", "--tracking-uri", auth_server,
                       "--storage-path", str(tmp_path / "ray"), timeout=120,
                       env=runner_env(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="not-it"))
    assert wrong.returncode == 3 and "refused the login" in wrong.stdout, wrong.stdout[-3000:]


def test_the_precheck_sends_basic_or_bearer_credentials(monkeypatch, auth_server):
    _as(monkeypatch, "admin", ADMIN_PASSWORD)
    uris.check_reachable(auth_server)
    _as(monkeypatch, None, None)
    with pytest.raises(uris.TrackingUnavailable, match="requires a login"):
        uris.check_reachable(auth_server)
    monkeypatch.setenv(uris.TOKEN_ENV, "tok")
    assert uris.auth_headers() == {"Authorization": "Bearer tok"}


def test_a_study_user_with_edit_permission_tracks_a_smoke_study(monkeypatch, auth_server, tmp_path):
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    # The admin's part (README "Login-protected tracking server"): a user, an experiment, EDIT on it.
    _as(monkeypatch, "admin", ADMIN_PASSWORD)
    get_app_client("basic-auth", tracking_uri=auth_server).create_user(STUDY_USER, STUDY_PASSWORD)
    exp_id = MlflowClient(auth_server).create_experiment("auth_study")
    get_app_client("basic-auth", tracking_uri=auth_server).grant_user_permission(
        STUDY_USER, "experiment", exp_id, "EDIT")

    study = write_study(tmp_path / "auth_study.yaml", name="auth_study", num_samples=1, scheduler={"name": "none"},
                        smoke={"set": {"train.epochs": 1}})
    host = auth_server.removeprefix("http://")
    done = run_runner(study, "--smoke-test", "--tracking-uri", f"http://{STUDY_USER}:{STUDY_PASSWORD}@{host}",
                      "--storage-path", str(tmp_path / "ray"), timeout=300)
    assert done.returncode == 0, done.stdout[-6000:]
    assert STUDY_PASSWORD not in done.stdout
    (launch,) = experiment_dirs(tmp_path / "ray", "auth_study")
    assert STUDY_PASSWORD not in (launch / "studyrunner.json").read_text()

    runs = study_runs(auth_server, "auth_study")  # read back as the admin
    assert len(runs.parents) == 1 and len(runs.children) == 1
    (trial,) = runs.children
    assert trial.info.status == "FINISHED" and record.TOP1_SUMMARY in trial.data.metrics
