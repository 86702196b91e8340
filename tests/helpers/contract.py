"""Checks of the record contract (``automix/record.py``) on runs read back from a real MLflow store:
what every tracked study launch (SQLite or an ``mlflow server``) must satisfy."""
from __future__ import annotations

import math

from automix import record

# Short names that stood for dotted keys in the old layout and must not come back.
SHORT_DUPLICATES = sorted(k for k, dotted in record.FOREIGN_PARAM_ALIASES.items() if k != dotted)
ENDED = (record.FINISHED, record.STOPPED_EARLY, record.FAILED)


def check_trial_record(runs, run, swept: list[str]) -> None:
    """One child run: params once under dotted names, no metric named like a param, the end-of-trial
    metrics and tags, a readable name, each epoch logged once."""
    name, params, metrics, tags = run.info.run_name, run.data.params, run.data.metrics, run.data.tags
    duplicates = set(SHORT_DUPLICATES) & set(params)
    assert not duplicates, f"{name}: short-name duplicates {duplicates}"
    assert all("." in p or p == record.METHOD for p in params), [p for p in params if "." not in p]
    assert set(record.RESOURCE_PARAMS) <= set(params), f"{name}: no resources.* params"
    assert set(record.REQUIRED_PARAMS) <= set(params)
    clash = set(params) & set(metrics)
    assert not clash, f"{name}: metric(s) named like params: {clash}"
    assert tags[record.ROLE_TAG] == record.ROLE_TRIAL and tags[record.TAG_SWEPT] == ",".join(swept)
    status = tags.get(record.TAG_STATUS)
    assert status in ENDED, f"{name}: trial_status {status!r}"
    top1 = runs.history(run, record.TOP1)
    assert int(tags[record.TAG_EPOCHS_DONE]) == len(top1)
    for key in (record.TOP1, "sched_lr", "epoch_time_s"):
        steps = [s for s, _ in runs.history(run, key)]
        assert steps == list(range(1, len(top1) + 1)), f"{name}: {key} steps {steps}"
    if top1:
        planned = int(params[record.EPOCHS])
        assert metrics[record.TOP1_SUMMARY] == record.top1_summary([v for _, v in top1], planned)
        assert metrics[record.TOP1_FINAL] == top1[-1][1] and metrics[record.TOP1_BEST] == max(v for _, v in top1)
        for key in (record.DEVICE_HOURS, record.TRAIN_TIME_S, record.PEAK_MEM_MB, record.IMAGES_PER_S):
            assert metrics.get(key, -1) > 0, f"{name}: {key} = {metrics.get(key)}"
        devices = float(params["resources.workers"]) * float(params["resources.cpus_per_worker"])  # CPU trials
        held_h = float(tags["held_s"]) / 3600
        assert math.isclose(metrics[record.DEVICE_HOURS], held_h * devices, abs_tol=1e-4), (name, held_h)
        last = f"{record.MIX_ARTIFACT_DIR}/mix_epoch{len(top1):04d}.png"
        assert last in runs.artifacts(run, record.MIX_ARTIFACT_DIR), f"{name}: no picture of its last epoch"
    values = {k: _typed(params[k]) for k in swept}
    assert name == record.trial_run_name(values, tags[record.TAG_TRIAL_ID]), name


def check_parent_record(runs, parent, children) -> None:
    """The parent names its best finished trial and sums the cost; every value is logged once."""
    finished = [c for c in children if c.data.tags[record.TAG_STATUS] == record.FINISHED]
    assert finished, "no trial finished"
    best = max(finished, key=lambda c: c.data.metrics[record.TOP1_SUMMARY])
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags[record.TAG_BEST_RUN_ID] == best.info.run_id
    assert tags[record.TAG_BEST_TRIAL_ID] == best.data.tags[record.TAG_TRIAL_ID]
    assert metrics[record.TOP1_SUMMARY] == best.data.metrics[record.TOP1_SUMMARY]
    assert math.isclose(metrics[record.DEVICE_HOURS],
                        sum(c.data.metrics[record.DEVICE_HOURS] for c in children), rel_tol=1e-9)
    assert metrics[record.WALL_TIME_S] > 0
    counts = {word: int(tags[tag]) for word, tag in record.COUNT_TAGS.items()}
    assert sum(counts.values()) == len(children), counts
    for word in ENDED:
        assert counts[word] == sum(c.data.tags[record.TAG_STATUS] == word for c in children), (word, counts)
    for key in metrics:
        assert len(runs.history(parent, key)) == 1, f"parent metric {key} logged more than once"


def _typed(text: str):
    """A param's text back as the value the run name was made from (floats are rounded there)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
