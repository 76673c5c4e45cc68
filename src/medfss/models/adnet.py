"""ADNet (Hansen et al., MedIA 2022): anomaly detection against one foreground prototype, learned threshold.

    p     = 1/S sum_s MAP(f(x_s), y_s)                   the foreground prototype (no background one)
    A(l)  = -alpha cos(f(x_q)(l), p)                       the anomaly score, alpha = 20
    y_q(l) = 1 - sigmoid(kappa (A(l) - T)) = sigmoid(kappa (T - A(l)))     T learned, kappa = 1/2

Background is whatever is too far from the one prototype: T is a single
learned scalar, the anomaly threshold. At inference y_q > 1/2 exactly where
A < T (a hard threshold); in training the sigmoid keeps it soft. In the
two-class contract the logits are (0, kappa (T - A)), whose softmax is
(1 - y_q, y_q).

Training (self-supervised on 3D supervoxels, :class:`~medfss.data.samplers.SupervoxelSampler`):

    L = CE_w(y_q, m_q) + L_align + T / alpha

with background weight 0.1, the prototype alignment loss of the shared base
(the query and its predicted mask segment the support with the same
anomaly rule) and a threshold term that pulls T down, toward a tighter
foreground, against the cross-entropy that pulls it up.

Choices taken from the public reference (sha168/ADNet) where the paper
leaves room: T starts at -10 (cosine 0.5), kappa = 1/2, alpha = 20, the
background weight 0.1 and an unweighted threshold term. Deviations: the
mask is resized to the feature grid for MAP (the reference upsamples the
features to the mask), and the logits rather than the probabilities are
upsampled to the query size, as for every other model here; neither changes
the rule above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medfss.data.episodes import Episode
from medfss.models.base import FewShotSegmenter, LossWeights
from medfss.validation import check_non_negative_number, check_positive_number
from medfss.nn.prototypes import class_prototype, cosine_similarity_map


@dataclass(frozen=True)
class ADNetConfig(LossWeights):
    """Settings of :class:`ADNet` (defaults: the public reference's), beside the loss weights."""

    bg_weight: float = 0.1  # background weight of the cross-entropy
    alpha: float = 20.0  # anomaly score scale
    sharpness: float = 0.5  # kappa of the training sigmoid
    threshold_init: float = -10.0  # T at the start: foreground where cos > 0.5
    threshold_weight: float = 1.0  # weight of the T / alpha term; 0 turns it off

    def __post_init__(self):
        super().__post_init__()
        check_positive_number(self, "alpha", "sharpness")
        check_non_negative_number(self, "threshold_weight", hint="0 turns the threshold term off")
        if isinstance(self.threshold_init, bool) or not isinstance(self.threshold_init, (int, float)):
            raise ValueError(f"threshold_init must be a number, got {self.threshold_init!r}")


class ADNet(FewShotSegmenter):
    """``encoder``: any module mapping ``[N, 1, H, W]`` to ``[N, C, h, w]`` features (e.g. a DilatedResNet)."""

    def __init__(self, encoder: nn.Module, config: ADNetConfig = ADNetConfig()):
        super().__init__(encoder, config)
        self.config = config
        self.threshold = nn.Parameter(torch.tensor(float(config.threshold_init)))  # T

    def anomaly_score(self, query_features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """A = -alpha cos(f(x_q), p): [B, 1, h, w] (query [B, C, h, w], support [B, S, C, h, w])."""
        prototype = class_prototype(support_features, support_masks.to(query_features.dtype))  # [B, C]
        return -cosine_similarity_map(query_features, prototype.unsqueeze(1), self.config.alpha)

    def classify(self, query_features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """Logits (0, kappa (T - A)) [B, 2, h, w]: the softmax's foreground is sigmoid(kappa (T - A))."""
        score = self.anomaly_score(query_features, support_features, support_masks)  # [B, 1, h, w]
        return torch.cat([torch.zeros_like(score), self.config.sharpness * (self.threshold - score)], dim=1)

    def extra_loss_terms(self, episode: Episode, support_features: Tensor, query_features: Tensor,
                         logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        """``threshold``: T / alpha, which training minimises against the cross-entropy."""
        if self.config.threshold_weight == 0:
            return {}
        return {"threshold": (self.config.threshold_weight, self.threshold / self.config.alpha)}

    @torch.no_grad()
    def explain_maps(self, episode: Episode, index: int = 0) -> dict[str, Tensor]:
        """The anomaly score of episode ``index`` on the feature grid [h, w] and the threshold T (scalar)."""
        support, query = self.encode(episode)
        one = slice(index, index + 1)
        score = self.anomaly_score(query[one], support[one], episode.support_masks[one])
        return {"score": score[0, 0], "threshold": self.threshold.detach().clone()}
