"""Losses of the prototypical models: weighted cross-entropy and prototype alignment (SSL-ALPNet eq. 7-9).

Shapes: B batch, S shots, C channels, H W spatial; logits are [B, 2, H, W]
(background, foreground).
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

# classify(features [B, C, h, w], support_features [B, S, C, h, w], support_masks [B, S, H', W'])
#   -> logits [B, 2, h, w]: segments `features` with prototypes pooled from the support
Classifier = Callable[[Tensor, Tensor, Tensor], Tensor]


def weighted_cross_entropy(logits: Tensor, target: Tensor, bg_weight: float = 0.05,
                           fg_weight: float = 1.0) -> Tensor:
    """Class-weighted cross-entropy of the query segmentation (SSL-ALPNet eq. 7).

        L_seg = - sum_hw w_y(h,w) log p_y(h,w)(h, w) / sum_hw w_y(h,w)

    with w = (0.05, 1.0) for (background, foreground) in the paper, against
    the foreground-background imbalance. As in the official code
    (``nn.CrossEntropyLoss(weight=...)``) the sum is normalised by the total
    weight of the target pixels rather than by H W. logits: [B, 2, H, W];
    target: [B, H, W] long in {0, 1}. Returns a scalar.
    """
    weight = logits.new_tensor([bg_weight, fg_weight])  # [2]
    return F.cross_entropy(logits, target, weight=weight)


def prototype_alignment_loss(classify: Classifier, query_features: Tensor, query_logits: Tensor,
                             support_features: Tensor, support_masks: Tensor,
                             weight: tuple[float, float] | None = None) -> Tensor:
    """Prototype alignment regularisation (PANet; SSL-ALPNet eq. 8).

    The query with its own predicted mask becomes the support, S' = (x_q, argmax y_q),
    and segments each original support image; the loss is the cross-entropy
    against the support masks, averaged over shots and pixels:

        L_reg = - 1/(S H W) sum_s sum_hw sum_j y_s(c_j)(h, w) log ybar_s(c_j)(h, w)

    The predicted mask is a hard argmax (no gradient flows through it), as in
    PANet and the official SSL-ALPNet code; gradients reach the encoder
    through both feature maps. The official code leaves this term unweighted
    (``weight=None``); pass ``(bg, fg)`` to weight it like eq. 7.

    query_features: [B, C, h, w]; query_logits: [B, 2, h, w] on the same grid;
    support_features: [B, S, C, h, w]; support_masks: [B, S, H, W] in {0, 1}.
    Returns a scalar; the total loss is L_seg + lambda L_reg (eq. 9).
    """
    b, s, c, h, w = support_features.shape
    predicted = query_logits.argmax(dim=1).to(query_features.dtype)  # [B, h, w]
    # every (episode, shot) pair is one 1-shot problem: the query supports, support shot s is segmented
    as_support = query_features.unsqueeze(1).expand(b, s, c, h, w).reshape(b * s, 1, c, h, w)  # [B*S, 1, C, h, w]
    as_support_masks = predicted.unsqueeze(1).expand(b, s, h, w).reshape(b * s, 1, h, w)  # [B*S, 1, h, w]
    logits = classify(support_features.reshape(b * s, c, h, w), as_support, as_support_masks)  # [B*S, 2, h, w]
    logits = F.interpolate(logits, size=support_masks.shape[-2:], mode="bilinear",
                           align_corners=False)  # [B*S, 2, H, W]
    target = support_masks.flatten(0, 1).long()  # [B*S, H, W]
    class_weight = None if weight is None else logits.new_tensor(weight)
    return F.cross_entropy(logits, target, weight=class_weight)
