"""Query transforms: alignment of image and mask, binary masks, reproducibility, identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfss.data.transforms import (AugmentConfig, augment_pair, gamma_transform, random_sampling_grid,
                                    resize_image, resize_label, warp)

IDENTITY = AugmentConfig(rotate_deg=0, shear_deg=0, translate_px=0, scale_range=(1, 1), elastic=False,
                         gamma_range=(1, 1))


def blob(size: int, seed: int = 0) -> torch.Tensor:
    """A binary [H, W] blob away from the border: an ellipse with a notch."""
    rng = np.random.default_rng(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = rng.uniform(0.4, 0.6, size=2) * size
    ellipse = ((yy - cy) / (0.2 * size)) ** 2 + ((xx - cx) / (0.13 * size)) ** 2 <= 1
    notch = (yy > cy) & ((xx - cx).abs() < 0.03 * size)
    return (ellipse & ~notch).float()


def mismatch(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Pixels where ``image > 0.5`` and ``mask`` disagree, as a fraction of the mask."""
    return ((image > 0.5) != (mask > 0.5)).sum().item() / mask.sum().item()


@pytest.mark.parametrize("size, elastic", [(64, True), (128, True), (128, False), (256, True)])
def test_image_and_mask_stay_aligned_and_mask_binary(size, elastic):
    params = AugmentConfig(elastic=elastic)
    for seed in range(4):
        shape = blob(size, seed)
        image, mask = augment_pair(shape, shape.clone(), np.random.default_rng(seed), params)
        assert image.shape == mask.shape == (size, size)
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        assert not torch.equal(mask, shape), "the transform did nothing"
        # bilinear vs nearest differ on a one-pixel rim at most
        assert mismatch(image, mask) < 0.03
        # control: the same check fails for a mask transformed independently
        _, other = augment_pair(shape, shape.clone(), np.random.default_rng(seed + 100), params)
        assert mismatch(image, other) > 0.03


def test_integer_labels_keep_their_values():
    labels = torch.zeros(64, 64, dtype=torch.long)
    labels[10:30, 10:30] = 3
    labels[35:55, 30:60] = 7
    _, warped = augment_pair(torch.rand(64, 64), labels, np.random.default_rng(0), AugmentConfig())
    assert warped.dtype == torch.long
    assert set(torch.unique(warped).tolist()) <= {0, 3, 7}


def test_same_seed_same_views_other_seed_other_views():
    shape = blob(96)
    image = shape * 2 + torch.linspace(-1, 1, 96)[None]
    a = augment_pair(image, shape, np.random.default_rng(5), AugmentConfig())
    b = augment_pair(image, shape, np.random.default_rng(5), AugmentConfig())
    c = augment_pair(image, shape, np.random.default_rng(6), AugmentConfig())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_zero_ranges_are_the_identity():
    image = torch.randn(48, 40)
    mask = blob(48)[:, :40]
    out_image, out_mask = augment_pair(image, mask, np.random.default_rng(0), IDENTITY)
    torch.testing.assert_close(out_image, image, atol=1e-4, rtol=0)
    assert torch.equal(out_mask, mask)


def test_translation_only_grid_is_a_constant_shift_scaled_with_size():
    params = AugmentConfig(rotate_deg=0, shear_deg=0, translate_px=8, scale_range=(1, 1), elastic=False)
    shifts = []
    for size in (128, 256):
        identity = random_sampling_grid(np.random.default_rng(0), (size, size), IDENTITY)
        grid = random_sampling_grid(np.random.default_rng(0), (size, size), params)  # [3, H, W]
        shift = grid[:2] - identity[:2]  # [2, H, W]
        assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift), atol=1e-4)
        shifts.append(shift[:, 0, 0])
    torch.testing.assert_close(shifts[1], 2 * shifts[0], atol=1e-4, rtol=1e-4)


def test_elastic_field_is_smooth_and_small():
    params = AugmentConfig(rotate_deg=0, shear_deg=0, translate_px=0, scale_range=(1, 1))
    identity = random_sampling_grid(np.random.default_rng(0), (256, 256), IDENTITY)
    field = random_sampling_grid(np.random.default_rng(0), (256, 256), params)[:2] - identity[:2]  # [2, H, W]
    rms = field.pow(2).sum(0).mean().sqrt().item()
    assert 0.1 < rms < 2.0
    # smooth: neighbouring displacements differ far less than the displacements themselves
    assert (field[:, 1:] - field[:, :-1]).abs().mean() < 0.3 * field.abs().mean()


def test_gamma_transform_matches_the_formula():
    image = torch.linspace(-2.0, 3.0, 50).reshape(5, 10)
    out = gamma_transform(image, 0.5)
    expected = -2.0 + 5.0 * ((image + 2.0) / 5.0) ** 0.5
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gamma_transform(image, 1.0), image, atol=1e-5, rtol=1e-5)


def test_gamma_is_drawn_and_applied_to_the_image_only():
    image = torch.linspace(0.0, 1.0, 64)[None].repeat(64, 1)
    mask = torch.ones(64, 64)
    params = AugmentConfig(rotate_deg=0, shear_deg=0, translate_px=0, scale_range=(1, 1), elastic=False,
                           gamma_range=(2.0, 2.0))
    out_image, out_mask = augment_pair(image, mask, np.random.default_rng(0), params)
    torch.testing.assert_close(out_image, image ** 2, atol=1e-4, rtol=1e-4)
    assert torch.equal(out_mask, mask)


def test_warp_pads_images_with_the_border_and_masks_with_zeros():
    image = torch.full((32, 32), -0.8)
    mask = torch.ones(32, 32)
    params = AugmentConfig(rotate_deg=0, shear_deg=0, translate_px=0, scale_range=(0.5, 0.5), elastic=False)
    grid = random_sampling_grid(np.random.default_rng(0), (32, 32), params)  # shrinks: borders uncovered
    torch.testing.assert_close(warp(image, grid, mode="bilinear", padding_mode="border"), image)
    out = warp(mask, grid, mode="nearest", padding_mode="zeros")
    assert out[0, 0] == 0 and out[16, 16] == 1


def test_resize():
    image = torch.rand(256, 256)
    labels = torch.randint(0, 50, (256, 256), dtype=torch.int32)
    assert resize_image(image, 128).shape == (128, 128)
    assert resize_image(image, 256) is image
    small = resize_label(labels, 100)
    assert small.shape == (100, 100) and small.dtype == torch.int32
    assert set(torch.unique(small).tolist()) <= set(torch.unique(labels).tolist())
    torch.testing.assert_close(resize_image(torch.ones(64, 64) * 3, 32), torch.ones(32, 32) * 3)


@pytest.mark.parametrize("kwargs", [dict(rotate_deg=-1), dict(shear_deg=90), dict(translate_px=-2),
                                    dict(scale_range=(1.2, 0.9)), dict(scale_range=(0, 1)),
                                    dict(gamma_range=(-0.5, 1.5)), dict(elastic_sigma_px=0),
                                    dict(elastic_alpha_px=-1)])
def test_invalid_params_raise(kwargs):
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        augment_pair(torch.zeros(8, 8), torch.zeros(8, 9), np.random.default_rng(0), AugmentConfig())
