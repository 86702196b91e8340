"""``python -m automix.train``: one run from the command line.

Every user mistake (a bad or missing config, a YAML syntax error, an output folder that is a file or
cannot be written, a folder that already holds a run, unreadable data, a non-finite loss) ends with
exit code 2 and one line ``error: ...`` naming the fix, never a traceback; a tracking store that does
not answer ends with 3; Ctrl-C with 130 and the command that resumes the run."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable

import yaml

from .checkpoint import STATE_FILE
from .config import ConfigError, RunConfig, load_config
from .data import DataError
from .loop import CHECKPOINT_DIR, METRICS_FILE
from .stepper import NonFiniteLossError

EXIT_USAGE, EXIT_TRACKING, EXIT_INTERRUPTED = 2, 3, 130


class UsageError(ValueError):
    """A mistake in the command line itself (the output folder, conflicting flags)."""


# FileNotFoundError: a file the config names is missing; yaml.YAMLError: in case load_config lets one by.
USER_ERRORS = (ConfigError, DataError, NonFiniteLossError, UsageError, FileNotFoundError, yaml.YAMLError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other mistake (argparse prints the usage too)
        print(f"error: {message} (see python -m automix.train --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m automix.train", description="Train one AutoMix or baseline run.")
    p.add_argument("config", nargs="?", help="YAML run config (defaults apply to missing keys)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mix.alpha=1.0 (repeatable)")
    p.add_argument("--output-dir", required=True, help="where metrics.jsonl, config.yaml and checkpoint/ go")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its checkpoint")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the run already in OUTPUT_DIR (metrics, checkpoint, pictures) and start anew")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="also record the run in MLflow (sqlite:///mlflow.db or http://HOST:PORT)")
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment of the tracked run (default automix-runs)")
    return p.parse_args(argv)


def main(argv: list[str] | None, train: Callable[..., list[dict]]) -> int:
    """The command line around ``train`` (:func:`automix.train.train`, passed in so that this module
    does not import the module whose ``main`` calls it)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.output_dir)
    main_rank = int(os.environ.get("RANK", 0)) == 0  # torchrun: only rank 0 owns the folder and tracker
    tracker = None
    try:
        cfg = _load(args, out)
        if main_rank:
            prepare_output_dir(out, resume=args.resume, overwrite=args.overwrite)
            if args.tracking_uri is not None or args.experiment is not None:
                tracker = _open_tracker(args, cfg, out)
        history = train(cfg, out, reporter=tracker, resume_from=out / CHECKPOINT_DIR if args.resume else None)
    except _TrackingError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_TRACKING
    except KeyboardInterrupt:
        done = len(_history_so_far(out))
        _close(tracker, "KILLED", out, error="interrupted (Ctrl-C)")
        print(f"interrupted after {done} finished epoch(s); continue with: python -m automix.train "
              f"--output-dir {out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        _close(tracker, "FAILED", out, error=_one_line(exc))
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BaseException:  # a bug: the traceback is what a person needs, here and in the tracked run
        _close(tracker, "FAILED", out, error=traceback.format_exc())
        raise
    if tracker is not None:
        tracker.close("FINISHED", history)
    if history and main_rank:
        last = history[-1]
        print(json.dumps({"epoch": last["epoch"], "top1": last["top1"], "top1_q": last["top1_q"]}))
    return 0


def _load(args: argparse.Namespace, out: Path) -> RunConfig:
    if not args.resume:
        return load_config(args.config, args.overrides)
    saved = out / "config.yaml"
    if not saved.is_file():
        raise UsageError(f"--resume: {saved} does not exist, so {out} holds no run to continue; "
                         f"run without --resume to start one")
    return load_config(saved, args.overrides)


def prepare_output_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that ``out`` can hold this run, create it, and (``overwrite``) clear an old run in it."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir {out} is a file; name a folder (it is created if missing)")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UsageError(f"--output-dir {out} cannot be created: {blocker} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise UsageError(f"--output-dir {out} is not writable ({exc.strerror or exc}); choose another folder") from None
    has_run = (out / CHECKPOINT_DIR / STATE_FILE).is_file() or _nonempty(out / METRICS_FILE)
    if resume:
        if not (out / CHECKPOINT_DIR / STATE_FILE).is_file():
            raise UsageError(f"--resume: {out / CHECKPOINT_DIR / STATE_FILE} does not exist (the run ended before "
                             f"its first epoch); start it again with --overwrite")
        return
    if has_run and not overwrite:
        raise UsageError(f"{out} already holds a run (metrics.jsonl, checkpoint/): pass --resume to continue "
                         f"it, --overwrite to start it again, or choose another --output-dir")
    if overwrite:
        clear_run(out)


def clear_run(out: Path) -> None:
    """Delete what a run writes (and nothing else a person may have put there)."""
    for name in (METRICS_FILE, "config.yaml"):
        (out / name).unlink(missing_ok=True)
    for picture in out.glob("mix_epoch*.png"):
        picture.unlink()
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


class _TrackingError(Exception):
    """The tracking store cannot be used (exit 3)."""


def _open_tracker(args: argparse.Namespace, cfg: RunConfig, out: Path):
    # Imported here: the automix package must work without MLflow (and the study platform) installed.
    try:
        from studyrunner.single_run import open_tracker
        from studyrunner.uris import TrackingUnavailable
    except ImportError as exc:
        raise _TrackingError(f"--tracking-uri needs the study platform and MLflow ({exc}); "
                             f"install the project with its dependencies or drop --tracking-uri") from None
    try:
        # A fresh or --overwrite run gets a new MLflow run; --resume continues the one it had.
        return open_tracker(args.tracking_uri, args.experiment, cfg, out, resume=args.resume)
    except TrackingUnavailable as exc:
        raise _TrackingError(str(exc)) from None


def _close(tracker, status: str, out: Path, error: str) -> None:
    if tracker is None:
        return
    try:
        tracker.close(status, _history_so_far(out), error=error)
    except Exception as exc:  # noqa: BLE001 - the run's own error is the one to show
        logging.getLogger("automix").warning("could not close the tracked run: %s", exc)


def _history_so_far(out: Path) -> list[dict]:
    path = out / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
