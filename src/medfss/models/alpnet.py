"""ALPNet (Ouyang et al., ECCV 2020, sec. 3.2): prototypical segmentation with adaptive local prototypes.

    support, query --encoder--> features (stride 8)
    per class (background, foreground): ALP + class-level prototypes   (eq. 1-3)
    query features vs. each class's prototypes: fused cosine similarity (eq. 4-5)
    logits [B, 2, h, w] --bilinear--> [B, 2, H, W]; softmax over classes (eq. 6)

Training loss: class-weighted cross-entropy plus the prototype alignment
regularisation (eq. 7-9). ALP has no parameters: every weight is the encoder's.

The same class with local prototypes turned off is PANet (see
:mod:`medfss.models.panet`).

Deviation from the official code: there the background ensemble holds only
local prototypes (and a training episode whose background has none fails and
is skipped); here the background's class-level prototype is always added, as
for the foreground, so every episode is well defined. With the tens of local
background prototypes of a typical slice one more changes little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfss.data.episodes import Episode
from medfss.models.base import FewShotSegmenter
from medfss.nn.losses import prototype_alignment_loss, weighted_cross_entropy
from medfss.nn.prototypes import adaptive_local_prototypes, fused_similarity


@dataclass(frozen=True)
class ALPNetConfig:
    """Settings of :class:`ALPNet` (defaults: the paper's and the official code's).

    Pool windows are in cells of the stride-8 feature grid: 4 x 4 in training
    (the official 32 x 32 grid pooled to 8 x 8), 2 x 2 at inference. ``None``
    turns local prototypes off (class-level prototypes only).
    """

    pool_window_train: int | None = 4
    pool_window_eval: int | None = 2
    threshold: float = 0.95  # T of eq. 2: a local prototype belongs to a class if >= T of its window does
    alpha: float = 20.0  # similarity scale of eq. 4
    align_weight: float = 1.0  # lambda of eq. 9 (the official code adds the alignment loss with weight 1)
    bg_weight: float = 0.05  # class weights of the segmentation loss (eq. 7)
    fg_weight: float = 1.0

    def __post_init__(self):
        for name in ("pool_window_train", "pool_window_eval"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer (feature-grid cells) or None, got {value!r}")
        if not isinstance(self.threshold, (int, float)) or not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] (the paper uses 0.95), got {self.threshold!r}")
        for name in ("alpha", "bg_weight", "fg_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.align_weight, (int, float)) or not self.align_weight >= 0:
            raise ValueError(f"align_weight must be >= 0 (0 turns the alignment loss off), "
                             f"got {self.align_weight!r}")


class ALPNet(FewShotSegmenter):
    """``encoder``: any module mapping ``[N, 1, H, W]`` to ``[N, C, h, w]`` features (e.g. a DilatedResNet)."""

    def __init__(self, encoder: nn.Module, config: ALPNetConfig = ALPNetConfig()):
        super().__init__()
        self.encoder = encoder
        self.config = config

    @property
    def pool_window(self) -> int | None:
        """The ALP window of the current mode: training or inference."""
        return self.config.pool_window_train if self.training else self.config.pool_window_eval

    def encode(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Features of support and query in one encoder pass: ([B, S, C, h, w], [B, C, h, w])."""
        b, s = episode.support_images.shape[:2]
        images = torch.cat([episode.support_images.flatten(0, 1), episode.query_images])  # [B*S + B, 1, H, W]
        if not torch.isfinite(images).all():
            raise ValueError("episode images hold NaN or infinite values; check the slice preprocessing")
        features = self.encoder(images)  # [B*S + B, C, h, w]
        support = features[:b * s].unflatten(0, (b, s))  # [B, S, C, h, w]
        return support, features[b * s:]

    def classify(self, features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """Segment ``features`` [B, C, h, w] with the prototypes of the support (eq. 1-5).

        support_features: [B, S, C, h, w]; support_masks: [B, S, H', W']
        foreground in [0, 1]. Returns the logits [B, 2, h, w] (background,
        foreground): each class's fused similarity.
        """
        foreground = support_masks.to(features.dtype)  # [B, S, H', W']
        scores = []
        for class_mask in (1 - foreground, foreground):
            prototypes, valid = adaptive_local_prototypes(support_features, class_mask, self.pool_window,
                                                          self.config.threshold)  # [B, K, C], [B, K]
            scores.append(fused_similarity(features, prototypes, valid, self.config.alpha))  # [B, h, w]
        return torch.stack(scores, dim=1)  # [B, 2, h, w]

    def _predict(self, episode: Episode) -> tuple[Tensor, Tensor, Tensor]:
        """(support features, query features, query logits on the feature grid [B, 2, h, w])."""
        support, query = self.encode(episode)
        return support, query, self.classify(query, support, episode.support_masks)

    @staticmethod
    def _upsample(logits: Tensor, episode: Episode) -> Tensor:  # [B, 2, h, w] -> [B, 2, H, W]
        return F.interpolate(logits, size=episode.query_images.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, episode: Episode) -> Tensor:  # [B, 2, H, W]
        _, _, logits = self._predict(episode)
        return self._upsample(logits, episode)

    def loss(self, episode: Episode) -> dict[str, Tensor]:
        """``{"loss": ce + align_weight * align, "ce": ..., "align": ...}`` (eq. 7-9)."""
        if episode.query_masks is None:
            raise ValueError("loss() needs an episode with query_masks (a training episode)")
        support, query, logits = self._predict(episode)
        ce = weighted_cross_entropy(self._upsample(logits, episode), episode.query_masks,
                                    self.config.bg_weight, self.config.fg_weight)
        terms = {"ce": ce}
        total = ce
        if self.config.align_weight > 0:
            terms["align"] = prototype_alignment_loss(self.classify, query, logits, support, episode.support_masks)
            total = total + self.config.align_weight * terms["align"]
        return {"loss": total, **terms}
