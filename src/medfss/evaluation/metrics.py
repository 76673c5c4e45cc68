"""Overlap and surface-distance scores of one binary 3D prediction.

The few-shot literature reports the Dice score (0-100) of each class on each
query volume, computed in 3D; we add the Jaccard index and two surface
distances in millimetres, which tell a slightly-too-large organ from one
predicted in the wrong place. The numbers come from MONAI so that they match
what other toolkits report:

    Dice    = 100 * 2 |P n G| / (|P| + |G|)
    Jaccard = 100 * |P n G| / |P u G|
    HD95    = 95th percentile of the symmetric surface distances (mm)
    ASD     = mean of the symmetric surface distances (mm)

where the surface distances are the distances from every surface voxel of P
to the nearest surface voxel of G and back, measured between voxel centres
scaled by the voxel spacing (so a 7.7 mm slice gap counts as 7.7 mm).

Empty masks (a convention, because the formulas are undefined there):

* P and G both empty: Dice = Jaccard = 100, HD95 = ASD = 0 (nothing to find,
  nothing found).
* exactly one of them empty: Dice = Jaccard = 0, HD95 = ASD = NaN: there is
  no surface to measure to, and any finite number would be arbitrary. NaN is
  never an error: the aggregation skips it in means and counts it, and the
  JSON writer turns it into ``null``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import (compute_average_surface_distance, compute_dice,
                           compute_hausdorff_distance, compute_iou)

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")


@dataclass(frozen=True)
class SegmentationScores:
    """The scores of one class on one query volume."""

    dice: float  # 0-100
    jaccard: float  # 0-100
    hd95: float  # mm; NaN when exactly one of prediction and truth is empty
    asd: float  # mm; NaN when exactly one of prediction and truth is empty

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """A binary array [*spatial] as MONAI's one-channel batch [1, 1, *spatial]."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def segmentation_scores(prediction: np.ndarray, truth: np.ndarray,
                        spacing: Sequence[float]) -> SegmentationScores:
    """Dice, Jaccard, HD95 and ASD of a binary ``prediction`` against ``truth``.

    prediction, truth: [H, W, D] (any number of spatial axes) bool or {0, 1};
    spacing: the voxel size in mm along each axis, so distances are in mm.
    See the module docstring for the empty-mask convention.
    """
    prediction = np.asarray(prediction).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} must have the same "
                         "shape: resample the prediction onto the label's grid first")
    if len(spacing) != truth.ndim or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must hold one positive voxel size per axis ({truth.ndim}), "
                         f"got {tuple(spacing)}")
    pred_any, truth_any = bool(prediction.any()), bool(truth.any())
    if not pred_any and not truth_any:
        return SegmentationScores(dice=100.0, jaccard=100.0, hd95=0.0, asd=0.0)
    if not (pred_any and truth_any):
        return SegmentationScores(dice=0.0, jaccard=0.0, hd95=math.nan, asd=math.nan)
    p, g = _as_batch(prediction), _as_batch(truth)  # [1, 1, H, W, D]
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal call
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = float(compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing))
        asd = float(compute_average_surface_distance(p, g, include_background=True, symmetric=True,
                                                     spacing=spacing))
    return SegmentationScores(
        dice=100.0 * float(compute_dice(p, g, include_background=True)),
        jaccard=100.0 * float(compute_iou(p, g, include_background=True)),
        hd95=hd95,
        asd=asd,
    )
