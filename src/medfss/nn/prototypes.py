"""Prototype operations shared by every prototypical model.

Written once and reused by PANet, ALPNet, LMS-Net and the no-training
baselines: masked average pooling (MAP), the class-level prototype of S
shots, cosine similarity, adaptive local prototype pooling (ALP) and the
fused local similarity of SSL-ALPNet.
Shapes: B batch, S shots, C channels, K prototypes, H W spatial.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a soft mask ``[B, H, W]`` to the feature grid ``size``.

    Bilinear (rather than area or nearest) keeps thin structures alive on a
    stride-8 grid.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask.unsqueeze(1).float(), size=size, mode="bilinear",
                         align_corners=False).squeeze(1)


def masked_average_pooling(features: Tensor, mask: Tensor) -> Tensor:
    """Masked average pooling (SSL-ALPNet eq. 3, LMS-Net eq. 8).

        p = sum_hw y(h, w) f(h, w) / sum_hw y(h, w)

    features: [B, C, H, W]; mask: [B, H', W'] soft or binary, resized to (H, W).
    Returns [B, C]. An empty mask yields the zero vector (no NaN).
    """
    mask = resize_mask(mask, features.shape[-2:])  # [B, H, W]
    weighted = torch.einsum("bchw,bhw->bc", features, mask)  # [B, C]
    return weighted / (mask.sum(dim=(1, 2)).unsqueeze(1) + EPS)


def class_prototype(features: Tensor, masks: Tensor) -> Tensor:
    """The class-level prototype of S shots: the mean over shots of each shot's MAP (eq. 3; LMS-Net eq. 15).

    PANet's k-shot rule; for one shot exactly eq. 3. features: [B, S, C, H, W];
    masks: [B, S, H', W'] soft or binary. Returns [B, C].
    """
    b, s, c = features.shape[:3]
    per_shot = masked_average_pooling(features.flatten(0, 1), masks.flatten(0, 1))  # [B*S, C]
    return per_shot.view(b, s, c).mean(dim=1)


def cosine_similarity_map(features: Tensor, prototypes: Tensor, scale: float = 1.0) -> Tensor:
    """Scaled cosine similarity of every pixel with every prototype (SSL-ALPNet eq. 4).

        S_k(h, w) = alpha * <p_k, f(h, w)> / (||p_k|| ||f(h, w)||)

    features: [B, C, H, W]; prototypes: [B, K, C]. Returns [B, K, H, W].
    """
    features = F.normalize(features, dim=1, eps=EPS)  # [B, C, H, W]
    prototypes = F.normalize(prototypes, dim=-1, eps=EPS)  # [B, K, C]
    return scale * torch.einsum("bchw,bkc->bkhw", features, prototypes)


def local_prototypes(features: Tensor, mask: Tensor, window: int, threshold: float) -> tuple[Tensor, Tensor]:
    """Local prototypes of one class and which of them belong to it (SSL-ALPNet eq. 1-2).

        p_mn = avgpool_L(f)(m, n)                                  (1)
        p_mn belongs to the class  iff  avgpool_L(y)(m, n) >= T     (2)

    The windows are ``window x window`` cells of the feature grid with stride
    ``window`` (a partial window at the border is dropped); the mask is first
    resized bilinearly to the grid. features: [B, C, H, W]; mask: [B, H', W'].
    Returns the candidates [B, K, C] and their class membership [B, K] (bool),
    K = (H // window) * (W // window); K = 0 when the window exceeds the grid.
    """
    b, c, h, w = features.shape
    if window > h or window > w:
        return features.new_zeros(b, 0, c), torch.zeros(b, 0, dtype=torch.bool, device=features.device)
    mask = resize_mask(mask, (h, w))  # [B, H, W]
    pooled = F.avg_pool2d(features, window, stride=window)  # [B, C, H/L, W/L]
    pooled_mask = F.avg_pool2d(mask.unsqueeze(1).to(features.dtype), window, stride=window)  # [B, 1, H/L, W/L]
    return pooled.flatten(2).transpose(1, 2), pooled_mask.flatten(1) >= threshold  # [B, K, C], [B, K]


def adaptive_local_prototypes(features: Tensor, masks: Tensor, window: int | None,
                              threshold: float = 0.95) -> tuple[Tensor, Tensor]:
    """The prototype ensemble of one class over S shots: ALP (eq. 1-2) plus the class-level prototype (eq. 3).

    Local prototypes come from every shot; the class-level prototype
    (:func:`class_prototype`) is always part of the ensemble, so a class
    smaller than the window, or an empty mask (zero prototype), still has
    one. ``window=None`` gives the class-level prototype alone (PANet).

    features: [B, S, C, H, W]; masks: [B, S, H', W'] soft or binary.
    Returns prototypes [B, K, C] and ``valid`` [B, K] (bool): the ensemble of
    episode b is ``prototypes[b, valid[b]]``; the class-level prototype is
    last and always valid. K = S * (H // window) * (W // window) + 1 is the
    same for every episode, the number of valid prototypes is not.
    """
    b, c = features.shape[0], features.shape[2]
    prototypes = class_prototype(features, masks).unsqueeze(1)  # [B, 1, C]
    valid = torch.ones(b, 1, dtype=torch.bool, device=features.device)  # [B, 1]
    if window is not None:
        shots = features.flatten(0, 1)  # [B*S, C, H, W]
        shot_masks = masks.flatten(0, 1)  # [B*S, H', W']
        local, local_valid = local_prototypes(shots, shot_masks, window, threshold)  # [B*S, K', C], [B*S, K']
        prototypes = torch.cat([local.reshape(b, -1, c), prototypes], dim=1)  # [B, S*K' + 1, C]
        valid = torch.cat([local_valid.reshape(b, -1), valid], dim=1)  # [B, S*K' + 1]
    return prototypes, valid


def fused_similarity(features: Tensor, prototypes: Tensor, valid: Tensor | None = None,
                     scale: float = 20.0) -> Tensor:
    """Class-wise similarity fused over the class's prototypes (SSL-ALPNet eq. 4-5).

        S_k(h, w) = alpha * cos(p_k, f(h, w))                       (4)
        S'(h, w)  = sum_k S_k(h, w) softmax_k[S_k(h, w)]            (5)

    Only the prototypes marked ``valid`` take part (the others get softmax
    weight 0); every episode needs at least one. With a single prototype
    S' = S_1 (PANet). features: [B, C, H, W]; prototypes: [B, K, C];
    valid: [B, K] bool or None (all valid). Returns [B, H, W]; stacking the
    classes' maps gives the logits of eq. 6.
    """
    similarity = cosine_similarity_map(features, prototypes, scale)  # [B, K, H, W]
    logits = similarity
    if valid is not None:
        logits = similarity.masked_fill(~valid[:, :, None, None], float("-inf"))  # [B, K, H, W]
    weights = logits.softmax(dim=1)  # [B, K, H, W]; exactly 0 for invalid prototypes
    return (weights * similarity).sum(dim=1)  # [B, H, W]
