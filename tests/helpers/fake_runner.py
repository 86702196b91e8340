"""``tune_runner.py`` with the trainer replaced by :mod:`helpers.fake_train` (``Options.train_fn``):
the same command line, the same launch, trials that fail, crash or stall on purpose."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from studyrunner.runner import run  # noqa: E402
from tune_runner import parse_args  # noqa: E402

if __name__ == "__main__":
    opts = dataclasses.replace(parse_args(sys.argv[1:]), train_fn="helpers.fake_train:train")
    sys.exit(run(opts).exit_code)
