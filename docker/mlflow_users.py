"""One-shot set-up of the MLflow server's basic-auth users for the study jobs (compose service
`mlflow-users`, Kubernetes Job `mlflow-users`).

Logs in as the admin (created by the server itself on its first start from
MLFLOW_AUTH_ADMIN_PASSWORD), then:
  1. creates the study user MLFLOW_STUDY_USERNAME, or resets its password, so the deployment's
     secret (docker/.env or the Kubernetes Secret) is always the one that works;
  2. for each experiment named with --experiment or by a study file's `name` (--study), creates
     the experiment if it does not exist and gives the study user EDIT on it (create runs, log,
     set tags; not delete or re-permission). Experiments the study user creates itself are
     MANAGE-d by it anyway: MLflow's basic-auth app grants that to an experiment's creator.
Safe to run again. Reads the tracking server from MLFLOW_TRACKING_URI.

    MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_AUTH_ADMIN_USERNAME=admin \
    MLFLOW_AUTH_ADMIN_PASSWORD=... MLFLOW_STUDY_USERNAME=automix MLFLOW_STUDY_PASSWORD=... \
    python mlflow_users.py --study studies/quickstart.yaml
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

STUDY_PERMISSION = "EDIT"


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"error: set {name} (docker/.env for compose, the Secret automix-mlflow-auth on Kubernetes)")
    return value


def wait_for_server(uri: str, timeout_s: float) -> None:
    """/health answers without credentials (the auth app leaves it open for probes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"error: no MLflow server answered at {uri}/health within {timeout_s:.0f} s")
        time.sleep(2)


def ensure_user(auth, username: str, password: str) -> str:
    from mlflow.exceptions import RestException

    try:
        auth.get_user(username)
    except RestException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(username, password)
        return "created"
    auth.update_user_password(username, password)
    return "exists (password reset from the secret)"


def ensure_edit(auth, tracking, username: str, experiment: str) -> str:
    from mlflow.exceptions import RestException

    exp = tracking.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else tracking.create_experiment(experiment)
    try:
        auth.grant_user_permission(username, "experiment", exp_id, STUDY_PERMISSION)
    except RestException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, "experiment", exp_id)
        auth.grant_user_permission(username, "experiment", exp_id, STUDY_PERMISSION)
    return exp_id


def experiments_of(studies: list[Path], names: list[str]) -> list[str]:
    out = list(names)
    for path in studies:
        name = (yaml.safe_load(path.read_text()) or {}).get("name")
        if not name:
            sys.exit(f"error: {path} has no `name` (the MLflow experiment of a study is named after it)")
        out.append(str(name))
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", action="append", default=[], help="experiment to give the study user EDIT on")
    p.add_argument("--study", action="append", default=[], type=Path, help="study file whose name is one")
    p.add_argument("--wait", type=float, default=300, help="seconds to wait for the server's /health")
    args = p.parse_args(argv)
    uri = env("MLFLOW_TRACKING_URI")
    admin, admin_password = env("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), env("MLFLOW_AUTH_ADMIN_PASSWORD")
    user, password = env("MLFLOW_STUDY_USERNAME", "automix"), env("MLFLOW_STUDY_PASSWORD")
    experiments = experiments_of(args.study, args.experiment)
    wait_for_server(uri, args.wait)
    # MLflow's REST clients read their credentials from these variables: here, the admin's.
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = admin, admin_password
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=uri)
    tracking = MlflowClient(tracking_uri=uri)
    print(f"study user {user!r}: {ensure_user(auth, user, password)}")
    for name in experiments:
        print(f"experiment {name!r} (id {ensure_edit(auth, tracking, user, name)}): {user!r} has {STUDY_PERMISSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
