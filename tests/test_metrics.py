"""3D Dice, Jaccard and surface distances against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfss.evaluation.metrics import segmentation_scores


def box(shape=(12, 12, 8), rows=slice(2, 6), cols=slice(2, 6), slices=slice(3, 4)):
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols, slices] = True
    return mask


def test_identical_masks():
    s = segmentation_scores(box(), box(), (1.25, 1.25, 7.7))
    assert (s.dice, s.jaccard, s.hd95, s.asd) == pytest.approx((100.0, 100.0, 0.0, 0.0))


def test_overlap_scores_by_hand():
    truth = box(cols=slice(2, 4))  # 4 x 2 pixels inside the 4 x 4 prediction
    s = segmentation_scores(box(), truth, (1.0, 1.0, 1.0))
    assert s.dice == pytest.approx(100 * 2 * 8 / (16 + 8))
    assert s.jaccard == pytest.approx(100 * 8 / 16)


def test_surface_distance_uses_the_slice_spacing():
    # two single-slice squares 3 slices apart: every surface voxel is 3 * 7.7 mm from the other surface
    s = segmentation_scores(box(slices=slice(2, 3)), box(slices=slice(5, 6)), (1.25, 1.25, 7.7))
    assert s.dice == 0.0
    assert s.hd95 == pytest.approx(3 * 7.7, rel=1e-5) and s.asd == pytest.approx(3 * 7.7, rel=1e-5)
    t = segmentation_scores(box(slices=slice(2, 3)), box(slices=slice(5, 6)), (1.25, 1.25, 2.0))
    assert t.hd95 == pytest.approx(6.0, rel=1e-5)


def test_empty_mask_conventions():
    empty = np.zeros((12, 12, 8), dtype=bool)
    assert segmentation_scores(empty, empty, (1, 1, 1)).dice == 100.0
    missed = segmentation_scores(empty, box(), (1, 1, 1))
    assert missed.dice == 0.0 and math.isnan(missed.hd95) and math.isnan(missed.asd)
    spurious = segmentation_scores(box(), empty, (1, 1, 1))
    assert spurious.dice == 0.0 and math.isnan(spurious.hd95)


def test_bad_arguments():
    with pytest.raises(ValueError, match="same shape"):
        segmentation_scores(box(), box(shape=(12, 12, 9)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_scores(box(), box(), (1, 1))
