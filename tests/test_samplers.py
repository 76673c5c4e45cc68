"""Episode samplers: shapes, reproducibility, settings 1 and 2, volumes of support and query, streams.

Episodes are traced back to the slices they came from by content: at the data's
own resolution and without augmentation, a support image is a slice verbatim.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medfss.data.datasets import CHAOST2, Dataset, DatasetSpec, Volume
from medfss.data.episodes import Episode
from medfss.data.samplers import (EpisodeStream, SelfSupervisedSampler, SupervisedSampler,
                                  setting2_excluded_classes)
from medfss.data.transforms import AugmentConfig

from conftest import make_phantom

FAST = AugmentConfig(elastic=False)
LIVER, RIGHT_KIDNEY, LEFT_KIDNEY, SPLEEN = 1, 2, 3, 4
PHANTOM_SPEC = DatasetSpec(name="PH", folder="PH", modality="MR", classes={1: "a", 2: "b"},
                           eval_classes=("a", "b"), groups={"g": ("a", "b")})


def phantom_volumes(n=3, shape=(64, 64, 12)) -> list[Volume]:
    volumes = []
    for i in range(n):
        image, label, affine = make_phantom(shape=shape, seed=i)
        volumes.append(Volume(case_id=str(i), image=image, label=label, spacing=(1.25, 1.25, 7.7),
                              affine=affine, image_path=Path(f"image_{i}.nii.gz"),
                              label_path=Path(f"label_{i}.nii.gz")))
    return volumes


def block_superpixels(volume: Volume, block: int) -> np.ndarray:
    """Stand-in superpixels: a grid of ``block`` x ``block`` squares (what is tested here is the
    sampling, not the superpixels, and real ones take a second per volume)."""
    h, w, d = volume.image.shape
    yy, xx = np.meshgrid(np.arange(h) // block, np.arange(w) // block, indexing="ij")
    labels = (yy * (w // block + 1) + xx + 1).astype(np.int32)  # [H, W]
    return np.repeat(labels[..., None], d, axis=-1)  # [H, W, D]


def slice_lookup(volumes: list[Volume]) -> dict[bytes, list[tuple[int, int]]]:
    """Image bytes -> the (volume, slice) pairs holding exactly that image."""
    lookup: dict[bytes, list[tuple[int, int]]] = {}
    for v, volume in enumerate(volumes):
        for z in range(volume.num_slices):
            lookup.setdefault(np.ascontiguousarray(volume.image[..., z]).tobytes(), []).append((v, z))
    return lookup


def sources(lookup, image: torch.Tensor) -> list[tuple[int, int]]:
    found = lookup.get(image.numpy().astype(np.float32).tobytes())
    assert found, "episode image is not a slice of the volumes"
    return found


def draw(sampler, seed: int, n: int = 5) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [sampler.sample(rng) for _ in range(n)]


def assert_same(a: Episode, b: Episode) -> None:
    for name in ("support_images", "support_masks", "query_images", "query_masks"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.fixture(scope="module")
def phantoms() -> list[Volume]:
    return phantom_volumes()


@pytest.fixture(scope="module")
def chaos(data_root) -> list[Volume]:
    dataset = Dataset.from_name("CHAOST2", data_root)
    return [dataset.load(case) for case in dataset.case_ids[:5]]


def ssl(volumes, block=8, **kwargs) -> SelfSupervisedSampler:
    return SelfSupervisedSampler(volumes, [block_superpixels(v, block) for v in volumes], **kwargs)


# ---- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, image_size, shots", [("ssl", 32, 1), ("ssl", 48, 3), ("sup", 32, 1),
                                                      ("sup", 64, 2)])
def test_episode_shapes(phantoms, kind, image_size, shots):
    if kind == "ssl":
        sampler = ssl(phantoms, image_size=image_size, shots=shots, augment=FAST)
    else:
        sampler = SupervisedSampler(phantoms, PHANTOM_SPEC, test_classes=["b"], setting=1,
                                    image_size=image_size, shots=shots, min_mask_area=0.01)
    episode = sampler.sample(np.random.default_rng(0))
    h = w = image_size
    assert episode.support_images.shape == (1, shots, 1, h, w)
    assert episode.support_masks.shape == (1, shots, h, w)
    assert episode.query_images.shape == (1, 1, h, w)
    assert episode.query_masks.shape == (1, h, w)
    assert episode.support_images.dtype == episode.support_masks.dtype == torch.float32
    assert episode.query_masks.dtype == torch.long
    assert set(torch.unique(episode.support_masks).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(episode.query_masks).tolist()) <= {0, 1}
    assert (episode.support_masks.sum(dim=(2, 3)) > 0).all()
    batch = Episode.collate([episode, sampler.sample(np.random.default_rng(1))])
    assert batch.support_images.shape == (2, shots, 1, h, w)


# ---- self-supervised ---------------------------------------------------------------------------

def test_ssl_reproducible_and_seed_dependent(phantoms):
    sampler = ssl(phantoms, image_size=32, shots=2)
    first, again, other = draw(sampler, 3), draw(sampler, 3), draw(sampler, 4)
    for a, b in zip(first, again):
        assert_same(a, b)
    assert any(not torch.equal(a.query_images, c.query_images) for a, c in zip(first, other))


def test_ssl_views(phantoms):
    """Support view 1 is the slice itself; view 2 and the query are transformed copies."""
    lookup = slice_lookup(phantoms)
    sampler = ssl(phantoms, image_size=64, shots=2, augment=FAST)
    episode = sampler.sample(np.random.default_rng(0))
    sources(lookup, episode.support_images[0, 0, 0])
    assert not torch.equal(episode.support_images[0, 1], episode.support_images[0, 0])
    assert not torch.equal(episode.query_images[0], episode.support_images[0, 0])
    # the pseudolabel is one superpixel: a single block of the stand-in grid
    assert episode.support_masks[0, 0].sum() == 64


def test_ssl_skips_superpixels_too_small_after_resizing(phantoms):
    # 8 x 8 blocks at 64 px become 4 x 4 = 16 px at 32 px, under 0.02 * 32 * 32 = 20.5 px
    with pytest.raises(ValueError, match="min_mask_area"):
        ssl(phantoms, image_size=32, min_mask_area=0.02)
    sampler = SelfSupervisedSampler(phantoms, [block_superpixels(v, 16) for v in phantoms],
                                    image_size=32, min_mask_area=0.02)
    assert (sampler.sample(np.random.default_rng(0)).support_masks.sum() >= 21).all()


def test_ssl_exclude_classes_on_phantoms(phantoms):
    lookup = slice_lookup(phantoms)
    sampler = ssl(phantoms, image_size=64, augment=FAST, exclude_classes=[2])
    rng = np.random.default_rng(0)
    for _ in range(100):
        for v, z in sources(lookup, sampler.sample(rng).support_images[0, 0, 0]):
            assert not (phantoms[v].label[..., z] == 2).any()
    assert len(sampler) < len(ssl(phantoms, image_size=64))


@pytest.mark.realdata
def test_ssl_setting2_never_shows_the_test_group_on_chaost2(chaos):
    lookup = slice_lookup(chaos)
    excluded = setting2_excluded_classes(CHAOST2, ["liver"])
    assert excluded == {LIVER, SPLEEN}
    sampler = ssl(chaos, block=16, image_size=256, augment=FAST, exclude_classes=excluded)
    rng = np.random.default_rng(0)
    for _ in range(300):
        for v, z in sources(lookup, sampler.sample(rng).support_images[0, 0, 0]):
            assert not np.isin(chaos[v].label[..., z], list(excluded)).any()
    # control: without the exclusion the same check would fail
    unrestricted = ssl(chaos, block=16, image_size=256, augment=FAST)
    seen = {vz for _ in range(100)
            for vz in sources(lookup, unrestricted.sample(rng).support_images[0, 0, 0])}
    assert any(np.isin(chaos[v].label[..., z], list(excluded)).any() for v, z in seen)


# ---- supervised --------------------------------------------------------------------------------

def query_class(volume: Volume, z: int, query_mask: torch.Tensor, classes) -> int:
    """The class whose mask on slice z is the episode's query mask (native resolution)."""
    matches = [c for c in classes if np.array_equal(volume.label[..., z] == c, query_mask.numpy() == 1)]
    assert len(matches) == 1
    return matches[0]


