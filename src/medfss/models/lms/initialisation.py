"""The Initialisation Module of LMS-Net (sec. III-B.2): l^0, u^0 and the representative prototypes p^0.

    l_1^s = MAP(F^s, u_1^s)                     support foreground prototype      (15)
    l^0 = [l_1^s, -l_1^s]                       (foreground, background)
    u^0 = Softmax(alpha (-rho(l^0, x)))         eq. 12 with v = 0                  (16)
    p^0 = { MAP(F^s, R_n) : n = 1..N_p }        R_n: Voronoi regions of u_1^s

With S shots, l_1^s is the mean over shots of each shot's eq. 15 (PANet's
k-shot rule, :func:`medfss.nn.prototypes.class_prototype`) and every shot
gives N_p regions, so p^0 holds S * N_p prototypes. The Voronoi partition is deterministic: the first seed is the
foreground pixel nearest the foreground centroid, each further seed the
foreground pixel farthest from the seeds so far (farthest-point sampling, as
in RPT's regional prototypes, there with a random first seed), and every
foreground pixel joins its nearest seed; ties go to the lowest index.
Shapes: B batch, S shots, C channels, K prototypes, H W spatial.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medfss.models.lms.data_consistency import data_consistency, prototype_distance
from medfss.nn.prototypes import EPS, resize_mask


def initial_prototypes(foreground: Tensor) -> Tensor:
    """l^0 = [l_1^s, -l_1^s] in class order (background, foreground): [B, C] -> [B, 2, C]."""
    return torch.stack([-foreground, foreground], dim=1)


def initial_mask(query_features: Tensor, prototypes: Tensor, alpha: Tensor | float) -> tuple[Tensor, Tensor]:
    """u^0 of eq. 16 and its logits, both [B, 2, h, w], for query features [B, C, h, w] and l^0 [B, 2, C]."""
    distance = prototype_distance(query_features, prototypes)  # [B, 2, h, w]
    return data_consistency(distance, torch.zeros_like(distance), alpha)


def voronoi_partition(masks: Tensor, regions: int) -> Tensor:
    """Split each foreground into ``regions`` Voronoi cells of farthest-point seeds.

    masks: [N, H, W], foreground where > 0.5. Returns labels [N, H, W] long:
    -1 on the background, the cell index 0..regions-1 on the foreground. The
    cells partition the foreground exactly; with at least ``regions``
    foreground pixels every cell is non-empty (each seed is a distinct
    foreground pixel and lies in its own cell), with fewer the last cells are
    empty. The result depends on the mask only (no randomness).
    """
    n, h, w = masks.shape
    foreground = masks.reshape(n, h * w) > 0.5  # [N, HW]
    ys, xs = torch.meshgrid(torch.arange(h, device=masks.device, dtype=torch.float32),
                            torch.arange(w, device=masks.device, dtype=torch.float32), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # [HW] each

    def squared_distance(y: Tensor, x: Tensor) -> Tensor:  # points [N] -> [N, HW]
        return (ys - y.unsqueeze(1)) ** 2 + (xs - x.unsqueeze(1)) ** 2

    weights = foreground.float()  # [N, HW]
    count = weights.sum(dim=1).clamp(min=1)  # [N]
    centre = squared_distance(weights @ ys / count, weights @ xs / count)  # [N, HW]
    seed = centre.masked_fill(~foreground, float("inf")).argmin(dim=1)  # [N]
    nearest = squared_distance(ys[seed], xs[seed])  # [N, HW] squared distance to the nearest seed so far
    labels = torch.zeros(n, h * w, dtype=torch.long, device=masks.device)  # [N, HW] index of that seed
    for region in range(1, regions):
        seed = nearest.masked_fill(~foreground, -1.0).argmax(dim=1)  # [N]: the farthest foreground pixel
        distance = squared_distance(ys[seed], xs[seed])  # [N, HW]
        closer = distance < nearest  # strict: a tie stays with the lower index
        nearest = torch.where(closer, distance, nearest)
        labels = labels.masked_fill(closer, region)
    return labels.masked_fill(~foreground, -1).view(n, h, w)


def region_prototypes(features: Tensor, labels: Tensor, regions: int) -> tuple[Tensor, Tensor]:
    """MAP of ``features`` [N, C, h, w] over each labelled region (labels [N, H, W], -1 = none).

    Each region's indicator is resized bilinearly to the feature grid, as
    :func:`~medfss.nn.prototypes.masked_average_pooling` does. Returns the
    prototypes [N, regions, C] (zero for an empty region) and whether each
    region is non-empty [N, regions] (bool).
    """
    n, c, h, w = features.shape
    indicators = (labels.unsqueeze(1) == torch.arange(regions, device=labels.device).view(1, -1, 1, 1))  # [N, K, H, W]
    valid = indicators.flatten(2).any(dim=2)  # [N, K]
    weights = resize_mask(indicators.flatten(0, 1).to(features.dtype), (h, w)).to(features.dtype)  # [N*K, h, w]
    weights = weights.view(n, regions, h, w)  # [N, K, h, w]
    pooled = torch.einsum("nchw,nkhw->nkc", features, weights)  # [N, K, C]
    return pooled / (weights.sum(dim=(2, 3)).unsqueeze(2) + EPS), valid


def representative_prototypes(support_features: Tensor, support_masks: Tensor,
                              regions: int) -> tuple[Tensor, Tensor]:
    """p^0: ``regions`` Voronoi-region prototypes per shot.

    support_features: [B, S, C, h, w]; support_masks: [B, S, H, W]. Returns
    p^0 [B, S*regions, C] and ``valid`` [B, S*regions] (bool, the region is
    non-empty). An episode without any valid region (empty support mask)
    gets every entry marked valid, so that attention over them stays defined
    (its prototypes are all zero).
    """
    b, s, c, h, w = support_features.shape
    labels = voronoi_partition(support_masks.flatten(0, 1), regions)  # [B*S, H, W]
    prototypes, valid = region_prototypes(support_features.flatten(0, 1), labels, regions)  # [B*S, K, C], [B*S, K]
    prototypes = prototypes.reshape(b, s * regions, c)  # [B, S*K, C]
    valid = valid.reshape(b, s * regions)  # [B, S*K]
    return prototypes, valid | ~valid.any(dim=1, keepdim=True)
