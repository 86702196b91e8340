"""Study files: typed, frozen dataclasses loaded from YAML and validated before Ray starts.

A study names a base run config (the trainer's, see ``automix/config.py``), a search space over any
of its dotted keys, the search algorithm, the scheduler, how many trials and how each trial is
resourced. Every mistake is a :class:`StudyError` naming the file and the field::

    name: quickstart
    base: {method: automix, data: {name: digits, image_size: 16}, ...}
    space:
      mix.alpha: {dist: loguniform, low: 0.2, high: 5.0}
      method: {dist: grid, values: [mixup, automix]}
      train.seed: 3                       # a plain value: fixed
    search: {algorithm: optuna, seed: 0, points_to_evaluate: [{mix.alpha: 2.0}]}
    scheduler: {name: asha, grace_period: 2, reduction_factor: 2}
    num_samples: 10
    max_concurrent_trials: 2
    resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}

This module imports neither Ray nor MLflow, so validation is cheap and testable on its own.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from automix.config import ConfigError, RunConfig, config_keys, flatten, from_dict, load_config, set_dotted, to_dict

from .schema import StudyError, number, read_study_yaml, reject_unknown, section

__all__ = ["Study", "StudyError", "Param", "load_study", "parse_study", "study_from_snapshot", "validate",
           "full_point", "resolve_config"]

Dist = Literal["uniform", "loguniform", "choice", "grid", "fixed"]
Algorithm = Literal["optuna", "random", "grid"]
SchedulerName = Literal["asha", "none", "pbt"]

METRIC = "top1"  # the trainer's headline number: top-1 (%) of the momentum encoder k
MODE = "max"
EPOCH_ATTR = "epoch"  # schedulers count epochs, not Tune iterations (a restored Train run keeps its epochs)


@dataclass(frozen=True)
class Param:
    """One entry of the search space: a dotted config key and its distribution."""
    key: str
    dist: Dist
    low: float | None = None
    high: float | None = None
    values: tuple = ()
    value: Any = None

    def candidates(self) -> list:
        """Values that must each build a valid config: the bounds, or every listed value."""
        if self.dist in ("uniform", "loguniform"):
            return [self.low, self.high]
        if self.dist == "fixed":
            return [self.value]
        return list(self.values)

    @property
    def sampled(self) -> bool:
        return self.dist != "fixed"


@dataclass(frozen=True)
class SearchSpec:
    algorithm: Algorithm = "optuna"  # optuna: TPE (Optuna's default sampler, constant liar in Optuna 5)
    seed: int | None = 0
    points_to_evaluate: tuple = ()  # mappings {dotted key: value}; missing keys take the base value


@dataclass(frozen=True)
class SchedulerSpec:
    name: SchedulerName = "asha"
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: float = 2.0
    max_t: int | None = None  # epochs; default: train.epochs of the base config


@dataclass(frozen=True)
class Resources:
    workers: int = 1  # data-parallel workers per trial (1: the trainer runs in the Tune trial itself)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # A trial that cannot be placed (no free node with these resources) for this long ends the launch
    # with a message, instead of waiting forever.
    placement_timeout_s: float = 300.0


@dataclass(frozen=True)
class CheckpointSpec:
    num_to_keep: int = 2  # per trial, in Ray storage; every epoch is checkpointed


@dataclass(frozen=True)
class TrackingSpec:
    log_checkpoint: bool = True  # the final state.pt as an MLflow artifact of the trial


@dataclass(frozen=True)
class FailureSpec:
    # Retries of a trial after a transient error (a killed worker, a lost node), from its last checkpoint.
    # Deterministic errors (bad config, missing data, non-finite loss) are never retried.
    max_failures: int = 2
    # A trial whose loss became non-finite under train.amp fp16 is rerun once, from scratch, in this
    # precision (none: it fails).
    numeric_retry: Literal["none", "bf16", "fp32"] = "none"


@dataclass(frozen=True)
class SmokeSpec:
    """What ``--smoke-test`` changes on top of the generic smoke settings (see :func:`smoke_variant`)."""
    num_samples: int | None = None
    set: Mapping[str, Any] = field(default_factory=dict)  # dotted config key -> value


@dataclass(frozen=True)
class Study:
    name: str
    base: Mapping[str, Any]  # resolved nested run config (fixed space values applied)
    space: tuple[Param, ...]
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    num_samples: int = 1
    max_concurrent_trials: int = 1
    resources: Resources = field(default_factory=Resources)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    failure: FailureSpec = field(default_factory=FailureSpec)
    smoke: SmokeSpec = field(default_factory=SmokeSpec)
    description: str = ""
    source: str = "<study>"  # the file it came from
    sha256: str = ""  # of the file's bytes
    smoke_test: bool = False  # True once smoke_variant() was applied

    @property
    def sampled(self) -> tuple[Param, ...]:
        return tuple(p for p in self.space if p.sampled)

    def base_config(self) -> RunConfig:
        return from_dict(self.base, source=self.source)

    def resolve(self, values: Mapping[str, Any]) -> RunConfig:
        """The run config of one trial: the base with the sampled ``{dotted key: value}`` applied."""
        return resolve_config(self.base, values, source=f"{self.source} (trial values {dict(values)})")

    def grid_size(self) -> int:
        return math.prod(len(p.values) for p in self.space if p.dist == "grid")

    def total_trials(self) -> int:
        """Trials Tune will create: num_samples times the grid (1 without grid entries)."""
        return self.num_samples * self.grid_size()

    @property
    def epochs(self) -> int:
        epochs = [v for p in self.space if p.key == "train.epochs" for v in p.candidates()]
        return int(max(epochs)) if epochs else int(self.base_config().train.epochs)

    def to_dict(self) -> dict:
        """Plain data (JSON/YAML-safe) from which :func:`study_from_snapshot` rebuilds this study."""
        d = dataclasses.asdict(self)
        d["base"] = copy.deepcopy(dict(self.base))
        d["space"] = [dataclasses.asdict(p) | {"values": list(p.values)} for p in self.space]
        d["search"]["points_to_evaluate"] = [dict(pt) for pt in self.search.points_to_evaluate]
        d["smoke"]["set"] = dict(self.smoke.set)
        return d


def resolve_config(base: Mapping[str, Any], values: Mapping[str, Any], source: str = "study") -> RunConfig:
    data = copy.deepcopy(dict(base))
    for key, value in values.items():
        set_dotted(data, key, value)
    return from_dict(data, source=source)


# --------------------------------------------------------------------------- loading

TOP_LEVEL = ("name", "description", "base_config", "base", "space", "search", "scheduler", "num_samples",
             "max_concurrent_trials", "resources", "checkpoint", "tracking", "failure", "smoke")


def load_study(path: str | Path, overrides: list[str] | Mapping[str, Any] = ()) -> Study:
    """Read and validate a study file; ``overrides`` (``key.path=value``) change its base config."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {path} does not exist")
    raw_bytes = path.read_bytes()
    data = read_study_yaml(path)  # an empty file or a YAML error: a StudyError naming the file and line
    return parse_study(data, source=str(path), sha256=hashlib.sha256(raw_bytes).hexdigest(),
                       base_dir=path.parent, overrides=overrides)


