"""Both notebooks run headless against a small study made here, print no warning, and are stored
without outputs."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analysis.synthetic import StudyWriter, TrialSpec, trial_params

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("paper_table.ipynb", "sensitivity.ipynb")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    writer = StudyWriter.in_new_store(root, "nb-sweep")
    uri = writer.tracking_uri
    parent = writer.start_parent()
    rng = random.Random(3)
    for i in range(16):  # 8 per method: fANOVA needs 8 trials of a setting (MIN_IMPORTANCE_TRIALS)
        method = ("mixup", "automix")[i % 2]
        alpha = (0.5, 2.0)[(i // 2) % 2]
        lr = (0.01, 0.1)[(i // 4) % 2]
        top = 40 + 5 * (method == "automix") + 3 * (alpha == 2.0) + rng.gauss(0, 0.2)
        params = trial_params(method=method, backbone="resnet18", dataset="cifar10", epochs=3, seed=i // 8,
                              alpha=alpha, mixblock_lr=lr)
        writer.add_trial(parent, TrialSpec(params, [top - 2, top - 1, top], device_hours=0.1 * (i + 1),
                                           mix_epochs=(1, 3) if i < 3 else ()))
    writer.finish_parent(parent)
    return uri, root


def execute(name: str, store, monkeypatch) -> nbformat.NotebookNode:
    uri, root = store
    monkeypatch.setenv("AUTOMIX_TRACKING_URI", uri)
    monkeypatch.setenv("AUTOMIX_EXPERIMENT", "nb-sweep")
    monkeypatch.setenv("AUTOMIX_REPORT_DIR", str(root / "report" / name))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(REPO / "analysis" / name, as_version=4)
    # The kernel runs on this interpreter (the venv's), whatever kernel specs the machine has.
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "analysis")}})
    client.kernel_manager_class = _here_kernel_manager()
    client.execute()
    assert_no_warnings(nb)
    return nb


def assert_no_warnings(nb) -> None:
    """Nothing on stderr that warns (e.g. tqdm's IProgress warning), and no error output."""
    for out in outputs(nb):
        assert out.get("output_type") != "error", out
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            assert "warn" not in out.get("text", "").lower(), out["text"]


def _here_kernel_manager():
    from jupyter_client.manager import KernelManager

    class HereKernelManager(KernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, *cmd[1:]] if "ipykernel_launcher" in cmd else cmd

    return HereKernelManager


def outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_paper_table_notebook_shows_the_table_and_a_figure(store, monkeypatch):
    nb = execute("paper_table.ipynb", store, monkeypatch)
    found = outputs(nb)
    markdown = [o["data"]["text/markdown"] for o in found if "text/markdown" in o.get("data", {})]
    assert any(m.startswith("| Dataset | Backbone | Params (M) | Epochs | mixup |") for m in markdown)
    assert any("best of 4 configs" in m for m in markdown)  # 2 alphas x 2 LRs per method
    assert sum("image/png" in o.get("data", {}) for o in found) == 3  # curves, gallery, cost
    html = [o["data"]["text/html"] for o in found if "text/html" in o.get("data", {})]
    by_top1 = next(h for h in html if "top1_summary" in h and "device_hours" in h)
    assert by_top1.index("automix") < by_top1.index("mixup")  # best first: automix scores +5


def test_sensitivity_notebook_shows_figures_and_importances(store, monkeypatch):
    nb = execute("sensitivity.ipynb", store, monkeypatch)
    found = outputs(nb)
    text = "".join(o.get("text", "") for o in found if o.get("output_type") == "stream")
    assert "swept: mix.alpha, optim.mixblock_lr" in text
    assert sum("image/png" in o.get("data", {}) for o in found) >= 3
    assert any("importance" in o.get("data", {}).get("text/html", "") for o in found)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_stored_without_outputs(name):
    nb = nbformat.read(REPO / "analysis" / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
