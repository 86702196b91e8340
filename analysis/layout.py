"""The results laid out as the paper's table: one row per (dataset, backbone, epochs), methods as
columns. Numbers stay unformatted here; `analysis.rendering` turns them into text."""

from __future__ import annotations

import math

import pandas as pd

from analysis.table import ROW_KEYS, ordered_methods

# Per method, the layout's columns: `<m>` is the measured mean; the others are `<m> <suffix>`.
METHOD_FIELDS = {"std": "top1_std", "n": "n_seeds", "paper": "published", "delta": "delta",
                 "device_hours": "device_hours"}
SMOKE_NOTE = "smoke test: not a result"


def paper_layout(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, backbone, epochs, smoke): `dataset`, `backbone`, `params_m`, `epochs`,
    per method `<m>`, `<m> std`, `<m> n`, `<m> paper`, `<m> delta`, `<m> device_hours`; then
    `selection` (how sweep cells were chosen), `smoke` and `note` (smoke-test rows say so)."""
    methods = ordered_methods(results)
    out = []
    for (dataset, backbone, epochs, smoke), row in results.groupby(list(ROW_KEYS), sort=False):
        record: dict[str, object] = {
            "dataset": dataset, "backbone": backbone, "params_m": row["params_m"].iloc[0], "epochs": epochs,
        }
        notes = []
        for method in methods:
            hit = row[row["method"] == method]
            cell = hit.iloc[0] if len(hit) else None
            record[method] = cell["top1_mean"] if cell is not None else math.nan
            for suffix, field in METHOD_FIELDS.items():
                empty = 0 if suffix == "n" else math.nan
                record[f"{method} {suffix}"] = cell[field] if cell is not None else empty
            if cell is not None and cell["selection"]:
                chosen = ", ".join(f"{k}={_short(v)}" for k, v in cell["config"].items())
                notes.append(f"{method}: {cell['selection']}" + (f": {chosen}" if chosen else ""))
        record["selection"] = "; ".join(notes)
        record["smoke"] = bool(smoke)
        record["note"] = SMOKE_NOTE if smoke else ""
        out.append(record)
    return pd.DataFrame(out)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
