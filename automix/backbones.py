"""Backbones: torchvision ResNet / ResNeXt (optionally narrow, with a CIFAR stem) and WRN-28-8.

Every backbone exposes ``stage3(x)`` (the features the Mix Block reads), ``head_features(z3)``
(stage 4 + global average pooling) and ``feat_dim``. ``forward(x) = head_features(stage3(x))``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .pretrained import load_pretrained


@dataclass(frozen=True)
class ResNetSpec:
    block: type
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ResNetSpec(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ResNetSpec(Bottleneck, (3, 4, 6, 3)),
    "resnet101": ResNetSpec(Bottleneck, (3, 4, 23, 3)),
    "resnext50_32x4d": ResNetSpec(Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4),
    # torchvision has no resnext101_32x4d builder; the paper's ResNeXt-101 is 32x4d.
    "resnext101_32x4d": ResNetSpec(Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=4),
}
BACKBONES = (*RESNET_SPECS, "wide_resnet28_8")
# Names used by the paper's tables and paper_results.csv.
SHORT_NAMES = {"resnext50_32x4d": "resnext50", "resnext101_32x4d": "resnext101", "wide_resnet28_8": "wrn28_8"}
ALIASES = {v: k for k, v in SHORT_NAMES.items()}


def canonical_name(name: str) -> str:
    """Accepts the config name or the paper's short name (``resnext101`` -> ``resnext101_32x4d``)."""
    name = ALIASES.get(name, name)
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r} is not one of: {' | '.join(BACKBONES)}")
    return name


def short_name(name: str) -> str:
    return SHORT_NAMES.get(canonical_name(name), canonical_name(name))


class ResNetBackbone(ResNet):
    """torchvision's ResNet with a configurable first-stage width and stem, without its fc head.

    Reuses torchvision's blocks and ``_make_layer``; only the widths and the stem are ours.
    """

    def __init__(self, spec: ResNetSpec, width: int = 64, cifar_stem: bool = False):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = spec.groups
        self.base_width = spec.width_per_group
        if cifar_stem:  # 3x3 stride-1 conv, no max-pool: 32 px images keep 8x8 maps at stage 3
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(spec.block, width, spec.layers[0])
        self.layer2 = self._make_layer(spec.block, width * 2, spec.layers[1], stride=2)
        self.layer3 = self._make_layer(spec.block, width * 4, spec.layers[2], stride=2)
        self.layer4 = self._make_layer(spec.block, width * 8, spec.layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feat_dim = width * 8 * spec.block.expansion
        self.stage3_channels = width * 4 * spec.block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stage3(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def head_features(self, z3: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(self.layer4(z3)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head_features(self.stage3(x))


class _WideBasic(nn.Module):
    """Pre-activation wide basic block (Zagoruyko & Komodakis 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        o = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(torch.relu(self.bn2(o)))
        return o + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k for 32 px images (always the CIFAR stem). Its three groups end at 32x, 16x, 8x...
    the Mix Block reads group 2 (16k channels at 16x16 for 32 px), the second-to-last stage, as
    layer3 is for the four-stage ResNets."""

    def __init__(self, depth: int = 28, k: int = 8, width: int = 16):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [width, width * k, width * 2 * k, width * 4 * k]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.group1 = self._group(widths[0], widths[1], n, 1)
        self.group2 = self._group(widths[1], widths[2], n, 2)
        self.group3 = self._group(widths[2], widths[3], n, 2)
        self.bn = nn.BatchNorm2d(widths[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feat_dim = widths[3]
        self.stage3_channels = widths[2]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _group(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[_WideBasic(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                               for i in range(n)])

    def stage3(self, x: Tensor) -> Tensor:
        return self.group2(self.group1(self.conv1(x)))

    def head_features(self, z3: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(torch.relu(self.bn(self.group3(z3)))), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head_features(self.stage3(x))


def build_backbone(name: str, width: int = 64, cifar_stem: bool = False, pretrained: str | None = None) -> nn.Module:
    """A backbone by config name. ``width`` is the first-stage width (64 = the published network;
    for WRN-28-8, 16); smaller values give narrow networks for fast CPU runs. ``pretrained``
    (model.pretrained): a state_dict file or ``torchvision``, see :mod:`automix.pretrained`."""
    name = canonical_name(name)
    if name == "wide_resnet28_8":
        net: nn.Module = WideResNet(28, 8, width=max(width // 4, 1))  # width 64 -> the standard 16
    else:
        net = ResNetBackbone(RESNET_SPECS[name], width=width, cifar_stem=cifar_stem)
    if pretrained is not None:
        load_pretrained(net, pretrained, name)
    return net


def backbone_param_count(name: str, width: int = 64) -> int:
    """Parameters of the backbone without its classifier head (ImageNet stem; WRN: its CIFAR stem),
    as the Params(M) column of the paper's tables."""
    return sum(p.numel() for p in build_backbone(name, width=width).parameters())
