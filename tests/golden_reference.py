"""A plain float64 restatement of docs/automix_spec.md, the yardstick of the golden tests.

Written from the spec alone and sharing no code with ``automix/`` (nothing here imports it): explicit
loops over samples, positions and pixels, so each line can be checked against the spec by eye. It is
slow and meant only for tiny inputs (a few samples, 4x4 feature maps). Torch is used for its tensors
and autograd; the networks are torchvision ResNet bodies whose forward is composed here from their
layers (``conv1 .. layer4``), with linear heads applied by hand.

Conventions (spec "One training iteration"): for sample i the partner is j = perm[i]; the Mix Block
returns s (N, 1, H, W), the share of x[perm] at each pixel; the mask of x itself is 1 - s; the mixed
image is (1 - s) x + s x[perm] and its label lam y + (1 - lam) y[perm], lam being x's share.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

# --------------------------------------------------------------------------- the Mix Block (step 3)


def mixblock(z: Tensor, lam: float, perm: Tensor, weights: dict[str, Tensor], image_size: tuple[int, int],
             lambda_channel: bool, reduction: int = 2) -> Tensor:
    """s (N, 1, H, W) from features z (N, C, h, w) and the Mix Block's weights
    ``qk.weight`` (C/r, C[+1], 1, 1), ``qk.bias``, ``v.weight`` (1, C[+1], 1, 1), ``v.bias``."""
    n, c, h, w = z.shape
    w_qk = weights["qk.weight"].reshape(weights["qk.weight"].shape[0], -1)
    b_qk = weights["qk.bias"]
    w_v = weights["v.weight"].reshape(-1)
    b_v = weights["v.bias"].reshape(())
    scale = 1.0 / math.sqrt(c / reduction)  # 1 / sqrt(C/2) for the default reduction 2
    masks = []
    for i in range(n):
        j = int(perm[i])
        f_i = [z[i, :, r, col] for r in range(h) for col in range(w)]  # positions of x_i, row-major
        f_j = [z[j, :, r, col] for r in range(h) for col in range(w)]  # positions of its partner x_j
        if lambda_channel:  # lam rides with x_i, 1 - lam with x_j
            f_i = [torch.cat([f, f.new_tensor([lam])]) for f in f_i]
            f_j = [torch.cat([f, f.new_tensor([1.0 - lam])]) for f in f_j]
        query = [w_qk @ f + b_qk for f in f_i]  # one shared 1x1 conv for query and key
        key = torch.stack([w_qk @ f + b_qk for f in f_j])  # (hw_j, C/r)
        value = torch.stack([w_v @ f + b_v for f in f_j])  # (hw_j,): the value comes from the partner
        a = []
        for q_p in query:  # each position p of x_i
            logits = scale * (key @ q_p)  # (hw_j,): one logit per position of x_j
            expo = torch.exp(logits - logits.detach().max())
            weights = expo / expo.sum()  # softmax over j's positions
            a.append(weights @ value)
        masks.append(torch.sigmoid(nearest_upsample(torch.stack(a).reshape(h, w), image_size)))
    return torch.stack(masks).unsqueeze(1)


def nearest_upsample(a: Tensor, image_size: tuple[int, int]) -> Tensor:
    """(h, w) -> (H, W): pixel (Y, X) takes feature cell (floor(Y h / H), floor(X w / W))."""
    h, w = a.shape
    big_h, big_w = image_size
    rows = [y * h // big_h for y in range(big_h)]
    cols = [x * w // big_w for x in range(big_w)]
    return a[rows][:, cols]


# --------------------------------------------------------------------------- mixing and losses (4-6)


def mix(x: Tensor, s: Tensor, perm: Tensor) -> Tensor:
    """x_mix[i] = (1 - s[i]) x[i] + s[i] x[perm[i]]; s (N, 1, H, W), one mask (1, 1, H, W) for every
    sample, or one number for all pixels."""
    out = []
    for i in range(x.shape[0]):
        s_i = s
        if torch.is_tensor(s) and s.dim() == 4:
            s_i = s[i] if s.shape[0] == x.shape[0] else s[0]
        out.append((1.0 - s_i) * x[i] + s_i * x[int(perm[i])])
    return torch.stack(out)


def nll(row: Tensor, label: int) -> Tensor:
    """-log softmax(row)[label], written out."""
    top = row.max()
    return top + torch.log(torch.exp(row - top).sum()) - row[label]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return sum(nll(logits[i], int(y[i])) for i in range(len(y))) / len(y)


def mixup_ce(logits: Tensor, y: Tensor, perm: Tensor, lam: float) -> Tensor:
    """x's share lam goes with x's label y[i], the partner's share 1 - lam with y[perm[i]]."""
    total = 0.0
    for i in range(len(y)):
        total = total + lam * nll(logits[i], int(y[i])) + (1.0 - lam) * nll(logits[i], int(y[int(perm[i])]))
    return total / len(y)


