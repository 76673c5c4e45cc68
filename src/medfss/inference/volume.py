"""Predict a volume from a slice plan, and turn probabilities into a mask.

:func:`predict_volume` is the one loop that runs a
:class:`~medfss.inference.predictor.Predictor` over a query volume: for each
group of a :class:`~medfss.inference.plan.SlicePlan`, its query slices go to
the predictor ``batch_size`` at a time with the group's support, so memory
holds one batch in the model and one float32 slab of the extent, never the
model's output for a whole scan. :func:`foreground` thresholds the slab and,
optionally, keeps its largest 3D component, the post-processing that
``medfss segment`` applies and ``medfss evaluate --extent estimated`` scores.
Both also pass the query's body mask (:mod:`medfss.inference.body`) to
:func:`predict_volume`, which sets the probability outside it to 0: no
label, and no probability output, ever leaves the body.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from medfss.inference.plan import SlicePlan
from medfss.inference.predictor import Predictor


def n_batches(plan: SlicePlan, batch_size: int) -> int:
    """How many predictor calls :func:`predict_volume` makes for ``plan`` (for progress bars)."""
    return sum(-(-len(group.query_slices) // batch_size) for group in plan.groups)


def predict_volume(predictor: Predictor, query: np.ndarray, plan: SlicePlan, *, batch_size: int = 8,
                   body: np.ndarray | None = None, progress: Callable[[], None] | None = None) -> np.ndarray:
    """Foreground probabilities of the slices ``plan.top``..``plan.bottom`` of ``query``.

    query: [H, W, D] normalised, slicing axis last; the plan's support slices
    are at the query's in-plane size. body: None, or the query's body mask
    [H, W, D] bool (:func:`medfss.inference.body.body_mask`), outside which
    the probability is 0. Returns [H, W, plan.depth] float32;
    ``progress()`` is called after every batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if body is not None and body.shape != query.shape:
        raise ValueError(f"body must be the query's [H, W, D] = {query.shape}, got {body.shape}")
    slab = np.zeros((*query.shape[:2], plan.depth), dtype=np.float32)  # [H, W, n]
    for group in plan.groups:
        slices = group.query_slices
        for batch in np.array_split(slices, -(-len(slices) // batch_size)):
            queries = torch.from_numpy(np.ascontiguousarray(np.moveaxis(query[..., batch], -1, 0),
                                                            dtype=np.float32))  # [B, H, W]
            probabilities = predictor.predict(group.support_images, group.support_masks, queries)  # [B, H, W]
            if tuple(probabilities.shape) != tuple(queries.shape):
                raise ValueError(f"{type(predictor).__name__}.predict must return [Q, H, W] = "
                                 f"{tuple(queries.shape)}, got {tuple(probabilities.shape)}")
            slab[..., batch - plan.top] = np.moveaxis(probabilities.detach().cpu().float().numpy(), 0, -1)
            if progress is not None:
                progress()
    if body is not None:
        slab[~body[..., plan.top:plan.bottom + 1]] = 0.0
    return slab


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean volume (all False stays all False)."""
    from scipy import ndimage

    components, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(sizes.argmax())


def foreground(probabilities: np.ndarray, threshold: float = 0.5, largest_component: bool = False) -> np.ndarray:
    """``probabilities > threshold``, cut to its largest 3D component if asked: [H, W, n] bool."""
    mask = probabilities > threshold
    return keep_largest_component(mask) if largest_component else mask


def full_volume(mask: np.ndarray, plan: SlicePlan, depth: int) -> np.ndarray:
    """The extent's slab [H, W, n] placed in a [H, W, depth] volume, background elsewhere."""
    volume = np.zeros((*mask.shape[:2], depth), dtype=mask.dtype)  # [H, W, D]
    volume[..., plan.top:plan.bottom + 1] = mask
    return volume
