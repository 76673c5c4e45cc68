"""APSCL's mutual guidance decoder (MGD, sec. 3.3, Fig. 4) and the plain prototype head it replaces.

    Z_s = h_s(f'(x_s)),  Z_q = h_q(f'(x_q))          (1x1 convolutions, E_1 channels; Z-hat: [M, E_1])
    alpha = A(Z_q, Z_q) + A(Z_s, Z_q)                channel attention [E_1, E_1]                       (9)
    Z~_q  = alpha Z_q + Z_q                          (per pixel, over channels)                          (10)
    P_c   = 1/K sum_k MAP(Z_s^k, y_s^k(c))           c in {background, foreground}                       (11)
    y_q   = softmax_c( s cos(Z~_q, P_c) )                                                               (12)

Eq. 9 writes the attentions as the plain Gram matrices Z-hat^T Z-hat; summed
over M pixels their scale grows with the grid, and alpha Z_q in eq. 10 would
blow the features up. Here A(a, b) = softmax over the last axis of
a^T b / M (the row-normalised channel attention of DANet, which the figure
draws), so alpha re-weights channels by convex combinations whatever the grid.
With S shots the cross term is the mean over shots. Eq. 12 as printed
applies the softmax to raw cosines in [-1, 1], which cannot express a
confident pixel; the cosines are scaled by s = 20 as in PANet and SSL-ALPNet.
Shapes: B episodes, S shots, C channels, E = E_1, h w grid, L = h w.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfss.nn.prototypes import class_prototype, cosine_similarity_map


def prototype_logits(query: Tensor, support: Tensor, support_masks: Tensor, scale: float) -> Tensor:
    """Eq. 11-12: scaled cosine of the query [B, C', h, w] to the MAP prototypes of support [B, S, C', h, w].

    support_masks: [B, S, H', W'] foreground in [0, 1]. Returns logits [B, 2, h, w] (background, foreground).
    """
    foreground = support_masks.to(query.dtype)
    prototypes = torch.stack([class_prototype(support, mask) for mask in (1 - foreground, foreground)],
                             dim=1)  # [B, 2, C']
    return cosine_similarity_map(query, prototypes, scale)  # [B, 2, h, w]


def channel_attention(a: Tensor, b: Tensor) -> Tensor:
    """A(a, b) = softmax(a^T b / L) over the last axis: [..., E, L] x [..., E, L] -> [..., E, E]."""
    return (a @ b.transpose(-1, -2) / a.shape[-1]).softmax(dim=-1)


class MutualGuidanceDecoder(nn.Module):
    """h_s, h_q of eq. 9 and the prediction of eq. 10-12."""

    def __init__(self, channels: int, embed: int = 128, scale: float = 20.0):
        super().__init__()
        self.support_embedding = nn.Conv2d(channels, embed, 1)  # h_s
        self.query_embedding = nn.Conv2d(channels, embed, 1)  # h_q
        self.scale = scale

    def attention(self, query: Tensor, support: Tensor) -> Tensor:
        """alpha of eq. 9 from Z_q [B, E, h, w] and Z_s [B, S, E, h, w]: [B, E, E]."""
        z_q = query.flatten(2)  # [B, E, L]
        z_s = support.flatten(3)  # [B, S, E, L]
        return channel_attention(z_q, z_q) + channel_attention(z_s, z_q[:, None]).mean(dim=1)

    def forward(self, query: Tensor, support: Tensor, support_masks: Tensor) -> Tensor:
        """query f'(x_q) [B, C, h, w], support f'(x_s) [B, S, C, h, w], masks [B, S, H', W'] -> logits [B, 2, h, w]."""
        z_q = self.query_embedding(query)  # [B, E, h, w]
        z_s = self.support_embedding(support.flatten(0, 1)).unflatten(0, support.shape[:2])  # [B, S, E, h, w]
        alpha = self.attention(z_q, z_s)  # [B, E, E]
        enhanced = torch.einsum("bef,bfhw->behw", alpha, z_q) + z_q  # eq. 10, [B, E, h, w]
        return prototype_logits(enhanced, z_s, support_masks, self.scale)