def mask_loss(mask_x: Tensor, lam: float, margin: float, per_sample: bool = False) -> Tensor:
    """max(|share of x - lam| - margin, 0) with mask_x = 1 - s: the share over the whole batch (batch
    mode), or the mean over samples of each sample's own hinge (sample mode). No weight applied."""
    if not per_sample:
        share = sum(mask_x[i].mean() for i in range(mask_x.shape[0])) / mask_x.shape[0]
        return torch.clamp((share - lam).abs() - margin, min=0.0)
    hinges = [torch.clamp((mask_x[i].mean() - lam).abs() - margin, min=0.0) for i in range(mask_x.shape[0])]
    return sum(hinges) / len(hinges)


def beta_moments(alpha: float) -> tuple[float, float]:
    """Mean and variance of Beta(alpha, alpha)."""
    return 0.5, 1.0 / (4.0 * (2.0 * alpha + 1.0))


# --------------------------------------------------------------------------- schedules


def cosine(t: int, total: int, start: float, end: float) -> float:
    return end + (start - end) * (1.0 + math.cos(math.pi * t / total)) / 2.0


def ema_momentum(t: int, total: int, m0: float, m_end: float, warmup: float = 0.1) -> float:
    """m0 for the first ``warmup`` fraction of the iterations, then
    m(t) = m_end - (m_end - m0) (1 + cos(pi t / T)) / 2."""
    if t < warmup * total:
        return m0
    return m_end - (m_end - m0) * (1.0 + math.cos(math.pi * t / total)) / 2.0


def mask_weight(t: int, total: int, w0: float, decay: str) -> float:
    return w0 if decay == "none" else cosine(t, total, w0, 0.0)


# --------------------------------------------------------------------------- the networks


def body_stage3(encoder: nn.Module, x: Tensor) -> Tensor:
    """torchvision ResNet body up to layer3 (stem: conv1, bn1, relu, maxpool)."""
    b = encoder.backbone
    h = b.maxpool(b.relu(b.bn1(b.conv1(x))))
    return b.layer3(b.layer2(b.layer1(h)))


def logits(encoder: nn.Module, x: Tensor, head: str) -> Tensor:
    """layer4, global average pooling, then the named linear head."""
    z4 = encoder.backbone.layer4(body_stage3(encoder, x))
    feat = z4.mean(dim=(2, 3))
    lin = encoder.heads[head]
    return feat @ lin.weight.T + lin.bias


# --------------------------------------------------------------------------- one whole step (1-7)


@dataclass(frozen=True)
class Hyper:
    """What one AutoMix step depends on, written out (the defaults are the spec's)."""
    total: int  # T, iterations of the run
    lr: float = 0.1
    min_lr: float = 0.0
    mixblock_lr: float = 0.1
    mixblock_min_lr: float = 1e-3
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    m0: float = 0.999
    m_end: float = 0.99999
    m_warmup: float = 0.1
    weight_mix_q: float = 1.0
    weight_one_q: float = 1.0
    weight_mix_k: float = 1.0
    mask_w0: float = 0.1
    mask_decay: str = "none"
    mask_margin: float = 0.1
    mask_per_sample: bool = False
    lam_margin: float = 0.08
    lambda_channel: bool = True
    reduction: int = 2


