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

from collections.abc import Callable, Sequence

import numpy as np
import torch

from medfss.inference.plan import SlicePlan, SupportScan, chunk_plan
from medfss.inference.predictor import Predictor, VolumePredictor


def predict_volume(predictor: Predictor, query: np.ndarray, plan: SlicePlan, *, batch_size: int = 8,
                   body: np.ndarray | None = None, progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Foreground probabilities of the slices ``plan.top``..``plan.bottom`` of ``query``.

    query: [H, W, D] normalised, slicing axis last; the plan's support slices
    are at the query's in-plane size. body: None, or the query's body mask
    [H, W, D] bool (:func:`medfss.inference.body.body_mask`), outside which
    the probability is 0. Returns [H, W, plan.depth] float32;
    ``progress(n)`` is called after every batch with its number of slices.
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
                progress(len(batch))
    if body is not None:
        slab[~body[..., plan.top:plan.bottom + 1]] = 0.0
    return slab


def predict_class(predictor: Predictor | VolumePredictor, supports: Sequence[SupportScan], query: np.ndarray,
                  query_spacing: tuple[float, float, float], extent: tuple[int, int] | None, *, chunks: int = 3,
                  batch_size: int = 8, body: np.ndarray | None = None,
                  progress: Callable[[int], object] | None = None) -> tuple[int, np.ndarray]:
    """One class of ``query`` [H, W, D]: ``(top, probabilities [H, W, n])`` of the slices top..top + n - 1.

    A slice :class:`Predictor` runs :func:`predict_volume` on the chunk rule's
    plan of ``extent`` (required). A :class:`VolumePredictor` segments the
    whole volume, cut to ``extent`` when one is given. Either way the
    probability outside ``body`` (the query's body mask, when given) is 0.
    """
    if isinstance(predictor, VolumePredictor):
        probabilities = predictor.segment_volume(supports, query, query_spacing)  # [H, W, D]
        if tuple(probabilities.shape) != tuple(query.shape):
            raise ValueError(f"{type(predictor).__name__}.segment_volume must return the query's shape "
                             f"{tuple(query.shape)}, got {tuple(probabilities.shape)}")
        top, bottom = (0, query.shape[-1] - 1) if extent is None else extent
        slab = np.array(probabilities[..., top:bottom + 1], dtype=np.float32)  # [H, W, n], a copy
        if body is not None:
            slab[~body[..., top:bottom + 1]] = 0.0
        if progress is not None:
            progress(bottom - top + 1)
        return top, slab
    if extent is None:
        raise ValueError(f"{type(predictor).__name__} predicts slices: give the extent of the query to predict")
    plan = chunk_plan(supports, extent, query.shape[:2], chunks)
    return plan.top, predict_volume(predictor, query, plan, batch_size=batch_size, body=body, progress=progress)


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


def full_volume(slab: np.ndarray, top: int, depth: int) -> np.ndarray:
    """A slab [H, W, n] of slices top..top + n - 1 placed in a [H, W, depth] volume, zero elsewhere."""
    volume = np.zeros((*slab.shape[:2], depth), dtype=slab.dtype)  # [H, W, D]
    volume[..., top:top + slab.shape[-1]] = slab
    return volume
