"""APSCL's spatial interaction module (SIM, sec. 3.2, Fig. 3): cross attention between two feature maps.

    Q = g_q(f'(x)),  K = g_k(f'(x)),  V = g_v(f'(x))       (1x1 convolutions, E' channels)   (3)
    W_{a,b} = softmax(Q_a K_b^T / sqrt(E'))                 [L_a, L_b], rows sum to 1            (4)
    V_{b|a} = W_{a,b} V_b                                   b's values at a's positions          (5)
    r(s, q) = 1/L sum_l [ cos(V_s^l, V_{q|s}^l) + cos(V_q^l, V_{s|q}^l) ]                        (6)

The paper writes V_{s|q} = W_{s,q} V_s with W_{s,q} = softmax(Q_s K_q^T), whose
shapes only agree because support and query share H x W; read by its words
("values of f'(x_s) aligned to f'(x_q)", compared with V_q in eq. 6), the
aligned values of b at a's positions take a's queries and b's keys, as above
(the rule of the spatial contrastive loss of Ouali et al. it cites).
Shapes: P supports, Q queries, C channels, L = h w positions, E = E' embedding width.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def cross_attention(queries: Tensor, keys: Tensor) -> Tensor:
    """W = softmax(Q K^T / sqrt(E)) over the last axis (eq. 4): [..., L_a, E] x [..., L_b, E] -> [..., L_a, L_b]."""
    return (queries @ keys.transpose(-1, -2) / math.sqrt(queries.shape[-1])).softmax(dim=-1)


class SpatialInteraction(nn.Module):
    """g_q, g_k, g_v of eq. 3; :meth:`relevance` is eq. 6 for every support-query pair of a batch."""

    def __init__(self, channels: int, embed: int = 64):
        super().__init__()
        self.query = nn.Conv2d(channels, embed, 1)
        self.key = nn.Conv2d(channels, embed, 1)
        self.value = nn.Conv2d(channels, embed, 1)

    def embed(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 3: features [M, C, h, w] -> Q, K, V, each [M, L, E]."""
        return tuple(conv(features).flatten(2).transpose(1, 2) for conv in (self.query, self.key, self.value))

    def attention(self, features_a: Tensor, features_b: Tensor) -> Tensor:
        """W_{a,b} (eq. 4) of two batches of maps [N, C, h, w]: [N, L_a, L_b]."""
        queries, _, _ = self.embed(features_a)
        _, keys, _ = self.embed(features_b)
        return cross_attention(queries, keys)

    def relevance(self, support: Tensor, query: Tensor) -> Tensor:
        """r(s, q) of eq. 6 for every pair of the maps ``support`` [P, C, h, w] and ``query`` [Q, C, h, w]: [P, Q]."""
        q_s, k_s, v_s = self.embed(support)  # each [P, L, E]
        q_q, k_q, v_q = self.embed(query)  # each [Q, L, E]
        query_at_support = cross_attention(q_s[:, None], k_q[None]) @ v_q[None]  # [P, Q, L, E]: V_{q|s}
        support_at_query = cross_attention(q_q[None], k_s[:, None]) @ v_s[:, None]  # [P, Q, L, E]: V_{s|q}
        return (_mean_cosine(v_s[:, None], query_at_support)
                + _mean_cosine(v_q[None], support_at_query))  # [P, Q]


def _mean_cosine(values: Tensor, aligned: Tensor) -> Tensor:
    """1/L sum_l cos(values^l, aligned^l) over the last two axes [..., L, E] -> [...]."""
    return (F.normalize(values, dim=-1) * F.normalize(aligned, dim=-1)).sum(-1).mean(-1)
