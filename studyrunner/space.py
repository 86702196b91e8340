"""A study's search space, search algorithm and scheduler as Ray Tune / Optuna objects.

The param space is *flat*: one entry per dotted config key (``{"mix.alpha": tune.loguniform(...)}``).
OptunaSearch flattens nested spaces to ``"a/b"`` keys and silently ignores nested
``points_to_evaluate`` with define-by-run spaces; a flat space has one spelling of every key
everywhere (Tune config, Optuna parameter names, points_to_evaluate, MLflow params).
"""
from __future__ import annotations

import json
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

from .resume import filesystem
from .study import EPOCH_ATTR, Param, Study, full_point

STOPPED_FILE = "stopped_early.json"  # in the experiment folder: trial ids the scheduler stopped


def _domain(p: Param) -> Any:
    if p.dist == "uniform":
        return tune.uniform(p.low, p.high)
    if p.dist == "loguniform":
        return tune.loguniform(p.low, p.high)
    if p.dist == "choice":
        return tune.choice(list(p.values))
    if p.dist == "grid":
        return tune.grid_search(list(p.values))
    raise ValueError(f"{p.key}: a {p.dist} entry is part of the base config, not of the search space")


def param_space(study: Study) -> dict[str, Any]:
    """``{dotted key: Tune domain}`` of the sampled entries (fixed ones are already in the base)."""
    return {p.key: _domain(p) for p in study.sampled}


def points_to_evaluate(study: Study) -> list[dict[str, Any]]:
    """The study's first points with every sampled key filled in (missing ones from the base config)."""
    return [full_point(study, pt) for pt in study.search.points_to_evaluate]


def search_algorithm(study: Study) -> Searcher | BasicVariantGenerator:
    algo = study.search.algorithm
    if algo == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        # metric and mode come from TuneConfig (set in both places Tune refuses the searcher).
        # sampler=None: OptunaSearch builds TPESampler(seed=seed) itself (seed is ignored with a sampler).
        return OptunaSearch(points_to_evaluate=points_to_evaluate(study) or None,
                            seed=study.search.seed)
    # random and grid: Tune's variant generator (grid entries are expanded, the rest sampled).
    return BasicVariantGenerator(points_to_evaluate=points_to_evaluate(study) or None,
                                 random_state=study.search.seed, max_concurrent=study.max_concurrent_trials)


class RecordingASHA(ASHAScheduler):
    """ASHA that remembers which trials it stopped, so that "stopped early" in the summary, the MLflow
    tags and the parent's counts means the scheduler's decision -- not an interrupt that happened to
    end a trial before its last epoch. The ids are kept in the experiment folder (they survive a
    killed driver and --resume, which restores the scheduler as it was pickled at launch)."""

    def __init__(self, *, experiment_path: str, **kwargs):
        super().__init__(**kwargs)
        self.experiment_path = experiment_path

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP and result.get(self._time_attr, 0) < self._max_t:
            ids = stopped_trials(self.experiment_path) | {trial.trial_id}
            fs, path = filesystem(f"{self.experiment_path.rstrip('/')}/{STOPPED_FILE}")
            with fs.open_output_stream(path) as out:
                out.write(json.dumps(sorted(ids)).encode())
        return action


def stopped_trials(experiment_path: str) -> set[str]:
    """Ids of the trials the scheduler stopped before their last epoch."""
    fs, path = filesystem(f"{experiment_path.rstrip('/')}/{STOPPED_FILE}")
    try:
        with fs.open_input_stream(path) as src:
            return set(json.loads(src.read().decode()))
    except (FileNotFoundError, OSError):
        return set()


def scheduler(study: Study, experiment_path: str) -> TrialScheduler:
    s = study.scheduler
    if s.name == "none":
        return FIFOScheduler()
    if s.name == "asha":
        # Counted in epochs (the trainer's own counter), so a trial whose Train run restored from a
        # checkpoint after a failure is still judged at the right rung.
        return RecordingASHA(experiment_path=experiment_path, time_attr=EPOCH_ATTR, max_t=s.max_t or study.epochs,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    raise ValueError(f"scheduler {s.name!r} is not supported")  # study.validate() rejects it first
