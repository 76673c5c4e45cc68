"""The HDF5 loaders, the labelled/unlabelled split, batches and whole-volume inference of the semi-supervised mode."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from medfss.errors import InputFileError, LabelMapError
from medfss.semisup.batches import BatchSource, ImagePool, StepBatches, random_crop
from medfss.semisup.data import (LAYOUTS, MAX_VOXELS, dataset_root, load_slices, load_volume, load_volumes, read_h5,
                                 read_list, split_labeled, without_patients)
from medfss.semisup.sliding_window import overlap_for_stride, predict_sliding, predict_slices


def write_h5(path, image, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image.astype(np.float32))
        f.create_dataset("label", data=label.astype(np.uint8))


def test_read_h5_returns_image_and_label_and_names_a_bad_file(tmp_path):
    image, label = np.random.rand(3, 5, 4), np.random.randint(0, 4, (3, 5, 4))
    write_h5(tmp_path / "a.h5", image, label)
    got_image, got_label = read_h5(tmp_path / "a.h5", ndim=3, num_classes=4)
    np.testing.assert_allclose(got_image, image.astype(np.float32))
    assert got_label.dtype == np.int64 and (got_label == label).all()
    (tmp_path / "b.h5").write_text("not hdf5")
    with pytest.raises(InputFileError, match="b.h5"):
        read_h5(tmp_path / "b.h5", ndim=3, num_classes=4)
    with pytest.raises(InputFileError, match="not found"):
        read_h5(tmp_path / "c.h5", ndim=3, num_classes=4)


IMAGE, LABEL = np.full((3, 5, 4), 0.5, np.float32), np.ones((3, 5, 4), np.uint8)


def arrays(**datasets):
    """A writer of ``datasets`` (name -> array, or name -> callable(f, name)) into an h5py file."""
    def write(f):
        for name, data in datasets.items():
            data(f, name) if callable(data) else f.create_dataset(name, data=data)
    return write


HOSTILE_H5 = {  # what the file holds -> the error's type and message
    "no label": (arrays(image=IMAGE), InputFileError, "'label' is missing .*holds 'image'"),
    "image a group": (arrays(image=lambda f, n: f.create_group(n), label=LABEL), InputFileError, "not an array"),
    "label a dangling link": (arrays(image=IMAGE, label=lambda f, n: f.__setitem__(n, h5py.SoftLink("/x"))),
                              InputFileError, "'label' is a link to nothing readable"),
    "complex image": (arrays(image=IMAGE + 1j, label=LABEL), InputFileError, "complex64 values .*real numbers"),
    "string labels": (arrays(image=IMAGE, label=LABEL.astype("S3")), InputFileError, "S3 values .*real numbers"),
    "4D arrays": (arrays(image=IMAGE[..., None], label=LABEL[..., None]), InputFileError,
                  r"shape \(3, 5, 4, 1\); expected a non-empty 3D array"),
    "1D arrays": (arrays(image=IMAGE.ravel(), label=LABEL.ravel()), InputFileError, "expected a non-empty 3D"),
    "an empty axis": (arrays(image=IMAGE[:0], label=LABEL[:0]), InputFileError, "expected a non-empty 3D"),
    "shapes differ": (arrays(image=IMAGE, label=LABEL[:2]), InputFileError, "differ in shape"),
    "NaN voxels": (arrays(image=np.where(LABEL > 0, np.nan, 0), label=LABEL), InputFileError,
                   "60 image voxels are NaN"),
    "a voxel beyond float32": (arrays(image=np.full((3, 5, 4), 1e300), label=LABEL), InputFileError,
                               r"60 image voxels are NaN or Inf \(in float32\)"),
    "label 0.5": (arrays(image=IMAGE, label=LABEL * 0.5), LabelMapError, "non-negative integers"),
    "label -1": (arrays(image=IMAGE, label=-LABEL.astype(np.int8)), LabelMapError, "non-negative integers"),
    "label 4 of 4 classes": (arrays(image=IMAGE, label=LABEL * 4), LabelMapError, r"label value 4 .*\(0..3\)"),
    "4000^3 voxels declared, none stored": (
        arrays(image=lambda f, n: f.create_dataset(n, shape=(4000,) * 3, dtype="f4", chunks=(1, 1, 1)), label=LABEL),
        InputFileError, r"'image' declares \(4000, 4000, 4000\) = 6.4e\+10 voxels, more than"),
}


@pytest.mark.parametrize("case", HOSTILE_H5)
def test_read_h5_refuses_a_hostile_file_in_one_line_before_reading_what_it_declares(tmp_path, case):
    write, error, message = HOSTILE_H5[case]
    path = tmp_path / "case.h5"
    with h5py.File(path, "w") as f:
        write(f)
    assert path.stat().st_size < 100_000  # so a refused 4000^3 volume was never read
    with pytest.raises(error, match=message) as raised:
        read_h5(path, ndim=3, num_classes=4)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_read_h5_accepts_other_real_types_and_integer_valued_float_labels(tmp_path):
    path = tmp_path / "case.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=(IMAGE * 100).astype(">i2"))
        f.create_dataset("label", data=LABEL.astype(np.float64) * 3)
    image, label = read_h5(path, ndim=3, num_classes=4)
    assert image.dtype == np.float32 and (image == 50).all() and label.dtype == np.int64 and (label == 3).all()
    with h5py.File(path, "a") as f:
        f.create_dataset("huge", shape=(MAX_VOXELS + 1,), dtype="f4", chunks=(1,))  # not read: no limit applies
    assert read_h5(path, ndim=3, num_classes=4)[0].shape == (3, 5, 4)


def test_hostile_list_files_are_refused_in_one_line(tmp_path):
    write_h5(tmp_path / "data" / "ok.h5", IMAGE, LABEL)
    for text, message in [(b"", "the list is empty"), (b"\n \t\n", "the list is empty"),
                          (bytes(range(128, 192)), "not a text list of case names"),
                          (b"../../ok\n", "'../../ok' is not a case name"), (b"sub/ok\n", "is not a case name"),
                          (b"ok\x00x\n", "is not a case name")]:
        (tmp_path / "a.list").write_bytes(text)
        with pytest.raises(InputFileError, match=message):
            read_list(tmp_path / "a.list")
    (tmp_path / "a.list").write_bytes("\ufeffok\r\nmissing\n".encode())  # a byte-order mark, CRLF lines
    assert read_list(tmp_path / "a.list") == ["ok", "missing"]
    with pytest.raises(InputFileError, match=r"missing\.h5: HDF5 file not found"):
        load_volumes(LAYOUTS["ACDC"], tmp_path, read_list(tmp_path / "a.list"))
    with pytest.raises(InputFileError, match="HDF5 file cannot be opened"):  # a name longer than a file system's
        load_volumes(LAYOUTS["ACDC"], tmp_path, ["a" * 5000])


def test_acdc_slices_are_read_and_resized(tmp_path):
    label = np.zeros((20, 10), dtype=np.uint8)
    label[5:15, 2:8] = 3
    write_h5(tmp_path / "data" / "slices" / "patient001_frame01_slice_0.h5", np.ones((20, 10)), label)
    images, labels = load_slices(LAYOUTS["ACDC"], tmp_path, ["patient001_frame01_slice_0"], (8, 8))
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


def test_a_training_frame_is_its_slices_stacked_in_order_of_k(tmp_path):
    root = tmp_path / "ACDC"
    slices = [(np.full((5, 4), k / 20, np.float32), np.full((5, 4), k % 4, np.uint8)) for k in range(11)]
    for k, (image, label) in enumerate(slices):  # k = 10 sorts before 2 as text
        write_h5(root / "data" / "slices" / f"patient001_frame01_slice_{k}.h5", image, label)
    write_h5(root / "data" / "slices" / "patient001_frame011_slice_0.h5", *slices[0])  # another frame
    image, label = load_volume(LAYOUTS["ACDC"], root, "patient001_frame01")
    assert image.shape == (11, 5, 4)
    np.testing.assert_array_equal(image[:, 0, 0], (np.arange(11) / 20).astype(np.float32))
    assert (label[:, 0, 0] == np.arange(11) % 4).all()
    write_h5(root / "data" / "slices" / "patient002_frame01_slice_0.h5", *slices[0])
    write_h5(root / "data" / "slices" / "patient002_frame01_slice_1.h5", np.zeros((6, 4)), np.zeros((6, 4)))
    with pytest.raises(InputFileError, match="differ in shape"):
        load_volume(LAYOUTS["ACDC"], root, "patient002_frame01")
    with pytest.raises(InputFileError, match="not found"):
        load_volume(LAYOUTS["ACDC"], root, "patient003_frame01")


def test_without_patients_drops_every_frame_of_a_held_out_patient():
    names = ["patient001_frame01_slice_1", "patient001_frame02_slice_1", "patient002_frame01_slice_1"]
    assert without_patients(names, ["patient001_frame01"]) == ["patient002_frame01_slice_1"]
    assert without_patients(["A1", "B2"], ["B2"]) == ["A1"]
