"""The paper's results table rebuilt from a study: measured top-1 beside the published number.

Rows are (dataset, backbone, epochs) with the backbone's parameter count; columns, per method, the
measured top-1 (mean ± std over seeds of each trial's paper summary), the published top-1 and the
difference. Where a cell holds several configurations (a sweep), it reports the configuration with
the best mean top-1 and says so in the Selection column.

    python -m analysis.paper_table --tracking-uri sqlite:///mlflow.db --experiment NAME \
        [--format md|csv|latex] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import lru_cache
from pathlib import Path

import pandas as pd

from analysis import published
from analysis.configs import config_columns, config_keys, distinct_columns, varying_columns
from analysis.errors import AnalysisError, NoResults
from analysis.loading import StudyData, load_study

FORMATS = ("md", "csv", "latex")
ROW_KEYS = ("dataset", "backbone", "epochs")
RESULT_COLUMNS = (
    "dataset", "backbone", "params_m", "epochs", "method", "top1_mean", "top1_std", "n_seeds",
    "published", "delta", "n_configs", "selection", "config", "top1_final_mean", "top1_best_mean",
    "run_ids",
)
SUMMARY_NOTE = (
    "Top-1 (%): per trial the median of its last 5 epochs (100 epochs or fewer) or last 10 (more), "
    "then mean ± std over seeds (n). Paper: analysis/reference/paper_results.csv."
)


def build_results(study: StudyData) -> pd.DataFrame:
    """One row per (dataset, backbone, epochs, method) from the study's complete trials.

    Columns (RESULT_COLUMNS): top1_mean/top1_std/n_seeds over the trials of the chosen configuration;
    published/delta against the reference (NaN where the paper has no such row); n_configs and
    selection say whether the cell was chosen among several configurations; config holds the chosen
    values of the params that vary within the cell; run_ids the trials it averages.
    """
    trials = study.complete_trials
    if trials.empty:
        skipped = ", ".join(f"{n} {why}" for why, n in study.skipped().items()) or "none logged"
        raise NoResults(
            f"study {study.experiment!r} has no trial that finished all its epochs "
            f"({len(study.trials)} trial runs; skipped: {skipped})"
        )
    # Trials a scheduler stopped early are not results, but they were configurations the search
    # tried: the Selection note counts them.
    ran = pd.concat([study.complete_trials, study.stopped_trials])
    labelled = _label_settings(ran)
    columns = distinct_columns(labelled, config_columns(labelled, study.param_columns))
    all_keys = config_keys(labelled, columns)
    rows = []
    for (dataset, backbone, epochs, method), cell in labelled.groupby([*ROW_KEYS, "method"], sort=False):
        done = cell[cell["complete"]]
        if done.empty:
            continue
        keys = all_keys.loc[done.index]
        stats = done.groupby(keys, sort=False)["top1_summary"].agg(["mean", "count"])
        best_key = stats.sort_values(["mean", "count"], ascending=False, kind="stable").index[0]
        chosen = done[keys == best_key]
        n_stopped_only = len(set(all_keys.loc[cell.index]) - set(keys))
        first = chosen.iloc[0]
        width = int(first["model.width"]) if pd.notna(first.get("model.width", pd.NA)) else 64
        top1 = chosen["top1_summary"]
        paper = published.published_top1(dataset, backbone, epochs, method)
        rows.append({
            "dataset": dataset,
            "backbone": backbone,
            "params_m": param_count_m(backbone, width),
            "epochs": int(epochs),
            "method": method,
            "top1_mean": float(top1.mean()),
            "top1_std": float(top1.std(ddof=1)) if len(top1) > 1 else float("nan"),
            "n_seeds": len(top1),
            "published": paper,
            "delta": float(top1.mean()) - paper,
            "n_configs": len(stats),
            "selection": _selection(len(stats), n_stopped_only),
            "config": {c: _plain(first[c]) for c in varying_columns(cell, columns)},
            "top1_final_mean": float(chosen["top1_final"].mean()),
            "top1_best_mean": float(chosen["top1_best"].mean()),
            "run_ids": tuple(chosen["run_id"]),
        })
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return _paper_order(results).reset_index(drop=True)


def _label_settings(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with the table's keys: dataset and backbone in the reference's names, epochs, method."""
    return trials.assign(
        dataset=_first_present(trials, published.DATASET_PARAMS).map(published.dataset_label),
        backbone=_first_present(trials, published.BACKBONE_PARAMS).map(published.backbone_label),
        epochs=trials["epochs_planned"].fillna(trials["epochs_run"]).astype(int),
        method=_first_present(trials, ("method",)).astype(str),
    )


def _selection(n_complete: int, n_stopped_only: int) -> str:
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


