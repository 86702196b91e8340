"""Checks made before any trial starts, so that a launch which cannot succeed ends in seconds with a
message naming the study key, instead of trials that wait forever or fail one by one.

- :func:`check_data_roots` (before Ray starts): every distinct data config of the study has its files.
- :func:`check_resources` (once Ray is up): a trial's workers each fit on some node and the whole
  trial fits in the cluster -- or, on an autoscaling cluster, in its node types.
"""
from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from automix.config import from_dict, set_dotted

from .resume import LaunchError
from .study import Study

# Where `ray up` leaves the cluster config on the head node (Ray's autoscaler reads it from there).
BOOTSTRAP_CONFIG = Path.home() / "ray_bootstrap_config.yaml"


# --------------------------------------------------------------------------- data

def data_configs(study: Study) -> list:
    """The distinct ``data`` sections the study's trials can have: the base with every combination
    of the listed values of swept ``data.*`` keys (continuous ``data.*`` ranges keep the base value)."""
    listed = [p for p in study.sampled if p.key.startswith("data.") and p.dist in ("choice", "grid")]
    seen, out = set(), []
    for combo in itertools.product(*(p.values for p in listed)):
        base = copy.deepcopy(dict(study.base))
        for p, value in zip(listed, combo):
            set_dotted(base, p.key, value)
        data = from_dict(base, source=study.source).data
        if repr(data) not in seen:
            seen.add(repr(data))
            out.append(data)
    return out


def check_data_roots(study: Study) -> None:
    """``automix.data.check_root`` on each data config (synthetic data has no files to check)."""
    from automix.data import DataError, check_root

    for data in data_configs(study):
        if data.synthetic or "://" in data.root:
            continue
        try:
            check_root(data)
        except DataError as exc:
            raise LaunchError(f"{study.source}: {exc}") from None


# --------------------------------------------------------------------------- resources

def worker_request(study: Study) -> dict[str, float]:
    """What one worker of a trial reserves (a one-worker trial is its own worker)."""
    r = study.resources
    return {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}


def fits(capacity: Mapping[str, float], request: Mapping[str, float]) -> int:
    """How many workers of ``request`` one node of ``capacity`` holds."""
    counts = [math.floor(capacity.get(k, 0.0) / v + 1e-9) for k, v in request.items() if v > 0]
    return min(counts) if counts else 0


def describe(nodes: Iterable[Mapping[str, Any]]) -> str:
    return "; ".join(f"{n['name']}: CPU {n['CPU']:g} GPU {n['GPU']:g}" for n in nodes) or "none"


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [{"name": n.get("NodeManagerAddress", "?"), "CPU": n["Resources"].get("CPU", 0.0),
             "GPU": n["Resources"].get("GPU", 0.0)} for n in ray.nodes() if n.get("Alive")]


def autoscaler_node_types() -> list[dict[str, Any]] | None:
    """Node types of the autoscaler's config when this driver runs on an autoscaling head node
    (``ray up`` writes it there); None when no such config is readable from here."""
    if not BOOTSTRAP_CONFIG.is_file():
        return None
    try:
        config = yaml.safe_load(BOOTSTRAP_CONFIG.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    types = config.get("available_node_types") or {}
    return [{"name": f"node type {name}", "CPU": float((t.get("resources") or {}).get("CPU", 0)),
             "GPU": float((t.get("resources") or {}).get("GPU", 0)),
             "max": int(t.get("max_workers", 1 if name == config.get("head_node_type") else 0))}
            for name, t in types.items()]


def check_resources(study: Study, nodes: list[dict[str, Any]], node_types: list[dict[str, Any]] | None,
                    autoscaling: bool) -> str | None:
    """Raise :class:`LaunchError` naming the key when a trial can never be placed; return a note when it
    cannot be decided here (an autoscaling cluster whose node types are not readable)."""
    request = worker_request(study)
    workers = study.resources.workers
    problem = _placement_problem(request, workers, nodes)
    if problem is None:
        return None
    if node_types is not None:
        scaled = [t for t in node_types for _ in range(max(1, t["max"]))]  # each type at its maximum count
        if _placement_problem(request, workers, scaled) is None:
            return None
        raise LaunchError(f"{study.source}: {problem[0]}: neither this cluster nor its autoscaler's node types "
                          f"have it (nodes: {describe(nodes)}; node types: {describe(node_types)})")
    if autoscaling:
        return (f"note: {problem[0]}: the cluster has no node for it now (nodes: {describe(nodes)}) and its "
                f"autoscaler's node types are not readable from here ({BOOTSTRAP_CONFIG} is missing); a "
                f"trial that is not placed within resources.placement_timeout_s = "
                f"{study.resources.placement_timeout_s:g} s ends the launch")
    raise LaunchError(f"{study.source}: {problem[0]}: {problem[1]} (nodes: {describe(nodes)})")


def concurrent_trials_that_fit(study: Study, nodes: list[dict[str, Any]]) -> int:
    """How many trials of this study the cluster runs at once. A multi-worker trial holds no resources
    itself (its Train run's workers do), so Tune would start max_concurrent_trials of them whatever
    the cluster has, and the surplus would wait for workers -- past resources.placement_timeout_s."""
    return sum(fits(n, worker_request(study)) for n in nodes) // study.resources.workers


def _placement_problem(request: Mapping[str, float], workers: int,
                       nodes: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(the key and value, what the cluster lacks) or None when ``workers`` x ``request`` can be placed."""
    key = {"CPU": "resources.cpus_per_worker", "GPU": "resources.gpus_per_worker"}
    for name, amount in request.items():
        if amount <= 0:
            continue
        largest = max((n[name] for n in nodes), default=0.0)
        total = sum(n[name] for n in nodes)
        if total == 0:
            return f"{key[name]} = {amount:g}", f"this cluster has 0 {name}s"
        if largest < amount:
            return (f"{key[name]} = {amount:g}",
                    f"no node has {amount:g} {name}s for one worker (the largest has {largest:g})")
    if sum(fits(n, request) for n in nodes) < workers:
        need = ", ".join(f"{v:g} {k}" for k, v in request.items() if v > 0)
        return (f"resources.workers = {workers}",
                f"a trial needs {workers} workers of {need} each and the cluster holds "
                f"{sum(fits(n, request) for n in nodes)} of them")
    return None


def cluster_autoscales() -> bool:
    """Whether an autoscaler reports status for this cluster (Ray's monitor writes it to the GCS)."""
    import ray
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    except Exception:  # an older or a client-mode connection: unknown, treat as fixed
        return False
    return bool(status) and ray.is_initialized()


def placement_env(study: Study) -> dict[str, str]:
    """Ray Train waits this long for a multi-worker trial's workers before it gives up."""
    return {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(study.resources.placement_timeout_s)}

