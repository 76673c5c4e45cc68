"""The HDF5 loaders, the labelled/unlabelled split, batches and whole-volume inference of the semi-supervised mode."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from medfss.errors import InputFileError
from medfss.semisup.batches import BatchSource, ImagePool, StepBatches, random_crop
from medfss.semisup.data import (LAYOUTS, dataset_root, load_slices, load_volumes, read_h5, read_list,
                                 split_labeled)
from medfss.semisup.sliding_window import overlap_for_stride, predict_sliding, predict_slices


def write_h5(path, image, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image.astype(np.float32))
        f.create_dataset("label", data=label.astype(np.uint8))


def test_read_h5_returns_image_and_label_and_names_a_bad_file(tmp_path):
    image, label = np.random.rand(3, 5, 4), np.random.randint(0, 4, (3, 5, 4))
    write_h5(tmp_path / "a.h5", image, label)
    got_image, got_label = read_h5(tmp_path / "a.h5")
    np.testing.assert_allclose(got_image, image.astype(np.float32))
    assert got_label.dtype == np.int64 and (got_label == label).all()
    (tmp_path / "b.h5").write_text("not hdf5")
    with pytest.raises(InputFileError, match="b.h5"):
        read_h5(tmp_path / "b.h5")
    with pytest.raises(InputFileError, match="not found"):
        read_h5(tmp_path / "c.h5")


def test_acdc_slices_are_read_and_resized(tmp_path):
    label = np.zeros((20, 10), dtype=np.uint8)
    label[5:15, 2:8] = 3
    write_h5(tmp_path / "data" / "slices" / "patient001_frame01_slice_0.h5", np.ones((20, 10)), label)
    images, labels = load_slices(tmp_path, ["patient001_frame01_slice_0"], (8, 8))
    assert images.shape == (1, 1, 8, 8) and labels.shape == (1, 8, 8) and labels.dtype == torch.int64
    torch.testing.assert_close(images, torch.ones(1, 1, 8, 8))
    assert set(labels.unique().tolist()) == {0, 3}


def test_la_volumes_are_read_from_the_literature_layout(tmp_path):
    image, label = np.random.rand(6, 5, 4), np.random.randint(0, 2, (6, 5, 4))
    write_h5(tmp_path / "2018LA_Seg_Training Set" / "ABC" / "mri_norm2.h5", image, label)
    (tmp_path / "train.list").write_text("ABC\n\n")
    assert read_list(tmp_path / "train.list") == ["ABC"]
    [(got_image, got_label)] = load_volumes(LAYOUTS["LA"], tmp_path, read_list(tmp_path / "train.list"))
    assert got_image.shape == (6, 5, 4) and (got_label == label).all()


def test_dataset_root_accepts_the_data_root_or_the_data_set_folder(tmp_path):
    (tmp_path / "ACDC").mkdir()
    assert dataset_root(LAYOUTS["ACDC"], tmp_path) == tmp_path / "ACDC"
    assert dataset_root(LAYOUTS["ACDC"], tmp_path / "ACDC") == tmp_path / "ACDC"


def test_split_labels_the_first_patients_in_list_order():
    names = [f"patient{p:03d}_frame01_slice_{k}" for p in (9, 3, 5, 1) for k in range(2)]
    labeled, unlabeled = split_labeled(names, 0.5)
    assert labeled == names[:4] and unlabeled == names[4:]
    assert split_labeled(names, 0.01)[0] == names[:2]  # at least one patient
    assert len(split_labeled([f"p{i}" for i in range(80)], 0.05)[0]) == 4  # LA: 5 % of 80 volumes


def test_split_of_the_real_acdc_list_gives_the_literatures_slice_counts(data_root):
    names = read_list(data_root / "ACDC" / "train_slices.list")
    assert len(split_labeled(names, 0.05)[0]) == 68
    assert len(split_labeled(names, 0.1)[0]) == 136
    assert split_labeled(names, 0.1)[0] == names[:136]  # the literature's first 136 slices


def test_random_crop_pads_small_volumes_and_keeps_image_and_label_aligned():
    image = torch.arange(4 * 5 * 3, dtype=torch.float32).reshape(4, 5, 3)
    crop_image, crop_label = random_crop(image, image.long(), (6, 4, 3), np.random.default_rng(0))
    assert crop_image.shape == (6, 4, 3) and (crop_image.long() == crop_label).all()


def test_batches_depend_on_seed_stage_and_step_only():
    pool = ImagePool([torch.randn(12, 12) for _ in range(5)], [torch.randint(0, 3, (12, 12)) for _ in range(5)],
                     (8, 8))
    source = BatchSource(pool, pool, batch_size=2, crop_size=(4, 4))
    a, b = StepBatches(source, seed=1, stage=0), StepBatches(source, seed=1, stage=0)
    for key, value in a.batch_at(7).items():
        torch.testing.assert_close(value, b.batch_at(7)[key])
    assert not torch.equal(a.batch_at(7)["labeled"], a.batch_at(8)["labeled"])
    batch = a.batch_at(0)
    assert batch["labeled"].shape == (2, 1, 8, 8) and batch["label"].shape == (2, 8, 8)
    assert batch["mask"].shape == (8, 8) and int((batch["mask"] == 0).sum()) == 16


class Counting:
    """An identity 'network' that counts its windows."""

    def __init__(self):
        self.windows = 0

    def __call__(self, x):
        self.windows += x.shape[0]
        return x.clone()


@pytest.mark.parametrize("shape", [(30, 25, 12), (10, 9, 5)])  # larger and smaller than the window
def test_sliding_window_reassembles_a_volume_exactly_for_an_identity_network(shape):
    volume = torch.randn(shape)
    window, stride = (16, 16, 8), (5, 5, 3)
    net = Counting()
    out = predict_sliding(net, volume, window, stride)
    assert out.shape == (1, *shape)
    torch.testing.assert_close(out[0], volume)
    expected = math.prod(math.ceil((s - w) / t) + 1 if s > w else 1 for s, w, t in zip(shape, window, stride))
    assert net.windows == expected  # windows every `stride` voxels, as the literature's test_single_case


def test_overlap_for_stride_places_windows_at_the_literatures_strides():
    for stride, window in ((18, 112), (4, 80), (1, 7), (7, 7)):
        assert int(window * (1 - overlap_for_stride((window,), (stride,))[0])) == stride


def test_predict_slices_is_exact_at_the_networks_size():
    volume = torch.randn(5, 8, 8)
    torch.testing.assert_close(predict_slices(lambda x: x.clone(), volume, (8, 8), batch_size=2)[0], volume)