@dataclass
class State:
    """float64 copies of q, k and the Mix Block weights, and the SGD momentum buffers."""
    q: nn.Module
    k: nn.Module
    mb: dict[str, Tensor]
    sgd_buffers: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def copy_of(cls, q: nn.Module, k: nn.Module, mb: nn.Module) -> "State":
        q64, k64 = copy.deepcopy(q).double(), copy.deepcopy(k).double()
        for p in k64.parameters():
            p.requires_grad_(False)
        weights = {n: p.detach().double().clone().requires_grad_(True) for n, p in mb.named_parameters()}
        return cls(q64, k64, weights)


@dataclass(frozen=True)
class Draws:
    lam_mb: float
    lam_bb: float
    perm_mb: Tensor
    perm_bb: Tensor


def losses(state: State, x: Tensor, y: Tensor, d: Draws, t: int, hp: Hyper) -> dict[str, Tensor]:
    """The four weighted loss terms of spec step 6 (autograd graph to q's and the Mix Block's weights)."""
    size = (x.shape[-2], x.shape[-1])
    with torch.no_grad():
        z = body_stage3(state.k, x)  # the features of k, in train mode
    s_mb = mixblock(z, d.lam_mb, d.perm_mb, state.mb, size, hp.lambda_channel, hp.reduction)
    if d.lam_bb <= hp.lam_margin or 1.0 - d.lam_bb <= hp.lam_margin:
        s_bb = torch.tensor(1.0 - d.lam_bb, dtype=x.dtype)  # plain mixup: x keeps the share lam_bb
    else:
        s_bb = mixblock(z, d.lam_bb, d.perm_bb, state.mb, size, hp.lambda_channel, hp.reduction).detach()
    x_mb = mix(x, s_mb, d.perm_mb)
    x_bb = mix(x, s_bb, d.perm_bb)
    w_mask = mask_weight(t, hp.total, hp.mask_w0, hp.mask_decay)
    return {
        "mix_q": hp.weight_mix_q * mixup_ce(logits(state.q, x_bb, "mix"), y, d.perm_bb, d.lam_bb),
        "one_q": hp.weight_one_q * cross_entropy(logits(state.q, x, "one"), y),
        "mix_k": hp.weight_mix_k * mixup_ce(logits(state.k, x_mb, "mix"), y, d.perm_mb, d.lam_mb),
        "mask": w_mask * mask_loss(1.0 - s_mb, d.lam_mb, hp.mask_margin, hp.mask_per_sample),
    }


def step(state: State, x: Tensor, y: Tensor, d: Draws, t: int, hp: Hyper) -> dict[str, Tensor]:
    """One iteration at global step t: losses, SGD (momentum, weight decay, each group's cosine LR of
    step t), then k <- m(t) k + (1 - m(t)) q with the updated q (parameters only, not buffers)."""
    terms = losses(state, x, y, d, t, hp)
    total = sum(terms.values())
    q_named = [(f"q.{n}", p) for n, p in state.q.named_parameters()]
    mb_named = [(f"mb.{n}", p) for n, p in state.mb.items()]
    grads = torch.autograd.grad(total, [p for _, p in q_named + mb_named], allow_unused=True)
    lr_q = cosine(t, hp.total, hp.lr, hp.min_lr)
    lr_mb = cosine(t, hp.total, hp.mixblock_lr, hp.mixblock_min_lr)
    with torch.no_grad():
        for (name, p), g in zip(q_named + mb_named, grads):
            if g is None:
                g = torch.zeros_like(p)
            d_p = g + hp.weight_decay * p
            buf = state.sgd_buffers.get(name)
            buf = d_p.clone() if buf is None else hp.sgd_momentum * buf + d_p
            state.sgd_buffers[name] = buf
            p -= (lr_q if name.startswith("q.") else lr_mb) * buf
        m = ema_momentum(t, hp.total, hp.m0, hp.m_end, hp.m_warmup)
        q_params = dict(state.q.named_parameters())
        for name, p_k in state.k.named_parameters():
            p_k.copy_(m * p_k + (1.0 - m) * q_params[name])
    return {k: v.detach() for k, v in terms.items()}
