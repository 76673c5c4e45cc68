"""The training objective of MPER (sec. II-B, eq. 4-6) and its ramp-up.

    L_cons^* = CE(Y^*, Y^m) + Dice(Y^*, Y^m),   * = l (linear, eq. 3) or p (prototype, eq. 1)   (4)
    L        = L_cons^l + lambda(t) (L_cons^p + gamma L_cont)                                   (6)

lambda(t) is the sigmoid ramp-up of Laine & Aila / Mean Teacher,
exp(-5 (1 - t / T)^2) for t < T and 1 after, so the prototype terms start at
(nearly) 0 and reach full weight at the end of the ramp.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def sigmoid_rampup(step: int, length: int) -> float:
    """lambda(t) = exp(-5 (1 - clip(t / T, 0, 1))^2): exp(-5) at t = 0, 1 from t = T on."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * phase * phase)


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """1 - mean over classes of 2 sum(p g) / (sum p^2 + sum g^2) on the whole batch (SSL4MIS's DiceLoss).

    logits: [B, N, *spatial]; target: [B, *spatial] class indices.
    """
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probs)  # [B, N, *spatial]
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * onehot).sum(dims)
    union = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    return 1.0 - ((2 * intersection + eps) / (union + eps)).mean()


def ce_dice(logits: Tensor, target: Tensor) -> Tensor:
    """Eq. 4: cross-entropy + soft Dice of ``logits`` [B, N, *spatial] against ``target`` [B, *spatial]."""
    return F.cross_entropy(logits, target) + soft_dice_loss(logits, target)


def total_loss(cons_linear: Tensor, cons_prototype: Tensor, contrastive: Tensor, *, ramp: float,
               gamma: float) -> Tensor:
    """Eq. 6: L = L_cons^l + lambda(t) (L_cons^p + gamma L_cont)."""
    return cons_linear + ramp * (cons_prototype + gamma * contrastive)


def zero(like: Tensor) -> Tensor:
    """A scalar 0 on ``like``'s device (a loss term a variant leaves out)."""
    return torch.zeros((), device=like.device, dtype=like.dtype)
