"""The sweep figures read as a person sees them: no tick label on top of another on a log axis, a
title inside its figure, and no fANOVA importances made up from a handful of trials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analysis.importance import Axis
from analysis.sensitivity import MIN_IMPORTANCE_TRIALS, plot_effects, plot_importances


def _quickstart_like(n: int) -> pd.DataFrame:
    """Trials as the quickstart samples them: Mix Block LR and 1 - momentum each span about a decade."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n)],
        "mix.alpha": 10 ** rng.uniform(-0.7, 0.7, n),
        "optim.mixblock_lr": 10 ** rng.uniform(-2.7, -1.3, n),
        "automix.momentum": rng.uniform(0.85, 0.97, n),
        "top1_summary": rng.normal(80, 2, n),
    })


def _drawn(figure_path, monkeypatch):
    """Capture the Figure that a plot function saves, drawn, with its renderer."""
    import matplotlib.figure

    seen = {}
    original = matplotlib.figure.Figure.savefig

    def savefig(self, *args, **kwargs):
        seen["fig"] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


def _overlaps(boxes) -> list[tuple[str, str]]:
    boxes = sorted(boxes, key=lambda b: b[1].x0)
    return [(a[0], b[0]) for a, b in zip(boxes, boxes[1:]) if a[1].x1 > b[1].x0]


def test_log_axis_tick_labels_do_not_overlap(tmp_path, monkeypatch):
    seen = _drawn(tmp_path, monkeypatch)
    axes = [Axis("mix.alpha", "linear"), Axis("optim.mixblock_lr", "log"), Axis("automix.momentum", "log1m")]
    plot_effects(_quickstart_like(12), axes, tmp_path / "sensitivity.png")
    fig = seen["fig"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax, axis in zip(fig.axes, axes):
        labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
                  if t.get_visible() and t.get_text() and
                  ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(labels) >= 2, f"{axis.label}: fewer than two labelled ticks"
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
        assert not _overlaps(boxes), f"{axis.label}: tick labels overlap: {_overlaps(boxes)}"


def test_the_importance_title_fits_in_its_figure(tmp_path, monkeypatch):
    seen = _drawn(tmp_path, monkeypatch)
    importances = pd.Series({"mix.alpha": 0.5, "optim.mixblock_lr": 0.3, "1 - automix.momentum": 0.2})
    plot_importances(importances, tmp_path / "importance.png", "automix / cifar100 / resnet18, 12 trials")
    fig = seen["fig"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    title = fig.axes[0].title.get_window_extent(renderer)
    width = fig.bbox.width
    assert title.x0 >= 0 and title.x1 <= width, f"title spans {title.x0:.0f}..{title.x1:.0f} of {width:.0f} px"


@pytest.mark.parametrize("n, computed", [(MIN_IMPORTANCE_TRIALS - 1, False), (MIN_IMPORTANCE_TRIALS, True)])
def test_fanova_needs_enough_trials_and_says_so(tmp_path, n, computed):
    from analysis.sensitivity import analyse
    from analysis.synthetic import StudyWriter, TrialSpec, trial_params
    from analysis import load_experiment

    writer = StudyWriter.in_new_store(tmp_path, "few")
    parent = writer.start_parent()
    trials = _quickstart_like(n)
    for _, t in trials.iterrows():
        params = trial_params(method="automix", backbone="resnet18", dataset="digits", epochs=4, seed=0,
                              alpha=t["mix.alpha"], mixblock_lr=t["optim.mixblock_lr"],
                              momentum=t["automix.momentum"])
        top = float(t["top1_summary"])
        writer.add_trial(parent, TrialSpec(params, [top - 1, top, top, top]))
    writer.finish_parent(parent)
    report = analyse(load_experiment(writer.tracking_uri, "few"), tmp_path / "out")
    assert (not report.importances.empty) is computed
    assert ("importance" in report.figures) is computed
    if computed:
        assert report.note == ""
    else:
        assert f"{n} complete trial" in report.note and str(MIN_IMPORTANCE_TRIALS) in report.note
