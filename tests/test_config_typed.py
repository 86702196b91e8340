"""One typed loader (automix/typed.py) for run configs and study files: numbers as written in YAML,
non-finite values, empty and malformed files, typos with a did-you-mean hint."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import pytest

from automix import typed
from automix.config import ConfigError, load_config
from studyrunner.schema import StudyError, number, read_study_yaml, section


def test_scientific_notation_in_a_file_and_in_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-3\n  min_lr: 1E-5\n  mixblock_lr: 5e-2\ntrain:\n  epochs: 1e2\n")
    cfg = load_config(f, ["optim.weight_decay=5e-4", "train.batch_size=1e3"])
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.mixblock_lr) == (1e-3, 1e-5, 5e-2)
    assert cfg.optim.weight_decay == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 1000 and isinstance(cfg.train.epochs, int)


@pytest.mark.parametrize("override, needle", [
    ("optim.lr=.inf", "optim.lr = inf must be a finite number"),
    ("optim.lr=.nan", "optim.lr = nan must be a finite number"),
    ("mix.alpha=inf", "mix.alpha = 'inf' must be a finite number"),
    ("train.epochs=1.5e0", "train.epochs = '1.5e0' must be an integer"),
    ("train.epochs=2.5", "train.epochs = 2.5 must be an integer"),
    ("optim.lr=fast", "optim.lr = 'fast' must be a number"),
    ("train.amp=true", "train.amp = True is not one of: none | bf16 | fp16"),
    ("train.channels_last=1", "train.channels_last = 1 must be true or false"),
    ("method=mixupp", "did you mean 'mixup'"),
    ("optim.mixblok_lr=0.1", "unknown key 'optim.mixblok_lr' (did you mean 'optim.mixblock_lr'?)"),
])
def test_bad_values_are_named(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value), str(err.value)


def test_on_and_off_read_as_words():
    """YAML 1.1 reads `on_device: on` as a boolean; for an on/off choice it means the word."""
    assert load_config({"data": {"on_device": True}}).data.on_device == "on"
    assert load_config(None, ["data.on_device=off"]).data.on_device == "off"


def test_an_empty_config_file_is_an_error(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match=f"config file {f} is empty"):
        load_config(f)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("optim:\n  lr: 0.1\n  momentum: [0.9\ntrain: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=rf"config file {f} is not valid YAML: line 4, column"):
        load_config(f)
    with pytest.raises(ConfigError, match="must hold a mapping"):
        f.write_text("- a\n- b\n")
        load_config(f)


def test_study_files_share_the_rules(tmp_path):
    assert number("1e-3", "space.optim.lr.low", "s.yaml", float) == 1e-3
    assert number(1e3, "num_samples", "s.yaml", int) == 1000
    with pytest.raises(StudyError, match=r"s\.yaml: num_samples = '-inf' must be a finite number"):
        number("-inf", "num_samples", "s.yaml", int)
    f = tmp_path / "s.yaml"
    f.write_text("")
    with pytest.raises(StudyError, match=f"study file {f} is empty"):
        read_study_yaml(f)
    f.write_text("name: x\nspace: {a: 1\n")
    with pytest.raises(StudyError, match="line 3"):
        read_study_yaml(f)


@dataclass(frozen=True)
class Inner:
    k: int = 1


@dataclass(frozen=True)
class Sample:
    choice: Literal["a", "b"] = "a"
    maybe: float | None = None
    pair: tuple[int, float] = (1, 2.0)
    many: tuple[int, ...] = ()
    table: Mapping[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


class MyError(Exception):
    pass


def test_build_types_every_kind_with_the_callers_error():
    s = typed.build(Sample, {"choice": "b", "maybe": "2e0", "pair": ["3", 4], "many": [1, "2"],
                             "table": {"x": 1}, "inner": {"k": "1e1"}}, MyError)
    assert s == Sample("b", 2.0, (3, 4.0), (1, 2), {"x": 1}, Inner(10))
    assert typed.build(Sample, None, MyError) == Sample()
    with pytest.raises(MyError, match=r"unknown key 'inner.kk' \(did you mean 'inner.k'\?\)"):
        typed.build(Sample, {"inner": {"kk": 1}}, MyError)
    with pytest.raises(MyError, match=r"pair must be a list of 2 values"):
        typed.build(Sample, {"pair": [1]}, MyError)
    with pytest.raises(MyError, match=r"many\[1\] = 'x' must be an integer"):
        typed.build(Sample, {"many": [1, "x"]}, MyError)
    with pytest.raises(StudyError, match=r"^f.yaml: sec.choice = 'c' is not one of: a \| b"):
        section(Sample, {"choice": "c"}, "sec", "f.yaml")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(path)
