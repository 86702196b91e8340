"""Errors the analysis layer reports to a person: the message says what is wrong and what to check.

The command-line entry points print these to stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations


class AnalysisError(Exception):
    """Bad input to the analysis (a store, an experiment, a study): the message is for the user."""


class TrackingUnavailable(AnalysisError):
    """The tracking URI names no reachable store (no server answers, no database file)."""


class ExperimentNotFound(AnalysisError):
    """The tracking store holds no (active) experiment of that name."""


class NoResults(AnalysisError):
    """The study holds no trial that finished all its epochs, so there is nothing to tabulate."""
