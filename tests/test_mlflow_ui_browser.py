"""The MLflow UI shows a study the way the README says: trials nested under the study's parent
run; the printed runs URL opens them sorted by top1_summary with the swept hyperparameters (dotted
names) and top1_summary as columns; the Compare page plots exactly the swept hyperparameters.

Starts `mlflow server` on 127.0.0.1 over a store holding a smoke study and drives Debian's
Chromium through Playwright (Playwright's own browser download is not reachable from CI;
`scripts/ci_system_deps.sh` installs Chromium). Screenshots of the runs view and the Compare page
are saved in $AUTOMIX_SCREENSHOT_DIR (default: the test's tmp_path).
"""
from __future__ import annotations

import os
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from automix import record  # noqa: E402
from helpers.procs import start_mlflow_server, stop  # noqa: E402
from studyrunner import uris  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.servers]

CHROMIUM = Path(os.environ.get("AUTOMIX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SWEPT = ("mix.alpha", "optim.mixblock_lr", "automix.momentum")
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
    for i, values in enumerate(trials):
        swept = dict(zip(SWEPT, values))
        run = client.create_run(
            exp, run_name=record.trial_run_name(swept, f"trial_{i:05d}"),
            tags={"mlflow.parentRunId": parent.info.run_id, "automix.role": "trial",
                  "study": "quickstart", "trial_id": f"trial_{i:05d}", "ray_node_id": "0" * 56,
                  "trial_status": "finished"})
        rid = run.info.run_id
        params = {"method": "automix", "model.backbone": "resnet18", "data.name": "fake",
                  "train.epochs": 2, "train.batch_size": 16, "train.seed": 0, **swept,
                  "resources.workers": 1}
        for k, v in params.items():
            client.log_param(rid, k, v)
        for epoch in (1, 2):
            client.log_metric(rid, "top1", 10.0 * epoch + i, step=epoch)
            client.log_metric(rid, "train_loss", 2.0 / epoch, step=epoch)
        for key in ("top1_summary", "top1_final", "top1_best"):
            client.log_metric(rid, key, 20.0 + i, step=2)
        client.set_terminated(rid)
    uris.share_runs_view(client, exp, SWEPT, ("top1_summary", "top1_best", "device_hours"))
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


def _screenshot_dir(tmp_path: Path) -> Path:
    where = Path(os.environ.get("AUTOMIX_SCREENSHOT_DIR") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_runs_view_nests_trials_under_the_study_with_swept_columns(chromium, study_store,
                                                                   tmp_path):
    from playwright.sync_api import sync_playwright

    exp_id, parent, children = _study_runs(study_store)
    server, url = start_mlflow_server(
        study_store.tracking_uri, tmp_path / "artifacts", tmp_path / "mlflow_server.log",
        mlflow_bin=str(Path(sys.executable).parent / "mlflow"), timeout=240)
    shots = _screenshot_dir(tmp_path)
    compare = (f"{url}/#/compare-runs?runs={quote(json.dumps([c.info.run_id for c in children]))}"
               f"&experiments={quote(json.dumps([exp_id]))}")
    pages = [  # (check, URL, screenshot): each in a fresh browser context (the UI keeps state per browser)
        (lambda page: _check_runs_view(page, parent, children),
         uris.runs_url(url, exp_id, shared_view=False), "mlflow_runs_nested.png"),
        (lambda page: _check_shared_view(page, children), uris.runs_url(url, exp_id), "mlflow_runs_view.png"),
        (_check_compare_page, compare, "mlflow_compare.png"),
    ]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS,
                                         headless=True)
            try:
                for check, page_url, name in pages:
                    _visit(browser, page_url, check, shots / name)
            finally:
                browser.close()
    finally:
        stop(server)
    for _, _, name in pages:
        assert (shots / name).stat().st_size > 10_000, f"screenshot {name} is empty"
    print(f"screenshots: {shots}")


def _visit(browser, page_url: str, check, shot: Path) -> None:
    context = browser.new_context(viewport={"width": 2400, "height": 1200})
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(page_url)
        try:
            check(page)
        finally:
            try:  # also on failure, for the record; never masking the failure itself
                page.screenshot(path=str(shot), full_page=True)
            except Exception as exc:  # noqa: BLE001
                print(f"no screenshot: {exc}")
    finally:
        context.close()


def _close_assistant(page) -> None:
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.first.click()


def _check_shared_view(page, children) -> None:
    """The URL the runner prints: best first by top1_summary, swept values and top1_summary shown."""
    for child in children:
        _row(page, child.info.run_id).wait_for()
    _close_assistant(page)
    for col in [f"params.`{k}`" for k in SWEPT] + ["metrics.`top1_summary`"]:
        page.locator(f'[role="columnheader"][col-id="{col}"]').first.wait_for()
    rows = sorted(children, key=lambda c: int(_row(page, c.info.run_id).get_attribute("row-index")))
    shown = [c.data.metrics["top1_summary"] for c in rows]
    assert shown == sorted(shown, reverse=True), f"runs not sorted by top1_summary: {shown}"
    for child in children:
        cell = page.locator(f'.ag-center-cols-container [role="row"][row-id="{child.info.run_id}"]'
                            f' [col-id="params.`{SWEPT[0]}`"]')
        assert cell.inner_text().strip() == child.data.params[SWEPT[0]]


def _check_compare_page(page) -> None:
    """The parallel-coordinates plot of Compare offers exactly the swept hyperparameters."""
    label = page.locator("text=Parameters:").first
    label.wait_for()
    _close_assistant(page)
    box = label.locator("xpath=..")
    page.wait_for_function("el => el.innerText.includes('.')", arg=box.element_handle())
    lines = [line.strip() for line in box.inner_text().splitlines() if line.strip()]
    chosen = set(lines[lines.index("Parameters:") + 1:lines.index("Metrics:")])
    assert chosen == set(SWEPT), f"Compare plots {sorted(chosen)}, the study swept {sorted(SWEPT)}"


def _check_runs_view(page, parent, children) -> None:
    parent_row = _row(page, parent.info.run_id)
    parent_row.wait_for()
    assert parent.info.run_name in parent_row.inner_text() or \
        parent_row.locator(f'a:has-text("{parent.info.run_name}")').count()

    # Collapsed: the trials are not top-level rows of the experiment ...
    for child in children:
        assert _row(page, child.info.run_id).count() == 0, \
            f"trial {child.info.run_name} is listed outside its parent run"
    # ... and expanding the study's row shows them, right below it.
    _close_assistant(page)
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
    groups (a param and a tag may share a name), so search first, then take the entry that follows the
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