def parse_study(data: Any, *, source: str = "<study>", sha256: str = "", base_dir: Path | None = None,
                overrides: list[str] | Mapping[str, Any] = ()) -> Study:
    if not isinstance(data, Mapping):
        raise StudyError(f"{source}: a study file must be a mapping of the keys {', '.join(TOP_LEVEL)}")
    reject_unknown(data, TOP_LEVEL, "the top level", source)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StudyError(f"{source}: name is required (a non-empty string: the MLflow experiment and the "
                         f"Ray experiment are named after it), got {name!r}")
    if any(c in name for c in "/\\ \t") or name.startswith("."):
        raise StudyError(f"{source}: name = {name!r} must not contain '/', '\\' or spaces (it names a folder)")

    base = _load_base(data, source, base_dir, overrides)
    space = _parse_space(data.get("space") or {}, source)
    set_keys = overrides.keys() if isinstance(overrides, Mapping) else [o.partition("=")[0].strip() for o in overrides]
    swept = [k for k in set_keys if any(p.key == k and p.sampled for p in space)]
    if swept:
        raise StudyError(f"--set {swept[0]}: {source} sweeps this key (space.{swept[0]}); change the space, "
                         f"not the base config")
    for p in space:  # fixed entries are just part of the base
        if p.dist == "fixed":
            set_dotted(base, p.key, p.value)
    base_cfg = config_or_error(base, f"{source}: base config")
    base = to_dict(base_cfg)
    for p in space:
        for v in p.candidates():
            config_or_error(_with(base, p.key, v), f"{source}: space.{p.key} = {v!r}")

    study = Study(
        name=name,
        description=str(data.get("description") or ""),
        base=base,
        space=space,
        search=section(SearchSpec, data.get("search"), "search", source),
        scheduler=section(SchedulerSpec, data.get("scheduler"), "scheduler", source),
        num_samples=number(data.get("num_samples", 1), "num_samples", source, int, minimum=1),
        max_concurrent_trials=number(data.get("max_concurrent_trials", 1), "max_concurrent_trials", source,
                                      int, minimum=1),
        resources=section(Resources, data.get("resources"), "resources", source),
        checkpoint=section(CheckpointSpec, data.get("checkpoint"), "checkpoint", source),
        tracking=section(TrackingSpec, data.get("tracking"), "tracking", source),
        failure=section(FailureSpec, data.get("failure"), "failure", source),
        smoke=section(SmokeSpec, data.get("smoke"), "smoke", source),
        source=source,
        sha256=sha256,
    )
    validate(study)
    return study


