"""How top-1 depends on the swept hyperparameters: per-param plots, parallel coordinates, fANOVA.

Figures are drawn with matplotlib's object API (`Figure`, no pyplot), so nothing depends on or
changes the process-wide backend: PNGs render headless, and notebooks display the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.configs import as_text, config_columns, distinct_columns, varying_columns
from analysis.importance import TARGET, Axis, param_axes, param_importances
from analysis.loading import StudyData
from automix import record

# The paper's three AutoMix hyperparameters come first when a study sweeps them.
FIRST = ("mix.alpha", "optim.mixblock_lr", "automix.momentum")
# Params that say which setting (table cell) a trial belongs to rather than how it was tuned.
SETTING_PARAMS = (record.METHOD, record.DATASET, record.BACKBONE, record.EPOCHS)
Y_LABEL = "top-1 (%), median of last epochs"
DPI = 110
# fANOVA fits a random forest to (params -> top-1): on a handful of trials it splits on noise and still
# returns importances that sum to 1. Below this many complete trials of one setting it is not run, and
# the report says why.
MIN_IMPORTANCE_TRIALS = 8


@dataclass(frozen=True)
class SensitivityReport:
    """What `analyse` found: the swept params, their fANOVA importances (computed within `setting`,
    the setting with the most trials), the PNG files written."""

    parameters: list[str]
    importances: pd.Series
    setting: str = ""
    figures: dict[str, Path] = field(default_factory=dict)
    note: str = ""  # why there are no importances, when a sweep has too few trials for them


def sweep_parameters(study: StudyData) -> list[str]:
    """Hyperparameters that vary across the trials that ran (complete or stopped early by the
    scheduler): configuration params other than seeds and the setting (method, dataset, backbone,
    epochs), one name per hyperparameter, AutoMix's alpha / Mix Block LR / momentum first."""
    trials = pd.concat([study.complete_trials, study.stopped_trials])
    columns = [c for c in config_columns(trials, study.param_columns) if c not in SETTING_PARAMS]
    columns = distinct_columns(trials, columns)
    varying = varying_columns(trials, columns)
    return [c for c in FIRST if c in varying] + [c for c in varying if c not in FIRST]


