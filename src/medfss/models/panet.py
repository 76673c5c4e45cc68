"""PANet (Wang et al., ICCV 2019) as compared in SSL-ALPNet: one class-level prototype per class.

    p(c) = mean over shots of MAP(f(x_s), y_s(c))             (SSL-ALPNet eq. 3)
    logits_c(h, w) = alpha * cos(p(c), f(x_q)(h, w))          (eq. 4, alpha = 20)
    loss = CE + lambda * prototype alignment                  (eq. 7-9)

This is what ALPNet computes with adaptive local pooling turned off: with a
single prototype per class the fused similarity of eq. 5 is the plain scaled
cosine. The class weights default to SSL-ALPNet's (0.05, 1.0), under which
its PANet baselines were trained; ``bg_weight=1`` gives the unweighted loss
of the original PANet. Encoding, upsampling and the loss are the shared ones
of :class:`~medfss.models.base.FewShotSegmenter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medfss.models.base import FewShotSegmenter, LossWeights
from medfss.validation import check_positive_number
from medfss.nn.prototypes import class_prototype, cosine_similarity_map


@dataclass(frozen=True)
class PANetConfig(LossWeights):
    """Settings of :class:`PANet`, beside the loss weights."""

    alpha: float = 20.0  # similarity scale of eq. 4

    def __post_init__(self):
        super().__post_init__()
        check_positive_number(self, "alpha")


class PANet(FewShotSegmenter):
    """``encoder``: any module mapping ``[N, 1, H, W]`` to ``[N, C, h, w]`` features (e.g. a DilatedResNet)."""

    def __init__(self, encoder: nn.Module, config: PANetConfig = PANetConfig()):
        super().__init__(encoder, config)
        self.config = config

    def classify(self, query_features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """Scaled cosine of the query to each class's prototype (eq. 3-4): logits [B, 2, h, w].

        query_features: [B, C, h, w]; support_features: [B, S, C, h, w];
        support_masks: [B, S, H', W'] foreground in [0, 1].
        """
        foreground = support_masks.to(query_features.dtype)  # [B, S, H', W']
        # one class at a time: the floating-point sums of ALPNet without local prototypes, bit for bit
        scores = [cosine_similarity_map(query_features, class_prototype(support_features, class_mask).unsqueeze(1),
                                        self.config.alpha) for class_mask in (1 - foreground, foreground)]
        return torch.cat(scores, dim=1)  # [B, 2, h, w]
