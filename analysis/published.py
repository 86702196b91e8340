"""Published top-1 numbers (analysis/reference/paper_results.csv) and the names that key them.

Our runs name datasets as the reference does (`data.name = imagenet`, `tiny-imagenet`, `cub200`, ...;
`imagefolder` and `digits` have no published row); stores written elsewhere may use other spellings
(`ImageNet-1k`, `CUB-200`), mapped here. Backbones keep the trainer's names
(`model.backbone = resnext50_32x4d`), which the reference shortens (`resnext50`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

REFERENCE_CSV = Path(__file__).parent / "reference" / "paper_results.csv"
# Order of rows and columns in the paper's tables.
DATASET_ORDER = ("imagenet", "cifar10", "cifar100", "tiny-imagenet", "cub200", "aircraft")
_DATASET_ALIASES = {
    "imagenet1k": "imagenet", "imagenet-1k": "imagenet", "in1k": "imagenet", "ilsvrc2012": "imagenet",
    "tinyimagenet": "tiny-imagenet", "tiny_imagenet": "tiny-imagenet", "tiny-imagenet-200": "tiny-imagenet",
    "cub": "cub200", "cub-200": "cub200", "cub_200": "cub200", "cub-200-2011": "cub200",
    "fgvc-aircraft": "aircraft", "fgvc_aircraft": "aircraft",
    "cifar-10": "cifar10", "cifar-100": "cifar100",
}
# The trainer's long backbone names -> the paper's (mirrors automix.backbones.SHORT_NAMES, kept here
# so naming rows does not import torch).
_BACKBONE_ALIASES = {
    "resnext50_32x4d": "resnext50", "resnext101_32x4d": "resnext101",
    "wide_resnet28_8": "wrn28_8", "wrn-28-8": "wrn28_8",
}


@lru_cache(maxsize=1)
def load_reference() -> pd.DataFrame:
    """The published results: dataset, backbone, epochs (int), method, top1 (float, %)."""
    frame = pd.read_csv(REFERENCE_CSV, dtype={"dataset": str, "backbone": str, "method": str})
    return frame.astype({"epochs": "int64", "top1": "float64"})


def dataset_label(name: object) -> str:
    """The reference's name for a dataset (`CIFAR-100` -> `cifar100`); unknown names pass through."""
    key = str(name).strip().lower()
    return _DATASET_ALIASES.get(key, key)


def backbone_label(name: object) -> str:
    """The reference's name for a backbone (`resnext50_32x4d` -> `resnext50`)."""
    key = str(name).strip().lower()
    return _BACKBONE_ALIASES.get(key, key)


def method_order() -> list[str]:
    """Methods in the order the paper's tables list them (AutoMix last)."""
    return list(dict.fromkeys(load_reference()["method"]))


def published_top1(dataset: str, backbone: str, epochs: int, method: str) -> float:
    """The published top-1 for that setting, or NaN where the paper has none (e.g. digits)."""
    ref = load_reference()
    hit = ref[
        (ref["dataset"] == dataset) & (ref["backbone"] == backbone)
        & (ref["epochs"] == int(epochs)) & (ref["method"] == method)
    ]
    return float(hit["top1"].iloc[0]) if len(hit) else float("nan")