@pytest.mark.realdata
@pytest.mark.parametrize("setting", [1, 2])
def test_supervised_settings_and_volumes_on_chaost2(chaos, setting):
    lookup = slice_lookup(chaos)
    sampler = SupervisedSampler(chaos, CHAOST2, test_classes=["liver"], setting=setting, image_size=256,
                                shots=2)
    expected = {RIGHT_KIDNEY, LEFT_KIDNEY} if setting == 2 else {RIGHT_KIDNEY, LEFT_KIDNEY, SPLEEN}
    assert set(sampler.classes) == expected
    rng = np.random.default_rng(0)
    liver_in_background = 0
    for _ in range(150):
        episode = sampler.sample(rng)
        [(qv, qz)] = sources(lookup, episode.query_images[0, 0])
        c = query_class(chaos[qv], qz, episode.query_masks[0], CHAOST2.classes)
        assert c in expected
        for s in range(2):
            [(sv, sz)] = sources(lookup, episode.support_images[0, s, 0])
            assert sv != qv, "support and query from the same volume"
            assert np.array_equal(episode.support_masks[0, s].numpy() == 1, chaos[sv].label[..., sz] == c)
            if setting == 2:
                assert not np.isin(chaos[sv].label[..., sz], [LIVER, SPLEEN]).any()
        if setting == 2:
            assert not np.isin(chaos[qv].label[..., qz], [LIVER, SPLEEN]).any()
        liver_in_background += bool((chaos[qv].label[..., qz] == LIVER).any())
    # setting 1 lets the test class appear unlabelled; setting 2 never does
    assert (liver_in_background > 0) == (setting == 1)


