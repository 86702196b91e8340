"""The mask gallery: the last mixed-sample grid of the best trials, side by side in one image.

The trainer logs a grid of mixed samples every few epochs as the artifact `mix/mix_epochNNNN.png` of
each trial; the last one (highest N) shows what the mixing ended up doing. Each panel is labelled with
the trial's run name and its top1_summary.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from analysis.curves import trials_by_top1
from analysis.loading import StudyData
from analysis.tracking import connect, download_artifact, list_artifact_paths
from automix import record

GRID_NAME = re.compile(r"mix_epoch(\d+)\.png$")
DPI = 110


@dataclass(frozen=True)
class GalleryEntry:
    run_id: str
    run_name: str
    top1_summary: float
    artifact: str  # e.g. mix/mix_epoch0100.png


@dataclass(frozen=True)
class Gallery:
    path: Path
    entries: list[GalleryEntry]


def last_grid(client: MlflowClient, run_id: str) -> str | None:
    """The run's mixed-sample grid of the highest epoch (`mix/mix_epochNNNN.png`), or None."""
    grids = [(int(m.group(1)), p) for p in list_artifact_paths(client, run_id, record.MIX_ARTIFACT_DIR)
             if (m := GRID_NAME.search(p))]
    return max(grids)[1] if grids else None


def gallery_entries(study: StudyData, client: MlflowClient, *, max_trials: int = 6) -> list[GalleryEntry]:
    """Up to `max_trials` of the best complete trials (by top1_summary) that logged a grid."""
    entries = []
    for _, trial in trials_by_top1(study).iterrows():
        artifact = last_grid(client, trial["run_id"])
        if artifact is not None:
            entries.append(GalleryEntry(trial["run_id"], str(trial["run_name"]),
                                        float(trial["top1_summary"]), artifact))
        if len(entries) == max_trials:
            break
    return entries


def make_gallery(study: StudyData, path: str | Path, *, max_trials: int = 6) -> Gallery | None:
    """Write the gallery PNG to `path`; None when no complete trial logged a mixed-sample grid."""
    client = connect(study.tracking_uri)
    entries = gallery_entries(study, client, max_trials=max_trials)
    if not entries:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        images = [imread(download_artifact(client, e.run_id, e.artifact, Path(tmp) / str(i)))
                  for i, e in enumerate(entries)]
    aspect = max(image.shape[0] / image.shape[1] for image in images)  # height / width of the grids
    fig = Figure(figsize=(3.6 * len(entries), 3.6 * aspect + 1.0), layout="constrained")
    for i, (entry, image) in enumerate(zip(entries, images, strict=True)):
        ax = fig.add_subplot(1, len(entries), i + 1)
        ax.imshow(image)
        ax.set_axis_off()
        epoch = int(GRID_NAME.search(entry.artifact).group(1))
        ax.set_title(f"{_wrap(entry.run_name)}\ntop1_summary {entry.top1_summary:.2f} · epoch {epoch}",
                     fontsize="small")
    fig.suptitle(f"{study.experiment}: last mixed samples of the best trials")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return Gallery(path, entries)


def _wrap(name: str, width: int = 34) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def entries_frame(gallery: Gallery | None) -> pd.DataFrame:
    """The gallery's panels as a table (for notebooks and reports)."""
    rows = [vars(e) for e in gallery.entries] if gallery else []
    return pd.DataFrame(rows, columns=["run_id", "run_name", "top1_summary", "artifact"])
