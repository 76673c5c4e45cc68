"""ALPNet (Ouyang et al., ECCV 2020, sec. 3.2): prototypical segmentation with adaptive local prototypes.

    support, query --encoder--> features (stride 8)
    per class (background, foreground): ALP + class-level prototypes   (eq. 1-3)
    query features vs. each class's prototypes: fused cosine similarity (eq. 4-5)
    logits [B, 2, h, w] --bilinear--> [B, 2, H, W]; softmax over classes (eq. 6)

Training loss: class-weighted cross-entropy plus the prototype alignment
regularisation (eq. 7-9). ALP has no parameters: every weight is the encoder's.

With local prototypes turned off (pool windows ``None``) it computes PANet
(:mod:`medfss.models.panet`). Encoding, upsampling and the loss are the
shared ones of :class:`~medfss.models.base.FewShotSegmenter`.

Deviation from the official code: there the background ensemble holds only
local prototypes (and a training episode whose background has none fails and
is skipped); here the background's class-level prototype is always added, as
for the foreground, so every episode is well defined. With the tens of local
background prototypes of a typical slice one more changes little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medfss.models.base import FewShotSegmenter, LossWeights
from medfss.validation import check_fraction, check_positive_int, check_positive_number
from medfss.nn.prototypes import adaptive_local_prototypes, fused_similarity


@dataclass(frozen=True)
class ALPNetConfig(LossWeights):
    """Settings of :class:`ALPNet` (defaults: the paper's and the official code's), beside the loss weights.

    Pool windows are in cells of the stride-8 feature grid: 4 x 4 in training
    (the official 32 x 32 grid pooled to 8 x 8), 2 x 2 at inference. ``None``
    turns local prototypes off (class-level prototypes only).
    """

    pool_window_train: int | None = 4
    pool_window_eval: int | None = 2
    threshold: float = 0.95  # T of eq. 2: a local prototype belongs to a class if >= T of its window does
    alpha: float = 20.0  # similarity scale of eq. 4

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "pool_window_train", "pool_window_eval", optional=True, hint="feature-grid cells")
        check_fraction(self, "threshold", hint="the paper uses 0.95")
        check_positive_number(self, "alpha")


class ALPNet(FewShotSegmenter):
    """``encoder``: any module mapping ``[N, 1, H, W]`` to ``[N, C, h, w]`` features (e.g. a DilatedResNet)."""

    def __init__(self, encoder: nn.Module, config: ALPNetConfig = ALPNetConfig()):
        super().__init__(encoder, config)
        self.config = config

    @property
    def pool_window(self) -> int | None:
        """The ALP window of the current mode: training or inference."""
        return self.config.pool_window_train if self.training else self.config.pool_window_eval

    def classify(self, query_features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """Segment the query with the prototypes of the support (eq. 1-5): each class's fused similarity.

        query_features: [B, C, h, w]; support_features: [B, S, C, h, w];
        support_masks: [B, S, H', W'] foreground in [0, 1]. Returns the
        logits [B, 2, h, w] (background, foreground).
        """
        foreground = support_masks.to(query_features.dtype)  # [B, S, H', W']
        scores = []
        for class_mask in (1 - foreground, foreground):
            prototypes, valid = adaptive_local_prototypes(support_features, class_mask, self.pool_window,
                                                          self.config.threshold)  # [B, K, C], [B, K]
            scores.append(fused_similarity(query_features, prototypes, valid, self.config.alpha))  # [B, h, w]
        return torch.stack(scores, dim=1)  # [B, 2, h, w]
