"""The contract every few-shot model implements, and what every prototypical model shares.

The trainer and the evaluation protocol only ever see this interface:

* ``forward(episode) -> logits [B, 2, H, W]`` (channel 0 background,
  channel 1 the episode's foreground class), at the episode's resolution;
* ``loss(episode) -> dict[str, Tensor]`` with the total under ``"loss"`` and
  its named terms beside it, for training episodes that carry query masks.

:class:`FewShotSegmenter` implements both around one abstract step:

    support, query --encoder--> features [B, S, C, h, w], [B, C, h, w]   (one pass)
    logits [B, 2, h, w] = classify(query features, support features, support masks)
    forward: logits --bilinear--> [B, 2, H, W]
    loss = CE_w(forward, y_q) + align_weight * L_align(classify) + sum of extra terms   (SSL-ALPNet eq. 7-9)

What a new model implements:

1. a frozen settings dataclass extending :class:`LossWeights`, its fields
   validated in ``__post_init__`` with :mod:`medfss.validation`
   (call ``super().__post_init__()`` first);
2. a subclass of :class:`FewShotSegmenter` whose constructor takes the built
   encoder and the settings and calls ``super().__init__(encoder, settings)``;
3. ``classify(query_features, support_features, support_masks)``: the logits
   on the feature grid, also the classifier of the prototype alignment loss;
4. optionally ``extra_loss_terms``: further named, weighted loss terms (e.g.
   a KL or a contrastive term) added to the total and reported beside it;
5. an entry in :data:`medfss.models.registry.MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfss.data.episodes import Episode
from medfss.validation import check_non_negative_number, check_positive_number
from medfss.nn.losses import prototype_alignment_loss, weighted_cross_entropy


@dataclass(frozen=True, kw_only=True)
class LossWeights:
    """The weights of the shared loss; every model's settings extend this class.

    The class weights are SSL-ALPNet's (eq. 7), under which its PANet
    baselines were trained too; LMS-Net (eq. 22 as printed) and the original
    PANet use ``bg_weight=1``.
    """

    align_weight: float = 1.0  # lambda of eq. 9 (the official code and LMS-Net eq. 23: 1); 0 turns it off
    bg_weight: float = 0.05  # class weights of the segmentation cross-entropy (eq. 7)
    fg_weight: float = 1.0

    def __post_init__(self):
        check_positive_number(self, "bg_weight", "fg_weight")
        check_non_negative_number(self, "align_weight", hint="0 turns the alignment loss off")


SHARED_TERMS = ("loss", "ce", "align")  # the keys of loss() that every model has (align unless its weight is 0)


def upsample_to_query(logits: Tensor, episode: Episode) -> Tensor:
    """Feature-grid logits [B, 2, h, w] -> [B, 2, H, W] at the episode's query size (bilinear)."""
    return F.interpolate(logits, size=episode.query_images.shape[-2:], mode="bilinear", align_corners=False)


class FewShotSegmenter(nn.Module):
    """``encoder``: any module mapping ``[N, 1, H, W]`` to ``[N, C, h, w]`` features (e.g. a DilatedResNet).

    Subclasses implement :meth:`classify` and may add loss terms with
    :meth:`extra_loss_terms`; the parameters of the encoder are ``encoder.*``.
    """

    def __init__(self, encoder: nn.Module, loss_weights: LossWeights = LossWeights()):
        super().__init__()
        self.encoder = encoder
        self.loss_weights = loss_weights

    def encode(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Features of support and query in one encoder pass: ([B, S, C, h, w], [B, C, h, w])."""
        b, s = episode.support_images.shape[:2]
        images = torch.cat([episode.support_images.flatten(0, 1), episode.query_images])  # [B*S + B, 1, H, W]
        if not torch.isfinite(images).all():
            raise ValueError("episode images hold NaN or infinite values; check the slice preprocessing")
        features = self.encoder(images)  # [B*S + B, C, h, w]
        support = features[:b * s].unflatten(0, (b, s))  # [B, S, C, h, w]
        return support, features[b * s:]

    def classify(self, query_features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """Segment ``query_features`` [B, C, h, w] with the support: logits [B, 2, h, w] on the feature grid.

        support_features: [B, S, C, h, w]; support_masks: [B, S, H', W']
        foreground in [0, 1]. The prototype alignment loss calls it with the
        query as a 1-shot support, so it must accept any S and any (H', W').
        """
        raise NotImplementedError

    def forward(self, episode: Episode) -> Tensor:  # [B, 2, H, W]
        support, query = self.encode(episode)
        return upsample_to_query(self.classify(query, support, episode.support_masks), episode)

    def loss(self, episode: Episode) -> dict[str, Tensor]:
        """``{"loss": ce + align_weight * align + extra, "ce": ..., "align": ..., **extra}`` (eq. 7-9).

        ``align`` is absent when ``align_weight`` is 0; the terms are reported
        unweighted, the total weighs them.
        """
        if episode.query_masks is None:
            raise ValueError("loss() needs an episode with query_masks (a training episode)")
        weights = self.loss_weights
        support, query = self.encode(episode)
        logits = self.classify(query, support, episode.support_masks)  # [B, 2, h, w]
        ce = weighted_cross_entropy(upsample_to_query(logits, episode), episode.query_masks, weights.bg_weight,
                                    weights.fg_weight)
        terms = {"ce": ce}
        total = ce
        if weights.align_weight > 0:
            terms["align"] = prototype_alignment_loss(self.classify, query, logits, support, episode.support_masks)
            total = total + weights.align_weight * terms["align"]
        for name, (weight, value) in self.extra_loss_terms(episode, support, query, logits).items():
            if name in SHARED_TERMS:
                raise ValueError(f"extra loss term {name!r} clashes with a term of the shared loss")
            terms[name] = value
            total = total + weight * value
        return {"loss": total, **terms}

    def extra_loss_terms(self, episode: Episode, support_features: Tensor, query_features: Tensor,
                         logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        """Model-specific loss terms: name -> (weight, unweighted scalar); none by default.

        Called by :meth:`loss` with the training episode, its features
        ([B, S, C, h, w], [B, C, h, w]) and the query logits on the feature
        grid [B, 2, h, w]; the names must not be in :data:`SHARED_TERMS`.
        """
        return {}
