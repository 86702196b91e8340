"""What the command-line entry points of `analysis` share: the options that name a study, loading
it, and turning an `AnalysisError` into one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from analysis.errors import AnalysisError
from analysis.loading import StudyData, load_experiment


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name a study: --tracking-uri, --experiment, --latest-launch."""
    parser.add_argument("--tracking-uri", required=True, help="sqlite:///PATH.db or http://HOST:PORT")
    parser.add_argument("--experiment", required=True, help="the study's name (its MLflow experiment)")
    parser.add_argument("--latest-launch", action="store_true",
                        help="only the trials of the study's most recent launch (default: every launch)")


def load_from_args(args: argparse.Namespace) -> StudyData:
    """The study named by `add_study_arguments`' options, with its per-epoch top-1."""
    study = load_experiment(args.tracking_uri, args.experiment, history_keys=("top1",))
    return study.latest_launch() if args.latest_launch else study


def run(body: Callable[[], int]) -> int:
    """`body()`, except that an `AnalysisError` (a mistake of the user's or an unreachable store)
    prints `error: <message>` as one line on stderr and returns 2, without a traceback."""
    try:
        return body()
    except AnalysisError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
