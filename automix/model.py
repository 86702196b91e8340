"""Composition: classifiers, the AutoMix momentum pipeline and the baselines, each as one module
whose ``forward(x, y, draws)`` computes a whole training step's loss (so one DDP wrapper sees every
parameter use of the step, and one backward reaches all of them once)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import mixing
from .backbones import build_backbone
from .config import RunConfig
from .mixblock import MixBlock


class Classifier(nn.Module):
    """A backbone with linear heads on its pooled features (``one``: one-hot CE, ``mix``: mixup CE)."""

    def __init__(self, backbone: nn.Module, num_classes: int, heads: tuple[str, ...] = ("one",)):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({h: nn.Linear(backbone.feat_dim, num_classes) for h in heads})

    def forward(self, x: Tensor, head: str = "one") -> Tensor:
        return self.heads[head](self.backbone(x))


@dataclass
class StepOutput:
    """loss: the scalar to backpropagate; terms: its named, weighted parts (for logging and tests);
    AutoMix also hands out the mb mask it trained on, for the mask diagnostics (automix/diagnostics.py)
    without a second pass: s_mb (N, 1, H, W), detached, and its lam_mb."""
    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    s_mb: Tensor | None = None
    lam_mb: float | None = None


@dataclass
class AutoMixDraws:
    """The random quantities of one AutoMix iteration (spec step 1)."""
    lam_mb: float
    lam_bb: float
    perm_mb: Tensor
    perm_bb: Tensor


@dataclass
class MixDraws:
    """One mixup/cutmix draw: x_mix = mix(x, mask, perm), label weight lam for y."""
    lam: float
    perm: Tensor
    mask: Tensor


@dataclass
class MixPreview:
    """Tensors for a picture of the mixing: x_i, x_j = x[perm], mask of x_j, mixed. (N, C, H, W)."""
    x_i: Tensor
    x_j: Tensor
    mask: Tensor
    mixed: Tensor


class AutoMixNet(nn.Module):
    """q (trained), k (EMA of q, never trained) and the Mix Block, with the spec's gradient routing:
    L_mix_k + L_mask reach only the Mix Block (through the frozen k), L_mix_q + L_one_q only q."""

    def __init__(self, cfg: RunConfig, num_classes: int, cifar_stem: bool):
        super().__init__()
        a = cfg.automix
        self.cfg = cfg
        self.q = Classifier(build_backbone(cfg.model.backbone, cfg.model.width, cifar_stem, cfg.model.pretrained), num_classes,
                            heads=("one", "mix"))
        self.k = copy.deepcopy(self.q)
        for p in self.k.parameters():
            p.requires_grad_(False)
        self.mixblock = MixBlock(self.q.backbone.stage3_channels, a.reduction, a.lambda_channel, a.upsample,
                                 a.qk_init_std)

    def draw(self, n: int, rng: np.random.Generator, gen: torch.Generator, device,
             image_size: tuple[int, int]) -> AutoMixDraws:
        alpha = self.cfg.mix.alpha
        return AutoMixDraws(lam_mb=mixing.sample_lam(alpha, rng), lam_bb=mixing.sample_lam(alpha, rng),
                            perm_mb=_perm(n, gen, device), perm_bb=_perm(n, gen, device))

    def masks(self, x: Tensor, d: AutoMixDraws) -> tuple[Tensor, Tensor]:
        """s_mb (with grad to the Mix Block) and s_bb (detached), each (N, 1, H, W)."""
        with torch.no_grad():
            z = self.k.backbone.stage3(x)  # k in train mode, as the reference does
        size = tuple(x.shape[-2:])
        s_mb = self.mixblock(z, d.lam_mb, d.perm_mb, size)
        margin = self.cfg.automix.lam_margin
        if d.lam_bb <= margin or 1.0 - d.lam_bb <= margin:  # too lopsided to learn from: plain mixup
            s_bb = mixing.mixup_mask(d.lam_bb, s_mb)
        else:
            with torch.no_grad():
                s_bb = self.mixblock(z, d.lam_bb, d.perm_bb, size)
        return s_mb, s_bb

    def forward(self, x: Tensor, y: Tensor, d: AutoMixDraws, mask_weight: float) -> StepOutput:
        a = self.cfg.automix
        s_mb, s_bb = self.masks(x, d)
        # Mix Block sub-task: the frozen k must recover the label of the mb-mixed images.
        x_mix_mb = mixing.mix(x, s_mb, d.perm_mb)
        l_mix_k = a.weight_mix_k * mixing.mixup_ce(self.k(x_mix_mb, "mix"), y, d.perm_mb, d.lam_mb)
        l_mask = mask_weight * mixing.mask_loss(1.0 - s_mb, d.lam_mb, a.mask_loss_margin,
                                                per_sample=a.mask_loss_mode == "sample")
        # Classifier sub-task: q learns from the clean and the bb-mixed images.
        x_mix_bb = mixing.mix(x, s_bb, d.perm_bb)
        l_one_q = a.weight_one_q * F.cross_entropy(self.q(x, "one").float(), y)
        l_mix_q = a.weight_mix_q * mixing.mixup_ce(self.q(x_mix_bb, "mix"), y, d.perm_bb, d.lam_bb)
        terms = {"mix_q": l_mix_q, "one_q": l_one_q, "mix_k": l_mix_k, "mask": l_mask}
        return StepOutput(loss=l_mix_q + l_one_q + l_mix_k + l_mask, terms=terms, s_mb=s_mb.detach(),
                          lam_mb=d.lam_mb)

    @torch.no_grad()
    def preview(self, x: Tensor, d: AutoMixDraws) -> MixPreview:
        # masks() runs k in train mode (as a step does), which moves k's BatchNorm running statistics,
        # and k is the encoder that is evaluated: drawing a picture must not change the run.
        saved = [b.clone() for b in self.k.buffers()]
        try:
            s_mb, _ = self.masks(x, d)
        finally:
            for buf, value in zip(self.k.buffers(), saved):
                buf.copy_(value)
        return MixPreview(x, x[d.perm_mb], s_mb.expand(-1, 1, *x.shape[-2:]), mixing.mix(x, s_mb, d.perm_mb))

    def eval_models(self) -> dict[str, nn.Module]:
        return {"top1": self.k, "top1_q": self.q}


class BaselineNet(nn.Module):
    """vanilla, mixup or cutmix on one classifier."""

    def __init__(self, cfg: RunConfig, num_classes: int, cifar_stem: bool):
        super().__init__()
        self.cfg = cfg
        self.method = cfg.method
        self.q = Classifier(build_backbone(cfg.model.backbone, cfg.model.width, cifar_stem, cfg.model.pretrained), num_classes)

    def draw(self, n: int, rng: np.random.Generator, gen: torch.Generator, device, image_size) -> MixDraws | None:
        if self.method == "vanilla":
            return None
        lam = mixing.sample_lam(self.cfg.mix.alpha, rng)
        perm = _perm(n, gen, device)
        if self.method == "mixup":
            return MixDraws(lam, perm, torch.full((1, 1, 1, 1), 1.0 - lam, device=device))
        mask, lam = mixing.cutmix_mask(lam, *image_size, generator=gen, device=device)
        return MixDraws(lam, perm, mask)

    def forward(self, x: Tensor, y: Tensor, d: MixDraws | None, mask_weight: float = 0.0) -> StepOutput:
        if d is None:
            loss = F.cross_entropy(self.q(x).float(), y)
            return StepOutput(loss, {"ce": loss})
        loss = mixing.mixup_ce(self.q(mixing.mix(x, d.mask, d.perm)), y, d.perm, d.lam)
        return StepOutput(loss, {"mix_ce": loss})

    @torch.no_grad()
    def preview(self, x: Tensor, d: MixDraws | None) -> MixPreview | None:
        if d is None:
            return None
        mask = d.mask.expand(x.shape[0], 1, *x.shape[-2:])
        return MixPreview(x, x[d.perm], mask, mixing.mix(x, d.mask, d.perm))

    def eval_models(self) -> dict[str, nn.Module]:
        return {"top1": self.q, "top1_q": self.q}


def _perm(n: int, gen: torch.Generator, device) -> Tensor:
    """A permutation drawn on the CPU from ``gen`` (the same draws on every device), sent to a GPU
    through pinned memory without blocking: a plain copy from pageable memory waits for the GPU's
    queue to drain, a host sync in every step."""
    perm = mixing.sample_perm(n, gen, "cpu")
    if torch.device(device).type != "cuda":
        return perm.to(device)
    return perm.pin_memory().to(device, non_blocking=True)


def build_net(cfg: RunConfig, num_classes: int) -> AutoMixNet | BaselineNet:
    stem = cfg.model.stem
    cifar_stem = cfg.data.image_size <= 64 if stem == "auto" else stem == "cifar"
    if cfg.method == "automix":
        return AutoMixNet(cfg, num_classes, cifar_stem)
    return BaselineNet(cfg, num_classes, cifar_stem)
