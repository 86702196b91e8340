"""Schedules as pure functions of the global iteration t out of T (AUTOMIX_SPEC "Schedules")."""
from __future__ import annotations

import math


def cosine(t: int, total: int, start: float, end: float) -> float:
    """Cosine annealing from ``start`` at t=0 to ``end`` at t=total."""
    progress = min(max(t / max(total, 1), 0.0), 1.0)
    return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


def ema_momentum(t: int, total: int, m0: float, m_end: float, warmup: float = 0.1) -> float:
    """EMA momentum of the k encoder: m0 for the first ``warmup`` fraction of iterations, then
    ``m(t) = m_end - (m_end - m0) * (1 + cos(pi * t / T)) / 2``."""
    if t < warmup * total:
        return m0
    return m_end - (m_end - m0) * (1.0 + math.cos(math.pi * min(t / max(total, 1), 1.0))) / 2.0


def mask_loss_weight(t: int, total: int, w0: float, decay: str) -> float:
    """Weight of L_mask: constant, or a true cosine of the training progress down to 0.

    (The reference code multiplies the weight by a factor every iteration, which compounds to ~0
    within a few epochs; the spec asks for the intended cosine.)"""
    if decay == "none":
        return w0
    if decay == "cosine":
        return cosine(t, total, w0, 0.0)
    raise ValueError(f"mask loss decay {decay!r} is not one of: none | cosine")


def warmup_cosine(t: int, total: int, warmup: int, start: float, end: float) -> float:
    """Linear warm-up over the first ``warmup`` iterations, then cosine from ``start`` to ``end``.

    During the warm-up lr(t) = start * (t + 1) / (warmup + 1): a small step at t = 0 (not exactly 0,
    which would waste an iteration), rising linearly to just below ``start``; from t = warmup the
    cosine anneals over the remaining ``total - warmup`` iterations, so lr(total) = ``end``."""
    if t < warmup:
        return start * (t + 1) / (warmup + 1)
    return cosine(t - warmup, total - warmup, start, end)


def cosine_lr_factor(base: float, minimum: float, total: int, warmup: int = 0):
    """A LambdaLR factor function: lr(t) = warmup_cosine(t, T, warmup, base, minimum) relative to base."""
    def factor(t: int) -> float:
        return warmup_cosine(t, total, warmup, base, minimum) / base
    return factor


def ema_horizon_warning(m0: float, total_iterations: int) -> str | None:
    """A warning when the EMA's horizon 1/(1-m0) is longer than a tenth of the run: then the k
    encoder (the reported top-1) barely leaves its initialisation."""
    horizon = 1.0 / max(1.0 - m0, 1e-12)
    if horizon > 0.1 * total_iterations:
        return (f"automix.momentum={m0} averages over ~{horizon:.0f} iterations, more than a tenth of "
                f"this run's {total_iterations} iterations: the k encoder (the reported top1) will lag "
                f"far behind q (top1_q). For short runs lower automix.momentum (e.g. "
                f"{_suggest(total_iterations)}) and automix.momentum_end.")
    return None


def _suggest(total: int) -> float:
    """The largest two-decimal momentum whose horizon is at most a tenth of the run."""
    return max(math.floor((1.0 - 10.0 / max(total, 20)) * 100) / 100, 0.5)
