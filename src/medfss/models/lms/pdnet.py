"""The mask step of an LMS block: PD-Net (eq. 20-21), the unrolled primal-dual iteration of eq. 12-13.

    u   = Softmax(alpha (-rho(l^k, x) - v^{k-1}))                                  DC, (12)
    v_i = delta^k u_i + v_i^{k-1} - delta^k MD(u_i + v_i^{k-1} / delta^k)           dual update, (13)
    u^k = Softmax(alpha (-rho(l^k, x) - v))                                        DC, (12)

MD (the learned proximal map of R / delta^k, eq. 14) replaces prox; the
skip connection ``delta u + v - delta MD(.)`` is the Moreau decomposition of
eq. 13, so an identity MD gives v = 0 and PD-Net reduces to DC. Eq. 21 is this
step with v^{k-1} = 0 ("in each inner loop the dual variable is initialised
to zero"); LMS-Net uses it so. fLMS-Net passes the previous stage's dual
instead, which makes it the unrolled primal-dual algorithm of the Potts model
(sec. III-B.3): with fixed prototypes and a zero restart every stage would
compute the same u^0-based result and only the last would matter.
delta^k > 0 is learned (see :mod:`medfss.models.lms.positive`).
Shapes: B batch, 2 classes, H W the feature grid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfss.models.lms.data_consistency import data_consistency
from medfss.models.lms.positive import PositiveScalar


def denoise_each_class(denoiser: nn.Module, u: Tensor) -> Tensor:
    """MD applied to each class map u_i separately: [B, 2, H, W] -> [B, 2, H, W]."""
    return denoiser(u.flatten(0, 1).unsqueeze(1)).view_as(u)  # via [B*2, 1, H, W]


def dual_update(u: Tensor, v_prev: Tensor, delta: Tensor | float, denoiser: nn.Module) -> Tensor:
    """v of eq. 13: delta u + v_prev - delta MD(u + v_prev / delta); u, v_prev: [B, 2, H, W]."""
    return delta * u + v_prev - delta * denoise_each_class(denoiser, u + v_prev / delta)


def primal_dual_step(distance: Tensor, v_prev: Tensor, alpha: Tensor | float, delta: Tensor | float,
                     denoiser: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """DC -> dual update -> DC (eq. 12, 13, 12): returns (u^k, v^k, logits^k), each [B, 2, H, W]."""
    u, _ = data_consistency(distance, v_prev, alpha)  # eq. 12 (eq. 20 when v_prev = 0)
    v = dual_update(u, v_prev, delta, denoiser)  # eq. 13
    u, logits = data_consistency(distance, v, alpha)  # eq. 12
    return u, v, logits


class PDNet(nn.Module):
    """PD-Net of one stage: its own mask denoiser and step size delta^k.

    ``(rho [B, 2, H, W], v^{k-1} [B, 2, H, W], alpha) -> (u^k, v^k, logits^k)``.
    """

    def __init__(self, denoiser: nn.Module, delta: float = 1.0):
        super().__init__()
        if not delta > 0:
            raise ValueError(f"delta must be > 0 (the dual step size of eq. 11), got {delta!r}")
        self.denoiser = denoiser
        self.delta = PositiveScalar(delta)

    def forward(self, distance: Tensor, v_prev: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return primal_dual_step(distance, v_prev, alpha, self.delta(), self.denoiser)


class DataConsistencyStep(nn.Module):
    """The mask step without PD-Net (ablation "w/o PD-Net"): DC alone with v = 0, which it returns as v^k."""

    def forward(self, distance: Tensor, v_prev: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        v = torch.zeros_like(distance)  # [B, 2, H, W]
        u, logits = data_consistency(distance, v, alpha)
        return u, v, logits
