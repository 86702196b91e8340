"""The paper's results table, computed: one row per (dataset, backbone, epochs, method) cell.

Per cell: the measured top-1 (mean ± std over seeds of each trial's `top1_summary`), the published
top-1 and the difference, and the cost (device-hours summed over every trial that ran in the cell:
all configurations the sweep tried, stopped-early ones included, i.e. what the cell cost to produce).
Where a cell holds several configurations (a sweep), it reports the configuration with the best mean
top-1 and says so in `selection`. Trials of `--smoke-test` launches (`smoke`) never share a cell with
real ones: their rows carry `smoke = True`, so layouts and renderings can mark them.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from analysis import published
from analysis.configs import config_columns, config_keys, distinct_columns, varying_columns
from analysis.errors import NoResults
from analysis.loading import StudyData
from analysis.runs import NEEDS
from automix import record

ROW_KEYS = ("dataset", "backbone", "epochs", "smoke")
RESULT_COLUMNS = (
    "dataset", "backbone", "params_m", "epochs", "smoke", "method", "top1_mean", "top1_std", "n_seeds",
    "published", "delta", "device_hours", "n_trials", "n_configs", "selection", "config",
    "top1_final_mean", "top1_best_mean", "run_ids",
)


def build_results(study: StudyData) -> pd.DataFrame:
    """One row per (dataset, backbone, epochs, smoke, method) from the study's complete trials.

    Columns (RESULT_COLUMNS): top1_mean/top1_std/n_seeds over the trials of the chosen configuration;
    published/delta against the reference (NaN where the paper has no such row); device_hours and
    n_trials over every trial that ran in the cell; n_configs and selection say whether the cell was
    chosen among several configurations; config holds the chosen values of the params that vary
    within the cell; run_ids the trials it averages. Raises `NoResults` saying what the store held
    and what a result needs when no trial is complete.
    """
    if study.complete_trials.empty:
        raise NoResults(no_results_message(study))
    # Trials a scheduler stopped early are not results, but they were configurations the search
    # tried (and cost device time): the Selection note and the cost count them.
    ran = label_settings(pd.concat([study.complete_trials, study.stopped_trials]))
    columns = distinct_columns(ran, config_columns(ran, study.param_columns))
    all_keys = config_keys(ran, columns)
    rows = [
        _cell(cell, all_keys, columns)
        for _, cell in ran.groupby([*ROW_KEYS, "method"], sort=False)
        if cell["complete"].any()
    ]
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return paper_order(results).reset_index(drop=True)


def no_results_message(study: StudyData) -> str:
    skipped = ", ".join(f"{n} {why}" for why, n in study.skipped().items()) or "none logged"
    message = (f"study {study.experiment!r} has no trial that finished all its epochs "
               f"({len(study.trials)} trial runs; skipped: {skipped})")
    unusable = {"unusable", f"no {record.TOP1}"} & set(study.skipped())
    if unusable or study.trials.empty:
        message += f". Found {study.found}. To be tabulated, {NEEDS}"
    return message


def _cell(cell: pd.DataFrame, all_keys: pd.Series, columns: list[str]) -> dict[str, object]:
    done = cell[cell["complete"]]
    keys = all_keys.loc[done.index]
    stats = done.groupby(keys, sort=False)["top1_summary"].agg(["mean", "count"])
    best_key = stats.sort_values(["mean", "count"], ascending=False, kind="stable").index[0]
    chosen = done[keys == best_key]
    n_stopped_only = len(set(all_keys.loc[cell.index]) - set(keys))
    first = chosen.iloc[0]
    width = int(first["model.width"]) if pd.notna(first.get("model.width", pd.NA)) else 64
    top1 = chosen["top1_summary"]
    dataset, backbone, method = first["dataset"], first["backbone"], first["method"]
    epochs = int(first["epochs"])
    paper = published.published_top1(dataset, backbone, epochs, method)
    return {
        "dataset": dataset,
        "backbone": backbone,
        "params_m": param_count_m(backbone, width),
        "epochs": epochs,
        "smoke": bool(first["smoke"]),
        "method": method,
        "top1_mean": float(top1.mean()),
        "top1_std": float(top1.std(ddof=1)) if len(top1) > 1 else float("nan"),
        "n_seeds": len(top1),
        "published": paper,
        "delta": float(top1.mean()) - paper,
        "device_hours": float(cell[record.DEVICE_HOURS].sum(min_count=1)),
        "n_trials": len(cell),
        "n_configs": len(stats),
        "selection": selection_note(len(stats), n_stopped_only),
        "config": {c: _plain(first[c]) for c in varying_columns(cell, columns)},
        "top1_final_mean": float(chosen["top1_final"].mean()),
        "top1_best_mean": float(chosen["top1_best"].mean()),
        "run_ids": tuple(chosen["run_id"]),
    }


def label_settings(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with the table's keys: dataset and backbone in the reference's names, epochs, method."""
    return trials.assign(
        dataset=_text(trials, record.DATASET).map(published.dataset_label),
        backbone=_text(trials, record.BACKBONE).map(published.backbone_label),
        epochs=trials["epochs_planned"].fillna(trials["epochs_run"]).astype(int),
        method=_text(trials, record.METHOD),
        smoke=trials["smoke"].astype(bool),
    )


def selection_note(n_complete: int, n_stopped_only: int) -> str:
    """The Selection note of a cell: how many configurations it was chosen from."""
    if n_complete > 1:
        more = f", {n_stopped_only} more stopped early" if n_stopped_only else ""
        return f"best of {n_complete} configs by mean top-1{more}"
    if n_stopped_only:
        return f"only 1 of {1 + n_stopped_only} configs ran all epochs ({n_stopped_only} stopped early)"
    return ""


@lru_cache(maxsize=None)
def param_count_m(backbone: str, width: int = 64) -> float:
    """Parameters of the backbone without its classifier head, in millions (NaN if unknown).

    Counted from the model by `automix.backbones.backbone_param_count`, imported here because it
    brings in torch, which only this column needs.
    """
    try:
        from automix.backbones import backbone_param_count
    except ImportError:
        return float("nan")
    try:
        return backbone_param_count(backbone, width=width) / 1e6
    except (ValueError, KeyError):
        return float("nan")


def ordered_methods(results: pd.DataFrame) -> list[str]:
    """Methods in the paper's order (AutoMix last), then any others alphabetically."""
    known = published.method_order()
    present = list(dict.fromkeys(results["method"]))
    return [m for m in known if m in present] + sorted(m for m in present if m not in known)


def paper_order(results: pd.DataFrame) -> pd.DataFrame:
    datasets = {d: i for i, d in enumerate(published.DATASET_ORDER)}
    methods = {m: i for i, m in enumerate(ordered_methods(results))}
    key = pd.DataFrame({
        "d": results["dataset"].map(datasets).fillna(len(datasets)),
        "dn": results["dataset"],
        "p": results["params_m"].fillna(float("inf")),
        "b": results["backbone"],
        "e": results["epochs"],
        "s": results["smoke"],
        "m": results["method"].map(methods),
    })
    return results.loc[key.sort_values(list(key.columns), kind="stable").index]


def _text(trials: pd.DataFrame, name: str) -> pd.Series:
    """Per trial, the value of param `name` as text, "unknown" where it is missing."""
    if name not in trials:
        return pd.Series("unknown", index=trials.index)
    values = trials[name].astype(object)
    return values.where(values.notna(), "unknown").astype(str)


def _plain(value: object) -> object:
    """A param value as a plain Python scalar (for printing and JSON)."""
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value
