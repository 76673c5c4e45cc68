"""One LMS block (sec. III-B.3): the prototype step (eq. 8, 17-19) then the mask step (eq. 20-21).

    p^k, l^k, kept = prototype_step(F^q, u^{k-1}, p^{k-1}, l_1^s)       MAP + MUT, or l^k = l^0 (fLMS-Net)
    u^k, v^k      = mask_step(rho(l^k, F^q), v^{k-1} or 0, alpha)      PD-Net, or DC alone (ablation)

:class:`Stage` records one iterate; the Initialisation Module gives stage 0.
Shapes: B batch, K prototypes, C channels, h w the feature grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medfss.models.lms.data_consistency import prototype_distance


@dataclass(frozen=True)
class Stage:
    """The state after one stage of the unfolded iteration."""

    u: Tensor  # [B, 2, h, w] mask on the simplex (background, foreground)
    v: Tensor  # [B, 2, h, w] dual variable
    logits: Tensor  # [B, 2, h, w] alpha (-rho - v): softmax gives u
    prototypes: Tensor  # l^k [B, 2, C] (background, foreground)
    representatives: Tensor  # p^k [B, K, C]; K = 0 without MUT
    valid: Tensor  # [B, K] bool: representative k exists (non-empty Voronoi region)
    support_prototype: Tensor  # l_1^s [B, C] of eq. 15, the same at every stage: the anchor of l^k (mut.py)
    kept: Tensor | None = None  # [B, K] bool: kept by the MUT mask of eq. 19; None where no MUT ran

    def as_dict(self) -> dict[str, Tensor]:
        """The non-empty fields by name (``kept`` only where MUT ran)."""
        fields = {"u": self.u, "v": self.v, "logits": self.logits, "prototypes": self.prototypes,
                  "representatives": self.representatives, "valid": self.valid}
        return fields if self.kept is None else {**fields, "kept": self.kept}


class LMSBlock(nn.Module):
    """``(query features [B, C, h, w], stage k-1, alpha) -> stage k``.

    ``prototype_step``: :class:`~medfss.models.lms.mut.PrototypeStep` or
    :class:`~medfss.models.lms.mut.FixedPrototypes`; ``mask_step``:
    :class:`~medfss.models.lms.pdnet.PDNet` or
    :class:`~medfss.models.lms.pdnet.DataConsistencyStep`. ``carry_dual``
    starts the mask step from the previous stage's v (eq. 13) instead of 0 (eq. 21).
    """

    def __init__(self, prototype_step: nn.Module, mask_step: nn.Module, carry_dual: bool = False):
        super().__init__()
        self.prototype_step = prototype_step
        self.mask_step = mask_step
        self.carry_dual = carry_dual

    def forward(self, features: Tensor, previous: Stage, alpha: Tensor) -> Stage:
        p, prototypes, kept = self.prototype_step(features, previous.u, previous.representatives,
                                                  previous.prototypes, previous.valid, previous.support_prototype)
        distance = prototype_distance(features, prototypes)  # [B, 2, h, w]
        v_prev = previous.v if self.carry_dual else torch.zeros_like(previous.v)  # [B, 2, h, w]
        u, v, logits = self.mask_step(distance, v_prev, alpha)
        return Stage(u=u, v=v, logits=logits, prototypes=prototypes, representatives=p, valid=previous.valid,
                     support_prototype=previous.support_prototype, kept=kept)
