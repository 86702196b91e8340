"""The Mix Block reads stage-3 features and returns a mask of the image's size for every backbone."""
import pytest
import torch

from automix.backbones import backbone_param_count, build_backbone
from automix.config import load_config
from automix.mixblock import MixBlock
from automix.model import build_net

FAMILIES = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet28_8"]


# WRN-28-8 is a CIFAR network: 32 px only.
CASES = [(b, s) for b in FAMILIES for s in (32, 224) if not (b == "wide_resnet28_8" and s == 224)]


@pytest.mark.parametrize("backbone, size", CASES)
def test_mask_has_image_size(backbone, size):
    torch.manual_seed(0)
    net = build_backbone(backbone, width=16 if backbone != "wide_resnet28_8" else 8, cifar_stem=size == 32)
    x = torch.randn(2, 3, size, size)
    z = net.stage3(x)
    assert z.shape[1] == net.stage3_channels
    mb = MixBlock(net.stage3_channels, lambda_channel=True)
    s = mb(z, 0.3, torch.tensor([1, 0]), (size, size))
    assert s.shape == (2, 1, size, size)
    assert ((s > 0) & (s < 1)).all()


def test_stage3_resolution_matches_spec_at_full_width():
    r18 = build_backbone("resnet18", cifar_stem=True)
    assert r18.stage3(torch.randn(1, 3, 32, 32)).shape == (1, 256, 8, 8)
    r50 = build_backbone("resnet50")
    assert r50.stage3_channels == 1024


def test_param_counts_match_published_backbones():
    # seed README: Params(M) without the classifier head
    assert backbone_param_count("resnet18") / 1e6 == pytest.approx(11.17, abs=0.01)
    assert backbone_param_count("resnet50") / 1e6 == pytest.approx(23.52, abs=0.015)


def test_bilinear_upsampling_option():
    mb = MixBlock(16, upsample="bilinear", lambda_channel=False)
    s = mb(torch.randn(2, 16, 4, 4), 0.5, torch.tensor([1, 0]), (20, 20))
    assert s.shape == (2, 1, 20, 20)


def test_full_automix_net_builds_for_224():
    cfg = load_config({"data": {"name": "fake", "image_size": 224}, "model": {"width": 8}})
    net = build_net(cfg, 10)
    assert not any(p.requires_grad for p in net.k.parameters())
