"""The record of a run or a study: every name that the trainer, the study runner, the single-run
tracker and the analysis write or read, defined once. Standard library only (no torch, Ray or MLflow),
so every layer can import it.

Layout in MLflow (docs/architecture.md, "The record"):

- experiment: the study's ``name`` (a single tracked run: ``--experiment``, default ``automix-runs``).
- parent run, one per launch of a study: tag ``automix.role=study``; child runs nest under it with the
  tag ``mlflow.parentRunId``. A single tracked run has no parent: ``automix.role=run``.
- child run, one per trial: tag ``automix.role=trial``, params = the resolved run config, each key once
  under its dotted name (``method``, ``mix.alpha``, ``optim.mixblock_lr``, ...), the same name as in
  study files, ``--set``, the analysis and the notebooks.
- per-epoch metrics (``step = epoch``) under :data:`EPOCH_METRICS`; schedule values have names of
  their own (``sched_*``), so no metric is named like a param.
- when a trial ends: :data:`TOP1_SUMMARY` (the number the paper table uses), ``top1_final``,
  ``top1_best`` and the cost metrics.
- the parent, when the launch ends: :data:`TOP1_SUMMARY` of its best trial, the tag
  :data:`TAG_BEST_RUN_ID` naming that trial's run, the summed cost and the trial counts as tags.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping

# --------------------------------------------------------------------------- layout and tags
DEFAULT_EXPERIMENT = "automix-runs"  # single runs tracked with --tracking-uri and no --experiment

ROLE_TAG = "automix.role"
ROLE_STUDY = "study"  # a parent run: one launch of a study
ROLE_TRIAL = "trial"  # a child run: one trial
ROLE_RUN = "run"  # a single tracked `python -m automix.train` run
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag

TAG_STUDY = "study"  # the study's name, on parent and children
TAG_STUDY_HASH = "study_hash"  # sha256 of the study file's bytes (parent)
TAG_STUDY_FILE = "study_file"
TAG_SMOKE = "smoke_test"  # "true" on every run of a --smoke-test launch: not a result
TAG_TRIAL_ID = "trial_id"  # Ray Tune's trial id (child)
TAG_SWEPT = "swept"  # comma-separated dotted keys the study samples (parent and children)
TAG_STATUS = "trial_status"  # child: finished | stopped early | failed | interrupted
TAG_EPOCHS_DONE = "epochs_done"
TAG_ERROR = "error"  # child: the first line of a failed trial's error (traceback: artifact error.txt)
TAG_BEST_RUN_ID = "best_run_id"  # parent: the run id of its best trial
TAG_BEST_TRIAL_ID = "best_trial_id"
TAG_NUMERIC_RETRY = "numeric_retry"  # child: "bf16" / "fp32" when a non-finite fp16 trial was rerun
TAG_HELD_S = "held_s"  # child: seconds its run held devices, as of its last end or interruption
# Parent: how the launch's trials ended (one tag each, integer counts as text).
COUNT_TAGS = {
    "finished": "trials_finished",
    "stopped early": "trials_stopped_early",
    "failed": "trials_failed",
    "interrupted": "trials_interrupted",
}
ERROR_ARTIFACT = "error.txt"
MIX_ARTIFACT_DIR = "mix"  # PNG grids of the mixing, mix_epochNNNN.png
GALLERY_ARTIFACT_DIR = "gallery"

# Trial statuses (the summary, the tags and the analysis use these words).
FINISHED, STOPPED_EARLY, FAILED, INTERRUPTED = "finished", "stopped early", "failed", "interrupted"

# --------------------------------------------------------------------------- metrics
TOP1 = "top1"  # top-1 (%) of the momentum encoder k with its one-hot head: the headline number
TOP1_Q = "top1_q"  # top-1 (%) of the online encoder q
TOP1_SUMMARY = "top1_summary"  # median top-1 of the last 5 (<= 100 epochs) or 10 epochs
TOP1_FINAL = "top1_final"
TOP1_BEST = "top1_best"

# Per-epoch metrics the trainer reports (metrics.jsonl and MLflow, step = epoch). Losses are
# `train_loss` and one `loss_<term>` per loss term.
EPOCH_METRICS = (
    TOP1, TOP1_Q, "train_loss",
    "sched_lr",  # learning rate of the backbone + heads group at the epoch's end
    "sched_mixblock_lr",  # Mix Block group (AutoMix)
    "sched_ema_momentum",  # EMA momentum m(t) of the epoch's last step (AutoMix)
    "sched_mask_weight",  # weight of L_mask (AutoMix)
    "mask_saturated",  # share of mb-mask pixels with s < 0.05 or s > 0.95 (AutoMix)
    "mask_spatial_std",  # mean over samples of the spatial std of s (AutoMix)
    "mask_lam_gap",  # mean over steps of |mean(1 - s) - lam_mb| (AutoMix)
    "skipped_steps",  # optimizer steps skipped by the fp16 GradScaler this epoch
    "epoch_time_s", "images_per_s", "peak_mem_mb", "iterations", "world_size",
    "skipped_images",  # cumulative: unreadable images replaced under data.skip_corrupt (SKIPPED_IMAGES)
)
# Cost, logged per trial when it ends (and summed on the parent).
DEVICE_HOURS = "device_hours"  # GPU-hours on GPUs, CPU-core-hours on CPUs: wall time x devices held
TRAIN_TIME_S = "train_time_s"
PEAK_MEM_MB = "peak_mem_mb"
IMAGES_PER_S = "images_per_s"
WALL_TIME_S = "wall_time_s"  # parent: the launch's wall time
COST_METRICS = (DEVICE_HOURS, TRAIN_TIME_S, PEAK_MEM_MB, IMAGES_PER_S)
FINAL_METRICS = (TOP1_SUMMARY, TOP1_FINAL, TOP1_BEST, *COST_METRICS)

# --------------------------------------------------------------------------- params
# Params that the table keys rows and columns by (dotted config keys).
METHOD, BACKBONE, DATASET, EPOCHS, SEED = "method", "model.backbone", "data.name", "train.epochs", "train.seed"
RESOURCE_PARAMS = ("resources.workers", "resources.cpus_per_worker", "resources.gpus_per_worker")
# Short names a store written by plain MLflow calls may use, and the dotted key each stands for.
FOREIGN_PARAM_ALIASES = {
    "method": METHOD, "backbone": BACKBONE, "dataset": DATASET, "epochs": EPOCHS, "seed": SEED,
    "alpha": "mix.alpha", "mixblock_lr": "optim.mixblock_lr", "momentum": "automix.momentum",
    "lr": "optim.lr", "batch_size": "train.batch_size",
}
REQUIRED_PARAMS = (METHOD, BACKBONE, DATASET, EPOCHS)  # what a run needs to land in the paper table

# Abbreviations in trial run names: `a=1.24 mblr=0.374 m=0.905 · 1d3768a4`.
RUN_NAME_ABBREVIATIONS = {
    "mix.alpha": "a", "optim.mixblock_lr": "mblr", "automix.momentum": "m", "optim.lr": "lr",
    "optim.weight_decay": "wd", "model.backbone": "", "method": "", "train.epochs": "ep",
    "train.seed": "seed", "data.name": "", "train.batch_size": "bs",
}


def summary_window(epochs: int) -> int:
    """Epochs the paper's summary takes the median over: the last 5 for schedules of 100 epochs or
    fewer, the last 10 for longer ones (AutoMix Sec. 5; OpenMixup's benchmarks)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return 5 if epochs <= 100 else 10


def top1_summary(top1_by_epoch: Iterable[float], planned_epochs: int) -> float:
    """The median of the last :func:`summary_window` values of ``top1_by_epoch`` (ordered by
    epoch); fewer values give the median of what there is, none give NaN."""
    values = [float(v) for v in top1_by_epoch]
    if not values:
        return math.nan
    return float(statistics.median(values[-summary_window(planned_epochs):]))


def run_params(flat_config: Mapping[str, Any], resources: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The params of a trial or run: every dotted config key once, plus ``resources.*`` of a trial."""
    params = {k: _param_text(v) for k, v in flat_config.items()}
    for key, value in (resources or {}).items():
        params[f"resources.{key}"] = _param_text(value)
    return params


def trial_run_name(values: Mapping[str, Any], trial_id: str) -> str:
    """A run name made of the swept values only, rounded: ``a=1.24 mblr=0.374 m=0.905 · 1d3768a4``."""
    parts = []
    for key, value in values.items():
        abbrev = RUN_NAME_ABBREVIATIONS.get(key, key.rsplit(".", 1)[-1])
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{abbrev}={text}" if abbrev else text)
    return (" ".join(parts) + " · " if parts else "") + trial_id


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5990] + "..."


# --------------------------------------------------------------------------- added by H3-data
# Unreadable images replaced so far under data.skip_corrupt (automix.loaders.Loaders.skipped_images,
# cumulative, this rank's DataLoader workers included; sum over ranks). Always 0 without skip_corrupt:
# an unreadable image then stops the run with its file name.
SKIPPED_IMAGES = "skipped_images"
