"""APSCL's spatial contrastive loss (SCL, sec. 3.2, eq. 7-8).

Over the support-query pairs of a batch of episodes, with the spatial
relevance r of eq. 6 between support i and query j and temperature tau:

    L_ij  = -log exp(r(s_i, q_j) / tau) / sum_k exp(r(s_i, q_k) / tau)      (7)
    L_SCL = mean of L_ij over the pairs of the same class c_i = c_j          (8)

Each support is an anchor whose positives are the queries of its class (its
own episode's query at least) and whose negatives are the other queries.
The paper's indices run over 2N maps with an indicator i != k in the
denominator, which only matters when an anchor can meet itself; with
supports and queries kept apart, as r(s_i, q_k) is written, it never does.
The paper normalises the sum of eq. 8 by 1 / (2N - 1); the mean over the
positive pairs is the same up to a constant when every anchor has as many
positives. A batch of one episode has nothing to contrast: the loss is 0.
"""

from __future__ import annotations

from torch import Tensor


def spatial_contrastive_loss(relevance: Tensor, support_classes: Tensor, query_classes: Tensor,
                             temperature: float) -> Tensor:
    """Eq. 7-8 from the relevance [P, Q] of P supports to Q queries and their classes ([P], [Q] long)."""
    log_probability = (relevance / temperature).log_softmax(dim=1)  # [P, Q]
    positive = support_classes[:, None] == query_classes[None, :]  # [P, Q]
    return -log_probability[positive].mean()
