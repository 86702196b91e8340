"""Study files are validated before Ray starts: every shipped study passes, every mistake is named."""
from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from helpers.studies import REPO, runner_cmd, runner_env
from studyrunner.smoke import smoke_variant
from studyrunner.study import StudyError, full_point, load_study, parse_study

STUDIES = sorted((REPO / "studies").glob("*.yaml"))
QUICKSTART = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())


def _parse(**changes):
    data = {**QUICKSTART, **changes}
    return parse_study(data, source="t.yaml")


def _error(**changes) -> str:
    with pytest.raises(StudyError) as err:
        _parse(**changes)
    return str(err.value)


def test_the_expected_studies_ship():
    assert {p.name for p in STUDIES} >= {"quickstart.yaml", "digits_methods.yaml", "cifar100_sweep.yaml",
                                         "paper_imagenet.yaml"}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_study_validates_with_its_smoke_variant(path: Path):
    study = load_study(path)
    assert study.name == path.stem
    assert len(study.sha256) == 64
    for point in study.search.points_to_evaluate:
        study.resolve(full_point(study, point))
    smoke = smoke_variant(study)
    cfg = smoke.base_config()
    assert smoke.smoke_test and smoke.total_trials() <= 3
    assert cfg.train.epochs <= 3 and cfg.train.max_steps_per_epoch <= 4
    assert smoke.resources.gpus_per_worker == 0 and smoke.resources.workers <= 2
    assert cfg.data.name == study.base_config().data.name, "a smoke test keeps the study's data set name"
    assert cfg.data.name in ("digits", "fake") or cfg.data.synthetic, "a smoke test must run without files"
    assert cfg.train.device in ("cpu", "auto") if cfg.data.name == "digits" else cfg.train.device == "cpu"


def test_the_studies_say_what_the_issue_asks():
    quick = load_study(REPO / "studies" / "quickstart.yaml")
    assert quick.search.algorithm == "optuna" and quick.scheduler.name == "asha"
    assert {p.key for p in quick.sampled} == {"mix.alpha", "optim.mixblock_lr", "automix.momentum"}
    assert quick.base_config().data.name == "digits" and quick.resources.gpus_per_worker == 0

    methods = load_study(REPO / "studies" / "digits_methods.yaml")
    assert methods.search.algorithm == "grid" and methods.total_trials() == 12
    grid = {p.key: set(p.values) for p in methods.sampled}
    assert grid == {"method": {"vanilla", "mixup", "cutmix", "automix"}, "train.seed": {0, 1, 2}}

    cifar = load_study(REPO / "studies" / "cifar100_sweep.yaml")
    assert cifar.resources.workers * cifar.resources.gpus_per_worker == 2
    assert cifar.base_config().model.backbone == "resnet18" and cifar.base_config().data.name == "cifar100"
    first = full_point(cifar, cifar.search.points_to_evaluate[0])
    assert first == {"mix.alpha": 2.0, "optim.mixblock_lr": 0.1, "automix.momentum": 0.999}  # the paper's

    imagenet = load_study(REPO / "studies" / "paper_imagenet.yaml")
    grid = {p.key: list(p.values) for p in imagenet.sampled}
    assert grid == {"model.backbone": ["resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x4d"],
                    "train.epochs": [100, 300]}
    cfg = imagenet.base_config()
    assert (cfg.data.image_size, cfg.train.batch_size, imagenet.resources.workers) == (224, 256, 4)
    assert imagenet.total_trials() == 10


def test_a_gpu_study_smoke_test_runs_on_synthetic_data_on_the_cpu():
    study = load_study(REPO / "studies" / "paper_imagenet.yaml")
    smoke = smoke_variant(study)
    cfg = smoke.base_config()
    assert (cfg.data.name, cfg.data.synthetic, cfg.train.device, cfg.train.epochs) == (
        study.base_config().data.name, True, "cpu", 2)
    assert smoke.resources.workers == 2 and smoke.max_concurrent_trials == 1
    assert all(p.key != "train.epochs" for p in smoke.space), "the smoke test pins the epochs"


