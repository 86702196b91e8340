"""The launch's side of MLflow: open (or reopen) the parent run, hand Tune the trial callback, and
finish the parent exactly once per launch end with the runner's own trial counts.

The layout and every logged name belong to :mod:`studyrunner.parent_run`,
:mod:`studyrunner.mlflow_callback` and :mod:`automix.record`; this module only sequences them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .study import Study


@dataclass
class LaunchTracking:
    uri: str | None  # None: tracking off (benchmarks of the platform's own overhead)
    study_name: str
    client: Any = None
    experiment_id: str | None = None
    parent_run_id: str | None = None

    def where(self) -> str:
        from .uris import redact

        if self.uri is None:
            return "MLflow tracking off"
        return (f"MLflow experiment {self.study_name!r} (id {self.experiment_id}), parent run "
                f"{self.parent_run_id} at {redact(self.uri)}")

    def callbacks(self, study: Study) -> list:
        if self.uri is None:
            return []
        from .mlflow_callback import MlflowTrialCallback

        return [MlflowTrialCallback(self.uri, self.experiment_id, self.parent_run_id, study)]

    def finish(self, status: str, counts: dict[str, int], wall_time_s: float) -> list[str]:
        """End the parent run (FINISHED / FAILED / KILLED); the lines that tell a person where the runs are."""
        if self.uri is None:
            return []
        from . import parent_run, uris

        best = parent_run.finish_parent(self.client, self.parent_run_id, self.experiment_id, status=status,
                                        counts=counts, wall_time_s=wall_time_s)
        lines = [f"MLflow: experiment {self.study_name!r} (id {self.experiment_id}) at {uris.redact(self.uri)}",
                 f"  parent run {self.parent_run_id} ({status}; one child run per trial, tag trial_id)"]
        if best is not None:
            lines.append(f"  best trial {best.trial_id} (top1_summary {best.top1_summary:.2f}): "
                         f"{uris.run_url(self.uri, self.experiment_id, best.run_id)}")
        lines.append("  " + uris.ui_hint(self.uri, self.experiment_id))
        return lines


    def abort(self, status: str) -> None:
        """The launch broke off without an end to report (an error inside Ray Tune, a second Ctrl-C):
        the parent must not stay RUNNING; the counts stay unset rather than wrong."""
        if self.uri is not None:
            self.client.set_terminated(self.parent_run_id, status)


def open_parent(uri: str | None, study: Study, experiment_path: str, parent_run_id: str | None) -> LaunchTracking:
    """A new parent run, or the launch's own one reopened (``parent_run_id`` from its state file)."""
    tracking = LaunchTracking(uri, study.name)
    if uri is None:
        return tracking
    from . import parent_run

    tracking.client = parent_run.client_for(uri)
    tracking.experiment_id = parent_run.ensure_experiment(tracking.client, study.name)
    if parent_run_id:
        parent_run.reopen_parent(tracking.client, parent_run_id)
        tracking.parent_run_id = parent_run_id
    else:
        tracking.parent_run_id = parent_run.start_parent(tracking.client, tracking.experiment_id, study,
                                                         experiment_path)
    return tracking
