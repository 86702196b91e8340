"""A study with more trials than one `search_runs` page still loads completely."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from analysis import load_experiment
from analysis import tracking
from analysis.loading import TRIAL_FILTER
from analysis.synthetic import StudyWriter, TrialSpec, trial_params

N_TRIALS = 23
PAGE = 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("paging")
    writer = StudyWriter.in_new_store(root, "paged")
    uri = writer.tracking_uri
    parent = writer.start_parent()
    for seed in range(N_TRIALS):
        params = trial_params(method="mixup", backbone="resnet18", dataset="cifar10", epochs=2, seed=seed)
        writer.add_trial(parent, TrialSpec(params, [float(seed), float(seed) + 0.5]))
    writer.finish_parent(parent)
    return uri


def test_one_page_is_not_the_whole_study(store):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("paged")
    page = client.search_runs([experiment.experiment_id], TRIAL_FILTER, max_results=PAGE)
    assert len(page) == PAGE and page.token  # so a loader that ignores the token loses runs


def test_all_pages_are_loaded(store, monkeypatch):
    calls = []
    real = MlflowClient.search_runs

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("page_token"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_runs", counting)
    study = load_experiment(store, "paged", page_size=PAGE)
    assert len(study.trials) == N_TRIALS
    assert study.trials["run_id"].is_unique
    assert sorted(study.trials["train.seed"]) == list(range(N_TRIALS))
    assert sorted(study.trials["top1_final"]) == [s + 0.5 for s in range(N_TRIALS)]
    assert len(study.history) == 2 * N_TRIALS
    pages = -(-(N_TRIALS + 1) // PAGE)  # every run of the experiment: the trials and their parent
    assert len(calls) >= pages
    assert sum(token is not None for token in calls) >= pages - 1


def test_page_size_is_checked():
    with pytest.raises(ValueError, match="page_size"):
        list(tracking.iter_runs(None, "0", page_size=0))