def analyse(study: StudyData, out_dir: str | Path, *, seed: int = 0) -> SensitivityReport:
    """Write the study's figures to `out_dir`: `curves.png` always; for a sweep also
    `sensitivity.png`, `parallel.png` (two or more swept params) and `importance.png`.

    Importances and the parallel view use only complete trials; the per-param plots also show the
    trials stopped early, as hollow markers.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = _finite(study.complete_trials)
    stopped = _finite(study.stopped_trials)
    figures: dict[str, Path] = {}
    if not study.history.empty and not trials.empty:
        figures["curves"] = plot_curves(study, out_dir / "curves.png")
    params = sweep_parameters(study)
    importances = pd.Series(dtype="float64", name="importance")
    setting, note = "", ""
    if params and not trials.empty and len(trials) + len(stopped) >= 2:
        axes = param_axes(pd.concat([trials, stopped]), params)
        labels = setting_labels(trials)
        figures["sensitivity"] = plot_effects(trials, axes, out_dir / "sensitivity.png", labels, stopped)
        if len(axes) >= 2 and len(trials) >= 2:
            figures["parallel"] = plot_parallel(trials, axes, out_dir / "parallel.png")
        # fANOVA within one setting: across methods or datasets the "importance" would mostly
        # measure the difference between settings, which the paper table already shows.
        setting = str(labels.value_counts(sort=True).index[0])
        within = trials[labels == setting]
        if len(within) < MIN_IMPORTANCE_TRIALS:
            note = (f"no fANOVA importances: {len(within)} complete trial(s) of {setting!r}, it needs at "
                    f"least {MIN_IMPORTANCE_TRIALS} (on fewer it fits noise)")
        else:
            importances = param_importances(within, axes, seed=seed)
        if not importances.empty:
            figures["importance"] = plot_importances(importances, out_dir / "importance.png",
                                                     f"{setting}, {len(within)} trials")
    return SensitivityReport(parameters=params, importances=importances, setting=setting, figures=figures,
                             note=note)


def _finite(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[np.isfinite(trials[TARGET].astype(float))]


def setting_labels(trials: pd.DataFrame) -> pd.Series:
    """Per trial, the setting it belongs to: the values of those SETTING_PARAMS that vary (e.g.
    "automix" when only the method does), or "complete trials" when none vary."""
    present = distinct_columns(trials, [c for c in SETTING_PARAMS if c in trials])
    varying = varying_columns(trials, present)
    if not varying:
        return pd.Series("complete trials", index=trials.index)
    text = pd.DataFrame({c: as_text(trials[c]) for c in varying}, index=trials.index)
    return text.agg(" / ".join, axis=1)


def plot_effects(
    trials: pd.DataFrame,
    axes: Sequence[Axis],
    path: Path,
    labels: pd.Series | None = None,
    stopped: pd.DataFrame | None = None,
) -> Path:
    """One panel per swept param: each trial's top-1 against the param (log axes for learning rates,
    1 - m on a log axis for momentum), with the mean per value when values repeat (grid sweeps).

    `stopped`: trials a scheduler stopped early (ASHA), drawn as hollow grey markers at the median
    of their last epochs, which is not comparable with a full run's but shows where the sweep went.
    """
    stopped = stopped if stopped is not None else trials.iloc[:0]
    n = len(axes)
    n_cols = min(n, 3)
    n_rows = -(-n // n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 3.4 * n_rows), layout="constrained")
    y = trials[TARGET].astype(float)
    labels = setting_labels(trials) if labels is None else labels
    groups = [(str(k), members.index) for k, members in trials.groupby(labels, sort=True)]
    for k, axis in enumerate(axes):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        x, x_stopped = axis.values(trials), axis.values(stopped)
        if axis.scale == "category":
            categories = sorted(set(x) | set(x_stopped), key=str)
            codes = {c: i for i, c in enumerate(categories)}
            x, x_stopped = x.map(codes).astype(float), x_stopped.map(codes).astype(float)
            ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30)
        if len(stopped):
            ax.scatter(x_stopped.astype(float), stopped[TARGET].astype(float), s=18, facecolors="none",
                       edgecolors="0.6", label=f"stopped early ({len(stopped)})")
        for label, index in groups:
            xs, ys = x.loc[index].astype(float), y.loc[index]
            ax.scatter(xs, ys, s=18, alpha=0.8, label=label)
            means = ys.groupby(xs).mean()
            if 1 < len(means) < len(xs):
                ax.plot(means.index, means.to_numpy(), linewidth=1.2)
        if axis.log:
            log_x(ax)
        ax.set_xlabel(axis.label)
        ax.set_ylabel(Y_LABEL if k % n_cols == 0 else "")
        ax.grid(alpha=0.3)
    if len(groups) > 1 or len(stopped):
        fig.axes[0].legend(fontsize="small")
    fig.suptitle("Top-1 against each swept hyperparameter")
    return _save(fig, path)


def plot_parallel(trials: pd.DataFrame, axes: Sequence[Axis], path: Path) -> Path:
    """Parallel coordinates: one vertical axis per swept param (scaled to [0, 1] on its own scale) and
    a last one for top-1; each trial a line coloured by its top-1."""
    y = trials[TARGET].astype(float)
    scaled, ticks = [], []
    for axis in axes:
        values = axis.values(trials)
        if axis.scale == "category":
            categories = sorted(values.unique(), key=str)
            codes = values.map({c: i for i, c in enumerate(categories)}).astype(float)
            scaled.append(_unit(codes))
            ticks.append((str(categories[0]), str(categories[-1])))
            continue
        numbers = values.astype(float)
        scaled.append(_unit(np.log10(numbers) if axis.log else numbers))
        ticks.append((f"{numbers.min():.3g}", f"{numbers.max():.3g}"))
    scaled.append(_unit(y))
    ticks.append((f"{y.min():.2f}", f"{y.max():.2f}"))
    labels = [a.label for a in axes] + ["top-1"]
    matrix = np.column_stack([s.to_numpy() for s in scaled])

    fig = Figure(figsize=(1.8 * len(labels) + 2, 4.2), layout="constrained")
    ax = fig.add_subplot()
    span = (y.max() - y.min()) or 1.0
    cmap = colormaps["viridis"]
    for row, value in zip(matrix, y, strict=True):
        ax.plot(range(len(labels)), row, color=cmap((value - y.min()) / span), alpha=0.75, linewidth=1.1)
    for i, (low, high) in enumerate(ticks):
        ax.axvline(i, color="0.4", linewidth=0.8)
        ax.annotate(low, (i, -0.04), ha="center", va="top", fontsize="small")
        ax.annotate(high, (i, 1.04), ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_xlim(-0.3, len(labels) - 0.7)
    fig.colorbar(ScalarMappable(norm=Normalize(y.min(), y.max()), cmap=cmap), ax=ax, label="top-1 (%)")
    ax.set_title("Swept hyperparameters, one line per trial (log scales for LRs and 1 - momentum)")
    return _save(fig, path)


def plot_importances(importances: pd.Series, path: Path, setting: str = "") -> Path:
    """Horizontal bars of the fANOVA importances (they sum to 1)."""
    fig = Figure(figsize=(6, 0.5 * len(importances) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    ordered = importances.sort_values()
    ax.barh([str(i) for i in ordered.index], ordered.to_numpy(), color="tab:blue")
    for i, v in enumerate(ordered.to_numpy()):
        ax.annotate(f"{v:.2f}", (v, i), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize="small")
    ax.set_xlabel("importance (fANOVA, Optuna)")
    ax.set_xlim(0, max(1.0, float(ordered.max()) * 1.15))
    # Two lines: a long setting name ("automix / cifar100 / resnet18") would run past the figure.
    ax.set_title("Hyperparameter importance for top-1" + (f"\n({setting})" if setting else ""))
    return _save(fig, path)


def log_x(ax) -> None:
    """A log scale whose labels never collide: ticks at 1, 2 and 5 per decade labelled as plain numbers
    (0.005, 0.01, 0.02), minor ticks unlabelled. Matplotlib's default labels every minor tick of a range
    under a decade in `2x10^-2` form, and those overlap."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_curves(study: StudyData, path: Path) -> Path:
    """Per-epoch top-1 of the complete trials: per setting (method, dataset, ... where they vary) the
    mean over its trials, the band spanning their minimum and maximum."""
    trials = study.complete_trials
    labels = pd.Series(setting_labels(trials).to_numpy(), index=trials["run_id"].to_numpy())
    history = study.history[study.history["run_id"].isin(labels.index)]
    history = history.assign(setting=history["run_id"].map(labels))
    fig = Figure(figsize=(6.4, 4), layout="constrained")
    ax = fig.add_subplot()
    for name, rows in history.groupby("setting", sort=True):
        per_epoch = rows.groupby("epoch")["top1"].agg(["mean", "min", "max"])
        ax.plot(per_epoch.index, per_epoch["mean"], label=f"{name} ({rows['run_id'].nunique()} runs)")
        ax.fill_between(per_epoch.index, per_epoch["min"], per_epoch["max"], alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{study.experiment}: top-1 per epoch")
    return _save(fig, path)


def _unit(values: pd.Series) -> pd.Series:
    values = values.astype(float)
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else values * 0 + 0.5


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
