"""Loading and the paper table against a store filled through the MLflow API with known runs.

Every number the table shows is recomputed here from the logged sequences (independently of
`analysis.summary`), the published column from the reference CSV read with the csv module.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import build_results, load_experiment, paper_layout, render
from analysis.paper_table import main as paper_table_main
from analysis.published import REFERENCE_CSV
from analysis.summary import paper_summary, summary_window
from analysis.synthetic import StudyWriter, TrialSpec, trial_params

STUDY = "known"


def _seq(n: int, start: float, slope: float, wiggle: float) -> list[float]:
    """n epochs of a rising top-1 with an alternating wiggle, so median-of-last, final and best differ."""
    return [round(start + slope * e + (wiggle if e % 2 else -wiggle), 4) for e in range(n)]


# (name, params, top1 per epoch, status, logs top1_final/top1_best, launch index)
KNOWN = [
    ("am-s0", dict(method="automix", backbone="resnet18", dataset="cifar100", epochs=8, seed=0),
     [10, 20, 30, 40, 50, 45, 60, 55], "FINISHED", True, 0),
    ("am-s1", dict(method="automix", backbone="resnet18", dataset="cifar100", epochs=8, seed=1),
     [12, 22, 33, 41, 52, 49, 58, 57], "FINISHED", True, 0),
    ("am-s2", dict(method="automix", backbone="resnet18", dataset="cifar100", epochs=8, seed=2),
     [11, 21, 31, 44, 47, 51, 61, 50], "FINISHED", True, 1),
    ("mx-s0", dict(method="mixup", backbone="resnet18", dataset="cifar100", epochs=8, seed=0),
     [9, 19, 29, 39, 43, 47, 46, 48], "FINISHED", True, 0),
    ("mx-s1", dict(method="mixup", backbone="resnet18", dataset="cifar100", epochs=8, seed=1),
     [8, 18, 28, 38, 44, 42, 49, 45], "FINISHED", True, 1),
    ("van-digits", dict(method="vanilla", backbone="resnet18", dataset="digits", epochs=8, seed=0),
     [50, 60, 70, 80, 85, 90, 88, 91], "FINISHED", True, 0),
    ("am-in1k", dict(method="automix", backbone="resnet50", dataset="imagenet", epochs=100, seed=0),
     _seq(100, 30.0, 0.48, 0.3), "FINISHED", True, 0),
    ("mx-rx50-s0", dict(method="mixup", backbone="resnext50_32x4d", dataset="cifar100", epochs=800, seed=0),
     _seq(800, 20.0, 0.078, 0.4), "FINISHED", True, 0),
    ("mx-rx50-s1", dict(method="mixup", backbone="resnext50_32x4d", dataset="cifar100", epochs=800, seed=1),
     _seq(800, 21.0, 0.077, 0.2), "FINISHED", True, 1),
    # Must never reach the results: their numbers are far above everything else.
    ("am-failed", dict(method="automix", backbone="resnet18", dataset="cifar100", epochs=8, seed=3),
     [99, 99, 99], "FAILED", False, 1),
    ("am-running", dict(method="automix", backbone="resnet18", dataset="cifar100", epochs=8, seed=4),
     [98, 98, 98, 98, 98], "RUNNING", False, 1),
    ("am-stopped", dict(method="automix", backbone="resnet18", dataset="cifar100", epochs=8, seed=5),
     [97, 97, 97, 97], "FINISHED", True, 1),
]


def train_loss(name: str, epochs: int) -> list[float]:
    """1 / epoch, except a NaN at epoch 1 of am-s0 (MLflow stores NaN specially)."""
    return [math.nan if (name == "am-s0" and e == 0) else 1.0 / (e + 1) for e in range(epochs)]


def median_of_last(values: list[float], epochs: int) -> float:
    k = 5 if epochs <= 100 else 10
    return statistics.median(values[-k:])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    writer = StudyWriter.in_new_store(root, STUDY)
    uri = writer.tracking_uri
    parents = [writer.start_parent(), None]
    ids = {}
    for name, params, top1, status, final, launch in KNOWN:
        if launch == 1 and parents[1] is None:
            writer.finish_parent(parents[0])
            parents[1] = writer.start_parent()
        spec = TrialSpec(trial_params(**params), top1, status=status, final_metrics=final, trial_id=name,
                         extra_history={"train_loss": train_loss(name, len(top1))})
        ids[name] = writer.add_trial(parents[launch], spec)
    writer.finish_parent(parents[1])
    return uri, ids, parents


@pytest.fixture(scope="module")
def study(store):
    return load_experiment(store[0], STUDY)


@pytest.fixture(scope="module")
def results(study):
    return build_results(study)


def by_name(study):
    return study.trials.set_index("trial_id")


# ---------------------------------------------------------------- loading

def test_one_row_per_trial_with_status_and_flags(study, store):
    _, ids, parents = store
    trials = by_name(study)
    assert len(trials) == len(KNOWN)
    assert set(trials["run_id"]) == set(ids.values())
    assert trials.loc["am-failed", "status"] == "FAILED"
    assert trials.loc["am-running", "status"] == "RUNNING"
    flagged = trials[~trials["complete"]]
    assert set(flagged.index) == {"am-failed", "am-running", "am-stopped"}
    assert trials.loc["am-failed", "problem"] == "failed"
    assert trials.loc["am-running", "problem"].startswith("unfinished")
    assert trials.loc["am-stopped", "problem"] == "stopped early: epoch 4 of 8"
    assert study.skipped() == {"failed": 1, "stopped early": 1, "unfinished": 1}
    assert list(study.parents["run_id"]) == parents
    assert set(trials["parent_run_id"]) == set(parents)


def test_params_are_typed_columns(study):
    t = study.trials
    assert t["mix.alpha"].dtype == "float64" and t["automix.momentum"].dtype == "float64"
    assert t["optim.mixblock_lr"].dtype == "float64"
    assert str(t["train.epochs"].dtype) == "Int64" and str(t["train.seed"].dtype) == "Int64"
    assert str(t["train.channels_last"].dtype) == "boolean"
    assert t["train.max_steps_per_epoch"].isna().all()  # logged as "None"
    assert set(t["method"]) == {"automix", "mixup", "vanilla"}
    assert by_name(study).loc["am-in1k", "data.name"] == "imagenet"
    assert not any(c in t for c in ("alpha", "seed", "epochs", "backbone", "dataset"))  # no short names


def test_typed_param_rules():
    from analysis.loading import typed_param

    def typed(*values):
        return typed_param(pd.Series(list(values), dtype=object))

    assert str(typed("1", "2", None).dtype) == "Int64"
    assert typed("1", "2.5").dtype == "float64" and typed("1", "2.5").tolist() == [1.0, 2.5]
    assert typed("1e-3", "0.1").tolist() == [0.001, 0.1]
    assert typed("2.0").dtype == "float64"  # a float param stays a float even when integral
    assert str(typed("True", "false").dtype) == "boolean"
    assert typed("resnet18", "3").tolist() == ["resnet18", "3"]
    assert typed("None", "4").tolist()[1] == 4 and pd.isna(typed("None", "4").tolist()[0])
    assert typed("none", "bf16").tolist() == ["none", "bf16"]  # train.amp: "none" is a value


def test_final_best_summary_epochs_and_wall_time_match_what_was_logged(study):
    trials = by_name(study)
    for name, params, top1, status, final, _ in KNOWN:
        row = trials.loc[name]
        assert row["epochs_run"] == len(top1), name
        assert row["epochs_planned"] == params["epochs"], name
        assert row["top1_final"] == pytest.approx(top1[-1]), name
        assert row["top1_best"] == pytest.approx(max(top1)), name
        assert row["top1_summary"] == pytest.approx(median_of_last(top1, params["epochs"])), name
        assert row["summary_window"] == (5 if params["epochs"] <= 100 else 10)
        if status == "RUNNING":
            assert math.isnan(row["wall_time_s"])
        else:
            assert row["wall_time_s"] == pytest.approx(60.0)


def test_history_holds_every_epoch(study, store):
    _, ids, _ = store
    h = study.history
    for name, _, top1, *_ in KNOWN:
        rows = h[h["run_id"] == ids[name]]
        assert list(rows["epoch"]) == list(range(1, len(top1) + 1)), name
        assert rows["top1"].tolist() == pytest.approx(top1), name
        assert rows["train_loss"].tolist() == pytest.approx(train_loss(name, len(top1)), nan_ok=True)
    assert h["top1_q"].isna().all()  # a key of the layout that these runs never logged


def test_public_per_run_history_path_gives_the_same_frames(study, store):
    slow = load_experiment(store[0], STUDY, bulk_history=False)
    pd.testing.assert_frame_equal(slow.history, study.history)
    pd.testing.assert_frame_equal(slow.trials, study.trials)


def test_median_of_last_rule():
    assert summary_window(1) == 5 and summary_window(100) == 5
    assert summary_window(101) == 10 and summary_window(800) == 10
    values = [1, 9, 2, 8, 3, 7, 4, 6, 5, 100, 0]
    assert paper_summary(values, 100) == statistics.median([7, 4, 6, 5, 100, 0][-5:])
    assert paper_summary(values, 300) == statistics.median(values[-10:])
    assert paper_summary([3.0, 1.0], 100) == 2.0  # fewer epochs than the window
    assert math.isnan(paper_summary([], 100))


# ---------------------------------------------------------------- the table

def expected_cells():
    """(dataset, backbone, epochs, method) -> list of per-seed summaries, from KNOWN alone."""
    cells: dict[tuple, list[float]] = {}
    labels: dict[str, str] = {}
    backbones = {"resnext50_32x4d": "resnext50"}
    for name, params, top1, status, _, _ in KNOWN:
        if status != "FINISHED" or len(top1) < params["epochs"]:
            continue
        dataset = labels.get(params["dataset"], params["dataset"])
        backbone = backbones.get(params["backbone"], params["backbone"])
        key = (dataset, backbone, params["epochs"], params["method"])
        cells.setdefault(key, []).append(median_of_last(top1, params["epochs"]))
    return cells


def published_numbers():
    with open(REFERENCE_CSV, newline="") as fh:
        return {(r["dataset"], r["backbone"], int(r["epochs"]), r["method"]): float(r["top1"])
                for r in csv.DictReader(fh)}


def test_results_match_logged_numbers_and_reference(results):
    cells = expected_cells()
    paper = published_numbers()
    assert len(results) == len(cells)
    for _, row in results.iterrows():
        key = (row["dataset"], row["backbone"], row["epochs"], row["method"])
        seeds = cells[key]
        assert row["n_seeds"] == len(seeds), key
        assert row["top1_mean"] == pytest.approx(statistics.mean(seeds)), key
        if len(seeds) > 1:
            assert row["top1_std"] == pytest.approx(statistics.stdev(seeds)), key
        else:
            assert math.isnan(row["top1_std"])
        if key in paper:
            assert row["published"] == paper[key]
            assert row["delta"] == pytest.approx(statistics.mean(seeds) - paper[key])
        else:
            assert math.isnan(row["published"]) and math.isnan(row["delta"]), key
        assert row["n_configs"] == 1 and row["selection"] == ""
    # Reference rows really were found for the mapped names.
    indexed = results.set_index(["dataset", "backbone", "method"])
    assert indexed.loc[("imagenet", "resnet50", "automix"), "published"] == 77.91
    assert (results["dataset"] == "digits").any()


def test_failed_unfinished_and_stopped_trials_never_reach_the_table(results, study):
    text = render(results, "md", study)
    for value in ("99", "98", "97"):
        assert f"{value}." not in text
    assert "Left out: 1 failed trial(s), 1 stopped early trial(s), 1 unfinished trial(s)." in text


def parse_markdown(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def test_markdown_shows_every_number(results, study):
    rows = parse_markdown(render(results, "md", study))
    cells = expected_cells()
    paper = published_numbers()
    methods = {m for *_, m in cells}
    assert len(rows) == len({k[:3] for k in cells})
    seen = 0
    for row in rows:
        dataset, backbone, epochs = row["Dataset"], row["Backbone"], int(row["Epochs"])
        for method in methods:
            seeds = cells.get((dataset, backbone, epochs, method))
            if seeds is None:
                assert row[method] == "" and row[f"{method} (paper)"] == ""
                continue
            seen += 1
            mean = statistics.mean(seeds)
            want = f"{mean:.2f}"
            if len(seeds) > 1:
                want += f" ± {statistics.stdev(seeds):.2f} (n={len(seeds)})"
            assert row[method] == want, (dataset, backbone, epochs, method)
            ref = paper.get((dataset, backbone, epochs, method))
            assert row[f"{method} (paper)"] == ("" if ref is None else f"{ref:.2f}")
            assert row[f"{method} Δ"] == ("" if ref is None else f"{mean - ref:+.2f}")
    assert seen == len(cells)


def test_params_column_is_counted_from_the_model(results, study):
    backbones = pytest.importorskip("automix.backbones")
    for _, row in results.iterrows():
        assert row["params_m"] == pytest.approx(backbones.backbone_param_count(row["backbone"]) / 1e6)
    rows = parse_markdown(render(results, "md", study))
    shown = {r["Backbone"]: r["Params (M)"] for r in rows}
    assert shown["resnet18"] == f"{backbones.backbone_param_count('resnet18') / 1e6:.2f}"


def test_param_counts_agree_with_the_published_ones():
    from analysis.paper_table import param_count_m

    pytest.importorskip("automix.backbones")
    # Published Params (M) of the ImageNet table (shared/reference/README.md).
    assert param_count_m("resnet18") == pytest.approx(11.17, abs=0.01)
    assert param_count_m("resnet34") == pytest.approx(21.28, abs=0.01)
    assert param_count_m("resnet101") == pytest.approx(42.51, abs=0.01)
    # torchvision's ResNet-50 without fc has 23,508,032 parameters: 23.51, published 23.52.
    assert param_count_m("resnet50") == pytest.approx(23.52, abs=0.015)
    # The published 44.18 for ResNeXt-101 32x4d includes the 2.05 M classifier head; the backbone
    # alone is 42.13 M, so that row is not compared.


def test_csv_and_latex_formats(results, study, tmp_path, store):
    out = tmp_path / "t.csv"
    assert paper_table_main(["--tracking-uri", store[0], "--experiment", STUDY, "--format", "csv",
                             "--out", str(out)]) == 0
    table = pd.read_csv(out)
    layout = paper_layout(results)
    assert list(table.columns) == list(layout.columns)
    cells = expected_cells()
    for _, row in table.iterrows():
        for method in ("automix", "mixup", "vanilla"):
            seeds = cells.get((row["dataset"], row["backbone"], row["epochs"], method))
            if seeds:
                assert row[method] == pytest.approx(statistics.mean(seeds))
                assert row[f"{method} n"] == len(seeds)
    latex = render(results, "latex", study)
    assert latex.startswith("\\begin{tabular}") and "\\toprule" in latex and "\\bottomrule" in latex
    assert "$\\pm$" in latex and "tiny-imagenet" not in latex
    assert "paper\\_results.csv" in latex


def test_cli_prints_markdown(store, capsys):
    assert paper_table_main(["--tracking-uri", store[0], "--experiment", STUDY]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| Dataset | Backbone | Params (M) | Epochs | vanilla | vanilla (paper) |")
    assert "77.91" in out  # published ImageNet ResNet-50 AutoMix, 100 epochs


def test_report_logs_table_and_plots_to_the_latest_parent(study, store, tmp_path):
    from analysis.report import write_report

    report = write_report(study, tmp_path / "report")
    assert report.logged_to == store[2][1]
    logged = {Path(a.path).name for a in MlflowClient(store[0]).list_artifacts(report.logged_to, "analysis")}
    assert {"paper_table.md", "paper_table.csv", "curves.png"} <= logged
    assert (tmp_path / "report" / "paper_table.md").read_text() == render(report.results, "md", study)


def test_reference_copy_matches_the_shared_reference():
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_results.csv"
    if not shared.is_file():
        pytest.skip("no ../shared/reference next to this checkout")
    assert REFERENCE_CSV.read_bytes() == shared.read_bytes()
    header = next(csv.reader(io.StringIO(REFERENCE_CSV.read_text())))
    assert header == ["dataset", "backbone", "epochs", "method", "top1"]


def test_latest_launch_keeps_only_its_trials(study, store):
    latest = study.latest_launch()
    want = {name for name, *_, launch in KNOWN if launch == 1}
    assert set(latest.trials["trial_id"]) == want
    assert set(latest.history["run_id"]) == set(latest.trials["run_id"])
    assert list(latest.parents["run_id"]) == [store[2][1]]
    rows = build_results(latest)
    assert set(rows["n_seeds"]) == {1}  # one seed of each cell ran in the second launch
