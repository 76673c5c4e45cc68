"""Slice plans: which support slices serve which query slices.

Every few-shot prediction of a volume is 2D: each query slice is segmented
from a few labelled support slices. A :class:`SlicePlan` records that
pairing for one class, over the query slices that are predicted (the
*extent*; slices outside it are background). Every path that segments a
volume (``medfss evaluate``, ``medfss segment``, ``medfss demo``) builds its
plan here and hands it to :func:`medfss.inference.volume.predict_volume`, so
a new rule for choosing support slices is written once, in this module.

Two rules are written here. The rule of the literature (Roy et al. 2020, SSL-ALPNet sec. 4) is the
*chunk rule* (:func:`chunk_plan`): the class extent of the support and of the
query are each cut into C equal chunks; the middle labelled slice of support
chunk i serves every query slice of query chunk i. The query extent is either
given (the literature's protocol reads it from the query's ground truth) or
estimated without any query label from where the class lies in the support
scans (:func:`estimate_query_extent`). The *registration rule*
(:func:`registered_plan`) serves query slice z with slice z of the supports
registered onto the query (:mod:`medfss.registration`).

Shapes: S shots, C chunks, H W in-plane, D slices; volumes are [H, W, D]
with the slicing axis last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from medfss.errors import ConfigError
from medfss.inference.predictor import resize_slices


@dataclass(frozen=True)
class SupportScan:
    """One labelled support volume of one class, in the query's slicing layout."""

    image: np.ndarray  # [H', W', D'] float, normalised
    mask: np.ndarray  # [H', W', D'] bool, the class
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm per voxel along H', W', D'

    @property
    def labelled_slices(self) -> np.ndarray:
        """The ascending indices of the slices that hold the class."""
        return np.flatnonzero(self.mask.any(axis=(0, 1)))


@dataclass(frozen=True)
class SliceGroup:
    """Query slices that share one support: every shot's slice, at the query's in-plane size."""

    query_slices: np.ndarray  # [n] ascending query slice indices
    support_images: Tensor  # [S, H, W] float32
    support_masks: Tensor  # [S, H, W] float32 in {0, 1}


@dataclass(frozen=True)
class SlicePlan:
    """How one class of one query volume is predicted.

    ``top``..``bottom`` (inclusive) is the extent: the query slices that are
    predicted, each in exactly one group; ``support_slices[s]`` lists, per
    group, the slice of support ``s`` that serves it.
    """

    top: int
    bottom: int
    groups: tuple[SliceGroup, ...]
    support_slices: tuple[tuple[int, ...], ...]

    @property
    def depth(self) -> int:
        """The number of predicted slices."""
        return self.bottom - self.top + 1