@pytest.mark.parametrize("changes, named", [
    ({"num_sample": 3}, "num_sample"),
    ({"resources": {"worker": 2}}, "worker"),
    ({"scheduler": {"name": "asha", "grace": 2}}, "grace"),
    ({"space": {"mix.alpah": {"dist": "uniform", "low": 0.1, "high": 1.0}}}, "mix.alpah"),
    ({"space": {"mix.alpha": {"dist": "normal", "low": 0.1, "high": 1.0}}}, "space.mix.alpha.dist"),
    ({"space": {"mix.alpha": {"dist": "uniform", "low": 2.0, "high": 1.0}}}, "space.mix.alpha"),
    ({"space": {"mix.alpha": {"dist": "uniform", "low": 1.0, "high": 1.0}}}, "low (1.0) must be < high"),
    ({"space": {"mix.alpha": {"dist": "loguniform", "low": 0.0, "high": 1.0}}}, "low > 0"),
    ({"space": {"mix.alpha": {"dist": "uniform", "low": 0.1}}}, "needs high"),
    ({"space": {"method": {"dist": "grid", "values": []}}, "search": {"algorithm": "grid"}},
     "space.method: dist grid needs a non-empty list"),
    ({"space": {"method": {"dist": "choice", "values": ["automix", "mixupp"]}}}, "mixupp"),
    ({"space": {"mix.alpha": {"dist": "uniform", "low": -1.0, "high": 1.0}}}, "mix.alpha"),
    ({"space": {"model.backbone": {"dist": "choice", "values": ["resnet18", "resnet19"]}}}, "resnet19"),
    ({"base": {"model": {"backbone": "resnet19"}}}, "model.backbone"),
    ({"base": {"data": {"name": "mnist"}}}, "data.name"),
    ({"base": {"optim": {"lrr": 0.1}}}, "optim.lrr"),
    ({"space": {"method": {"dist": "grid", "values": ["automix", "mixup"]}}}, "search.algorithm grid"),
    ({"search": {"algorithm": "hyperopt"}}, "search.algorithm"),
    ({"scheduler": {"name": "pbt"}}, "pbt"),
    ({"search": {"algorithm": "optuna", "points_to_evaluate": [{"mix.alpha": 50.0}]}}, "outside"),
    ({"search": {"algorithm": "optuna", "points_to_evaluate": [{"optim.lr": 0.1}]}}, "optim.lr"),
    ({"resources": {"workers": 3}}, "divisible"),
    ({"resources": {"workers": 0}}, "resources.workers"),
    ({"num_samples": 0}, "num_samples"),
    ({"space": {"model.width": {"dist": "uniform", "low": 8, "high": 32}}}, "integer setting"),
    ({"space": {"mix.alpha": [1, 2]}}, "ambiguous"),
    ({"name": "a/b"}, "name"),
])
def test_mistakes_are_rejected_naming_the_field(changes, named):
    message = _error(**changes)
    assert named in message and "t.yaml" in message, message


def test_a_typo_names_the_key_the_file_and_the_likely_fix():
    message = _error(num_sample=3)
    assert "'num_sample'" in message and "did you mean 'num_samples'" in message


def test_fixed_space_values_join_the_base_config():
    study = _parse(space={"mix.alpha": {"dist": "uniform", "low": 0.5, "high": 1.0}, "train.seed": 7,
                          "model.width": {"dist": "fixed", "value": 8}},
                   search={"algorithm": "optuna", "seed": 0})
    assert [p.key for p in study.sampled] == ["mix.alpha"]
    cfg = study.resolve({"mix.alpha": 0.7})
    assert (cfg.train.seed, cfg.model.width, cfg.mix.alpha) == (7, 8, 0.7)


def test_set_overrides_change_the_base_and_are_validated(tmp_path):
    path = REPO / "studies" / "quickstart.yaml"
    assert load_study(path, ["train.epochs=3"]).base_config().train.epochs == 3
    with pytest.raises(StudyError, match="train.epoch"):
        load_study(path, ["train.epoch=3"])
    with pytest.raises(StudyError, match="sweeps this key"):
        load_study(path, ["mix.alpha=1.0"])


