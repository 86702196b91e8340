"""A trainer that trains one real epoch, reports it, then raises: a failed trial on demand.

Used as ``Options(train_fn="tests.helpers.failing_train:train")`` by the tracking tests; the trial
process imports it from the repository root (on its sys.path), so it is named from there.
"""
from __future__ import annotations

from automix.train import train as real_train

ERROR = "the digits ran out (test failure after epoch 1)"


class _FailAfterFirstEpoch:
    def __init__(self, reporter):
        self.reporter = reporter

    def report(self, metrics, checkpoint_dir, artifacts) -> None:
        self.reporter.report(metrics, checkpoint_dir, artifacts)
        raise ValueError(ERROR)


def train(cfg, output_dir, *, reporter=None, resume_from=None, device=None):
    return real_train(cfg, output_dir, reporter=_FailAfterFirstEpoch(reporter), resume_from=resume_from,
                      device=device)
