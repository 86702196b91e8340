"""The paper's results table rebuilt from a study: measured top-1 beside the published number.

    python -m analysis.paper_table --tracking-uri sqlite:///mlflow.db --experiment NAME \
        [--format md|csv|latex] [--out FILE] [--latest-launch]

Computing the table: `analysis.table`; laying it out as the paper does: `analysis.layout`; as text:
`analysis.rendering`. The names are re-exported here for callers of the former single module.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.cli import add_study_arguments, load_from_args, run
from analysis.layout import paper_layout
from analysis.rendering import FORMATS, render
from analysis.table import build_results, param_count_m

__all__ = ["FORMATS", "build_results", "main", "paper_layout", "param_count_m", "render"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.paper_table",
        description="Rebuild the paper's results table from a study's MLflow runs.",
    )
    add_study_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="md")
    parser.add_argument("--out", type=Path, help="write the table here instead of to stdout")
    args = parser.parse_args(argv)

    def body() -> int:
        study = load_from_args(args)
        text = render(build_results(study), args.format, study)
        if args.out is None:
            sys.stdout.write(text)
            return 0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
