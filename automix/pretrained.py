"""Start a backbone from ImageNet weights (``model.pretrained``), as the paper does for CUB and Aircraft.

``model.pretrained`` is the path of a state_dict file in torchvision's ResNet naming (a ``state_dict``
or ``model`` wrapper and ``module.`` prefixes are tolerated), or ``torchvision``: torchvision's
IMAGENET1K_V1 weights, read only from the local torch hub cache. Nothing is downloaded: a training
node often has no internet access, and a silent download would make a run depend on it. The classifier
``fc`` is dropped (our heads have the data set's classes); every other key must match.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .config import ConfigError

DROPPED_PREFIXES = ("fc.",)  # torchvision's ImageNet classifier; heads are built per data set
WRAPPERS = ("state_dict", "model")


def torchvision_weights_path(backbone: str) -> tuple[Path, str]:
    """Where torch hub keeps torchvision's IMAGENET1K_V1 file for ``backbone``, and its download URL."""
    from torchvision.models import get_model_weights

    url = get_model_weights(backbone).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def resolve(pretrained: str, backbone: str) -> Path:
    """The file ``model.pretrained`` names; ConfigError (naming the path and the fix) if it is missing."""
    if pretrained == "torchvision":
        path, url = torchvision_weights_path(backbone)
        if not path.is_file():
            raise ConfigError(
                f"model.pretrained = torchvision: {path} does not exist, and nothing is downloaded at run time. "
                f"Put torchvision's {backbone} IMAGENET1K_V1 weights there: download {url} into {path.parent} "
                f"(or run `python -c \"import torchvision; torchvision.models.{backbone}(weights='IMAGENET1K_V1')\"` "
                f"on a machine with internet access and copy the file), or set TORCH_HOME to a folder whose "
                f"hub/checkpoints/ holds it")
        return path
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained = {pretrained!r}: no such file (a state_dict saved with torch.save, "
                          f"or `torchvision` for torchvision's ImageNet weights)")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from ``{"state_dict": ...}``/``{"model": ...}`` and
    stripped of DataParallel/DDP ``module.`` prefixes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ConfigError(f"model.pretrained: cannot read {path} as a state_dict "
                          f"({type(exc).__name__}: {exc})") from None
    for key in WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.pretrained: {path} does not hold a state_dict (a mapping of parameter names "
                          f"to tensors)")
    return {_strip(k): v for k, v in state.items()}


def _strip(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def load_pretrained(net: nn.Module, pretrained: str, backbone: str) -> None:
    """Load ``model.pretrained`` into the backbone ``net`` (no classifier); every parameter and buffer of
    ``net`` must come from the file, with the same shape."""
    path = resolve(pretrained, backbone)
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(DROPPED_PREFIXES)}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", wrong)) if keys]
    if problems:
        raise ConfigError(f"model.pretrained = {pretrained!r}: {path} does not fit model.backbone={backbone} "
                          f"at this model.width and model.stem; " + "; ".join(problems))
    net.load_state_dict(state, strict=True)
