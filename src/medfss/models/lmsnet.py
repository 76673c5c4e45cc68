"""LMS-Net and fLMS-Net (Learned Mumford-Shah networks, sec. III): few-shot segmentation as an unfolded solver.

    support, query --encoder--> F^s, F^q (stride 8)
    Initialisation (eq. 15-16): l^0 = [l_1^s, -l_1^s], u^0 = DC(rho(l^0), 0), p^0 Voronoi prototypes
    K LMS blocks:   l^k = l_1^s + MUT(p, MAP(F^q, u^{k-1}))   (eq. 8, 17-19)    fLMS-Net: l^k = l^0
                    u^k, v^k = PD-Net(rho(l^k), ...)    (eq. 20-21)
    logits alpha (-rho(l^K) - v^K) [B, 2, h, w] --bilinear--> [B, 2, H, W]; softmax of the grid logits is u^K

Training loss (eq. 22-23): the shared loss of
:class:`~medfss.models.base.FewShotSegmenter`, cross-entropy of the final mask
plus the prototype alignment regularisation of PANet, in which the query with
its predicted mask becomes the support of the whole unfolded network. The
cross-entropy carries the class weights of the toolkit's ALPNet (0.05, 1.0)
by default so that both train under one protocol; ``bg_weight=1`` gives eq. 22
as printed.
alpha (eq. 4, shared by every DC layer) and each stage's delta^k are learned
(as softplus of a raw parameter, :mod:`medfss.models.lms.positive`).

One deviation from the printed equations: the prototype an LMS block hands
to PD-Net is the support prototype l_1^s plus GAP of the MUT output, as in
RPT (whose BaT block eq. 18 follows), not GAP of the MUT output alone: eq. 18
read literally lets training replace the support by one fixed LayerNorm-space
vector (see :mod:`medfss.models.lms.mut`). ``support_residual=False`` gives
eq. 18 as printed.

The steps live in :mod:`medfss.models.lms`; :meth:`UnfoldedMumfordShah.stages`
returns every iterate for inspection (Fig. 7).
Shapes: B batch, S shots, C channels, K prototypes, H W image, h w feature grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from medfss.data.episodes import Episode
from medfss.errors import ConfigError
from medfss.models.base import FewShotSegmenter, LossWeights
from medfss.models.lms.block import LMSBlock, Stage
from medfss.models.lms.denoiser import VARIANTS, MaskDenoiser
from medfss.models.lms.initialisation import initial_mask, initial_prototypes, representative_prototypes
from medfss.models.lms.mut import FixedPrototypes, MomentumUpdateTransformer, PrototypeStep
from medfss.models.lms.pdnet import DataConsistencyStep, PDNet
from medfss.models.lms.positive import PositiveScalar
from medfss.validation import check_bool, check_choice, check_positive_int, check_positive_number
from medfss.nn.prototypes import class_prototype


@dataclass(frozen=True)
class UnfoldedSettings(LossWeights):
    """The settings LMS-Net and fLMS-Net share; ``alpha`` and ``delta`` are initial values of learned parameters."""

    num_blocks: int = 2  # K, the number of LMS blocks (the paper's best: 2; for fLMS-Net: 3, Fig. 6)
    pdnet: bool = True  # False: DC only (the "w/o PD-Net" ablation, Table II)
    denoiser: str = "c"  # Mask Denoiser variant of Fig. 8: "a" DnCNN, "b" + Sigmoid, "c" + inverse Sigmoid
    denoiser_width: int = 64  # DnCNN channels
    alpha: float = 20.0  # entropy weight of eq. 4: the similarity scale of every DC layer
    delta: float = 1.0  # dual step size delta^k of eq. 11-13, every stage

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "num_blocks", "denoiser_width")
        check_bool(self, "pdnet", hint="false: DC only, the 'w/o PD-Net' ablation")
        check_choice(self, "denoiser", VARIANTS, hint="Fig. 8; c is the paper's")
        check_positive_number(self, "alpha", "delta")


@dataclass(frozen=True)
class LMSNetConfig(UnfoldedSettings):
    """Settings of :class:`LMSNet`: the shared ones and those of the prototype updates."""

    num_prototypes: int = 10  # N_p Voronoi regions per support shot (not given in the paper)
    heads: int = 4  # of the MUT self-attention; must divide the encoder's channels
    carry_dual: bool = False  # start each PD-Net from v^{k-1} (eq. 13) instead of 0 (eq. 21)
    support_residual: bool = True  # l^k = l_1^s + GAP(p) as RPT (False: GAP(p), eq. 18 literally)

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self, "num_prototypes", "heads")
        check_bool(self, "carry_dual", "support_residual")


@dataclass(frozen=True)
class FLMSNetConfig(UnfoldedSettings):
    """Settings of :class:`FLMSNet`: those of :class:`LMSNetConfig` that do not concern prototype updates."""


def _encoder_channels(encoder: nn.Module) -> int:
    channels = getattr(encoder, "out_channels", None)
    if not isinstance(channels, int):
        raise ValueError("the encoder must expose its feature width as an integer `out_channels` attribute")
    return channels


def _mask_step(config: UnfoldedSettings) -> nn.Module:
    if not config.pdnet:
        return DataConsistencyStep()
    return PDNet(MaskDenoiser(config.denoiser, config.denoiser_width), config.delta)


class UnfoldedMumfordShah(FewShotSegmenter):
    """Initialisation + ``blocks``: what LMS-Net and fLMS-Net share; the loss (eq. 22-23) is the base's.

    ``num_prototypes``: Voronoi regions per support shot for p^0 (0: no
    representatives, for blocks without MUT). ``alpha``: initial alpha.
    """

    def __init__(self, encoder: nn.Module, blocks: Sequence[LMSBlock], *, num_prototypes: int, alpha: float,
                 loss_weights: LossWeights):
        super().__init__(encoder, loss_weights)
        self.blocks = nn.ModuleList(blocks)
        self.num_prototypes = num_prototypes
        self.alpha = PositiveScalar(alpha)

    def initialise(self, query: Tensor, support: Tensor, support_masks: Tensor) -> Stage:
        """Stage 0 (eq. 15-16): query [B, C, h, w], support [B, S, C, h, w], support_masks [B, S, H', W']."""
        masks = support_masks.to(query.dtype)  # [B, S, H', W']
        foreground = class_prototype(support, masks)  # l_1^s [B, C] (eq. 15)
        prototypes = initial_prototypes(foreground)  # l^0 [B, 2, C]
        u, logits = initial_mask(query, prototypes, self.alpha())  # [B, 2, h, w] each
        if self.num_prototypes:
            p, valid = representative_prototypes(support, masks, self.num_prototypes)  # [B, S*N_p, C], [B, S*N_p]
        else:
            p = query.new_zeros(query.shape[0], 0, query.shape[1])  # [B, 0, C]
            valid = torch.zeros(query.shape[0], 0, dtype=torch.bool, device=query.device)  # [B, 0]
        return Stage(u=u, v=torch.zeros_like(u), logits=logits, prototypes=prototypes, representatives=p,
                     valid=valid, support_prototype=foreground)

    def run(self, query: Tensor, support: Tensor, support_masks: Tensor) -> list[Stage]:
        """Every iterate, stage 0 to K, for features already encoded (shapes as in :meth:`initialise`)."""
        stages = [self.initialise(query, support, support_masks)]
        alpha = self.alpha()
        for block in self.blocks:
            stages.append(block(query, stages[-1], alpha))
        return stages

    def classify(self, query_features: Tensor, support_features: Tensor, support_masks: Tensor) -> Tensor:
        """The final logits [B, 2, h, w] on the feature grid: those of stage K."""
        return self.run(query_features, support_features, support_masks)[-1].logits

    def stages(self, episode: Episode) -> list[dict[str, Tensor]]:
        """Every iterate of ``episode`` as dicts on the feature grid: u, v, logits, prototypes (l^k), ...

        Entry 0 is the Initialisation Module's (v^0 = 0), entry k the k-th
        LMS block's; see :class:`~medfss.models.lms.block.Stage` for the keys.
        """
        support, query = self.encode(episode)
        return [stage.as_dict() for stage in self.run(query, support, episode.support_masks)]


class LMSNet(UnfoldedMumfordShah):
    """LMS-Net: K blocks of MAP + MUT + PD-Net. ``encoder``: ``[N, 1, H, W] -> [N, C, h, w]`` with ``out_channels``."""

    def __init__(self, encoder: nn.Module, config: LMSNetConfig = LMSNetConfig()):
        channels = _encoder_channels(encoder)
        blocks = [LMSBlock(PrototypeStep(MomentumUpdateTransformer(channels, config.heads), config.support_residual),
                           _mask_step(config), carry_dual=config.carry_dual) for _ in range(config.num_blocks)]
        super().__init__(encoder, blocks, num_prototypes=config.num_prototypes, alpha=config.alpha,
                         loss_weights=config)
        self.config = config


class FLMSNet(UnfoldedMumfordShah):
    """fLMS-Net: prototypes fixed at l^0, K PD-Nets chained through the dual variable (eq. 12-13)."""

    def __init__(self, encoder: nn.Module, config: FLMSNetConfig = FLMSNetConfig()):
        blocks = [LMSBlock(FixedPrototypes(), _mask_step(config), carry_dual=True) for _ in range(config.num_blocks)]
        super().__init__(encoder, blocks, num_prototypes=0, alpha=config.alpha, loss_weights=config)
        self.config = config


def build_lmsnet(encoder: nn.Module, config: LMSNetConfig) -> LMSNet:
    """:class:`LMSNet` for the registry: a setting that does not fit the encoder (``heads``) is a ConfigError."""
    try:
        return LMSNet(encoder, config)
    except ValueError as exc:
        raise ConfigError(f"model 'lmsnet': {exc}") from None
