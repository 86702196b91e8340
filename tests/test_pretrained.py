"""model.pretrained: a state_dict file (torchvision naming, wrappers and module. prefixes tolerated, fc
dropped) or torchvision's weights from the local hub cache only; every mismatch named."""
from __future__ import annotations

import pytest
import torch
import torchvision

from automix.backbones import build_backbone
from automix.config import ConfigError, load_config
from automix.model import build_net


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_wrapped_prefixed_state_dict_loads_without_its_classifier(tmp_path):
    source = build_backbone("resnet18", width=8)
    torch.nn.init.normal_(source.conv1.weight)  # not what a fresh init gives
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state |= {"module.fc.weight": torch.zeros(5, 64), "module.fc.bias": torch.zeros(5)}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = build_backbone("resnet18", width=8, pretrained=str(path))
    assert _same(loaded.state_dict(), source.state_dict())


def test_torchvision_weights_come_from_the_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = load_config({"model": {"backbone": "resnet18", "pretrained": "torchvision", "stem": "imagenet"},
                       "method": "vanilla", "data": {"image_size": 32}})
    expected_file = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ConfigError) as err:
        build_net(cfg, 10)
    message = str(err.value)
    assert str(expected_file) in message and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    reference = torchvision.models.resnet18(weights=None)  # torchvision's own naming, with its fc
    expected_file.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), expected_file)
    net = build_net(cfg, 10)
    theirs = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert _same(net.q.backbone.state_dict(), theirs)


def test_mismatches_are_named(tmp_path):
    path = tmp_path / "w8.pth"
    state = build_backbone("resnet18", width=8).state_dict()
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"other shape: conv1.weight \(8, 3, 7, 7\) vs \(16, 3, 7, 7\)"):
        build_backbone("resnet18", width=16, pretrained=str(path))
    del state["layer1.0.conv1.weight"]
    state["head.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"missing: layer1.0.conv1.weight \(1\); unexpected: head.weight"):
        build_backbone("resnet18", width=8, pretrained=str(path))
    with pytest.raises(ConfigError, match="model.pretrained = '/no/such.pth': no such file"):
        build_backbone("resnet18", width=8, pretrained="/no/such.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="cannot read .*junk.pth as a state_dict"):
        build_backbone("resnet18", width=8, pretrained=str(tmp_path / "junk.pth"))


@pytest.mark.parametrize("model, data, needle", [
    ({"width": 16}, {"image_size": 224}, "torchvision's weights are for width 64"),
    ({"backbone": "wide_resnet28_8"}, {"image_size": 224}, "only for resnet18"),
    ({"backbone": "resnext101_32x4d"}, {"image_size": 224}, "only for resnet18"),
    ({}, {"image_size": 32}, "need model.stem: imagenet"),
    ({"stem": "cifar"}, {"image_size": 224}, "need model.stem: imagenet"),
])
def test_torchvision_weights_need_the_torchvision_network(model, data, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config({"model": {"pretrained": "torchvision", **model}, "data": data})


def test_the_automix_momentum_encoder_starts_from_the_same_weights(tmp_path):
    source = build_backbone("resnet18", width=8, cifar_stem=True)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    cfg = load_config({"model": {"width": 8, "pretrained": str(tmp_path / "w.pth")}, "data": {"image_size": 16}})
    net = build_net(cfg, 10)
    assert _same(net.q.backbone.state_dict(), source.state_dict())
    assert _same(net.k.backbone.state_dict(), source.state_dict())
