"""Typed run configuration: frozen dataclasses loaded from YAML with ``--set key.path=value`` overrides.

One source of defaults: the dataclass fields below. Unknown keys, wrong types and out-of-range values
raise :class:`ConfigError` naming the dotted key and what is accepted.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from . import typed

Method = Literal["automix", "mixup", "cutmix", "vanilla"]
Backbone = Literal[
    "resnet18", "resnet34", "resnet50", "resnet101",
    "resnext50_32x4d", "resnext101_32x4d", "wide_resnet28_8",
]
# Named sets carry their normalisation and augmentation (automix/data.py); `imagefolder` is any other
# set of class folders root/{train,val}/<class>/*.
DatasetName = Literal["digits", "cifar10", "cifar100", "imagenet", "tiny-imagenet", "cub200", "aircraft",
                      "imagefolder", "fake"]
FOLDER_SETS = ("imagenet", "tiny-imagenet", "cub200", "aircraft", "imagefolder")
# Backbones with torchvision ImageNet weights (model.pretrained: torchvision); torchvision has no
# ResNeXt-101 32x4d, and WRN-28-8 is a CIFAR network.
TORCHVISION_WEIGHTS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class MixConfig:
    alpha: float = 2.0  # Beta(alpha, alpha) for lam; all methods

    def __post_init__(self) -> None:
        _check(self.alpha > 0, "mix.alpha", self.alpha, "a number > 0")


@dataclass(frozen=True)
class AutoMixConfig:
    momentum: float = 0.999  # m0 of the EMA k <- m k + (1 - m) q
    momentum_end: float = 0.99999
    momentum_warmup: float = 0.1  # fraction of iterations at constant m0
    lam_margin: float = 0.08  # bb mask becomes plain mixup when lam_bb is this close to 0 or 1
    mask_loss_weight: float = 0.1
    mask_loss_margin: float = 0.1
    mask_loss_decay: Literal["none", "cosine"] = "none"
    lambda_channel: bool = True  # on for ImageNet-scale, off in the CIFAR configs
    reduction: int = 2  # query/key channels = C / reduction
    upsample: Literal["nearest", "bilinear"] = "nearest"
    # batch: L_mask on the mean share of the whole batch (the reference); sample: the mean over samples
    # of each sample's own margin loss (an option against whole-image masks, docs/mask_collapse.md)
    mask_loss_mode: Literal["batch", "sample"] = "batch"
    weight_mix_q: float = 1.0
    weight_one_q: float = 1.0
    weight_mix_k: float = 1.0
    # std of the normal init of the Mix Block's query/key conv (the spec: 0.01). At 0.01 the attention
    # starts uniform and, on small runs, stays so (docs/mask_collapse.md); larger starts it structured.
    qk_init_std: float = 0.01

    def __post_init__(self) -> None:
        for name in ("momentum", "momentum_end"):
            v = getattr(self, name)
            _check(0.0 <= v < 1.0, f"automix.{name}", v, "a number in [0, 1)")
        _check(self.momentum_end >= self.momentum, "automix.momentum_end", self.momentum_end,
               f">= automix.momentum ({self.momentum})")
        _check(0.0 <= self.momentum_warmup <= 1.0, "automix.momentum_warmup", self.momentum_warmup, "[0, 1]")
        _check(0.0 <= self.lam_margin < 0.5, "automix.lam_margin", self.lam_margin, "[0, 0.5)")
        _check(self.mask_loss_weight >= 0, "automix.mask_loss_weight", self.mask_loss_weight, ">= 0")
        _check(self.mask_loss_margin >= 0, "automix.mask_loss_margin", self.mask_loss_margin, ">= 0")
        _check(self.reduction >= 1, "automix.reduction", self.reduction, "an integer >= 1")
        _check(self.qk_init_std > 0, "automix.qk_init_std", self.qk_init_std, "a number > 0")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.1  # backbone + heads, cosine to min_lr
    min_lr: float = 0.0
    mixblock_lr: float = 0.1  # Mix Block group, cosine to mixblock_min_lr
    mixblock_min_lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD momentum (not the EMA momentum)
    nesterov: bool = False
    # linear LR warm-up over this many epochs, then the cosine. 2 by default: at lr 0.1 a fresh
    # ResNet-18 of width 64 on digits (batch 64) diverges to chance without one, and with 1 epoch
    # mixup and CutMix lose their first epochs to it (docs/mask_collapse.md, "Defaults"); the paper
    # studies set 0, as the paper has none.
    warmup_epochs: float = 2.0

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "a number > 0")
        _check(0 <= self.min_lr <= self.lr, "optim.min_lr", self.min_lr, f"in [0, optim.lr={self.lr}]")
        _check(self.mixblock_lr > 0, "optim.mixblock_lr", self.mixblock_lr, "a number > 0")
        _check(0 <= self.mixblock_min_lr <= self.mixblock_lr, "optim.mixblock_min_lr",
               self.mixblock_min_lr, f"in [0, optim.mixblock_lr={self.mixblock_lr}]")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "[0, 1)")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, ">= 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256  # global batch, split evenly over the data-parallel processes
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    num_workers: int = 0  # DataLoader worker processes per training process
    max_steps_per_epoch: int | None = None  # cap for smoke tests and benchmarks
    mix_grid_every: int = 10  # save a mixed-sample PNG grid every N epochs (and the last); 0 = never
    eval_batch_size: int = 512
    progress: Literal["auto", "bar", "log", "none"] = "auto"
    # torch intra-op threads of this process (null: torch's default, one per core). On a small shared
    # CPU machine, more threads than free cores spin and can make a step several times slower.
    threads: int | None = None
    # Read the device-side non-finite-loss flag every N steps (and at each epoch's end): no per-step
    # host sync on a GPU, and the error still names the first bad step.
    check_finite_every: int = 50

    def __post_init__(self) -> None:
        _check(self.threads is None or self.threads >= 1, "train.threads", self.threads, "null or an integer >= 1")
        _check(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size >= 2, "train.batch_size", self.batch_size, "an integer >= 2")
        _check(self.num_workers >= 0, "train.num_workers", self.num_workers, ">= 0")
        _check(self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
               "train.max_steps_per_epoch", self.max_steps_per_epoch, "null or an integer >= 1")
        _check(self.mix_grid_every >= 0, "train.mix_grid_every", self.mix_grid_every, ">= 0")
        _check(self.check_finite_every >= 1, "train.check_finite_every", self.check_finite_every, ">= 1")


@dataclass(frozen=True)
class DataConfig:
    name: DatasetName = "digits"
    root: str = "data"
    image_size: int = 32
    fake_train_size: int = 512  # name=fake and data.synthetic: images generated per split
    fake_test_size: int = 128
    fake_num_classes: int = 10  # name=fake, and synthetic imagefolder; a named set keeps its own count
    train_subset: int | None = None  # use only the first N training samples (smoke runs)
    test_subset: int | None = None
    train_per_class: int | None = None  # low-data regime: the first N training images of each class
    # Random images of the named set's shape and class count instead of its files (smoke runs keep the
    # set's name in the record; the run is tagged smoke_test).
    synthetic: bool = False
    on_device: Literal["auto", "on", "off"] = "auto"  # auto: uint8 set on the GPU when it fits (digits, CIFAR)
    skip_corrupt: bool = False  # skip (and count) unreadable images instead of stopping with their name

    def __post_init__(self) -> None:
        _check(self.image_size >= 8, "data.image_size", self.image_size, "an integer >= 8")
        for name in ("fake_train_size", "fake_test_size", "train_subset", "test_subset", "train_per_class"):
            v = getattr(self, name)
            _check(v is None or v >= 1, f"data.{name}", v, "null or an integer >= 1")
        _check(self.fake_num_classes >= 2, "data.fake_num_classes", self.fake_num_classes, "an integer >= 2")
        _check(self.on_device != "on" or self.synthetic or self.name not in FOLDER_SETS, "data.on_device", "on",
               f"auto or off for data.name={self.name}: a set of image files is decoded per sample on the "
               f"CPU; on_device holds in-memory sets (digits, cifar10, cifar100, fake, data.synthetic)")


@dataclass(frozen=True)
class ModelConfig:
    backbone: Backbone = "resnet18"
    stem: Literal["auto", "cifar", "imagenet"] = "auto"  # auto: cifar stem below 64 px
    width: int = 64  # channels of the first stage (64 = torchvision); smaller for fast CPU runs
    # ImageNet weights to start from (CUB, Aircraft): a state_dict file, or `torchvision` for the
    # weights already in torchvision's cache. Nothing is downloaded; a missing file is an error.
    pretrained: str | None = None

    def __post_init__(self) -> None:
        _check(self.width >= 4, "model.width", self.width, "an integer >= 4")
        _check(self.pretrained is None or self.pretrained.strip() != "", "model.pretrained", self.pretrained,
               "null, torchvision or the path of a state_dict file")
        if self.pretrained == "torchvision":
            _check(self.backbone in TORCHVISION_WEIGHTS, "model.pretrained", self.pretrained,
                   f"a state_dict file for model.backbone={self.backbone}: torchvision has ImageNet weights "
                   f"only for {', '.join(TORCHVISION_WEIGHTS)}")
            _check(self.width == 64, "model.pretrained", self.pretrained,
                   f"null with model.width={self.width}: torchvision's weights are for width 64")


@dataclass(frozen=True)
class RunConfig:
    method: Method = "automix"
    mix: MixConfig = field(default_factory=MixConfig)
    automix: AutoMixConfig = field(default_factory=AutoMixConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.model.pretrained == "torchvision":
            _check(not self.cifar_stem, "model.pretrained", "torchvision",
                   f"null with the CIFAR stem (model.stem={self.model.stem}, data.image_size="
                   f"{self.data.image_size}): torchvision's weights need model.stem: imagenet")

    @property
    def cifar_stem(self) -> bool:
        """The 3x3 stride-1 stem without max-pool (model.stem auto: for images up to 64 px)."""
        stem = self.model.stem
        return self.data.image_size <= 64 if stem == "auto" else stem == "cifar"


def _check(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not valid: expected {accepted}")


# --------------------------------------------------------------------------- loading

def from_dict(data: Mapping[str, Any] | None, source: str = "config") -> RunConfig:
    """Build a RunConfig from a nested mapping; unknown keys and wrong types raise ConfigError."""
    try:
        return typed.build(RunConfig, data, ConfigError)
    except ConfigError as exc:  # a type error from typed.build or a range error from a __post_init__
        raise ConfigError(f"{exc} (in {source})") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=0.05"`` -> ``("optim.lr", 0.05)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc.__class__.__name__})") from None


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for key ``"a.b"``, creating levels as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {key}: {part} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def load_config(source: str | Path | Mapping[str, Any] | None = None,
                overrides: list[str] | Mapping[str, Any] = ()) -> RunConfig:
    """Load a YAML file (or a mapping) and apply ``key.path=value`` overrides."""
    if source is None:
        data, name = {}, ("--set" if overrides else "defaults")
    elif isinstance(source, Mapping):
        data, name = _deep_copy(source), "config mapping"
    else:
        data, name = typed.read_yaml(source, ConfigError, "config file"), str(source)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {name} must hold a mapping of sections (method, optim, ...), "
                              f"got {data!r}")
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(data, key, value)
    return from_dict(data, source=name)


def _deep_copy(d: Mapping[str, Any]) -> dict:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def to_dict(cfg: Any) -> dict:
    """Nested plain dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """``{"mix.alpha": 2.0, "optim.lr": 0.1, ...}``."""
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v

    walk(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, "")
    return out


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(dump_yaml(cfg))
    return path


def config_keys() -> list[str]:
    """Every dotted key a config accepts (for validating study search spaces)."""
    return sorted(flatten(RunConfig()))