def study_from_snapshot(d: Mapping[str, Any]) -> Study:
    """Inverse of :meth:`Study.to_dict` (a resumed study uses the snapshot saved at launch)."""
    d = dict(d)
    space = tuple(Param(**{**p, "values": tuple(p.get("values") or ())}) for p in d.pop("space"))
    search = dict(d.pop("search"))
    search["points_to_evaluate"] = tuple(search.get("points_to_evaluate") or ())
    return Study(space=space, search=SearchSpec(**search), scheduler=SchedulerSpec(**d.pop("scheduler")),
                 resources=Resources(**d.pop("resources")), checkpoint=CheckpointSpec(**d.pop("checkpoint")),
                 tracking=TrackingSpec(**d.pop("tracking")), failure=FailureSpec(**d.pop("failure")),
                 smoke=SmokeSpec(**d.pop("smoke")), **d)


def _load_base(data: Mapping, source: str, base_dir: Path | None, overrides) -> dict:
    base: dict = {}
    if data.get("base_config") is not None:
        ref = Path(str(data["base_config"]))
        if not ref.is_absolute():
            # Relative to the study file, else to the working directory (the repository root).
            candidates = [(base_dir or Path.cwd()) / ref, Path.cwd() / ref]
            ref = next((c for c in candidates if c.is_file()), candidates[0])
        if not ref.is_file():
            raise StudyError(f"{source}: base_config = {data['base_config']!r}: no such file ({ref})")
        base = to_dict(config_or_error(str(ref), f"{source}: base_config {ref}"))
    inline = data.get("base")
    if inline is not None and not isinstance(inline, Mapping):
        raise StudyError(f"{source}: base must be a mapping (the trainer's run config), got {inline!r}")
    _merge(base, copy.deepcopy(dict(inline or {})))
    items = overrides.items() if isinstance(overrides, Mapping) else [_parse_override(o, source) for o in overrides]
    for key, value in items:
        _check_key(key, f"--set {key}", source)
        set_dotted(base, key, value)
    return base


def _parse_override(item: str, source: str) -> tuple[str, Any]:
    from automix.config import parse_override
    try:
        return parse_override(item)
    except ConfigError as exc:
        raise StudyError(f"--set: {exc}") from None


def _merge(dst: dict, src: Mapping) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def _with(base: Mapping, key: str, value: Any) -> dict:
    d = copy.deepcopy(dict(base))
    set_dotted(d, key, value)
    return d


def config_or_error(source: Mapping | str, where: str) -> RunConfig:
    try:
        return load_config(source) if isinstance(source, str) else from_dict(source, source=where)
    except ConfigError as exc:
        raise StudyError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- search space

_DIST_KEYS = {
    "uniform": ("dist", "low", "high"),
    "loguniform": ("dist", "low", "high"),
    "choice": ("dist", "values"),
    "grid": ("dist", "values"),
    "fixed": ("dist", "value"),
}


