"""How a trial ended, in the record's words (:mod:`automix.record`): finished | stopped early |
failed | interrupted."""
from __future__ import annotations

from automix import record


def trial_status(*, failed: bool, epochs: int, planned: int, stopped_by_scheduler: bool) -> str:
    """A trial is stopped early only when the scheduler stopped it; one that neither ran all its epochs
    nor was stopped was interrupted (Ctrl-C, SIGTERM, the placement timeout), whatever Tune calls it."""
    if failed:
        return record.FAILED
    if epochs >= planned:
        return record.FINISHED
    return record.STOPPED_EARLY if stopped_by_scheduler else record.INTERRUPTED