def test_snapshot_round_trip():
    from studyrunner.study import study_from_snapshot

    study = load_study(REPO / "studies" / "cifar100_sweep.yaml")
    again = study_from_snapshot(yaml.safe_load(yaml.safe_dump(study.to_dict())))
    assert again == study


def test_flat_search_space_and_first_points(tmp_path):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from studyrunner import space

    study = load_study(REPO / "studies" / "quickstart.yaml")
    ps = space.param_space(study)
    assert sorted(ps) == ["automix.momentum", "mix.alpha", "optim.mixblock_lr"]  # flat dotted keys
    points = space.points_to_evaluate(study)
    first = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())["search"]["points_to_evaluate"][0]
    assert points == [first] and sorted(first) == sorted(ps)  # flat keys, every sampled key
    assert type(space.search_algorithm(study)).__name__ == "OptunaSearch"
    sched = space.scheduler(study, str(tmp_path))
    assert isinstance(sched, AsyncHyperBandScheduler) and sched._time_attr == "epoch"


def test_cli_rejects_a_typo_before_ray_starts(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text((REPO / "studies" / "quickstart.yaml").read_text().replace("num_samples:", "num_sample:"))
    t0 = time.monotonic()
    done = subprocess.run(runner_cmd(bad, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                                     "--storage-path", str(tmp_path / "ray")),
                          cwd=REPO, env=runner_env(), text=True, capture_output=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "num_sample" in done.stderr and str(bad) in done.stderr, done.stderr
    assert "Started a local Ray" not in done.stdout + done.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "m.db").exists()
    assert time.monotonic() - t0 < 60


def test_cli_fails_fast_on_an_unreachable_tracking_server(tmp_path):
    from helpers.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    done = subprocess.run(runner_cmd(REPO / "studies" / "quickstart.yaml", "--smoke-test", "--tracking-uri", url,
                                     "--storage-path", str(tmp_path / "ray")),
                          cwd=REPO, env=runner_env(), text=True, capture_output=True, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"cannot reach the MLflow tracking server at {url}" in done.stderr, done.stderr
    assert "Started a local Ray" not in done.stdout + done.stderr and not (tmp_path / "ray").exists()
    assert time.monotonic() - t0 < 60


def test_cli_help_lists_every_option():
    done = subprocess.run(runner_cmd("--help"), cwd=REPO, env=runner_env(), text=True, capture_output=True,
                          timeout=60)
    assert done.returncode == 0
    for option in ("--smoke-test", "--address", "--tracking-uri", "--storage-path", "--resume", "--set",
                   "--num-samples", "--max-concurrent-trials"):
        assert option in done.stdout


def test_a_base_config_file_can_be_referenced(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {width: 16}\ntrain: {epochs: 9, device: cpu}\n")
    study = tmp_path / "s.yaml"
    study.write_text(textwrap.dedent("""
        name: from_file
        base_config: base.yaml
        base: {train: {epochs: 2}}
        space: {mix.alpha: {dist: uniform, low: 0.5, high: 3.0}}
        search: {algorithm: random, seed: 1}
        scheduler: {name: none}
        num_samples: 2
    """))
    s = load_study(study)
    assert s.base_config().train.epochs == 2 and s.base_config().model.width == 16


# --------------------------------------------------------------------------- the paper's studies

PAPER_STUDIES = sorted((REPO / "studies").glob("paper_*.yaml"))
PAPER_METHODS = {"vanilla", "mixup", "cutmix", "automix"}  # the methods this platform implements


def _grid_configs(study):
    import itertools

    grid = [p for p in study.sampled if p.dist == "grid"]
    for values in itertools.product(*(p.values for p in grid)):
        yield study.resolve(dict(zip((p.key for p in grid), values)))


def test_every_row_group_of_the_paper_has_a_study():
    """Each (data set, backbone, epochs, method) of paper_results.csv that the platform can train is a
    trial of some studies/paper_*.yaml, under the reference's name for the data set and backbone."""
    import csv

    from automix.backbones import short_name

    rows = list(csv.DictReader((REPO / "analysis" / "reference" / "paper_results.csv").open()))
    wanted = {(r["dataset"], r["backbone"], int(r["epochs"]), r["method"]) for r in rows
              if r["method"] in PAPER_METHODS}
    covered = {(c.data.name, short_name(c.model.backbone), c.train.epochs, c.method)
               for path in PAPER_STUDIES for c in _grid_configs(load_study(path))}
    assert not wanted - covered, sorted(wanted - covered)
    assert {d for d, *_ in wanted} == {"imagenet", "cifar10", "cifar100", "tiny-imagenet", "cub200", "aircraft"}


# What the spec's "Defaults per setting" gives each data set:
# (lr, min_lr, mixblock_lr, mixblock_min_lr, weight_decay, batch, image_size, lambda_channel, m_end, pretrained)
PAPER_SETTINGS = {
    "imagenet": (0.1, 0.0, 0.1, 1e-3, 1e-4, 256, 224, True, 0.99999, None),
    "cifar10": (0.1, 0.05, 0.1, 0.05, 1e-4, 100, 32, False, 0.999999, None),
    "cifar100": (0.1, 0.05, 0.1, 0.05, 1e-4, 100, 32, False, 0.999999, None),
    "tiny-imagenet": (0.2, 0.05, 0.1, 1e-3, 1e-4, 100, 64, False, 0.999999, None),
    "cub200": (1e-3, 0.0, 0.01, 5e-4, 5e-4, 16, 224, True, 0.99999, "torchvision"),
    "aircraft": (1e-3, 0.0, 0.01, 5e-4, 5e-4, 16, 224, True, 0.99999, "torchvision"),
}


@pytest.mark.parametrize("path", PAPER_STUDIES, ids=lambda p: p.name)
def test_paper_studies_use_the_papers_settings(path: Path):
    study = load_study(path)
    assert study.search.algorithm == "grid" and study.scheduler.name == "none", "every trial to the end"
    assert "Needs" in path.read_text() and f"tune_runner.py studies/{path.name}" in path.read_text()
    for c in _grid_configs(study):
        got = (c.optim.lr, c.optim.min_lr, c.optim.mixblock_lr, c.optim.mixblock_min_lr, c.optim.weight_decay,
               c.train.batch_size, c.data.image_size, c.automix.lambda_channel, c.automix.momentum_end,
               c.model.pretrained)
        assert got == PAPER_SETTINGS[c.data.name], (c.data.name, got)
        shared = (c.mix.alpha, c.automix.momentum, c.automix.mask_loss_weight, c.automix.lam_margin,
                  c.optim.warmup_epochs, c.automix.qk_init_std, c.automix.mask_loss_mode)
        # The paper has no LR warm-up and the spec's Mix Block init and batch-mean mask loss, whatever
        # the defaults chosen for short CPU runs.
        assert shared == (2.0, 0.999, 0.1, 0.08, 0.0, 0.01, "batch")
        assert c.model.width == 64 and not c.data.synthetic


def test_a_pretrained_study_smoke_test_drops_the_weights():
    smoke = smoke_variant(load_study(REPO / "studies" / "paper_cub200.yaml"))
    cfg = smoke.base_config()
    assert cfg.model.pretrained is None and cfg.data.name == "cub200" and cfg.data.synthetic


def test_an_empty_or_malformed_study_file_names_the_file_and_line(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    with pytest.raises(StudyError, match=f"study file {empty} is empty"):
        load_study(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nspace:\n  mix.alpha: {dist: uniform, low: 1, high: 2\nnum_samples: 2\n")
    with pytest.raises(StudyError, match=rf"study file {broken} is not valid YAML: line 4, column \d+"):
        load_study(broken)


def test_numbers_in_scientific_notation_are_read_as_numbers():
    study = _parse(space={"optim.mixblock_lr": {"dist": "loguniform", "low": "1e-3", "high": "5e-1"}},
                   search={"algorithm": "optuna", "seed": 0}, num_samples="1e1")
    assert study.space[0].low == 1e-3 and study.space[0].high == 0.5 and study.num_samples == 10
    message = _error(space={"mix.alpha": {"dist": "uniform", "low": 0.1, "high": float("inf")}})
    assert "space.mix.alpha.high = inf must be a finite number" in message
    from studyrunner.schema import config_value

    assert config_value("optim.lr", "1e-3", "space.optim.lr.values[0]", "t.yaml") == 1e-3
