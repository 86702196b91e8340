"""``--smoke-test``: the same study shrunk to seconds per trial, runnable on any CPU (CI)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from automix.config import set_dotted, to_dict

from .study import Resources, Study, config_or_error, validate

SMOKE_TRIALS = 3


def smoke_variant(study: Study) -> Study:
    """A seconds-per-trial version for CI: 2 epochs of a few steps on tiny data with a narrow model,
    at most 3 trials. A GPU study (or one on a data set that needs files) keeps its ``data.name`` with
    ``data.synthetic: true`` on the CPU so it runs anywhere; multi-worker trials keep 2 workers (gloo)."""
    base = study.base_config()
    r = study.resources
    workers = min(r.workers, 2)
    batch = max(2 * workers, min(base.train.batch_size, 32) // workers * workers)
    sets: dict[str, Any] = {
        "train.epochs": min(base.train.epochs, 2),
        "train.max_steps_per_epoch": min(base.train.max_steps_per_epoch or 4, 4),
        "train.batch_size": batch,
        "train.mix_grid_every": 1,
        "train.num_workers": 0,
        "train.eval_batch_size": 128,
        "train.amp": "none",
        "data.train_subset": min(base.data.train_subset or 256, 256),
        "data.test_subset": min(base.data.test_subset or 128, 128),
        "model.width": min(base.model.width, 8),
    }
    if r.gpus_per_worker > 0 or base.data.name not in ("digits", "fake"):
        # Random images of the study's own data set (its name, class count and a small size stay in the
        # record; the runs are tagged smoke_test), on the CPU: nothing to download or mount.
        sets.update({"data.synthetic": True, "data.image_size": min(base.data.image_size, 32),
                     "data.fake_train_size": 256, "data.fake_test_size": 64, "train.device": "cpu"})
    sets.update(study.smoke.set)
    new_base = copy.deepcopy(dict(study.base))
    for key, value in sets.items():
        set_dotted(new_base, key, value)

    # Swept keys that the smoke settings pin become fixed; grids shrink to at most SMOKE_TRIALS points.
    space, budget = [], SMOKE_TRIALS
    for p in study.space:
        if p.key in sets:
            continue
        if p.dist == "grid":
            keep = max(1, min(len(p.values), budget))
            budget = max(1, budget // keep)
            p = dataclasses.replace(p, values=p.values[:keep])
        space.append(p)
    for p in space:
        if p.dist == "fixed":
            set_dotted(new_base, p.key, p.value)
    num_samples = study.smoke.num_samples or (1 if any(p.dist == "grid" for p in space) else
                                              min(study.num_samples, SMOKE_TRIALS))
    sched = study.scheduler
    epochs = sets["train.epochs"]
    smoke = dataclasses.replace(
        study,
        base=to_dict(config_or_error(new_base, f"{study.source} (smoke test)")),
        space=tuple(space),
        num_samples=num_samples,
        max_concurrent_trials=1 if workers > 1 else min(study.max_concurrent_trials, 2),
        resources=Resources(workers=workers, cpus_per_worker=1.0, gpus_per_worker=0.0),
        scheduler=dataclasses.replace(sched, grace_period=1, max_t=None if sched.max_t is None else epochs),
        search=dataclasses.replace(study.search, points_to_evaluate=study.search.points_to_evaluate[:num_samples]),
        failure=dataclasses.replace(study.failure, numeric_retry="none"),  # smoke trials train in fp32
        smoke_test=True,
    )
    validate(smoke)
    return smoke
