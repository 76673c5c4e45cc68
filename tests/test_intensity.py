"""Intensity normalisation: known answers for the prepare, loader and segment conventions."""

from __future__ import annotations

import numpy as np
import pytest

from medfss.data.intensity import (CT_WINDOW, clip_to_window, detect_modality, normalise_ct, normalise_intensity,
                                   normalise_mr, zscore)


# ----------------------------------------------------------- prepare: MR cut, CT window

def test_normalise_mr_cuts_the_top_half_percent_and_nothing_else():
    image = np.random.default_rng(0).gamma(2, 100, 20000).astype(np.float32)
    out = normalise_mr(image)
    ceiling = np.percentile(image, 99.5, method="lower")  # an actual voxel value: a second cut is a no-op
    assert out.max() == ceiling and ceiling == pytest.approx(np.percentile(image, 99.5), rel=1e-3)
    below = image <= ceiling
    np.testing.assert_array_equal(out[below], image[below])
    assert (out == out.max()).mean() == pytest.approx(0.005, abs=2e-4)
    np.testing.assert_array_equal(normalise_mr(out), out)
    np.testing.assert_array_equal(normalise_mr(image, 0), image)


@pytest.mark.parametrize("top_percent, ceiling", [(0.5, 994), (1.0, 989), (10.0, 899)])
def test_normalise_mr_known_ceiling_on_a_ramp(top_percent, ceiling):
    """0..999: P_{100-p} (the order statistic below position (1 - p/100) * 999) is floor of that position."""
    ramp = np.arange(1000, dtype=np.float32)
    out = normalise_mr(ramp, top_percent)
    np.testing.assert_array_equal(out, np.minimum(ramp, ceiling))
    assert out.dtype == np.float32


def test_normalise_mr_rejects_a_share_outside_0_100():
    for bad in (-1, 100):
        with pytest.raises(ValueError, match="top_percent"):
            normalise_mr(np.zeros(4), bad)


def test_normalise_ct_maps_the_window_to_0_255():
    hu = np.array([-1000, -125, 75, 275, 3000], np.float32)
    out = normalise_ct(hu)
    np.testing.assert_allclose(out, [0, 0, 127.5, 255, 255])
    assert out[1] == 0 and out[3] == 255 and out.dtype == np.float32  # the window ends exactly
    np.testing.assert_allclose(normalise_ct(hu, (0, 100), scale=1.0), [0, 0, 0.75, 1, 1])
    with pytest.raises(ValueError, match="low < high"):
        normalise_ct(hu, (10, 10))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_to_window_keeps_a_float_dtype(dtype):
    out = clip_to_window(np.array([-2000, 0, 2000], dtype), CT_WINDOW)
    assert out.dtype == dtype and out.tolist() == [-125, 0, 275]
    with pytest.raises(ValueError, match="low < high"):
        clip_to_window(np.zeros(2), (5, -5))


# ---------------------------------------------------------------- loaders: z-score

def test_zscore_has_mean_0_and_std_1():
    image = np.random.default_rng(1).normal(300, 40, (16, 16, 4))
    z = zscore(image)
    assert z.dtype == np.float32 and z.shape == image.shape
    assert float(z.mean()) == pytest.approx(0, abs=1e-6) and float(z.std()) == pytest.approx(1, rel=1e-5)
    np.testing.assert_allclose(zscore(np.array([1.0, 3.0])), [-1, 1])


def test_zscore_of_a_constant_volume_is_zero_not_nan():
    z = zscore(np.full((3, 3, 2), 7.0, np.float32))
    assert z.dtype == np.float32 and (z == 0).all()


# ----------------------------------------------------------------- segment: raw scans

def test_detect_modality_calls_air_ct():
    assert detect_modality(np.array([-501.0, 0.0])) == "CT"
    assert detect_modality(np.array([-500.0, 0.0])) == "MR"  # strictly below -500
    assert detect_modality(np.array([0.0, 800.0])) == "MR"


def test_normalise_intensity_clips_ct_then_z_scores():
    ct = np.array([-1000.0, -125.0, 275.0, 2000.0], dtype=np.float32)
    z, used = normalise_intensity(ct, "auto")
    assert used == "CT" and z[0] == z[1] and z[2] == z[3]  # clipped to the window first
    np.testing.assert_allclose(z, [-1, -1, 1, 1], atol=1e-6)
    z, used = normalise_intensity(np.array([0.0, 10.0, 20.0], np.float32), "auto")
    assert used == "MR" and z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    z, used = normalise_intensity(np.array([0.0, 500.0], np.float32), "CT")  # forced: clipped to 275
    assert used == "CT"
    np.testing.assert_allclose(z, [-1, 1])
    z, _ = normalise_intensity(np.full(5, 3.0, np.float32), "MR")
    assert (z == 0).all()
    with pytest.raises(ValueError, match="modality must be one of"):
        normalise_intensity(ct, "PET")


def test_segment_ct_normalisation_matches_prepare_then_load():
    """A z-score ignores a linear map: window -> [0, 255] (prepare) then z-score (loader) is what
    ``medfss segment`` does to a raw CT (window, z-score), so a model sees the same intensities either way."""
    hu = np.random.default_rng(2).normal(0, 400, (12, 12, 3)).astype(np.float32)
    segment, _ = normalise_intensity(hu, "CT")
    np.testing.assert_allclose(segment, zscore(normalise_ct(hu)), atol=1e-5)
