"""The MLflow UI shows a study the way the README says: trials nested under the study's parent
run, with the swept hyperparameters available as columns.

Starts `mlflow server` on 127.0.0.1 over a store holding a smoke study and drives Debian's
Chromium through Playwright (Playwright's own browser download is not reachable from CI;
`scripts/ci_system_deps.sh` installs Chromium). A screenshot of the runs view is saved in the
test's tmp_path.
"""
from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.procs import start_mlflow_server, stop  # noqa: E402

CHROMIUM = Path(os.environ.get("AUTOMIX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SWEPT = ("alpha", "mixblock_lr", "momentum")
UI_TIMEOUT_MS = 60_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        msg = (f"{CHROMIUM} not found: install Debian's chromium with "
               "`bash scripts/ci_system_deps.sh` (or point AUTOMIX_CHROMIUM at a Chromium binary)")
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    pytest.importorskip("playwright.sync_api", reason="playwright (test extra) not installed")
    return CHROMIUM


def _standin_store(root: Path) -> SimpleNamespace:
    """A store laid out as docs/architecture.md specifies, filled through the MLflow API.

    Used only when the suite has no `smoke_study_store` fixture (a real smoke study).
    """
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("quickstart", artifact_location=(root / "artifacts").as_uri())
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    parent = client.create_run(exp, run_name=f"quickstart@{started}", tags={
        "automix.role": "study", "study": "quickstart", "study_hash": "0" * 64,
        "study_file": "studies/quickstart.yaml"})
    trials = [(0.5, 1e-3, 0.99), (1.0, 3e-3, 0.999), (2.0, 1e-2, 0.9)]
    for i, (alpha, mb_lr, mom) in enumerate(trials):
        run = client.create_run(
            exp, run_name=f"automix resnet18 alpha={alpha} mixblock_lr={mb_lr} momentum={mom}",
            tags={"mlflow.parentRunId": parent.info.run_id, "automix.role": "trial",
                  "study": "quickstart", "trial_id": f"trial_{i:05d}", "ray_node_id": "0" * 56})
        rid = run.info.run_id
        params = {"method": "automix", "backbone": "resnet18", "dataset": "fake", "epochs": 2,
                  "batch_size": 16, "seed": i, "alpha": alpha, "mixblock_lr": mb_lr,
                  "momentum": mom, "workers": 1, "mix.alpha": alpha}
        for k, v in params.items():
            client.log_param(rid, k, v)
        for epoch in (1, 2):
            client.log_metric(rid, "top1", 10.0 * epoch + i, step=epoch)
            client.log_metric(rid, "train_loss", 2.0 / epoch, step=epoch)
        client.log_metric(rid, "top1_final", 20.0 + i)
        client.log_metric(rid, "top1_best", 20.0 + i)
        client.set_terminated(rid)
    client.set_terminated(parent.info.run_id)
    return SimpleNamespace(tracking_uri=uri, experiment="quickstart")


@pytest.fixture(scope="module")
def study_store(request, tmp_path_factory):
    """The suite's shared smoke study when conftest provides it, else a stand-in."""
    try:
        return request.getfixturevalue("smoke_study_store")
    except pytest.FixtureLookupError:
        return _standin_store(tmp_path_factory.mktemp("mlflow_store"))


def _study_runs(store) -> tuple[str, object, list]:
    """(experiment id, parent run, child runs) read back from the store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.tracking_uri)
    exp = store.experiment
    if hasattr(exp, "experiment_id"):
        exp_id = exp.experiment_id
    else:
        found = client.get_experiment_by_name(str(exp))
        exp_id = found.experiment_id if found else str(exp)
    runs = client.search_runs([exp_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("automix.role") == "study"]
    assert parents, f"no parent run (tag automix.role=study) in experiment {exp_id}"
    parent = max(parents, key=lambda r: r.info.start_time)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert children, "the study's parent run has no child runs"
    return exp_id, parent, children


def _row(page, run_id: str):
    # ag-grid renders each row once per (pinned/centre) container; the left-pinned one holds
    # the run name and the expander.
    return page.locator(f'.ag-pinned-left-cols-container [role="row"][row-id="{run_id}"]')


def test_runs_view_nests_trials_under_the_study_with_swept_columns(chromium, study_store,
                                                                   tmp_path):
    from playwright.sync_api import sync_playwright

    exp_id, parent, children = _study_runs(study_store)
    server, url = start_mlflow_server(
        study_store.tracking_uri, tmp_path / "artifacts", tmp_path / "mlflow_server.log",
        mlflow_bin=str(Path(sys.executable).parent / "mlflow"))
    shot = tmp_path / "mlflow_runs_view.png"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS,
                                         headless=True)
            try:
                page = browser.new_page(viewport={"width": 2400, "height": 1200})
                page.set_default_timeout(UI_TIMEOUT_MS)
                try:
                    _check_runs_view(page, f"{url}/#/experiments/{exp_id}/runs", parent, children)
                finally:
                    try:  # also on failure, for the record; never masking the failure itself
                        page.screenshot(path=str(shot), full_page=True)
                    except Exception as exc:  # noqa: BLE001
                        print(f"no screenshot: {exc}")
            finally:
                browser.close()
    finally:
        stop(server)
    assert shot.stat().st_size > 10_000, "screenshot is empty"
    print(f"screenshot: {shot}")


def _check_runs_view(page, runs_url: str, parent, children) -> None:
    page.goto(runs_url)
    parent_row = _row(page, parent.info.run_id)
    parent_row.wait_for()
    assert parent.info.run_name in parent_row.inner_text() or \
        parent_row.locator(f'a:has-text("{parent.info.run_name}")').count()

    # Collapsed: the trials are not top-level rows of the experiment ...
    for child in children:
        assert _row(page, child.info.run_id).count() == 0, \
            f"trial {child.info.run_name} is listed outside its parent run"
    # ... and expanding the study's row shows them, right below it.
    close_assistant = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close_assistant.count():
        close_assistant.first.click()
    parent_row.locator('button[data-component-id*="runnamecellrenderer"]').click()
    parent_index = int(parent_row.get_attribute("row-index"))
    child_indices = []
    for child in children:
        row = _row(page, child.info.run_id)
        row.wait_for()
        assert row.locator(f'a[href$="/runs/{child.info.run_id}"]').count() == 1
        child_indices.append(int(row.get_attribute("row-index")))
    assert sorted(child_indices) == list(range(parent_index + 1, parent_index + 1 + len(children))), \
        f"trials are not grouped under the parent row: parent {parent_index}, trials {child_indices}"

    # The swept hyperparameters are offered as columns and show each trial's value.
    page.locator('button[data-testid="column-selection-dropdown"][aria-haspopup="dialog"]').click()
    selector = page.locator('[role="dialog"]'
                            '[data-component-id="mlflow.experiment_page.runs_table.column_selector"]')
    selector.wait_for()
    for name in SWEPT:
        _tick_param_column(page, selector, name)
    page.keyboard.press("Escape")
    for name in SWEPT:
        header = page.locator(f'[role="columnheader"][col-id="params.`{name}`"]')
        header.wait_for()
        assert name in header.inner_text()
        for child in children:
            cell = page.locator(f'.ag-center-cols-container [role="row"][row-id="{child.info.run_id}"]'
                                f' [col-id="params.`{name}`"]')
            assert cell.inner_text().strip() == child.data.params[name], \
                f"{child.info.run_name}: column {name} shows {cell.inner_text()!r}"


def _tick_param_column(page, selector, name: str) -> None:
    """Tick `name` under "Parameters" in the Columns tree.

    The tree is a virtual list (only what is in view is in the DOM) and names repeat across
    groups (`momentum` is a metric too), so search first, then take the entry that follows the
    "Parameters (n)" group row.
    """
    selector.locator('input[placeholder="Search columns"]').fill(name)
    nodes = selector.locator(".du-bois-light-tree-treenode")
    nodes.filter(has_text=re.compile(r"^Parameters \(\d+\)$")).wait_for()
    group = None
    for i in range(nodes.count()):
        text = nodes.nth(i).inner_text().strip()
        heading = re.match(r"^(Attributes|Metrics|Parameters|Tags)( \(\d+\))?$", text)
        if heading:
            group = heading.group(1)
        elif group == "Parameters" and text == name:
            nodes.nth(i).locator(".du-bois-light-tree-checkbox").click()
            return
    raise AssertionError(f"'{name}' is not offered under Columns > Parameters")
