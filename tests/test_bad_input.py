"""Bad input gives a clear error naming the file, never a traceback or a NaN."""

from __future__ import annotations

import numpy as np
import pytest

from medfss.data.datasets import REGISTRY, Dataset, load_volume
from medfss.data.io import read_nifti, write_folder_atomic, write_nifti_atomic
from medfss.errors import InputFileError, LabelMapError

from conftest import make_phantom


@pytest.fixture
def phantom_files(tmp_path):
    image, label, affine = make_phantom(shape=(32, 32, 10))
    image_path = write_nifti_atomic(image, affine, tmp_path / "image_1.nii.gz")
    label_path = write_nifti_atomic(label.astype(np.float64), affine, tmp_path / "label_1.nii.gz")
    return image_path, label_path


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match=r"image_9\.nii\.gz: file not found"):
        read_nifti(tmp_path / "image_9.nii.gz")


def test_corrupt_gzip(phantom_files, tmp_path):
    image_path, _ = phantom_files
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(image_path.read_bytes()[: 300])  # truncated gzip stream
    with pytest.raises(InputFileError, match=r"broken\.nii\.gz: cannot read"):
        read_nifti(broken)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not gzip at all" * 20)
    with pytest.raises(InputFileError, match=r"garbage\.nii\.gz: cannot read"):
        read_nifti(garbage)


def test_volume_with_nans(tmp_path):
    image, _, affine = make_phantom(shape=(16, 16, 4))
    image[3, 3, 1] = np.nan
    path = write_nifti_atomic(image, affine, tmp_path / "nan.nii.gz")
    with pytest.raises(InputFileError, match=r"nan\.nii\.gz: 1 voxels are NaN or Inf"):
        read_nifti(path)


def test_wrong_dimensionality(tmp_path):
    path = write_nifti_atomic(np.zeros((8, 8), np.float32), np.eye(4), tmp_path / "flat.nii.gz")
    with pytest.raises(InputFileError, match=r"flat\.nii\.gz: expected a 3D volume"):
        read_nifti(path)
    squeezable = write_nifti_atomic(np.zeros((8, 8, 4, 1), np.float32), np.eye(4), tmp_path / "t.nii.gz")
    assert read_nifti(squeezable).array.shape == (8, 8, 4)


def test_label_map_mismatch_names_the_label_file(phantom_files):
    image_path, label_path = phantom_files
    with pytest.raises(LabelMapError, match=r"label_1\.nii\.gz: label values \[1, 2\] are not in the CMR"):
        load_volume(image_path, label_path, REGISTRY["CMR"], "1")


def test_empty_class_names_the_label_file(phantom_files):
    image_path, label_path = phantom_files
    volume = load_volume(image_path, label_path, REGISTRY["CHAOST2"], "1")
    with pytest.raises(LabelMapError, match=r"label_1\.nii\.gz: class 4 is absent"):
        volume.class_extent(4)


def test_shape_mismatch_between_image_and_label(phantom_files, tmp_path):
    image_path, _ = phantom_files
    small = write_nifti_atomic(np.zeros((16, 16, 10)), np.eye(4), tmp_path / "label_small.nii.gz")
    with pytest.raises(InputFileError, match=r"label_small\.nii\.gz: shape"):
        load_volume(image_path, small, REGISTRY["CHAOST2"], "1")


def test_missing_dataset_folder_points_at_the_data_root_option(tmp_path):
    with pytest.raises(InputFileError, match="--data-root"):
        Dataset.from_name("CHAOST2", tmp_path)


def test_inputs_are_not_modified(phantom_files, tmp_path):
    image_path, label_path = phantom_files
    before = image_path.read_bytes()
    load_volume(image_path, label_path, REGISTRY["CHAOST2"], "1")
    assert image_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_1.nii.gz", "label_1.nii.gz"]


def test_atomic_writes_leave_no_temporary_and_honour_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_nifti_atomic(np.zeros((4, 4, 2), np.float32), np.eye(4), tmp_path / "out.nii.gz")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like any file the user writes
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_atomic_folder_writes_show_all_files_or_none_and_keep_the_first_copy(tmp_path):
    def write(text):
        def files(staging):
            (staging / "a.txt").write_text(text)
            if text == "fails":
                raise OSError("disk full")
            (staging / "b.txt").write_text(text)
        return files

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(tmp_path / "cache", write("fails"))
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging copy
    assert write_folder_atomic(tmp_path / "cache", write("first"))
    assert not write_folder_atomic(tmp_path / "cache", write("second"))  # another process got there first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert [(tmp_path / "cache" / n).read_text() for n in ("a.txt", "b.txt")] == ["first", "first"]


def _hostile(raw_edits: dict, gz: bool = True, array=None) -> bytes:
    """A phantom NIfTI with header fields overwritten (see medfss.reliability.hostile.FIELDS)."""
    import gzip

    from medfss.reliability.hostile import nifti_bytes, set_field

    raw = nifti_bytes(make_phantom(shape=(16, 16, 4))[0] if array is None else array, gz=False)
    for name, value in raw_edits.items():
        raw = set_field(raw, name, value)
    return gzip.compress(raw) if gz else raw


HOSTILE_HEADERS = {
    "4000^3 in a small gzip": (_hostile({"dim": (3, 4000, 4000, 4000, 1, 1, 1, 1)}), "more than a .*gzip file can hold"),
    "4000^3 in a small .nii": (_hostile({"dim": (3, 4000, 4000, 4000, 1, 1, 1, 1)}, gz=False), "but the file has"),
    "negative size": (_hostile({"dim": (3, -16, 16, 4, 1, 1, 1, 1)}), r"declares the shape \(-16, 16, 4\)"),
    "zero spacing": (_hostile({"pixdim": (1, 0, 1, 1, 1, 1, 1, 1), "sform_code": 0}), "voxel spacing .* is outside"),
    "negative spacing": (_hostile({"pixdim": (1, 1, -2, 1, 1, 1, 1, 1)}), r"voxel spacing .* \(header pixdim\)"),
    "NaN affine": (_hostile({"srow": (np.nan,) + (0.0,) * 11}), "affine .* holds NaN or Inf"),
    "complex voxels": (_hostile({}, array=np.ones((4, 4, 4), np.complex64)), r"complex64 \(c\) voxels are not"),
    "RGB voxels": (_hostile({"datatype": 128, "bitpix": 24}), r"colour \(RGB\) voxels are not supported"),
    "unknown type": (_hostile({"datatype": 9999}), "cannot read NIfTI .*data code 9999"),
    "4D": (_hostile({}, array=np.ones((4, 4, 4, 3), np.float32)), "expected a 3D volume, got shape"),
}


@pytest.mark.parametrize("name", HOSTILE_HEADERS)
def test_hostile_headers_give_one_line_errors_before_reading_the_voxels(tmp_path, name):
    data, message = HOSTILE_HEADERS[name]
    path = tmp_path / ("x.nii.gz" if data[:2] == b"\x1f\x8b" else "x.nii")
    path.write_bytes(data)
    with pytest.raises(InputFileError, match=message) as info:
        read_nifti(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == data
