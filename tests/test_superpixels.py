"""Superpixel pseudolabels: size guarantee, body mask, cache reuse and invalidation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from medfss.data import superpixels as sp
from medfss.data.datasets import Dataset, Volume
from medfss.data.superpixels import (SuperpixelConfig, body_mask, body_threshold, compute_superpixels,
                                     merge_small_regions, slice_superpixels, superpixels_for_volume,
                                     superpixels_for_volumes)

from conftest import make_phantom


def phantom_volume(folder: Path, shape=(64, 64, 6), seed=0, case_id="7") -> Volume:
    image, label, affine = make_phantom(shape=shape, seed=seed)
    return Volume(case_id=case_id, image=image, label=label, spacing=(1.25, 1.25, 7.7), affine=affine,
                  image_path=folder / f"image_{case_id}.nii.gz", label_path=folder / f"label_{case_id}.nii.gz")


def assert_valid_superpixels(labels: np.ndarray, body: np.ndarray, min_size: int) -> None:
    """Every superpixel is inside the body and has at least ``min_size`` pixels; labels are 1..n."""
    assert labels.dtype == np.int32
    assert not labels[~body].any(), "superpixel pixels outside the body"
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.size > 0
    assert sizes.min() >= min_size, f"superpixel of {sizes.min()} px < {min_size}"
    assert np.array_equal(np.unique(labels[labels > 0]), np.arange(1, sizes.size + 1))


# ---- parameters --------------------------------------------------------------------------------

def test_params_key_is_stable_short_and_sensitive():
    params = SuperpixelConfig(scale=2.0, sigma=0.8, min_size=100, body_threshold=0.1, body_smoothing=1.0)
    # a literal: the key must not depend on the process (Python's hash() does); changing the
    # hashing would silently orphan every user's cache, so it has to be a conscious change
    assert params.key == "bf600b43c8"
    assert SuperpixelConfig(scale=2.0, sigma=0.8, min_size=100, body_threshold=0.1,
                            body_smoothing=1.0).key == params.key
    variants = [SuperpixelConfig(scale=3.0), SuperpixelConfig(sigma=0.5), SuperpixelConfig(min_size=200),
                SuperpixelConfig(body_threshold=0.2), SuperpixelConfig(body_smoothing=0.0), SuperpixelConfig()]
    assert len({v.key for v in variants} | {params.key}) == len(variants) + 1


@pytest.mark.parametrize("kwargs", [dict(scale=0), dict(sigma=-1), dict(min_size=0), dict(min_size=1.5),
                                    dict(body_threshold=0), dict(body_threshold=1.0),
                                    dict(body_smoothing=-0.5)])
def test_invalid_params_raise(kwargs):
    with pytest.raises(ValueError):
        SuperpixelConfig(**kwargs)


@pytest.mark.parametrize("shape, expected", [((256, 256), 400), ((128, 128), 100), ((512, 256), 800),
                                             ((8, 8), 1)])
def test_min_size_scales_with_pixel_count(shape, expected):
    assert SuperpixelConfig().min_size_for(shape) == expected


# ---- merging -----------------------------------------------------------------------------------

def test_merge_goes_to_the_longest_shared_border():
    labels = np.zeros((10, 12), dtype=np.int64)
    labels[:, :6] = 1  # 60 px
    labels[:, 6:] = 2  # 60 px
    labels[0:3, 4:7] = 3  # 9 px straddling the 1|2 border, more of it on the side of 1
    out = merge_small_regions(labels, min_size=20)
    assert out.max() == 2
    # region 3 touches region 1 over 5 pixel pairs (3 left + 2 below) and region 2 over 4
    assert out[1, 5] == out[5, 0] and out[1, 5] != out[5, 11]


def test_merge_drops_islands_and_keeps_outside():
    labels = np.zeros((20, 20), dtype=np.int64)
    labels[2:12, 2:12] = 5  # 100 px
    labels[15:17, 15:17] = 9  # 4 px island, no labelled neighbour
    out = merge_small_regions(labels, min_size=10)
    assert out[15:17, 15:17].max() == 0
    assert np.array_equal(out > 0, labels == 5)
    assert np.unique(out).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_merge_guarantees_min_size_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 40, size=(48, 48))  # many 1-pixel fragments
    labels[rng.random((48, 48)) < 0.2] = 0  # holes that are never merged into
    out = merge_small_regions(labels, min_size=30)
    sizes = np.bincount(out.ravel())[1:]
    assert sizes.size and sizes.min() >= 30
    assert not out[labels == 0].any()


def test_merge_of_empty_map():
    assert not merge_small_regions(np.zeros((5, 5), dtype=np.int64), 3).any()


@pytest.mark.parametrize("shape, low, high", [((9, 11), 0, 30), ((9, 11), 4, 30), ((6, 7, 5), 0, 2000),
                                              ((4, 4), 0, 0), ((3,), 7, 7)])
def test_relabelling_is_the_rank_among_present_labels_as_np_unique_gives_it(shape, low, high):
    labels = np.random.default_rng(0).integers(low, high + 1, size=shape)
    values, inverse = np.unique(labels, return_inverse=True)
    expected = (inverse + (0 if values[0] == 0 else 1)).reshape(shape)  # 0 stays 0, else labels start at 1
    out = sp._relabel_consecutive(labels)
    assert out.dtype == np.int32 and np.array_equal(out, expected)


# ---- phantom and real slices -------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64, 4), (96, 80, 3)])
def test_phantom_superpixels_respect_body_and_min_size(shape):
    image, _, _ = make_phantom(shape=shape, seed=1)
    params = SuperpixelConfig()
    labels = compute_superpixels(image, params)  # [H, W, D]
    assert labels.shape == image.shape
    threshold = body_threshold(image, params.body_threshold)
    true_body = image > 50  # phantom: body 100 + organs, air exactly 0
    near_body = ndi.binary_dilation(true_body, np.ones((5, 5, 1), bool))  # smoothing may add 2 px of skin
    min_size = params.min_size_for(shape[:2])
    for z in range(shape[2]):
        body = body_mask(image[..., z], threshold, params.body_smoothing)
        assert body.sum() <= near_body[..., z].sum() and not body[~near_body[..., z]].any()
        assert_valid_superpixels(labels[..., z], body, min_size)
        # the pseudolabels cover the body, not just a corner of it
        assert (labels[..., z] > 0).sum() >= 0.95 * true_body[..., z].sum()
        assert labels[..., z].max() >= 2


def test_empty_slice_has_no_superpixels():
    image = np.zeros((32, 32, 2), dtype=np.float32)
    image[8:24, 8:24, 0] = 5.0
    labels = compute_superpixels(image, SuperpixelConfig())
    assert labels[..., 0].max() >= 1 and not labels[..., 1].any()


def test_compute_rejects_2d_input():
    with pytest.raises(ValueError, match=r"\[H, W, D\]"):
        compute_superpixels(np.zeros((32, 32), dtype=np.float32), SuperpixelConfig())


@pytest.mark.realdata
def test_real_chaost2_slice(data_root):
    volume = Dataset.from_name("CHAOST2", data_root).load("1")
    params = SuperpixelConfig()
    threshold = body_threshold(volume.image, params.body_threshold)
    z = volume.num_slices // 2
    image = volume.image[..., z]
    labels = slice_superpixels(image, threshold, params)  # [H, W]
    body = body_mask(image, threshold, params.body_smoothing)
    assert_valid_superpixels(labels, body, 400)
    # the body is the patient, not the air: it holds every organ and misses the image corners
    assert body[volume.label[..., z] > 0].all()
    assert not body[:8, :8].any() and not body[-8:, -8:].any()
    assert 0.3 < body.mean() < 0.9
    assert 10 <= labels.max() <= 60


# ---- cache -------------------------------------------------------------------------------------

def test_cache_is_written_reused_and_rebuilt(tmp_path, monkeypatch):
    volume = phantom_volume(tmp_path / "inputs")
    cache = tmp_path / "outputs" / "superpixels"
    params = SuperpixelConfig()
    first = superpixels_for_volume(volume, params, cache)
    files = list(cache.glob("*.npz"))
    assert [f.name for f in files] == [f"inputs_7_sp-{params.key}.npz"]

    def fail(*_):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(sp, "compute_superpixels", fail)
    assert np.array_equal(superpixels_for_volume(volume, params, cache), first)

    monkeypatch.undo()
    other = SuperpixelConfig(min_size=800)
    second = superpixels_for_volume(volume, other, cache)
    assert np.bincount(second[..., 0].ravel())[1:].min() >= other.min_size_for((64, 64))
    assert sorted(f.name for f in cache.glob("*.npz")) == sorted(
        [f"inputs_7_sp-{params.key}.npz", f"inputs_7_sp-{other.key}.npz"])


def test_cache_checks_params_and_image_inside_the_file(tmp_path, monkeypatch):
    volume = phantom_volume(tmp_path / "inputs")
    cache = tmp_path / "cache"
    params = SuperpixelConfig()
    calls = []
    real = sp.compute_superpixels
    monkeypatch.setattr(sp, "compute_superpixels", lambda *a: calls.append(1) or real(*a))
    path = sp.cache_path(volume, params, cache)
    superpixels_for_volume(volume, params, cache)
    # a file under the right name but holding other settings is rebuilt
    with np.load(path) as stored:
        np.savez_compressed(path, superpixels=stored["superpixels"], image=stored["image"],
                            params=np.array(SuperpixelConfig(scale=9.0).to_json()))
    superpixels_for_volume(volume, params, cache)
    # so is one built from another image with the same case id
    superpixels_for_volume(phantom_volume(tmp_path / "inputs", seed=5), params, cache)
    # and an unreadable one
    path.write_bytes(b"not a zip file")
    superpixels_for_volume(volume, params, cache)
    superpixels_for_volume(volume, params, cache)  # now valid: reused
    assert len(calls) == 4


def test_cache_refuses_the_input_folder(tmp_path):
    volume = phantom_volume(tmp_path / "inputs")
    for inside in (tmp_path / "inputs", tmp_path / "inputs" / "cache"):
        with pytest.raises(ValueError, match="input folder"):
            superpixels_for_volume(volume, SuperpixelConfig(), inside)


def test_many_volumes_with_dataset_name(tmp_path):
    volumes = [phantom_volume(tmp_path / "in", shape=(48, 48, 2), case_id=str(i)) for i in range(2)]
    out = superpixels_for_volumes(volumes, SuperpixelConfig(), tmp_path / "c", dataset="PH", progress=False)
    assert [o.shape for o in out] == [(48, 48, 2)] * 2
    assert sorted(p.name.split("_sp-")[0] for p in (tmp_path / "c").glob("*.npz")) == ["PH_0", "PH_1"]


def test_the_uncached_pass_is_announced_once(tmp_path, capsys):
    volumes = [phantom_volume(tmp_path / "in", shape=(48, 48, 2), case_id=str(i)) for i in range(2)]
    superpixels_for_volumes(volumes[:1], SuperpixelConfig(), tmp_path / "c", dataset="PH", progress=False)
    superpixels_for_volumes(volumes, SuperpixelConfig(), tmp_path / "c", dataset="PH")
    assert "computing the superpixel pseudolabels of 1 of 2 training volumes before training starts" \
        in capsys.readouterr().err
    superpixels_for_volumes(volumes, SuperpixelConfig(), tmp_path / "c", dataset="PH")  # all cached: silent
    assert "computing" not in capsys.readouterr().err
