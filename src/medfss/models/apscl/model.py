"""APSCL (Huang et al., ACM MM 2024): anatomical prior guided spatial contrastive learning.

    support, query --encoder--> f(x_s), f(x_q)                       (one pass, shared weights)
    FEM:  f'(x) = beta(z_x) f(x) + alpha(z_x),  z_x from the image prior     (eq. 1-2, fem.py)
    MGD:  channel attention of the query with itself and the support,
          MAP prototypes, scaled cosine softmax                             (eq. 9-12, decoder.py)
    training only:
      SIM + SCL: cross attention between every support and query of the batch,
                 spatial relevance, contrastive loss                        (eq. 3-8, interaction.py,
                                                                             contrastive.py)
    L = CE + lambda_KL (KL_s + KL_q) + lambda_SCL L_SCL                      (eq. 13)

The whole model is one :class:`~medfss.models.base.FewShotSegmenter`:
``classify`` is FEM + MGD; the KL terms and the SCL are ``extra_loss_terms``
(the shared prototype alignment is off, ``align_weight=0``: eq. 13 has none).
The SCL sees its own draw of z_x (a second Monte Carlo sample of the same
prior): the base class computes the logits before the extra terms and does
not hand the enriched features over.

The ablation of Table 2 switches the three components: ``fem=False`` uses
the encoder's features unchanged (and drops the KL terms), ``scl=False``
drops the SIM and its loss, ``mgd=False`` replaces the decoder by the plain
prototype head (eq. 11-12 on f' directly). With all three off the model is
this project's stand-in for the paper's SE-Net baseline: PANet without the
alignment loss.

The SCL compares the episodes of one batch: the positives of a support are
the queries of episodes of its class (``Episode.class_ids``, given by the supervised
sampler; without it each episode is its own class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medfss.data.episodes import Episode
from medfss.errors import ConfigError
from medfss.models.apscl.contrastive import spatial_contrastive_loss
from medfss.models.apscl.decoder import MutualGuidanceDecoder, prototype_logits
from medfss.models.apscl.fem import FeatureEnrichment
from medfss.models.apscl.interaction import SpatialInteraction
from medfss.models.base import FewShotSegmenter, LossWeights
from medfss.validation import check_bool, check_non_negative_number, check_positive_int, check_positive_number


@dataclass(frozen=True)
class APSCLConfig(LossWeights):
    """Settings of :class:`APSCL`: the paper's where it gives them (latent 32, lambda_KL 0.1, lambda_SCL 0.07).

    ``temperature`` (tau of eq. 7) is not given in the paper: SupCon's 0.1.
    The embedding widths E' and E_1 are not given either. The class weights
    of the cross-entropy stay the shared (0.05, 1) under which every CPU
    table was trained; ``bg_weight=1`` is the paper's plain cross-entropy.
    """

    align_weight: float = 0.0  # eq. 13 has no prototype alignment term
    latent: int = 32  # latent factors of z_x, z_y (Table 4)
    kl_weight: float = 0.1  # lambda_KL of eq. 13
    scl_weight: float = 0.07  # lambda_SCL of eq. 13
    temperature: float = 0.1  # tau of eq. 7
    prior_hidden: int = 256  # width of the prior / posterior blocks and of the FiLM MLPs
    prior_grid: int = 4  # features are pooled to prior_grid x prior_grid before the blocks flatten them
    label_channels: int = 32  # width of the label encoder
    sim_embed: int = 64  # E' of eq. 3
    mgd_embed: int = 128  # E_1 of eq. 9
    scale: float = 20.0  # cosine scale of eq. 12
    fem: bool = True  # Table 2's components
    scl: bool = True
    mgd: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "latent", "prior_hidden", "prior_grid", "label_channels", "sim_embed", "mgd_embed")
        check_non_negative_number(self, "kl_weight", "scl_weight", hint="0 turns the term off")
        check_positive_number(self, "temperature", "scale")
        check_bool(self, "fem", "scl", "mgd")


class APSCL(FewShotSegmenter):
    """``encoder``: any module mapping ``[N, 1, H, W]`` to ``[N, C, h, w]`` with an ``out_channels`` attribute."""

    def __init__(self, encoder: nn.Module, config: APSCLConfig = APSCLConfig()):
        super().__init__(encoder, config)
        self.config = config
        channels = encoder.out_channels
        self.fem = FeatureEnrichment(channels, config.latent, config.prior_hidden, config.prior_grid,
                                     config.label_channels) if config.fem else None
        self.sim = SpatialInteraction(channels, config.sim_embed) if config.scl else None
        self.mgd = MutualGuidanceDecoder(channels, config.mgd_embed, config.scale) if config.mgd else None

    def enrich(self, features: Tensor) -> Tensor:
        """f'(x) of eq. 2 for features [..., C, h, w] (unchanged without the FEM)."""
        if self.fem is None:
            return features
        return self.fem(features.flatten(0, -4)).view_as(features)

    def classify(self, query_features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """FEM then MGD (eq. 2, 9-12): logits [B, 2, h, w].

        query_features: [B, C, h, w]; support_features: [B, S, C, h, w];
        support_masks: [B, S, H', W'] foreground in [0, 1].
        """
        query, support = self.enrich(query_features), self.enrich(support_features)
        if self.mgd is None:
            return prototype_logits(query, support, support_masks, self.config.scale)
        return self.mgd(query, support, support_masks)

    def extra_loss_terms(self, episode: Episode, support_features: Tensor, query_features: Tensor,
                         logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        """``kl_support``, ``kl_query`` (eq. 1, weight lambda_KL) and ``scl`` (eq. 8, weight lambda_SCL)."""
        config, terms = self.config, {}
        support = support_features.flatten(0, 1)  # [B*S, C, h, w]
        if self.fem is not None:
            terms["kl_support"] = (config.kl_weight, self.fem.kl(support, episode.support_masks.flatten(0, 1)))
            terms["kl_query"] = (config.kl_weight, self.fem.kl(query_features, episode.query_masks))
        if self.sim is not None:
            relevance = self.sim.relevance(self.enrich(support), self.enrich(query_features))  # [B*S, B]
            classes = episode_classes(episode)  # [B]
            terms["scl"] = (config.scl_weight, spatial_contrastive_loss(
                relevance, classes.repeat_interleave(episode.shots), classes, config.temperature))
        return terms

    @torch.no_grad()
    def explain_maps(self, episode: Episode, index: int = 0) -> dict[str, Tensor]:
        """The spatial interaction of episode ``index``'s first shot and query (inference mode).

        ``support_to_query`` W_{s,q} [L, L] and ``query_to_support`` W_{q,s}
        [L, L] (eq. 4, rows sum to 1), ``grid`` (h, w), and ``logits`` [2, h, w].
        """
        if self.sim is None:
            raise ConfigError("this APSCL was built without the spatial interaction module (scl: false): "
                              "it has no attention to draw")
        support, query = self.encode(episode)
        one = slice(index, index + 1)
        logits = self.classify(query[one], support[one], episode.support_masks[one])
        shot, target = self.enrich(support[one, 0]), self.enrich(query[one])  # [1, C, h, w]
        return {"support_to_query": self.sim.attention(shot, target)[0],
                "query_to_support": self.sim.attention(target, shot)[0],
                "grid": tuple(query.shape[-2:]), "logits": logits[0]}


def episode_classes(episode: Episode) -> Tensor:
    """The class of each episode [B]: ``class_ids``, or 0..B-1 (each its own class) where unknown."""
    if episode.class_ids is not None:
        return episode.class_ids
    return torch.arange(episode.batch_size, device=episode.query_images.device)
