"""Prototype operations against hand computations: MAP, cosine similarity, ALP, fused similarity."""

from __future__ import annotations

import math

import pytest
import torch

from medfss.nn.prototypes import (adaptive_local_prototypes, class_prototype, cosine_similarity_map,
                                  fused_similarity, local_prototypes, masked_average_pooling)


def grid_features(h: int = 8, w: int = 8) -> torch.Tensor:
    """[1, 2, H, W]: channel 0 = row index, channel 1 = column index (every window mean is easy to tell)."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    return torch.stack([rows, cols]).unsqueeze(0)


# --- MAP and cosine similarity ------------------------------------------------------------------


def test_masked_average_pooling_by_hand():
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 0.0], [20.0, 0.0]]]])  # [1, 2, 2, 2]
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # left column
    torch.testing.assert_close(masked_average_pooling(features, mask), torch.tensor([[2.0, 15.0]]),
                               rtol=1e-4, atol=1e-4)
    soft = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]) * 0.5  # weights do not change a uniform average
    torch.testing.assert_close(masked_average_pooling(features, soft), torch.tensor([[1.5, 5.0]]),
                               rtol=1e-4, atol=1e-4)


def test_masked_average_pooling_of_an_empty_mask_is_zero():
    pooled = masked_average_pooling(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4))
    assert torch.equal(pooled, torch.zeros(2, 3))


def test_cosine_similarity_map_by_hand():
    features = torch.tensor([[[[1.0, 0.0, 3.0]], [[0.0, 2.0, 3.0]]]])  # [1, 2, 1, 3]: pixels (1,0), (0,2), (3,3)
    prototypes = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # [1, 2, 2]
    expected = 20 * torch.tensor([[[[1.0, 0.0, 1 / math.sqrt(2)]],
                                   [[1 / math.sqrt(2), 1 / math.sqrt(2), 1.0]]]])
    torch.testing.assert_close(cosine_similarity_map(features, prototypes, scale=20), expected)


# --- adaptive local prototype pooling (eq. 1-3) --------------------------------------------------


def test_local_prototypes_are_window_means_classified_by_threshold():
    features = grid_features()  # [1, 2, 8, 8]
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, :6] = 1  # 4 x 6 cells: exactly 2 x 3 windows of 2 x 2
    prototypes, valid = local_prototypes(features, mask, window=2, threshold=0.95)
    assert prototypes.shape == (1, 16, 2) and valid.shape == (1, 16)
    assert int(valid.sum()) == 6
    # window (m, n) = (1, 2): rows 2-3, cols 4-5 -> mean (2.5, 4.5); row-major index 1 * 4 + 2
    torch.testing.assert_close(prototypes[0, 6], torch.tensor([2.5, 4.5]))
    assert valid[0].view(4, 4)[:2, :3].all() and not valid[0].view(4, 4)[2:].any()


def test_threshold_decides_partly_covered_windows():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1
    mask[0, 1, 1] = 0  # window (0, 0) is 3/4 foreground
    _, strict = local_prototypes(grid_features(4, 4), mask, window=2, threshold=0.95)
    _, loose = local_prototypes(grid_features(4, 4), mask, window=2, threshold=0.7)
    assert strict.tolist() == [[False] * 4]
    assert loose.tolist() == [[True, False, False, False]]


def test_alp_counts_foreground_and_background_prototypes():
    features = grid_features().unsqueeze(1)  # [1, 1, 2, 8, 8]
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, :4, :6] = 1
    fg, fg_valid = adaptive_local_prototypes(features, mask, window=2)
    bg, bg_valid = adaptive_local_prototypes(features, 1 - mask, window=2)
    assert fg.shape == bg.shape == (1, 17, 2)  # 16 local candidates + the class-level prototype
    assert int(fg_valid.sum()) == 6 + 1 and int(bg_valid.sum()) == 10 + 1
    torch.testing.assert_close(fg[0, -1], masked_average_pooling(features[:, 0], mask[:, 0])[0])
    torch.testing.assert_close(fg[0, -1], torch.tensor([1.5, 2.5]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window", [4, 16])  # larger than the object; larger than the whole grid
def test_alp_with_a_window_larger_than_the_object_gives_the_class_level_prototype_only(window):
    features = torch.randn(1, 1, 16, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 3:5, 2:4] = 1  # 2 x 2 object: no 4 x 4 window is >= 95 % foreground
    prototypes, valid = adaptive_local_prototypes(features, mask, window=window)
    assert int(valid.sum()) == 1
    torch.testing.assert_close(prototypes[valid], masked_average_pooling(features[:, 0], mask[:, 0]))
    if window > 8:
        assert prototypes.shape == (1, 1, 16)


def test_alp_pools_all_shots_and_averages_their_class_level_prototypes():
    features = torch.randn(2, 3, 4, 8, 8)  # [B, S, C, H, W]
    masks = torch.zeros(2, 3, 8, 8)
    masks[:, 0, :4, :4] = 1  # shot 0: 4 foreground windows of 2 x 2
    masks[:, 1, 4:, :2] = 1  # shot 1: 2 windows
    masks[1, 2, :2, :2] = 1  # shot 2 of episode 1 only: 1 window
    prototypes, valid = adaptive_local_prototypes(features, masks, window=2)
    assert prototypes.shape == (2, 3 * 16 + 1, 4)
    assert valid.sum(dim=1).tolist() == [4 + 2 + 1, 4 + 2 + 1 + 1]  # different counts per episode
    per_shot = torch.stack([masked_average_pooling(features[:, s], masks[:, s]) for s in range(3)], dim=1)
    torch.testing.assert_close(prototypes[:, -1], per_shot.mean(dim=1))
    torch.testing.assert_close(prototypes[1, 2 * 16], features[1, 2, :, :2, :2].mean(dim=(1, 2)))


def test_alp_without_window_is_the_class_level_prototype():
    features, masks = torch.randn(2, 2, 4, 8, 8), (torch.rand(2, 2, 8, 8) > 0.5).float()
    prototypes, valid = adaptive_local_prototypes(features, masks, window=None)
    assert prototypes.shape == (2, 1, 4) and valid.all()
    assert torch.equal(prototypes[:, 0], class_prototype(features, masks))


def test_class_prototype_by_hand():
    features = torch.zeros(1, 2, 1, 2, 2)  # [B, S, C, H, W]
    features[0, 0, 0] = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    features[0, 1, 0] = torch.tensor([[2.0, 2.0], [2.0, 10.0]])
    masks = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]])  # [1, 2, 2, 2]
    # shot 0: (1 + 3) / 2 = 2; shot 1: 10; the class-level prototype is their mean, 6 (eq. 3, PANet's k-shot rule)
    torch.testing.assert_close(class_prototype(features, masks), torch.tensor([[6.0]]), atol=1e-4, rtol=0)


def test_alp_resizes_the_mask_to_the_feature_grid():
    features = grid_features().unsqueeze(1)  # [1, 1, 2, 8, 8]
    mask = torch.zeros(1, 1, 64, 64)
    mask[0, 0, :32, :48] = 1  # the 4 x 6 cell object at 8 x the resolution
    _, valid = adaptive_local_prototypes(features, mask, window=2)
    assert int(valid.sum()) == 6 + 1


# --- fused similarity (eq. 4-5) -------------------------------------------------------------------


def test_fusion_of_two_prototypes_by_hand():
    features = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]: pixels (1, 0) and (1, 1)
    prototypes = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [1, 2, 2]
    # pixel (1, 0): S = (20, 0); pixel (1, 1): S = (20/sqrt2, 20/sqrt2)
    first = 20 * math.exp(20) / (math.exp(20) + 1)
    expected = torch.tensor([[[first, 20 / math.sqrt(2)]]])
    torch.testing.assert_close(fused_similarity(features, prototypes, scale=20), expected)
    only_second = fused_similarity(features, prototypes, torch.tensor([[False, True]]), scale=20)
    torch.testing.assert_close(only_second, torch.tensor([[[0.0, 20 / math.sqrt(2)]]]), rtol=1e-5, atol=1e-5)


def test_fusion_with_one_prototype_is_the_cosine_map():
    features, prototypes = torch.randn(2, 5, 4, 4), torch.randn(2, 1, 5)
    torch.testing.assert_close(fused_similarity(features, prototypes, scale=20),
                               cosine_similarity_map(features, prototypes, scale=20)[:, 0])


def test_fusion_ignores_invalid_prototypes():
    features, prototypes = torch.randn(2, 5, 4, 4), torch.randn(2, 3, 5)
    valid = torch.tensor([[True, False, True], [False, False, True]])
    fused = fused_similarity(features, prototypes, valid)
    for b in range(2):
        kept = prototypes[b:b + 1, valid[b]]
        torch.testing.assert_close(fused[b], fused_similarity(features[b:b + 1], kept)[0])


def test_gradcheck_alp_and_fusion_in_float64():
    torch.manual_seed(0)
    features = torch.randn(1, 2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    query = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    masks = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    masks[0, 0, :2, :] = 1
    masks[0, 1, 1:3, 1:3] = 1

    def pipeline(features, query):
        prototypes, valid = adaptive_local_prototypes(features, masks, window=2)
        return fused_similarity(query, prototypes, valid, scale=3.0)

    assert torch.autograd.gradcheck(pipeline, (features, query))
