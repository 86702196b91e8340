"""A study's search space, search algorithm and scheduler as Ray Tune / Optuna objects.

The param space is *flat*: one entry per dotted config key (``{"mix.alpha": tune.loguniform(...)}``).
OptunaSearch flattens nested spaces to ``"a/b"`` keys and silently ignores nested
``points_to_evaluate`` with define-by-run spaces; a flat space has one spelling of every key
everywhere (Tune config, Optuna parameter names, points_to_evaluate, MLflow params).
"""
from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

from .study import EPOCH_ATTR, Param, Study, full_point


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
                                 random_state=study.search.seed)


def scheduler(study: Study) -> TrialScheduler:
    s = study.scheduler
    if s.name == "none":
        return FIFOScheduler()
    if s.name == "asha":
        # Counted in epochs (the trainer's own counter), so a trial whose Train run restored from a
        # checkpoint after a failure is still judged at the right rung.
        return ASHAScheduler(time_attr=EPOCH_ATTR, max_t=s.max_t or study.epochs,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    raise ValueError(f"scheduler {s.name!r} is not supported")  # study.validate() rejects it first