def paper_layout(results: pd.DataFrame) -> pd.DataFrame:
    """The table in the paper's layout, numbers unformatted: one row per (dataset, backbone, epochs),
    per method the columns `<m>`, `<m> std`, `<m> n`, `<m> paper`, `<m> delta`; then `selection`."""
    methods = _ordered_methods(results)
    out = []
    for (dataset, backbone, epochs), row in results.groupby(list(ROW_KEYS), sort=False):
        record: dict[str, object] = {
            "dataset": dataset,
            "backbone": backbone,
            "params_m": row["params_m"].iloc[0],
            "epochs": epochs,
        }
        notes = []
        for method in methods:
            hit = row[row["method"] == method]
            cell = hit.iloc[0] if len(hit) else None
            record[method] = cell["top1_mean"] if cell is not None else math.nan
            record[f"{method} std"] = cell["top1_std"] if cell is not None else math.nan
            record[f"{method} n"] = cell["n_seeds"] if cell is not None else 0
            record[f"{method} paper"] = cell["published"] if cell is not None else math.nan
            record[f"{method} delta"] = cell["delta"] if cell is not None else math.nan
            if cell is not None and cell["selection"]:
                chosen = ", ".join(f"{k}={_short(v)}" for k, v in cell["config"].items())
                notes.append(f"{method}: {cell['selection']}" + (f": {chosen}" if chosen else ""))
        record["selection"] = "; ".join(notes)
        out.append(record)
    return pd.DataFrame(out)


def render(results: pd.DataFrame, fmt: str = "md", study: StudyData | None = None) -> str:
    """The table as Markdown, CSV (numbers unformatted) or a LaTeX booktabs tabular."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    layout = paper_layout(results)
    if fmt == "csv":
        return layout.to_csv(index=False)
    header, body = _display_cells(layout, _ordered_methods(results), latex=fmt == "latex")
    notes = [SUMMARY_NOTE]
    if study is not None:
        skipped = study.skipped()
        if skipped:
            notes.append("Left out: " + ", ".join(f"{n} {why} trial(s)" for why, n in skipped.items()) + ".")
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    lines = [
        r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 3) + "l}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(cells) + r" \\" for cells in body),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n" + "\n".join(f"% {_tex_escape(n)}" for n in notes) + "\n"


def _display_cells(
    layout: pd.DataFrame, methods: list[str], *, latex: bool
) -> tuple[list[str], list[list[str]]]:
    esc = _tex_escape if latex else (lambda s: s.replace("|", "\\|"))
    pm, delta = (r"$\pm$", r"$\Delta$") if latex else ("±", "Δ")
    header = ["Dataset", "Backbone", "Params (M)", "Epochs"]
    for m in methods:
        header += [esc(m), f"{esc(m)} (paper)", f"{esc(m)} {delta}"]
    header.append("Selection")
    body = []
    for _, r in layout.iterrows():
        cells = [esc(str(r["dataset"])), esc(str(r["backbone"])), _num(r["params_m"]), str(r["epochs"])]
        for m in methods:
            measured = _num(r[m])
            if measured and r[f"{m} n"] > 1:
                measured += f" {pm} {_num(r[f'{m} std'])} (n={r[f'{m} n']})"
            cells += [measured, _num(r[f"{m} paper"]), _num(r[f"{m} delta"], signed=True)]
        cells.append(esc(r["selection"]))
        body.append(cells)
    return header, body


def _num(value: object, *, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):+.2f}" if signed else f"{float(value):.2f}"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                          ("_", r"\_"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


def _first_present(trials: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    """Per trial, the value of the first of `names` it has (as text), else "unknown"."""
    value = pd.Series(pd.NA, index=trials.index, dtype=object)
    for name in reversed(names):
        if name in trials:
            value = trials[name].astype(object).where(trials[name].notna()).combine_first(value)
    return value.fillna("unknown").astype(str)


def _plain(value: object) -> object:
    """A param value as a plain Python scalar (for printing and JSON)."""
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _ordered_methods(results: pd.DataFrame) -> list[str]:
    known = published.method_order()
    present = list(dict.fromkeys(results["method"]))
    return [m for m in known if m in present] + sorted(m for m in present if m not in known)


def _paper_order(results: pd.DataFrame) -> pd.DataFrame:
    datasets = {d: i for i, d in enumerate(published.DATASET_ORDER)}
    methods = {m: i for i, m in enumerate(_ordered_methods(results))}
    key = pd.DataFrame({
        "d": results["dataset"].map(datasets).fillna(len(datasets)),
        "dn": results["dataset"],
        "p": results["params_m"].fillna(float("inf")),
        "b": results["backbone"],
        "e": results["epochs"],
        "m": results["method"].map(methods),
    })
    return results.loc[key.sort_values(list(key.columns), kind="stable").index]


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name a study: shared by the command-line entry points of `analysis`."""
    parser.add_argument("--tracking-uri", required=True, help="sqlite:///PATH.db or http://HOST:PORT")
    parser.add_argument("--experiment", required=True, help="the study's name (its MLflow experiment)")
    parser.add_argument("--latest-launch", action="store_true",
                        help="only the trials of the study's most recent launch (default: every launch)")


def load_from_args(args: argparse.Namespace) -> StudyData:
    """The study named by `add_study_arguments`' options, with its per-epoch top-1."""
    study = load_study(args.tracking_uri, args.experiment, history_keys=("top1",))
    return study.latest_launch() if args.latest_launch else study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.paper_table",
        description="Rebuild the paper's results table from a study's MLflow runs.",
    )
    add_study_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="md")
    parser.add_argument("--out", type=Path, help="write the table here instead of to stdout")
    args = parser.parse_args(argv)
    try:
        study = load_from_args(args)
        text = render(build_results(study), args.format, study)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
