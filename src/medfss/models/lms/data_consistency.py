"""The data step of LMS-Net: pixel-to-prototype distance and its entropic minimiser (DC layer).

    rho(l_i, x) = - <F(x), l_i> / (||F(x)|| ||l_i||)                                   (5)
    E(u; v) = sum_i sum_x u_i(x) (rho(l_i, x) + v_i(x)) + 1/alpha u_i(x) ln u_i(x)       (10)
    u = argmin_{u in simplex} E(u; v) = Softmax_i(alpha (-rho(l_i, x) - v_i(x)))         (12)

Eq. 16 (initial mask) and eq. 20 (first DC of a PD-Net) are eq. 12 with v = 0.
Shapes: B batch, C channels, H W spatial; 2 classes (0 background, 1 foreground).
"""

from __future__ import annotations

import torch
from torch import Tensor

from medfss.nn.prototypes import cosine_similarity_map


def prototype_distance(features: Tensor, prototypes: Tensor) -> Tensor:
    """rho of eq. 5, the negative cosine similarity: features [B, C, H, W], prototypes [B, 2, C] -> [B, 2, H, W]."""
    return -cosine_similarity_map(features, prototypes)


def data_consistency(distance: Tensor, v: Tensor, alpha: Tensor | float) -> tuple[Tensor, Tensor]:
    """The DC layer, eq. 12: the exact minimiser of eq. 10 over the simplex for fixed ``v``.

    distance (rho), v: [B, 2, H, W]; alpha > 0 a scalar. Returns (u, logits),
    both [B, 2, H, W], with ``logits = alpha (-rho - v)`` and
    ``u = softmax(logits, dim=1)``; the logits are what the model returns, so
    a softmax of its output gives the mask u exactly.
    """
    logits = alpha * (-distance - v)  # [B, 2, H, W]
    return logits.softmax(dim=1), logits


def primal_energy(u: Tensor, distance: Tensor, v: Tensor, alpha: Tensor | float) -> Tensor:
    """E(u; v) of eq. 10 per episode: sum over classes and pixels of u (rho + v) + u ln u / alpha.

    u, distance, v: [B, 2, H, W] with u on the simplex (0 ln 0 = 0). Returns [B].
    """
    entropy = torch.xlogy(u, u)  # [B, 2, H, W]
    return (u * (distance + v) + entropy / alpha).sum(dim=(1, 2, 3))
