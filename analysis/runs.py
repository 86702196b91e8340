"""Which runs of an experiment are trials, in our record or in a store written by plain MLflow calls.

Our record (automix/record.py) tags every run with `automix.role`: `study` for a launch's parent,
`trial` for a trial, `run` for a single tracked run. A store written by plain MLflow calls has no such
tags: there, a run that other runs nest under (`mlflow.parentRunId`) is a parent and every other run
a trial candidate, and short param names (`method`, `backbone`, `dataset`, `epochs`, `seed`, ...)
stand for the dotted config keys (`record.FOREIGN_PARAM_ALIASES`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mlflow.entities import Run

from automix import record

LAYOUT_RECORD = "automix record"  # runs tagged automix.role
LAYOUT_FOREIGN = "plain MLflow runs"  # no automix.role tags: nesting and params tell
TRIAL_ROLES = (record.ROLE_TRIAL, record.ROLE_RUN)
NEEDS = (
    "each trial run needs the params " + ", ".join(record.REQUIRED_PARAMS)
    + " (or the short names " + ", ".join(k for k, v in record.FOREIGN_PARAM_ALIASES.items()
                                          if v in record.REQUIRED_PARAMS)
    + f") and a per-epoch `{record.TOP1}` metric (step = epoch)"
)


@dataclass(frozen=True)
class Runs:
    """An experiment's runs sorted into trials and parents, and the layout that told them apart."""

    trials: list[Run]
    parents: list[Run]
    layout: str
    total: int


def sort_runs(runs: list[Run]) -> Runs:
    """Trials and parents of `runs`: by `automix.role` where any run has it, else by nesting."""
    roles = [r.data.tags.get(record.ROLE_TAG) for r in runs]
    if any(role is not None for role in roles):
        trials = [r for r, role in zip(runs, roles) if role in TRIAL_ROLES]
        parents = [r for r, role in zip(runs, roles) if role == record.ROLE_STUDY]
        return Runs(trials, parents, LAYOUT_RECORD, len(runs))
    nesting = {r.data.tags.get(record.PARENT_TAG) for r in runs} - {None}
    untagged = [r for r, role in zip(runs, roles) if role is None]
    trials = [r for r in untagged if r.info.run_id not in nesting]
    parents = [r for r, role in zip(runs, roles) if role == record.ROLE_STUDY or r.info.run_id in nesting]
    return Runs(trials, parents, LAYOUT_FOREIGN, len(runs))


def dotted_params(params: dict[str, str]) -> dict[str, str]:
    """`params` with short names renamed to the dotted keys they stand for; where a run logged
    both, the dotted key's value is kept."""
    out = dict(params)
    for short, dotted in record.FOREIGN_PARAM_ALIASES.items():
        if short in out and short != dotted:
            value = out.pop(short)
            out.setdefault(dotted, value)
    return out


def missing_params(params: dict[str, str]) -> list[str]:
    """Of `record.REQUIRED_PARAMS`, those that `params` (dotted) lack or leave empty."""
    return [k for k in record.REQUIRED_PARAMS if params.get(k, "") in ("", "None")]


def describe(runs: Runs, with_top1: set[str]) -> str:
    """What the experiment held, for a message that explains why nothing could be tabulated."""
    missing = Counter(k for r in runs.trials for k in missing_params(dotted_params(r.data.params)))
    no_top1 = sum(r.info.run_id not in with_top1 for r in runs.trials)
    parts = [f"{runs.total} run(s), read as {runs.layout}: {len(runs.trials)} trial run(s), "
             f"{len(runs.parents)} parent run(s)"]
    if runs.layout == LAYOUT_RECORD or not runs.trials:
        tagged = sum(record.ROLE_TAG in r.data.tags for r in runs.trials + runs.parents)
        parts.append(f"{tagged} tagged {record.ROLE_TAG}")
    if missing:
        parts.append("missing params: " + ", ".join(f"{k} in {n} run(s)" for k, n in sorted(missing.items())))
    if no_top1:
        parts.append(f"no `{record.TOP1}` history in {no_top1} run(s)")
    return "; ".join(parts)
