"""Supervoxels (ADNet's 3D pseudolabels) and the supervoxel episode sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from medfss.data.datasets import Volume
from medfss.data.samplers import MixtureSampler, SupervoxelSampler
from medfss.data.superpixels import SuperpixelConfig, merge_small_regions, superpixels_for_volume, superpixels_for_volumes
from medfss.data.supervoxels import SupervoxelConfig, compute_supervoxels
from medfss.data.transforms import AugmentConfig

from conftest import make_phantom

SHAPE = (48, 48, 16)
SPACING = (1.25, 1.25, 3.0)
PARAMS = SupervoxelConfig(segments=30, min_size=6000)  # 6000 at 256^2 -> 211 voxels at 48^2


def phantom(seed: int = 0, case_id: str = "0") -> Volume:
    image, label, affine = make_phantom(shape=SHAPE, seed=seed, spacing=SPACING)
    return Volume(case_id=case_id, image=image, label=label, spacing=SPACING, affine=affine,
                  image_path=Path(f"/nonexistent/image_{case_id}.nii.gz"),
                  label_path=Path(f"/nonexistent/label_{case_id}.nii.gz"))


@pytest.fixture(scope="module")
def volumes_and_supervoxels():
    volumes = [phantom(seed, str(seed)) for seed in range(2)]
    return volumes, [compute_supervoxels(v.image, v.spacing, PARAMS) for v in volumes]


def test_supervoxels_are_3d_connected_respect_the_minimum_size_and_span_slices(volumes_and_supervoxels):
    (volume, _), (labels, _) = volumes_and_supervoxels
    assert labels.dtype == np.int32 and labels.shape == SHAPE
    n = int(labels.max())
    assert n >= 2 and np.array_equal(np.unique(labels[labels > 0]), np.arange(1, n + 1))
    min_size = PARAMS.min_size_for(SHAPE)
    assert min_size == round(6000 * 48 * 48 / 256 ** 2)
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() >= min_size
    for k in range(1, n + 1):
        _, pieces = ndi.label(labels == k)  # face connectivity in 3D
        assert pieces == 1, f"supervoxel {k} has {pieces} face-connected pieces"
    spans = [np.unique(np.nonzero(labels == k)[2]).size for k in range(1, n + 1)]
    assert max(spans) >= 3  # 3D pieces, not slice-wise superpixels
    air = ~ndi.binary_dilation(volume.image > 50, iterations=3)  # clearly outside the body
    assert not labels[air].any()


def test_merging_small_regions_in_3d_goes_through_faces():
    labels = np.zeros((4, 4, 4), dtype=np.int64)
    labels[:2] = 1  # 32 voxels
    labels[2:] = 2  # 32 voxels
    labels[3, 3, 3] = 3  # one voxel inside region 2
    out = merge_small_regions(labels, min_size=10)
    assert out.max() == 2 and out[3, 3, 3] == out[2, 0, 0]


def test_supervoxel_settings_name_their_own_cache(tmp_path, volumes_and_supervoxels):
    volume = volumes_and_supervoxels[0][0]
    assert SupervoxelConfig().key != SupervoxelConfig(segments=100).key
    first = superpixels_for_volume(volume, PARAMS, tmp_path)
    assert np.array_equal(first, volumes_and_supervoxels[1][0])
    assert [p.name for p in tmp_path.iterdir()] == [f"nonexistent_0_sp-{PARAMS.key}.npz"]
    with pytest.raises(ValueError, match="segments"):
        SupervoxelConfig(segments=0)


def test_the_uncached_pass_names_supervoxels(tmp_path, capsys):
    superpixels_for_volumes([phantom()], PARAMS, tmp_path)
    err = capsys.readouterr().err
    assert "computing the supervoxel pseudolabels of 1 of 1" in err
    assert f"about {SupervoxelConfig.seconds_per_volume:g} s per" in err  # the supervoxels' estimate, not 1.5 s
    assert "supervoxels: 100%" in err  # the progress bar's name


def test_sampler_draws_two_different_slices_of_one_supervoxel(volumes_and_supervoxels):
    volumes, supervoxels = volumes_and_supervoxels
    sampler = SupervoxelSampler(volumes, supervoxels, image_size=48, shots=2,
                                augment=AugmentConfig(elastic=False), min_mask_area=0.01)
    assert len(sampler) > 0
    rng = np.random.default_rng(0)
    for _ in range(10):
        episode = sampler.sample(rng)
        assert episode.support_images.shape == (1, 2, 1, 48, 48) and episode.query_masks.shape == (1, 48, 48)
        assert episode.class_ids is None
        # each support is a slice of one volume verbatim; both masks are cross-sections of one supervoxel
        found = [(v, z) for v, volume in enumerate(volumes) for s in range(2) for z in range(SHAPE[2])
                 if torch.equal(torch.from_numpy(volume.image[..., z]), episode.support_images[0, s, 0])]
        (v, z0), (v1, z1) = found
        assert v == v1 and z0 != z1
        label = int(np.bincount(supervoxels[v][..., z0][episode.support_masks[0, 0].numpy() > 0]).argmax())
        for s, z in enumerate((z0, z1)):
            assert np.array_equal(supervoxels[v][..., z] == label, episode.support_masks[0, s].numpy() > 0)
        assert episode.query_masks.sum() > 0
    first = sampler.sample(np.random.default_rng(3))
    again = sampler.sample(np.random.default_rng(3))
    assert torch.equal(first.query_images, again.query_images)


def test_sampler_keeps_supervoxels_of_two_slices_or_more_and_excludes_classes(volumes_and_supervoxels):
    volumes, supervoxels = volumes_and_supervoxels
    sampler = SupervoxelSampler(volumes, supervoxels, image_size=48, min_mask_area=0.01)
    assert all(slices.size >= 2 for _, _, slices in sampler._pseudolabels)
    excluded = SupervoxelSampler(volumes, supervoxels, image_size=48, min_mask_area=0.01, exclude_classes=[1])
    organ_slices = {z for v in volumes for z in np.flatnonzero((v.label == 1).any(axis=(0, 1)))}
    assert all(not set(slices.tolist()) & organ_slices for _, _, slices in excluded._pseudolabels)
    with pytest.raises(ValueError, match="two training slices"):
        SupervoxelSampler(volumes, supervoxels, image_size=48, min_mask_area=0.9)


def test_scaled_settings_give_larger_pseudolabels_and_factor_one_keeps_the_cache(volumes_and_supervoxels):
    assert SupervoxelConfig().scaled(4) == SupervoxelConfig(min_size=20000, segments=50)
    assert SuperpixelConfig().scaled(2) == SuperpixelConfig(min_size=800, scale=10.0)
    assert SupervoxelConfig().scaled(1).key == SupervoxelConfig().key
    assert SuperpixelConfig(scale=5).scaled(1.0).key == SuperpixelConfig(scale=5).key
    (volume, _), (fine, _) = volumes_and_supervoxels
    coarse = compute_supervoxels(volume.image, volume.spacing, PARAMS.scaled(3))
    sizes = [np.bincount(labels[labels > 0])[1:] for labels in (fine, coarse)]
    assert len(sizes[1][sizes[1] > 0]) < len(sizes[0][sizes[0] > 0])
    assert sizes[1][sizes[1] > 0].min() >= PARAMS.scaled(3).min_size_for(SHAPE)


def test_mixture_draws_each_sampler_about_equally_and_reproducibly(volumes_and_supervoxels):
    volumes, supervoxels = volumes_and_supervoxels
    coarse = [compute_supervoxels(v.image, v.spacing, PARAMS.scaled(3)) for v in volumes]
    samplers = [SupervoxelSampler(volumes, maps, image_size=48, min_mask_area=0.01,
                                  augment=AugmentConfig(elastic=False)) for maps in (supervoxels, coarse)]
    mixture = MixtureSampler(samplers)
    assert mixture.slice_orientation == samplers[0].slice_orientation
    drawn = []  # which sampler each episode came from: replay the mixture's draw of the sampler
    rng, replay = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(200):
        mixture.sample(rng)
        chosen = int(replay.integers(2))
        samplers[chosen].sample(replay)
        drawn.append(chosen)
    assert 70 <= sum(drawn) <= 130  # binomial(200, 1/2): 5 sigma either side of 100
    again = MixtureSampler(samplers).sample(np.random.default_rng(9))
    assert torch.equal(again.query_masks, mixture.sample(np.random.default_rng(9)).query_masks)
    with pytest.raises(ValueError, match="at least one"):
        MixtureSampler([])
