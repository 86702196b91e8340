"""Stores not written by our runner: nested runs logged with plain MLflow calls (short or dotted param
names, no automix tags) give the table; a store with nothing usable says what it found and needs."""

from __future__ import annotations

import statistics

import pytest

from analysis import NoResults, build_results, load_experiment, render
from analysis.paper_table import main as paper_table_main
from analysis.runs import LAYOUT_FOREIGN
from analysis.synthetic import PlainRun, new_sqlite_store, write_plain_study

SHORT = [  # short names, steps from 0, the way many scripts log
    PlainRun({"method": "automix", "backbone": "resnet18", "dataset": "CIFAR-100", "epochs": 6, "seed": s,
              "alpha": 2.0}, [10 + s, 20, 30, 40, 50 + s, 60 - s])
    for s in range(2)
] + [PlainRun({"method": "mixup", "backbone": "resnet18", "dataset": "cifar100", "epochs": 6, "seed": 0,
               "alpha": 1.0}, [5, 15, 25, 35, 45, 55])]
DOTTED = [  # dotted config keys, steps from 1
    PlainRun({"method": "vanilla", "model.backbone": "resnet18", "data.name": "cifar100", "train.epochs": 4,
              "train.seed": 0}, [11, 22, 33, 44], first_step=1),
]
UNUSABLE = [  # no dataset, no epochs, no top1
    PlainRun({"method": "automix", "backbone": "resnet18", "lr": 0.1}, []),
    PlainRun({"model": "resnet18"}, []),
]


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    uri = new_sqlite_store(tmp_path_factory.mktemp("foreign") / "mlflow.db")
    write_plain_study(uri, "short", SHORT)
    write_plain_study(uri, "dotted", DOTTED)
    write_plain_study(uri, "unusable", UNUSABLE)
    return uri


def median_last5(values):
    return statistics.median(values[-5:])


def test_short_names_are_read_as_config_keys(uri):
    study = load_experiment(uri, "short")
    assert study.layout == LAYOUT_FOREIGN
    assert len(study.trials) == 3 and len(study.parents) == 1  # the parent run is not a trial
    assert {"method", "model.backbone", "data.name", "train.epochs", "train.seed", "mix.alpha"} <= set(
        study.param_columns)
    assert study.trials["complete"].all(), study.trials["problem"].tolist()  # steps 0..5 are 6 epochs
    results = build_results(study).set_index("method")
    automix = results.loc["automix"]
    assert (automix["dataset"], automix["backbone"], automix["epochs"]) == ("cifar100", "resnet18", 6)
    assert automix["n_seeds"] == 2
    assert automix["top1_mean"] == pytest.approx(statistics.mean(median_last5(r.top1) for r in SHORT[:2]))
    assert results.loc["mixup", "top1_mean"] == pytest.approx(median_last5(SHORT[2].top1))


def test_dotted_names_and_the_cli(uri, capsys):
    row = build_results(load_experiment(uri, "dotted")).iloc[0]
    assert (row["method"], row["epochs"]) == ("vanilla", 4)
    assert row["top1_mean"] == statistics.median([11, 22, 33, 44])
    assert paper_table_main(["--tracking-uri", uri, "--experiment", "dotted"]) == 0
    out = capsys.readouterr().out
    assert "| cifar100 | resnet18 |" in out and "27.50" in out


def test_nothing_usable_says_what_it_found_and_needs(uri):
    study = load_experiment(uri, "unusable")
    with pytest.raises(NoResults) as err:
        build_results(study)
    message = str(err.value)
    assert "3 run(s), read as plain MLflow runs: 2 trial run(s), 1 parent run(s)" in message
    assert "missing params: data.name in 2 run(s), method in 1 run(s), model.backbone in 1 run(s), " \
           "train.epochs in 2 run(s)" in message
    assert "no `top1` history in 2 run(s)" in message
    assert "needs the params method, model.backbone, data.name, train.epochs" in message
    assert "(or the short names method, backbone, dataset, epochs)" in message


def test_nothing_usable_on_the_command_line(uri, capsys):
    assert paper_table_main(["--tracking-uri", uri, "--experiment", "unusable"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "needs the params" in err


def test_table_of_a_foreign_store_renders(uri):
    study = load_experiment(uri, "short")
    text = render(build_results(study), "md", study)
    assert text.startswith("| Dataset | Backbone | Params (M) | Epochs | mixup |")
