"""The prototype step of an LMS block: MAP on the query (eq. 8) and the Momentum Update Transformer (eq. 17-19).

    l_1 = MAP(F^q, u_1^{k-1})                                           (8)
    p, l = MUT(p, l_1)                                                  (17)
        p = LN(Softmax_n(M + p l_1^T) l_1 + p)                          (18)
        p = LN(MSA(p) + p)
        p = LN(MLP(p) + p)
        l = [GAP(p), -GAP(p)]
    M(n) = 0 if p_n l_1^T > eps else -inf,  eps = (min_n p l_1^T + mean_n p l_1^T) / 2     (19)
    l^k = [l_1^s + GAP(p), -(l_1^s + GAP(p))]          what the LMS block passes to PD-Net (see below)

The softmax of the first line runs over the N_p prototypes (as in RPT's
BaT block, which eq. 18-19 follow): the query prototype l_1 is shared out
among the prototypes that resemble it, the others are left unchanged. The
scores are the raw inner products of eq. 18, unscaled. Prototypes marked
invalid (empty Voronoi regions) take no part: they are masked in both
attentions, and excluded from eps and from GAP. Where no valid prototype
exceeds eps (all scores equal, e.g. a single one) the mask keeps every valid
prototype, the limit of eq. 19 as the scores become equal.
Eq. 8 also defines l_2; MUT does not use it (l_2 = -l_1 after eq. 18).

Deviation from eq. 18 (the anchor ``l_1^s +``). Read literally, eq. 18 makes
l^k = GAP(p) the output of three LayerNorms and nothing else: the prototype
that DC (eq. 12, 20) compares with the encoder's features F^q by cosine
similarity leaves the feature space for a LayerNorm space whose per-layer
affine terms (and the MLP) can emit a vector that does not depend on the
support at all, and training does collapse l^K to one fixed direction. RPT,
whose BaT block eq. 18-19 transcribe, never uses GAP(p) alone: its segmenting
prototype is ``mean(BaT(p)) + support prototype`` at every iteration. We do
the same, l^k = [l_1^s + GAP(p), -(l_1^s + GAP(p))]: GAP(p) is a learned
correction added to the support prototype l_1^s of eq. 15 (constant over the
stages), which keeps l^k in the feature space and tied to the support. This
is also how the paper motivates MUT (sec. III-A.3, B.1: a "momentum update"
that keeps the prototype information of the previous stages instead of
losing it to eq. 8). MUT itself (eq. 17-19, the ``p`` it returns and its
``l``) is unchanged; ``PrototypeStep(..., support_residual=False)`` gives
eq. 18 literally.
Shapes: B batch, K prototypes, C channels, h w the feature grid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfss.nn.prototypes import masked_average_pooling


def mut_mask(scores: Tensor, valid: Tensor) -> Tensor:
    """Which prototypes eq. 19 keeps: scores p l_1^T [B, K], valid [B, K] bool -> kept [B, K] bool."""
    inf = torch.finfo(scores.dtype).max
    low = scores.masked_fill(~valid, inf).amin(dim=1, keepdim=True)  # [B, 1]
    mean = (scores * valid).sum(dim=1, keepdim=True) / valid.sum(dim=1, keepdim=True)  # [B, 1]
    kept = valid & (scores > (low + mean) / 2)  # [B, K]
    return torch.where(kept.any(dim=1, keepdim=True), kept, valid)


def masked_prototype_attention(p: Tensor, l1: Tensor, kept: Tensor) -> Tensor:
    """The first line of eq. 18 before its LayerNorm: Softmax_n(M + p l_1^T) l_1 + p.

    p: [B, K, C]; l1: [B, C]; kept: [B, K] bool (eq. 19; at least one True
    per episode). Returns [B, K, C].
    """
    scores = torch.einsum("bkc,bc->bk", p, l1)  # [B, K]
    weights = scores.masked_fill(~kept, float("-inf")).softmax(dim=1)  # [B, K]; exactly 0 where masked
    return weights.unsqueeze(2) * l1.unsqueeze(1) + p  # [B, K, C]


class MomentumUpdateTransformer(nn.Module):
    """MUT, eq. 17-19: ``(p [B, K, C], l_1 [B, C], valid [B, K]) -> (p [B, K, C], l [B, 2, C], kept [B, K])``.

    ``l`` is in class order (background, foreground) = (-GAP(p), GAP(p)).
    """

    def __init__(self, channels: int, heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads ({heads}) must divide the {channels} feature channels of the encoder")
        self.norm_update = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm_attention = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, mlp_ratio * channels), nn.GELU(),
                                 nn.Linear(mlp_ratio * channels, channels))
        self.norm_mlp = nn.LayerNorm(channels)

    def forward(self, p: Tensor, l1: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        kept = mut_mask(torch.einsum("bkc,bc->bk", p, l1), valid)  # [B, K]
        p = self.norm_update(masked_prototype_attention(p, l1, kept))  # [B, K, C]
        attended, _ = self.attention(p, p, p, key_padding_mask=~valid, need_weights=False)  # [B, K, C]
        p = self.norm_attention(attended + p)
        p = self.norm_mlp(self.mlp(p) + p)  # [B, K, C]
        weights = valid.to(p.dtype).unsqueeze(2)  # [B, K, 1]
        pooled = (p * weights).sum(dim=1) / weights.sum(dim=1)  # [B, C]: GAP over the valid prototypes
        return p, torch.stack([-pooled, pooled], dim=1), kept


class PrototypeStep(nn.Module):
    """MAP + MUT (eq. 8, 17-19): the prototype update of an LMS block.

    ``(query features [B, C, h, w], u^{k-1} [B, 2, h, w], p [B, K, C], l [B, 2, C], valid [B, K],
    l_1^s [B, C]) -> (p, l^k, kept)``; the incoming ``l`` is not used (eq. 8
    recomputes it). ``support_residual`` (default): l^k = [l_1^s + GAP(p), -(l_1^s + GAP(p))]
    (RPT's rule, see the module docstring); False: l^k = [GAP(p), -GAP(p)], eq. 18 literally.
    """

    def __init__(self, transformer: MomentumUpdateTransformer, support_residual: bool = True):
        super().__init__()
        self.transformer = transformer
        self.support_residual = support_residual

    def forward(self, features: Tensor, u: Tensor, p: Tensor, prototypes: Tensor, valid: Tensor,
                support_prototype: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        l1 = masked_average_pooling(features, u[:, 1])  # [B, C], eq. 8 with beta = 1
        p, l, kept = self.transformer(p, l1, valid)  # [B, K, C], [B, 2, C], [B, K]
        foreground = l[:, 1]  # [B, C]: GAP(p)
        if self.support_residual:
            foreground = support_prototype + foreground  # l_1^s + GAP(p)
        return p, torch.stack([-foreground, foreground], dim=1), kept  # l^k [B, 2, C] (background, foreground)


class FixedPrototypes(nn.Module):
    """fLMS-Net's prototype step: l stays l^0 and p is not used (no MAP, no MUT)."""

    def forward(self, features: Tensor, u: Tensor, p: Tensor, prototypes: Tensor, valid: Tensor,
                support_prototype: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        return p, prototypes, None
