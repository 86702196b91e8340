"""The paper's table as text: Markdown, CSV (numbers unformatted) or a LaTeX booktabs tabular."""

from __future__ import annotations

import pandas as pd

from analysis.layout import SMOKE_NOTE, paper_layout
from analysis.loading import StudyData
from analysis.table import ordered_methods
from automix import record

FORMATS = ("md", "csv", "latex")
SUMMARY_NOTE = (
    "Top-1 (%): per trial the median of its last 5 epochs (100 epochs or fewer) or last 10 (more), "
    "then mean ± std over seeds (n). Paper: analysis/reference/paper_results.csv."
)
COST_NOTE = (
    "Device-h: device-hours (GPU-hours, or CPU-core-hours on CPUs) summed over every trial that ran in "
    "the cell, all configurations of a sweep and trials stopped early included."
)
SMOKE_LINE = (
    f"Rows marked '{SMOKE_NOTE}' come from --smoke-test launches (tag {record.TAG_SMOKE}=true: tiny or "
    "synthetic data, few steps); their top-1 is not comparable with the paper's."
)


def render(results: pd.DataFrame, fmt: str = "md", study: StudyData | None = None) -> str:
    """The table as Markdown, CSV (numbers unformatted) or a LaTeX booktabs tabular, with notes."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    layout = paper_layout(results)
    if fmt == "csv":
        return layout.to_csv(index=False)
    header, body = _display_cells(layout, ordered_methods(results), latex=fmt == "latex")
    notes = table_notes(results, study)
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    lines = [
        r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 4) + "ll}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(cells) + r" \\" for cells in body),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n" + "\n".join(f"% {tex_escape(n)}" for n in notes) + "\n"


def table_notes(results: pd.DataFrame, study: StudyData | None) -> list[str]:
    """The lines under the table: how numbers were made, smoke rows, trials left out."""
    notes = [SUMMARY_NOTE, COST_NOTE]
    if results["smoke"].any():
        notes.append(SMOKE_LINE)
    if study is not None:
        skipped = study.skipped()
        if skipped:
            notes.append("Left out: " + ", ".join(f"{n} {why} trial(s)" for why, n in skipped.items()) + ".")
    return notes


def _display_cells(
    layout: pd.DataFrame, methods: list[str], *, latex: bool
) -> tuple[list[str], list[list[str]]]:
    esc = tex_escape if latex else (lambda s: s.replace("|", "\\|"))
    pm, delta = (r"$\pm$", r"$\Delta$") if latex else ("±", "Δ")
    header = ["Dataset", "Backbone", "Params (M)", "Epochs"]
    for m in methods:
        header += [esc(m), f"{esc(m)} (paper)", f"{esc(m)} {delta}", f"{esc(m)} (device-h)"]
    header += ["Selection", "Note"]
    body = []
    for _, r in layout.iterrows():
        cells = [esc(str(r["dataset"])), esc(str(r["backbone"])), _num(r["params_m"]), str(r["epochs"])]
        for m in methods:
            measured = _num(r[m])
            if measured and r[f"{m} n"] > 1:
                measured += f" {pm} {_num(r[f'{m} std'])} (n={r[f'{m} n']})"
            cells += [measured, _num(r[f"{m} paper"]), _num(r[f"{m} delta"], signed=True),
                      _cost(r[f"{m} device_hours"])]
        cells += [esc(r["selection"]), esc(r["note"])]
        body.append(cells)
    return header, body


def _num(value: object, *, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):+.2f}" if signed else f"{float(value):.2f}"


def _cost(value: object) -> str:
    # Three significant digits: a CPU smoke run costs thousandths of a device-hour, a paper run hundreds.
    return "" if value is None or pd.isna(value) else f"{float(value):.3g}"


def tex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                          ("_", r"\_"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text
