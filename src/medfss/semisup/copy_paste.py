"""Bidirectional Copy-Paste (BCP, Bai et al. CVPR 2023; MPER sec. II).

A mask M holds 1 everywhere but a random zero-value box (ACDC 170 x 170 of
256 x 256, LA 74 x 74 x 53 of 112 x 112 x 80). Pasting b into a is

    paste(a, b, M) = a * M + b * (1 - M)          (a outside the box, b inside)

and the same M mixes images, labels and label confidences, so a mixed label
always describes its mixed image. Bidirectional: in one step an unlabelled
image receives a labelled box, paste(X^u_a, X^l_a, M), and a labelled image an
unlabelled box, paste(X^l_b, X^u_b, M); the mixed labels paste the ground truth
and the teacher's pseudo-labels the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def zero_box_mask(shape: tuple[int, ...], box: tuple[int, ...], rng: np.random.Generator) -> Tensor:
    """A float mask of ``shape`` (spatial) with 1 everywhere but a ``box``-sized block of 0 at a random place."""
    if len(shape) != len(box) or any(b > s or b < 1 for b, s in zip(box, shape)):
        raise ValueError(f"box {box} must fit in shape {shape}")
    mask = torch.ones(shape)
    corner = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, box)]
    mask[tuple(slice(c, c + b) for c, b in zip(corner, box))] = 0
    return mask


def paste(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """``a`` outside the zero box of ``mask``, ``b`` inside it.

    a, b: [B, *spatial] or [B, C, *spatial] (images, labels or confidences);
    mask: [*spatial], broadcast over the leading axes. Keeps ``a``'s dtype
    (integer labels stay integers).
    """
    keep = mask.to(device=a.device, dtype=torch.bool)
    return torch.where(keep, a, b)


def bidirectional(labeled: Tensor, unlabeled: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The two BCP mixtures of a step, from batch halves paired a with a and b with b.

    labeled, unlabeled: [2B', ...], the same shape (images, or ground truth and
    pseudo-labels). Returns (unlabelled with a labelled box [B', ...],
    labelled with an unlabelled box [B', ...]).
    """
    half = labeled.shape[0] // 2
    l_a, l_b = labeled[:half], labeled[half:]
    u_a, u_b = unlabeled[:half], unlabeled[half:]
    return paste(u_a, l_a, mask), paste(l_b, u_b, mask)