def chunk_support_slices(support_slices: Sequence[int], n_chunks: int) -> list[int]:
    """The support slice of each of ``n_chunks`` chunks: the middle of the chunk.

    support_slices: the ascending indices of the slices holding the class in
    the support volume (``range(top, bottom + 1)`` when it has no gap). Of its
    n entries, chunk i takes the one at position floor((i + 1/2) n / C), the
    middle of the chunk's share of the extent. This is SSL-ALPNet's code
    (``int(pct * n)`` with pct = 1/(2C) + i/C, in exact integer arithmetic:
    its floats round a few cases down, e.g. n = 18), so support choices match
    the published numbers; for C = 3 the slice always lies in query chunk i of
    :func:`assign_query_chunks` (for other C and extents shorter than 2C it
    can fall in the chunk before). Picking from the list rather than from
    the extent means a gap in the labels never hands the model an empty
    support mask. Lists shorter than C repeat slices, so every chunk has one.
    """
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be at least 1 (3 is the standard), got {n_chunks}")
    slices = [int(z) for z in support_slices]
    if not slices:
        raise ValueError("support_slices is empty: the support volume does not contain the class")
    if any(b <= a for a, b in zip(slices, slices[1:])):
        raise ValueError(f"support_slices must be strictly ascending slice indices, got {slices}")
    n = len(slices)
    return [slices[(2 * i + 1) * n // (2 * n_chunks)] for i in range(n_chunks)]


def assign_query_chunks(query_extent: tuple[int, int], n_chunks: int) -> list[int]:
    """The chunk index of every slice from top to bottom (inclusive) of ``query_extent``.

    For n = bottom - top + 1 slices, slice z goes to chunk floor((z - top) C / n):
    C chunks whose sizes differ by at most one, the larger ones first
    (n = 10, C = 3 gives 4, 3, 3). An extent shorter than C slices leaves the
    last chunks empty. (SSL-ALPNet's code divides by bottom - top instead of
    n, which moves a slice into the last chunk for some n; we keep the equal
    chunks its paper describes.)
    """
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be at least 1 (3 is the standard), got {n_chunks}")
    top, bottom = (int(z) for z in query_extent)
    if not 0 <= top <= bottom:
        raise ValueError(f"query_extent must be (top, bottom) with 0 <= top <= bottom, got {query_extent}")
    n = bottom - top + 1
    return [j * n_chunks // n for j in range(n)]


def estimate_query_extent(support_extents: Sequence[tuple[int, int]], support_depths: Sequence[int],
                          query_range: tuple[int, int]) -> tuple[int, int]:
    """The query slices that should hold the class, from where it lies in the support scans.

    Slice z of an n-slice scan covers the relative interval [z/n, (z+1)/n).
    A support class on slices top..bottom (inclusive) of n slices covers
    [top/n, (bottom+1)/n); on the m = stop - start query slices of
    ``query_range`` (half-open) that interval is slices
    start + floor(top m / n) .. start + ceil((bottom + 1) m / n) - 1,
    computed in exact integer arithmetic. With several supports (k-shot) the
    union of their intervals is returned, so no shot's extent is cut.
    Returns (top, bottom), inclusive, within ``query_range``.
    """
    start, stop = (int(v) for v in query_range)
    if not 0 <= start < stop:
        raise ValueError(f"query_range must be (start, stop) with 0 <= start < stop, got {query_range}")
    if not support_extents or len(support_extents) != len(support_depths):
        raise ValueError(f"give one (top, bottom) extent per support depth, got {len(support_extents)} "
                         f"extents and {len(support_depths)} depths")
    m = stop - start
    tops, bottoms = [], []
    for (top, bottom), n in zip(support_extents, support_depths):
        if not 0 <= top <= bottom < n:
            raise ValueError(f"support extent ({top}, {bottom}) must satisfy 0 <= top <= bottom < {n}")
        tops.append(start + top * m // n)
        bottoms.append(start - (-(bottom + 1) * m // n) - 1)  # ceil((bottom + 1) m / n) - 1
    return min(tops), max(bottoms)


def estimated_extent(supports: Sequence[SupportScan], query_range: tuple[int, int]) -> tuple[int, int]:
    """:func:`estimate_query_extent` of the supports' labelled slices: no query label is used."""
    extents, depths = [], []
    for support in supports:
        slices = _labelled_slices(support)
        extents.append((int(slices[0]), int(slices[-1])))
        depths.append(support.mask.shape[-1])
    return estimate_query_extent(extents, depths, query_range)


def _labelled_slices(support: SupportScan) -> np.ndarray:
    slices = support.labelled_slices
    if slices.size == 0:
        raise ConfigError("a support volume does not contain the class; choose another support")
    return slices


def chunk_plan(supports: Sequence[SupportScan], extent: tuple[int, int], size: tuple[int, int],
               chunks: int = 3) -> SlicePlan:
    """The chunk rule: support chunk i's middle labelled slice serves query chunk i of ``extent``.

    extent: (top, bottom), inclusive query slice indices; size: the query's
    in-plane size, to which the support slices are resized (image bilinear,
    mask bilinear then > 0.5). Chunks of the extent that are empty (an
    extent shorter than C) get no group.
    """
    if not supports:
        raise ConfigError("no support given: a slice plan needs at least one labelled support volume")
    top, bottom = (int(z) for z in extent)
    chosen = [chunk_support_slices(_labelled_slices(s), chunks) for s in supports]  # [S][C]
    chunk_of = np.asarray(assign_query_chunks((top, bottom), chunks))  # [bottom - top + 1]
    groups = []
    for chunk in range(chunks):
        slices = top + np.flatnonzero(chunk_of == chunk)
        if slices.size == 0:
            continue
        images = [torch.from_numpy(np.ascontiguousarray(s.image[..., c[chunk]], dtype=np.float32))
                  for s, c in zip(supports, chosen)]  # S x [H', W']
        masks = [torch.from_numpy(s.mask[..., c[chunk]].astype(np.float32)) for s, c in zip(supports, chosen)]
        groups.append(SliceGroup(
            query_slices=slices,
            support_images=torch.stack([resize_slices(i[None], size, "bilinear")[0] for i in images]),  # [S, H, W]
            support_masks=torch.stack([(resize_slices(m[None], size, "bilinear")[0] > 0.5).float()
                                       for m in masks])))  # [S, H, W]
    return SlicePlan(top, bottom, tuple(groups), tuple(tuple(c) for c in chosen))


def registered_plan(warped: Sequence[SupportScan], extent: tuple[int, int]) -> SlicePlan:
    """The registration rule: query slice z is served by every warped support's slice z.

    warped: the supports registered onto the query's grid (image and mask
    [H, W, D], the query's size), so slice z of each shows the anatomy of
    query slice z. A shot whose warped mask is empty on slice z serves it
    with its nearest slice (in z) where the mask is not, so that no query
    slice gets an empty support. One group per query slice.
    """
    if not warped:
        raise ConfigError("no support given: a slice plan needs at least one labelled support volume")
    top, bottom = (int(z) for z in extent)
    labelled = [_labelled_slices(w) for w in warped]
    chosen = [[int(slices[np.abs(slices - z).argmin()]) for z in range(top, bottom + 1)]
              for slices in labelled]  # [S][n]
    groups = tuple(SliceGroup(
        query_slices=np.array([z]),
        support_images=torch.stack([torch.from_numpy(np.ascontiguousarray(w.image[..., c[i]], dtype=np.float32))
                                    for w, c in zip(warped, chosen)]),  # [S, H, W]
        support_masks=torch.stack([torch.from_numpy(w.mask[..., c[i]].astype(np.float32))
                                   for w, c in zip(warped, chosen)]))  # [S, H, W]
        for i, z in enumerate(range(top, bottom + 1)))
    return SlicePlan(top, bottom, groups, tuple(tuple(c) for c in chosen))