def test_supervised_reproducible_and_seed_dependent(phantoms):
    sampler = SupervisedSampler(phantoms, PHANTOM_SPEC, test_classes=["b"], setting=1, image_size=32,
                                augment=FAST, min_mask_area=0.01)
    for x, y in zip(draw(sampler, 7), draw(sampler, 7)):
        assert_same(x, y)
    assert any(not torch.equal(x.query_images, y.query_images)
               for x, y in zip(draw(sampler, 1), draw(sampler, 2)))


def test_supervised_needs_a_class_in_two_volumes(phantoms):
    with pytest.raises(ValueError, match="two volumes"):
        SupervisedSampler(phantoms[:1], PHANTOM_SPEC, test_classes=["b"], setting=1, image_size=32)
    with pytest.raises(ValueError, match="two volumes"):  # setting 2: the group is the whole label set
        SupervisedSampler(phantoms, PHANTOM_SPEC, test_classes=["b"], setting=2, image_size=32)


# ---- streams -----------------------------------------------------------------------------------

def first_queries(stream, n=3) -> list[torch.Tensor]:
    return [e.query_images for e in itertools.islice(iter(stream), n)]


def test_stream_per_rank_epoch_and_seed(phantoms):
    sampler = ssl(phantoms, image_size=32, augment=FAST)
    base = first_queries(EpisodeStream(sampler, seed=1, rank=0))
    assert all(torch.equal(a, b) for a, b in zip(base, first_queries(EpisodeStream(sampler, seed=1, rank=0))))
    for other in (EpisodeStream(sampler, seed=1, rank=1), EpisodeStream(sampler, seed=2, rank=0)):
        assert not all(torch.equal(a, b) for a, b in zip(base, first_queries(other)))
    stream = EpisodeStream(sampler, seed=1, rank=0)
    stream.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(base, first_queries(stream)))


def test_stream_with_dataloader_workers(phantoms):
    sampler = ssl(phantoms, image_size=32, augment=FAST)

    def batches():
        loader = DataLoader(EpisodeStream(sampler, seed=0, rank=0), batch_size=2, num_workers=2,
                            collate_fn=Episode.collate)
        return list(itertools.islice(loader, 4))  # workers alternate: 2 batches from each

    run, rerun = batches(), batches()
    assert all(b.support_images.shape == (2, 1, 1, 32, 32) for b in run)
    for a, b in zip(run, rerun):
        assert_same(a, b)
    # the two workers draw different episodes
    assert not torch.equal(run[0].query_images, run[1].query_images)


@pytest.mark.parametrize("kwargs, match", [(dict(image_size=8), "image_size"), (dict(shots=0), "shots"),
                                           (dict(min_mask_area=1.0), "min_mask_area")])
def test_ssl_bad_arguments(phantoms, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssl(phantoms, **kwargs)


def test_bad_arguments(phantoms):
    with pytest.raises(ValueError, match="superpixel maps"):
        SelfSupervisedSampler(phantoms, [block_superpixels(phantoms[0], 8)])
    with pytest.raises(ValueError, match="do not match"):
        SelfSupervisedSampler(phantoms[:1], [np.zeros((8, 8, 8), np.int32)])
    with pytest.raises(ValueError, match="setting"):
        SupervisedSampler(phantoms, PHANTOM_SPEC, test_classes=["b"], setting=3)
    with pytest.raises(ValueError, match="test_classes"):
        SupervisedSampler(phantoms, PHANTOM_SPEC, test_classes="b", setting=1)
    with pytest.raises(ValueError, match="seed"):
        EpisodeStream(ssl(phantoms), seed=-1)
