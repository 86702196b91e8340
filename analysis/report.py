"""A study's report: the paper table, the sensitivity figures, per-trial curves, accuracy against
cost and the mask gallery, written to files and attached to the study's parent MLflow run (artifacts
under `analysis/`, the gallery under `gallery/`), so they show in the MLflow UI.

    python -m analysis.report --tracking-uri sqlite:///mlflow.db --experiment quickstart \
        [--out-dir analysis_output/quickstart] [--latest-launch] [--no-log]

prints the table and the paths of the files; `make quickstart` ends with it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.cli import add_study_arguments, load_from_args, run
from analysis.cost import plot_cost
from analysis.curves import plot_trial_curves
from analysis.gallery import Gallery, make_gallery
from analysis.loading import StudyData
from analysis.rendering import render
from analysis.sensitivity import SensitivityReport, analyse
from analysis.table import build_results
from analysis.tracking import connect, log_files
from automix import record

ARTIFACT_PATH = "analysis"
GALLERY_PATH = record.GALLERY_ARTIFACT_DIR


@dataclass(frozen=True)
class Report:
    """What `write_report` produced: the Markdown table, the results frame, the files written (the
    gallery among them when a trial logged mixed-sample grids) and the parent run they were logged to
    (None when not logged)."""

    table: str
    results: pd.DataFrame
    sensitivity: SensitivityReport
    files: list[Path]
    logged_to: str | None
    gallery: Gallery | None = None
    cost_figure: Path | None = None


def latest_parent(study: StudyData) -> str | None:
    """The most recent launch (parent run) of the study that has complete trials, else the most recent
    launch; None when the study has no parent run."""
    if study.parents.empty:
        return None
    with_results = study.parents[study.parents["run_id"].isin(study.complete_trials["parent_run_id"])]
    chosen = with_results if not with_results.empty else study.parents
    return str(chosen.sort_values("start_time").iloc[-1]["run_id"])


def write_report(study: StudyData, out_dir: str | Path, *, log_to_mlflow: bool = True) -> Report:
    """Write `paper_table.md`, `paper_table.csv`, the figures (`trials.png`, `cost.png`, the
    sensitivity ones), `importance.csv` for a sweep and `gallery.png` to `out_dir`; with
    `log_to_mlflow`, attach them to the study's latest parent run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = build_results(study)
    table = render(results, "md", study)
    files = [out_dir / "paper_table.md", out_dir / "paper_table.csv"]
    files[0].write_text(table)
    files[1].write_text(render(results, "csv", study))
    sensitivity = analyse(study, out_dir)
    files += [*sensitivity.figures.values(), plot_trial_curves(study, out_dir / "trials.png")]
    cost = plot_cost(study, out_dir / "cost.png")
    files += [cost] if cost else []
    if not sensitivity.importances.empty:
        files.append(out_dir / "importance.csv")
        sensitivity.importances.rename_axis("parameter").to_csv(files[-1])
    gallery = make_gallery(study, out_dir / "gallery.png")
    parent = latest_parent(study) if log_to_mlflow else None
    if parent is not None:
        client = connect(study.tracking_uri)
        log_files(client, parent, files, ARTIFACT_PATH)
        if gallery is not None:
            log_files(client, parent, [gallery.path], GALLERY_PATH)
    files += [gallery.path] if gallery else []
    return Report(table=table, results=results, sensitivity=sensitivity, files=files, logged_to=parent,
                  gallery=gallery, cost_figure=cost)


def print_report(report: Report, experiment: str) -> None:
    print(report.table)
    if report.sensitivity.note:
        print(report.sensitivity.note[0].upper() + report.sensitivity.note[1:] + ".")
    if not report.sensitivity.importances.empty:
        print("Hyperparameter importance (fANOVA):")
        for name, value in report.sensitivity.importances.items():
            print(f"  {name}: {value:.3f}")
        print()
    print("Plots:")
    for path in report.files:
        if path.suffix == ".png":
            print(f"  {path}")
    if report.gallery is None:
        print("No mask gallery: no complete trial logged a mixed-sample grid (mix/mix_epochNNNN.png).")
    print("Files:", ", ".join(str(p) for p in report.files if p.suffix != ".png"))
    if report.logged_to:
        where = f"{ARTIFACT_PATH}/" + (f" and {GALLERY_PATH}/" if report.gallery else "")
        print(f"Logged to MLflow run {report.logged_to} (experiment {experiment!r}) under artifacts {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Print a study's paper table, write its figures and gallery and log them to MLflow.",
    )
    add_study_arguments(parser)
    parser.add_argument("--out-dir", type=Path,
                        help="where to write the files (default analysis_output/EXPERIMENT)")
    parser.add_argument("--no-log", action="store_true", help="do not attach the files to the parent run")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or Path("analysis_output") / args.experiment

    def body() -> int:
        report = write_report(load_from_args(args), out_dir, log_to_mlflow=not args.no_log)
        print_report(report, args.experiment)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
