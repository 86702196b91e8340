"""A study's report: the paper table and the sensitivity figures, written to files and attached to
the study's parent MLflow run (artifacts under `analysis/`), so they show in the MLflow UI.

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

from analysis.errors import AnalysisError
from analysis.loading import StudyData
from analysis.paper_table import add_study_arguments, build_results, load_from_args, render
from analysis.sensitivity import SensitivityReport, analyse
from analysis.tracking import connect, log_files

ARTIFACT_PATH = "analysis"


@dataclass(frozen=True)
class Report:
    """What `write_report` produced: the Markdown table, the results frame, the files written and
    the parent run they were logged to (None when not logged)."""

    table: str
    results: pd.DataFrame
    sensitivity: SensitivityReport
    files: list[Path]
    logged_to: str | None


def latest_parent(study: StudyData) -> str | None:
    """The most recent launch (parent run) of the study that has complete trials, else the most recent
    launch; None when the study has no parent run."""
    if study.parents.empty:
        return None
    with_results = study.parents[study.parents["run_id"].isin(study.complete_trials["parent_run_id"])]
    chosen = with_results if not with_results.empty else study.parents
    return str(chosen.sort_values("start_time").iloc[-1]["run_id"])


def write_report(study: StudyData, out_dir: str | Path, *, log_to_mlflow: bool = True) -> Report:
    """Write `paper_table.md`, `paper_table.csv`, the figures and (for a sweep) `importance.csv` to
    `out_dir`; with `log_to_mlflow`, attach them to the study's latest parent run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = build_results(study)
    table = render(results, "md", study)
    files = [out_dir / "paper_table.md", out_dir / "paper_table.csv"]
    files[0].write_text(table)
    files[1].write_text(render(results, "csv", study))
    sensitivity = analyse(study, out_dir)
    files += list(sensitivity.figures.values())
    if not sensitivity.importances.empty:
        files.append(out_dir / "importance.csv")
        sensitivity.importances.rename_axis("parameter").to_csv(files[-1])
    parent = latest_parent(study) if log_to_mlflow else None
    if parent is not None:
        log_files(connect(study.tracking_uri), parent, files, ARTIFACT_PATH)
    return Report(table=table, results=results, sensitivity=sensitivity, files=files, logged_to=parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Print a study's paper table, write its sensitivity plots and log both to MLflow.",
    )
    add_study_arguments(parser)
    parser.add_argument("--out-dir", type=Path,
                        help="where to write the files (default analysis_output/EXPERIMENT)")
    parser.add_argument("--no-log", action="store_true", help="do not attach the files to the parent run")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or Path("analysis_output") / args.experiment
    try:
        study = load_from_args(args)
        report = write_report(study, out_dir, log_to_mlflow=not args.no_log)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.table)
    if not report.sensitivity.importances.empty:
        print("Hyperparameter importance (fANOVA):")
        for name, value in report.sensitivity.importances.items():
            print(f"  {name}: {value:.3f}")
        print()
    print("Plots:")
    for path in report.sensitivity.figures.values():
        print(f"  {path}")
    print("Files:", ", ".join(str(p) for p in report.files if p.suffix != ".png"))
    if report.logged_to:
        print(f"Logged to MLflow run {report.logged_to} (experiment {args.experiment!r}) "
              f"under artifacts {ARTIFACT_PATH}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