def _parse_space(space: Any, source: str) -> tuple[Param, ...]:
    if not isinstance(space, Mapping):
        raise StudyError(f"{source}: space must map dotted config keys to distributions, got {space!r}")
    params = []
    int_keys = _int_keys()
    for key, spec in space.items():
        where = f"space.{key}"
        _check_key(key, where, source)
        if not isinstance(spec, Mapping):
            if isinstance(spec, (list, tuple)):
                raise StudyError(f"{source}: {where}: a list is ambiguous; write "
                                 f"{{dist: choice, values: [...]}} or {{dist: grid, values: [...]}}")
            params.append(Param(key, "fixed", value=spec))
            continue
        dist = spec.get("dist")
        if dist not in _DIST_KEYS:
            raise StudyError(f"{source}: {where}.dist = {dist!r} is not one of: {' | '.join(_DIST_KEYS)}")
        reject_unknown(spec, _DIST_KEYS[dist], where, source)
        missing = [k for k in _DIST_KEYS[dist] if k not in spec]
        if missing:
            raise StudyError(f"{source}: {where}: dist {dist} needs {', '.join(missing)}")
        if dist in ("uniform", "loguniform"):
            low = number(spec["low"], f"{where}.low", source, float)
            high = number(spec["high"], f"{where}.high", source, float)
            if not low < high:
                raise StudyError(f"{source}: {where}: low ({low}) must be < high ({high})")
            if dist == "loguniform" and low <= 0:
                raise StudyError(f"{source}: {where}: loguniform needs low > 0, got {low}")
            if key in int_keys:
                raise StudyError(f"{source}: {where}: {key} is an integer setting; sweep it with "
                                 f"{{dist: choice, values: [...]}} or {{dist: grid, values: [...]}}")
            params.append(Param(key, dist, low=low, high=high))
        elif dist in ("choice", "grid"):
            values = spec["values"]
            if not isinstance(values, (list, tuple)) or not values:
                raise StudyError(f"{source}: {where}: dist {dist} needs a non-empty list of values, got {values!r}")
            if len({repr(v) for v in values}) != len(values):
                raise StudyError(f"{source}: {where}: values {values!r} repeat an entry")
            params.append(Param(key, dist, values=tuple(values)))
        else:
            params.append(Param(key, "fixed", value=spec["value"]))
    return tuple(params)


def _int_keys() -> set[str]:
    return {k for k, v in flatten(RunConfig()).items() if isinstance(v, int) and not isinstance(v, bool)} | {
        "train.max_steps_per_epoch", "data.train_subset", "data.test_subset"}


def _check_key(key: Any, where: str, source: str) -> None:
    keys = config_keys()
    if not isinstance(key, str) or key not in keys:
        close = difflib.get_close_matches(str(key), keys, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise StudyError(f"{source}: {where}: unknown config key {key!r}{hint}; any key of the run config "
                         f"may be swept: {', '.join(keys)}")


# --------------------------------------------------------------------------- whole-study checks

def validate(study: Study) -> None:
    src = study.source
    sampled = study.sampled
    algo = study.search.algorithm
    grids = [p.key for p in sampled if p.dist == "grid"]
    randoms = [p.key for p in sampled if p.dist != "grid"]
    if algo == "optuna" and grids:
        raise StudyError(f"{src}: space.{grids[0]}: dist grid needs search.algorithm grid or random; Optuna "
                         f"samples, so use {{dist: choice, values: [...]}}")
    if algo == "grid" and randoms:
        raise StudyError(f"{src}: space.{randoms[0]}: search.algorithm grid takes only grid and fixed entries, "
                         f"not {next(p.dist for p in sampled if p.key == randoms[0])}")
    if algo == "optuna" and not sampled:
        raise StudyError(f"{src}: search.algorithm optuna needs at least one sampled space entry")
    keys = {p.key for p in sampled}
    for i, point in enumerate(study.search.points_to_evaluate):
        where = f"search.points_to_evaluate[{i}]"
        if not isinstance(point, Mapping):
            raise StudyError(f"{src}: {where} must be a mapping {{dotted key: value}}, got {point!r}")
        for key, value in point.items():
            if key not in keys:
                raise StudyError(f"{src}: {where}: {key!r} is not a sampled key of space "
                                 f"({', '.join(sorted(keys)) or 'none'})")
            p = next(q for q in sampled if q.key == key)
            if p.dist in ("uniform", "loguniform") and not (p.low <= value <= p.high):
                raise StudyError(f"{src}: {where}: {key} = {value} is outside [{p.low}, {p.high}]")
            if p.dist in ("choice", "grid") and value not in p.values:
                raise StudyError(f"{src}: {where}: {key} = {value!r} is not one of {list(p.values)}")
        if algo == "grid":
            raise StudyError(f"{src}: {where}: points_to_evaluate needs search.algorithm optuna or random")
        try:
            study.resolve(full_point(study, point))
        except ConfigError as exc:
            raise StudyError(f"{src}: {where}: {exc}") from None
    r = study.resources
    if r.workers < 1:
        raise StudyError(f"{src}: resources.workers = {r.workers} must be >= 1")
    if r.cpus_per_worker <= 0:
        raise StudyError(f"{src}: resources.cpus_per_worker = {r.cpus_per_worker} must be > 0")
    if r.gpus_per_worker < 0:
        raise StudyError(f"{src}: resources.gpus_per_worker = {r.gpus_per_worker} must be >= 0")
    base = study.base_config()
    if r.gpus_per_worker > 0 and base.train.device == "cpu":
        raise StudyError(f"{src}: resources.gpus_per_worker = {r.gpus_per_worker} but base train.device is cpu")
    for p in study.space:
        if p.key == "train.batch_size":
            bad = [v for v in p.candidates() if v % r.workers]
            if bad:
                raise StudyError(f"{src}: space.train.batch_size {bad[0]} is not divisible by resources.workers "
                                 f"({r.workers}); train.batch_size is the global batch")
    if not any(p.key == "train.batch_size" for p in study.space) and base.train.batch_size % r.workers:
        raise StudyError(f"{src}: base train.batch_size = {base.train.batch_size} is not divisible by "
                         f"resources.workers ({r.workers}); train.batch_size is the global batch")
    s = study.scheduler
    if s.name == "pbt":
        raise StudyError(
            f"{src}: scheduler.name = pbt is not supported: PBT restarts a trial from another trial's checkpoint "
            f"with changed hyperparameters, but automix.train resumes only with the identical config, and Ray "
            f"Train V2 trials forward no Tune checkpoint; use asha or none")
    if s.grace_period < 1:
        raise StudyError(f"{src}: scheduler.grace_period = {s.grace_period} must be >= 1 (epochs)")
    if s.reduction_factor <= 1:
        raise StudyError(f"{src}: scheduler.reduction_factor = {s.reduction_factor} must be > 1")
    if s.max_t is not None and s.max_t < s.grace_period:
        raise StudyError(f"{src}: scheduler.max_t = {s.max_t} must be >= grace_period ({s.grace_period})")
    if study.checkpoint.num_to_keep < 1:
        raise StudyError(f"{src}: checkpoint.num_to_keep = {study.checkpoint.num_to_keep} must be >= 1")
    if study.failure.max_failures < 0:
        raise StudyError(f"{src}: failure.max_failures = {study.failure.max_failures} must be >= 0")
    if r.placement_timeout_s <= 0:
        raise StudyError(f"{src}: resources.placement_timeout_s = {r.placement_timeout_s} must be > 0 (seconds)")
    _check_numeric_retry(study)
    for key in study.smoke.set:
        _check_key(key, f"smoke.set.{key}", src)
    if study.smoke.num_samples is not None and study.smoke.num_samples < 1:
        raise StudyError(f"{src}: smoke.num_samples = {study.smoke.num_samples} must be >= 1")


def _check_numeric_retry(study: Study) -> None:
    """numeric_retry reruns trials that trained in fp16; a study where no trial can is a mistake (the
    retry would never happen), so it is an error rather than a note that scrolls away."""
    retry = study.failure.numeric_retry
    if retry == "none":
        return
    amps = {p.key: p.candidates() for p in study.space}.get("train.amp", [study.base_config().train.amp])
    if "fp16" not in amps:
        raise StudyError(f"{study.source}: failure.numeric_retry = {retry} retries trials that trained with "
                         f"train.amp fp16, but no trial of this study does (train.amp: {', '.join(map(str, amps))}); "
                         f"drop failure.numeric_retry or set train.amp: fp16")


def full_point(study: Study, point: Mapping[str, Any]) -> dict[str, Any]:
    """A points_to_evaluate entry with every sampled key: missing ones take the base config's value."""
    flat = flatten(study.base)
    return {p.key: point[p.key] if p.key in point else flat[p.key] for p in study.sampled}

