"""``medfss prepare``: raw releases written in the test -> the normalised format.

Each source gets a tiny synthetic release (DICOM + PNG for CHAOS, HU NIfTI
for Synapse, oblique NIfTI with 200/500/600 for MS-CMRSeg, generic pairs);
the checks are the output grid (256 x 256 in-plane), label values, geometry
(a structure keeps its physical position), intensity statistics, the card,
the errors, and that the input folder is left byte-for-byte untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfss.cli import main
from medfss.data.prepare import prepare
from medfss.data.prepare.dicom import read_dicom_series
from medfss.data.prepare.grid import crop_or_pad_inplane, flip_to_axcodes, resample_inplane, voxel_spacing
from medfss.data.prepare.sources import SOURCES, find_nifti_pairs
from medfss.errors import ConfigError, InputFileError, LabelMapError

pydicom = pytest.importorskip("pydicom")
PIL_Image = pytest.importorskip("PIL.Image")

CHAOS_GREY = {1: 63, 2: 126, 3: 189, 4: 252}


# ------------------------------------------------------------------ helpers

def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: size, mtime and content hash."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def centroid_mm(label: np.ndarray, value: int, affine: np.ndarray) -> np.ndarray:
    """Physical (RAS mm) centre of the voxels holding ``value``."""
    index = np.argwhere(label == value).mean(axis=0)
    return affine[:3, :3] @ index + affine[:3, 3]


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def blobs(shape, centres, radii) -> list[np.ndarray]:
    """Boolean ellipsoids in voxel coordinates."""
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return [sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1
            for centre, radius in zip(centres, radii)]


def write_dicom_slice(path: Path, pixels: np.ndarray, position, orientation, spacing, instance: int):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 9.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


# One CHAOS patient: 5 axial slices of 40 rows x 48 columns, 1.6 mm pixels, 9 mm apart. The instance
# numbers run from head to feet while the positions go up, so sorting by instance would flip the volume.
CHAOS_ROWS, CHAOS_COLS, CHAOS_SLICES = 40, 48, 5
CHAOS_SPACING = (1.6, 1.6)  # (row spacing, column spacing)
CHAOS_ORIGIN = np.array([-30.0, -20.0, 100.0])  # LPS of the first pixel of the lowest slice
CHAOS_STEP = 9.0


def chaos_organs():
    """[rows, cols, slices] labels 1..4 (in DICOM pixel order) and the MR image they sit in."""
    rng = np.random.default_rng(0)
    shape = (CHAOS_ROWS, CHAOS_COLS, CHAOS_SLICES)
    masks = blobs(shape, [(12, 14, 2), (28, 12, 2), (28, 36, 2), (12, 36, 3)],
                  [(6, 7, 1.5), (4, 3, 1.2), (4, 3, 1.2), (5, 5, 1.2)])
    label = np.zeros(shape, np.uint8)
    for value, mask in enumerate(masks, start=1):
        label[mask] = value
    image = rng.normal(300, 30, shape) + 200 * (label > 0)
    image[rng.random(shape) < 0.003] = 4000  # off-resonance spikes: the histogram cut removes them
    return label, np.clip(image, 0, None).astype(np.uint16)


def write_chaos(root: Path, patient: str = "1", label=None, image=None) -> Path:
    """``root/Train_Sets/MR/{patient}/T2SPIR/{DICOM_anon,Ground}`` like the CHAOS release."""
    if label is None:
        label, image = chaos_organs()
    base = root / "Train_Sets" / "MR" / patient / "T2SPIR"
    (base / "DICOM_anon").mkdir(parents=True)
    (base / "Ground").mkdir(parents=True)
    for k in range(CHAOS_SLICES):
        instance = CHAOS_SLICES - k
        name = f"IMG-0002-{instance:05d}"
        position = CHAOS_ORIGIN + [0, 0, k * CHAOS_STEP]
        write_dicom_slice(base / "DICOM_anon" / f"{name}.dcm", image[..., k], position, [1, 0, 0, 0, 1, 0],
                          CHAOS_SPACING, instance)
        grey = np.zeros(label.shape[:2], np.uint8)
        for value, level in CHAOS_GREY.items():
            grey[label[..., k] == value] = level
        PIL_Image.fromarray(grey).save(base / "Ground" / f"{name}.png")
    return root


def chaos_lps_to_ras(row: float, col: float, k: float) -> np.ndarray:
    """Hand-computed position of DICOM pixel (row, col) of slice k, from the tags above."""
    lps = CHAOS_ORIGIN + np.array([col * CHAOS_SPACING[1], row * CHAOS_SPACING[0], k * CHAOS_STEP])
    return lps * [-1, -1, 1]


def synapse_case(shape=(64, 64, 6), spacing=(0.8, 0.8, 3.0)):
    """A CT in HU: air around a water body holding a liver (6), a kidney (2) and a bone (no label)."""
    image = np.full(shape, -1000.0, np.float32)
    size = np.array(shape, dtype=float)
    body, liver, kidney, bone = blobs(shape, [size * f for f in [(0.5, 0.5, 0.5), (0.4, 0.44, 0.5),
                                                                 (0.62, 0.62, 0.5), (0.5, 0.78, 0.5)]],
                                      [size * f for f in [(0.4, 0.37, 1.5), (0.125, 0.125, 0.42),
                                                          (0.08, 0.08, 0.42), (0.05, 0.05, 1.5)]])
    image[body] = 40.0
    image[liver] = 60.0
    image[bone] = 700.0
    label = np.zeros(shape, np.uint8)
    label[liver], label[kidney] = 6, 2
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [25.0, 30.0, -60.0]
    return image, label, affine


def oblique_affine(spacing, angle=0.5, origin=(10.0, -40.0, 25.0)) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0], [s * 0.8, c * 0.8, 0.6], [-s * 0.6, -c * 0.6, 0.8]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def cmr_case(shape=(48, 40, 5), spacing=(1.4, 1.4, 10.0), seed=0):
    rng = np.random.default_rng(seed)
    blood, myo, rv = blobs(shape, [(22, 20, 2), (22, 20, 2), (32, 20, 2)], [(5, 5, 3), (8, 8, 3), (5, 8, 3)])
    label = np.zeros(shape, np.int16)
    label[myo], label[blood], label[rv & ~myo] = 200, 500, 600
    image = (rng.gamma(4, 50, shape) + 300 * (label > 0)).astype(np.float32)
    return image, label, oblique_affine(spacing)


# ----------------------------------------------------------- pure functions

@pytest.mark.parametrize("shape, spacing, target", [
    ((50, 40, 4), (1.6, 1.4, 6.0), 1.25),  # upsampled
    ((30, 36, 3), (0.7, 0.9, 3.0), 1.25),  # downsampled
])
def test_resample_inplane_keeps_the_field_of_view_centre_and_the_slices(shape, spacing, target):
    affine = oblique_affine(spacing)
    array = np.random.default_rng(0).random(shape).astype(np.float32)
    out, out_affine = resample_inplane(array, affine, target, order=1)
    np.testing.assert_allclose(voxel_spacing(out_affine), [target, target, spacing[2]])
    assert out.shape == (round(shape[0] * spacing[0] / target), round(shape[1] * spacing[1] / target), shape[2])
    centre_in = affine @ [*(np.array(shape) - 1) / 2, 1]
    centre_out = out_affine @ [*(np.array(out.shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-9)


def test_slice_spacing_resamples_through_plane_too():
    affine = oblique_affine((1.25, 1.25, 9.0))
    label = np.zeros((20, 20, 10), np.int16)
    label[5:9, 6:12, 3:6] = 600
    out, out_affine = resample_inplane(label, affine, 1.25, order=0, slice_spacing=7.7)
    assert out.shape == (20, 20, round(10 * 9 / 7.7)) and set(np.unique(out)) == {0, 600}
    np.testing.assert_allclose(voxel_spacing(out_affine), [1.25, 1.25, 7.7])
    np.testing.assert_allclose(centroid_mm(out, 600, out_affine), centroid_mm(label, 600, affine), atol=2.0)


def test_resample_inplane_at_the_same_spacing_is_the_identity():
    affine = oblique_affine((1.25, 1.25, 8.0))
    array = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    same, same_affine = resample_inplane(array, affine, 1.25, order=1)
    assert same is array and np.array_equal(same_affine, affine)


def test_crop_or_pad_moves_the_origin_by_the_shift():
    affine = oblique_affine((1.25, 1.25, 8.0))
    array = np.arange(10 * 7 * 2, dtype=np.float32).reshape(10, 7, 2)
    out, out_affine = crop_or_pad_inplane(array, affine, 8, pad_value=-1)
    assert out.shape == (8, 8, 2)
    # output voxel (i, j) is input voxel (i + 1, j - 0) for x (10 -> 8: shift 1), (j + (7 - 8) // 2) for y
    np.testing.assert_array_equal(out[0, 1], array[1, 0])
    assert (out[:, 0] == -1).all()
    np.testing.assert_allclose(out_affine @ [0, 1, 0, 1], affine @ [1, 0, 0, 1])


def test_flip_to_las_keeps_every_voxel_in_place():
    affine = np.diag([-2.0, -3.0, 4.0, 1.0])  # L, P, S
    array = np.random.default_rng(0).random((3, 4, 5))
    out, out_affine = flip_to_axcodes(array, affine)
    assert nib.aff2axcodes(out_affine) == ("L", "A", "S")
    np.testing.assert_allclose(out_affine @ [0, 0, 0, 1], affine @ [0, 3, 0, 1])
    assert out[0, 0, 0] == array[0, 3, 0]


# ------------------------------------------------------------------- CHAOS

def test_read_dicom_series_sorts_by_position_and_builds_the_affine(tmp_path):
    label, image = chaos_organs()
    write_chaos(tmp_path, label=label, image=image)
    series = read_dicom_series(tmp_path / "Train_Sets/MR/1/T2SPIR/DICOM_anon")
    assert series.array.shape == (CHAOS_COLS, CHAOS_ROWS, CHAOS_SLICES)  # [X = columns, Y = rows, Z]
    np.testing.assert_array_equal(series.array, image.transpose(1, 0, 2))
    assert series.instance_numbers == (5, 4, 3, 2, 1)
    for row, col, k in [(0, 0, 0), (7, 30, 4), (39, 47, 2)]:
        np.testing.assert_allclose(series.affine @ [col, row, k, 1], [*chaos_lps_to_ras(row, col, k), 1])


def test_chaos_writes_256_grids_with_labels_1_to_4_at_the_same_place(tmp_path):
    raw = write_chaos(tmp_path / "raw")
    label, image = chaos_organs()
    before = snapshot(raw)
    card = prepare("chaos", raw, tmp_path / "out", progress=False)
    assert snapshot(raw) == before  # the input is untouched ...
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "out").iterdir())  # ... and no temp left
    out_image = nib.load(str(tmp_path / "out/image_1.nii.gz"))
    out_label = nib.load(str(tmp_path / "out/label_1.nii.gz"))
    x, y = np.asarray(out_image.dataobj), np.asarray(out_label.dataobj)
    assert x.shape == y.shape == (256, 256, CHAOS_SLICES) and x.dtype == np.float32 and y.dtype == np.uint8
    assert sorted(np.unique(y).tolist()) == [0, 1, 2, 3, 4]
    assert nib.aff2axcodes(out_image.affine) == ("L", "A", "S")  # as dcm2nii wrote the shared CHAOST2
    np.testing.assert_allclose(voxel_spacing(out_image.affine), [1.25, 1.25, CHAOS_STEP])
    np.testing.assert_allclose(out_label.affine, out_image.affine)
    assert out_image.header["qform_code"] == out_image.header["sform_code"] == 1
    for value in range(1, 5):  # every organ where the DICOM tags put it (within half a source pixel)
        row, col, k = np.argwhere(label == value).mean(axis=0)
        np.testing.assert_allclose(centroid_mm(y, value, out_image.affine), chaos_lps_to_ras(row, col, k), atol=0.8)
    # MR: the spikes are cut at the 99.5th percentile, nothing is z-scored; padding is the minimum
    assert x.max() <= np.percentile(image, 99.5) + 1e-3 and x.max() < 1000
    assert (x[0] == x.min()).all() and x.min() >= image.min()  # 77 mm field of view padded to 320 mm
    assert card["dataset"] == "CHAOST2" and card["n_volumes"] == 1 and card["ids"] == ["1"]
    assert card["label_map"] == {"0": "background", "1": "liver", "2": "right_kidney", "3": "left_kidney",
                                 "4": "spleen"}


def test_chaos_pairs_renamed_pngs_by_instance_number(tmp_path):
    raw = write_chaos(tmp_path / "raw")
    ground = raw / "Train_Sets/MR/1/T2SPIR/Ground"
    for png in ground.glob("*.png"):  # names no longer match the DICOMs; the trailing number still does
        png.rename(ground / f"gt_{int(png.stem.split('-')[-1])}.png")
    prepare("chaos", raw, tmp_path / "renamed", progress=False)
    write_chaos(tmp_path / "raw2")
    prepare("chaos", tmp_path / "raw2", tmp_path / "named", progress=False)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "renamed/label_1.nii.gz")).dataobj),
                                  np.asarray(nib.load(str(tmp_path / "named/label_1.nii.gz")).dataobj))


# ----------------------------------------------------------------- Synapse

def test_synapse_windows_hu_and_fits_the_central_field_of_view(tmp_path):
    image, label, affine = synapse_case()
    raw = tmp_path / "RawData"
    save_nifti(image, affine, raw / "Training/img/img0001.nii.gz")
    save_nifti(label, affine, raw / "Training/label/label0001.nii.gz")
    save_nifti(image, affine, raw / "Testing/img/img0061.nii.gz")  # unlabelled test set: ignored
    card = prepare("synapse", raw, tmp_path / "out", progress=False)
    assert card["ids"] == ["1"] and card["skipped"] == [] and card["dataset"] == "SABS"
    out_image = nib.load(str(tmp_path / "out/image_1.nii.gz"))
    x = np.asarray(out_image.dataobj)
    y = np.asarray(nib.load(str(tmp_path / "out/label_1.nii.gz")).dataobj)
    assert x.shape == y.shape == (256, 256, 6)
    assert sorted(np.unique(y).tolist()) == [0, 2, 6]
    # the central 7/8 of the 51.2 mm field of view fills 256 pixels; slices are kept
    np.testing.assert_allclose(voxel_spacing(out_image.affine), [51.2 * 7 / 8 / 256] * 2 + [3.0])
    # window [-125, 275] HU -> [0, 255]: air 0, bone 255, water (40 HU) 165 / 400 * 255 inside the body
    assert x.min() == 0 and x.max() == 255
    assert (np.abs(x - 165 / 400 * 255) < 1e-3).mean() > 0.2
    for value in (2, 6):
        np.testing.assert_allclose(centroid_mm(y, value, out_image.affine), centroid_mm(label, value, affine),
                                   atol=0.2)


def test_synapse_label_outside_the_13_organ_map_is_an_error(tmp_path):
    image, label, affine = synapse_case()
    label[0, 0, 0] = 20
    save_nifti(image, affine, tmp_path / "raw/img/img0001.nii.gz")
    save_nifti(label, affine, tmp_path / "raw/label/label0001.nii.gz")
    with pytest.raises(LabelMapError, match=r"label0001.nii.gz: label values \[20\] are not in the SABS"):
        prepare("synapse", tmp_path / "raw", tmp_path / "out", progress=False)


# --------------------------------------------------------------- MS-CMRSeg

def test_mscmrseg_keeps_raw_codes_and_oblique_geometry(tmp_path):
    image, label, affine = cmr_case()
    raw = tmp_path / "MSCMR"
    save_nifti(image, affine, raw / "c0t2lge/patient1_C0.nii.gz")
    save_nifti(label, affine, raw / "c0gt/patient1_C0_manual.nii.gz")
    save_nifti(image, affine, raw / "c0t2lge/patient12_C0.nii.gz")  # no manual label: skipped
    save_nifti(image, affine, raw / "c0t2lge/patient1_LGE.nii.gz")  # another sequence: ignored
    before = snapshot(raw)
    card = prepare("mscmrseg", raw, tmp_path / "out", progress=False)
    assert snapshot(raw) == before
    assert card["ids"] == ["1"] and len(card["skipped"]) == 1 and "patient12_C0" in card["skipped"][0]
    out_image = nib.load(str(tmp_path / "out/image_1.nii.gz"))
    x = np.asarray(out_image.dataobj)
    y = np.asarray(nib.load(str(tmp_path / "out/label_1.nii.gz")).dataobj)
    assert x.shape == y.shape == (256, 256, 5) and y.dtype == np.uint16
    assert sorted(np.unique(y).tolist()) == [0, 200, 500, 600]
    np.testing.assert_allclose(voxel_spacing(out_image.affine), [1.25, 1.25, 10.0])
    # same voxel axes as the source (no reorientation of NIfTI input): directions unchanged
    np.testing.assert_allclose(out_image.affine[:3, :3] / voxel_spacing(out_image.affine),
                               affine[:3, :3] / voxel_spacing(affine), atol=1e-9)
    for value in (200, 500, 600):
        np.testing.assert_allclose(centroid_mm(y, value, out_image.affine), centroid_mm(label, value, affine),
                                   atol=0.7)
    assert x.max() <= np.percentile(image, 99.5) + 1e-3
    assert card["label_map"] == {"0": "background", "200": "LV-MYO", "500": "LV-BP", "600": "RV"}
    readme = (tmp_path / "out/README.md").read_text()
    assert "MS-CMRSeg" in readme and "medfss prepare --source mscmrseg" in readme and "200 LV-MYO" in readme


# ------------------------------------------------------------ generic NIfTI

def test_nifti_globs_pair_by_wildcard_and_move_the_slice_axis_last(tmp_path):
    image, label, _ = cmr_case(shape=(40, 36, 4))
    image, label = image.transpose(2, 0, 1), label.transpose(2, 0, 1)
    affine = np.diag([8.0, 1.25, 1.25, 1.0])  # the slice axis is axis 0
    save_nifti(image, affine, tmp_path / "raw/images/case_a.nii.gz")
    save_nifti(label, affine, tmp_path / "raw/labels/case_a_seg.nii.gz")
    save_nifti(image, affine, tmp_path / "raw/images/case_b.nii.gz")  # no label
    card = prepare("nifti", tmp_path / "raw", tmp_path / "out", image_glob="images/*.nii.gz",
                   label_glob="labels/*_seg.nii.gz", progress=False)
    assert card["ids"] == ["case_a"] and len(card["skipped"]) == 1
    out = nib.load(str(tmp_path / "out/image_case_a.nii.gz"))
    assert out.shape == (256, 256, 4)
    np.testing.assert_allclose(voxel_spacing(out.affine), [1.25, 1.25, 8.0])
    y = np.asarray(nib.load(str(tmp_path / "out/label_case_a.nii.gz")).dataobj)
    np.testing.assert_allclose(centroid_mm(y, 500, out.affine), centroid_mm(label, 500, affine), atol=1e-6)
    assert "--image-glob 'images/*.nii.gz'" in card["command"]


def test_nifti_recursive_globs_pair_nested_cases(tmp_path):

    for name in ("a/x/scan.nii.gz", "b/scan.nii.gz", "scan.nii.gz"):
        for kind in ("scan", "mask"):
            _write_garbage(tmp_path / name.replace("scan", kind))  # pairing only looks at names
    cases, skipped = find_nifti_pairs(tmp_path, "**/scan.nii.gz", "**/mask.nii.gz")
    assert [c.case_id for c in cases] == ["a_x", "b", "scan"] and skipped == []
    assert cases[0].label == tmp_path / "a/x/mask.nii.gz"


def test_nifti_nnunet_layout_with_ct_auto_detection(tmp_path):
    image, label, affine = synapse_case(shape=(40, 40, 3), spacing=(1.25, 1.25, 5.0))
    save_nifti(image, affine, tmp_path / "raw/imagesTr/abd_007_0000.nii.gz")
    save_nifti(label, affine, tmp_path / "raw/labelsTr/abd_007.nii.gz")
    (tmp_path / "raw/dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "kidney": 2, "liver": 6}, "channel_names": {"0": "CT"}}))
    card = prepare("nifti", tmp_path / "raw", tmp_path / "out", progress=False)
    assert card["ids"] == ["abd_007"] and card["volumes"][0]["modality"] == "CT"
    assert card["label_map"] == {"0": "background", "2": "kidney", "6": "liver"}
    x = np.asarray(nib.load(str(tmp_path / "out/image_abd_007.nii.gz")).dataobj)
    assert x.shape == (256, 256, 3) and x.min() == 0 and x.max() == 255


def test_prepare_is_idempotent_on_its_own_output_grid(tmp_path):
    """Already 1.25 mm and 256 x 256: no interpolation, labels and affines identical, and the MR cut
    flattens the top 0.5 % once: a second pass changes nothing."""
    image, label, _ = cmr_case(shape=(256, 256, 3))
    affine = oblique_affine((1.25, 1.25, 8.0))
    save_nifti(image, affine, tmp_path / "raw/image_1.nii.gz")
    save_nifti(label, affine, tmp_path / "raw/label_1.nii.gz")
    prepare("nifti", tmp_path / "raw", tmp_path / "once", progress=False)
    prepare("nifti", tmp_path / "once", tmp_path / "twice", progress=False)
    once, twice = (nib.load(str(tmp_path / f"{d}/image_1.nii.gz")) for d in ("once", "twice"))
    np.testing.assert_allclose(once.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "twice/label_1.nii.gz")).dataobj), label)
    x1, x2 = np.asarray(once.dataobj), np.asarray(twice.dataobj)
    np.testing.assert_array_equal(np.minimum(image, x1.max()), x1)  # only the top was cut
    np.testing.assert_array_equal(x2, x1)


# ------------------------------------------------------------------ errors

def _write_garbage(path: Path, text: str = "not a medical image") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _bad_dicom(raw: Path):
    write_chaos(raw)
    _write_garbage(raw / "Train_Sets/MR/1/T2SPIR/DICOM_anon/IMG-0002-00003.dcm")


def _bad_png(raw: Path):
    write_chaos(raw)
    _write_garbage(raw / "Train_Sets/MR/1/T2SPIR/Ground/IMG-0002-00003.png")


def _bad_grey(raw: Path):
    write_chaos(raw)
    PIL_Image.fromarray(np.full((CHAOS_ROWS, CHAOS_COLS), 90, np.uint8)).save(
        raw / "Train_Sets/MR/1/T2SPIR/Ground/IMG-0002-00003.png")


def _bad_nifti(raw: Path):
    image, label, affine = cmr_case()
    save_nifti(label, affine, raw / "patient1_C0_manual.nii.gz")
    _write_garbage(raw / "patient1_C0.nii.gz")


def _shape_mismatch(raw: Path):
    image, label, affine = cmr_case()
    save_nifti(image, affine, raw / "patient1_C0.nii.gz")
    save_nifti(label[:, :, :4], affine, raw / "patient1_C0_manual.nii.gz")


def _nothing(raw: Path):
    (raw / "notes").mkdir(parents=True)


@pytest.mark.parametrize("source, make, error, message", [
    ("chaos", _bad_dicom, InputFileError, "IMG-0002-00003.dcm: cannot read DICOM"),
    ("chaos", _bad_png, InputFileError, "IMG-0002-00003.png: cannot read PNG"),
    ("chaos", _bad_grey, LabelMapError, "IMG-0002-00003.png: grey levels [90] are not CHAOS organ codes"),
    ("mscmrseg", _bad_nifti, InputFileError, "patient1_C0.nii.gz: cannot read NIfTI"),
    ("mscmrseg", _shape_mismatch, InputFileError, "patient1_C0_manual.nii.gz: shape (48, 40, 4) differs"),
    ("synapse", _nothing, InputFileError, "no synapse volumes found (expected img/img00XX.nii.gz"),
    ("unknown", _nothing, ConfigError, "unknown source 'unknown'; choose one of"),
])
def test_bad_input_raises_one_line_errors_naming_the_file(tmp_path, source, make, error, message):
    make(tmp_path / "raw")
    with pytest.raises(error) as info:
        prepare(source, tmp_path / "raw", tmp_path / "out", progress=False)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out" / "dataset_card.json").exists()


@pytest.mark.parametrize("out, message", [
    ("raw", "is inside the input folder"),
    ("raw/prepared", "is inside the input folder"),
    ("mine", "holds other files (notes.txt): choose a new or empty folder"),
])
def test_output_inside_the_input_or_holding_other_files_is_refused(tmp_path, out, message):
    image, label, affine = cmr_case()
    save_nifti(image, affine, tmp_path / "raw/image_1.nii.gz")
    save_nifti(label, affine, tmp_path / "raw/label_1.nii.gz")
    _write_garbage(tmp_path / "mine/notes.txt")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as info:
        prepare("nifti", tmp_path / "raw", tmp_path / out, progress=False)
    assert message in str(info.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, message", [
    (["--source", "chaos", "--input", "{tmp}/missing"], "missing: input folder not found"),
    (["--source", "dicom", "--input", "{tmp}"], "unknown source 'dicom'"),
    (["--source", "chaos", "--input", "{tmp}", "--modality", "CT"], "--modality CT does not apply"),
    (["--source", "nifti", "--input", "{tmp}", "--image-glob", "*.nii"], "give both --image-glob and"),
    (["--source", "nifti", "--input", "{tmp}", "--spacing", "-1"], "--spacing must be a positive"),
])
def test_cli_mistakes_exit_2_with_one_line(tmp_path, argv, message, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["prepare", *argv, "--out", str(tmp_path.parent / f"{tmp_path.name}-out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_prepares_and_reports(tmp_path, capsys):
    image, label, affine = cmr_case()
    save_nifti(image, affine, tmp_path / "raw/patient3_C0.nii.gz")
    save_nifti(label, affine, tmp_path / "raw/patient3_C0_manual.nii.gz")
    out = tmp_path / "CMR"
    assert main(["prepare", "--source", "mscmrseg", "--input", str(tmp_path / "raw"), "--out", str(out),
                 "--quiet"]) == 0
    assert "wrote 1 volumes" in capsys.readouterr().out
    card = json.loads((out / "dataset_card.json").read_text())
    assert card["command"].startswith("medfss prepare --source mscmrseg")
    assert card["volumes"][0]["source_image"] == "patient3_C0.nii.gz"
    assert set(SOURCES) == {"chaos", "synapse", "mscmrseg", "nifti"}
    # the output is a registered data set folder: the loaders read it as they read ../shared/data
    from medfss.data.datasets import Dataset

    volume = Dataset.from_name("CMR", tmp_path).load("3")
    assert volume.image.shape == (256, 256, 5) and set(np.unique(volume.label)) == {0, 1, 2, 3}


# --------------------------------------------------------------- real data

@pytest.mark.realdata
@pytest.mark.parametrize("name", ["CHAOST2", "CMR"])
def test_nifti_on_the_shared_normalised_data_is_the_identity_up_to_the_mr_cut(data_root, tmp_path, name):
    """Two already-normalised volumes per set: same shape, affine and labels; the image is unchanged except
    the voxels above its 99.5th percentile (at most 0.5 %), which the MR cut lowers to that percentile. The
    reference cut before resampling and cropping, so the top of these files' histograms is not flat and
    the cut bites again; with the cut off (``mr_top_percent=0``) the output equals the input."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for case in ("1", "2"):
        for kind in ("image", "label"):
            os.symlink(data_root / name / f"{kind}_{case}.nii.gz", raw / f"{kind}_{case}.nii.gz")
    prepare("nifti", raw, tmp_path / "cut", progress=False)
    prepare("nifti", raw, tmp_path / "exact", mr_top_percent=0, progress=False)
    for case in ("1", "2"):
        source = nib.load(str(data_root / name / f"image_{case}.nii.gz"))
        x = np.asarray(source.dataobj, dtype=np.float32)
        labels = np.asarray(nib.load(str(data_root / name / f"label_{case}.nii.gz")).dataobj)
        for folder in ("cut", "exact"):
            out = nib.load(str(tmp_path / folder / f"image_{case}.nii.gz"))
            assert out.shape == source.shape
            np.testing.assert_allclose(out.affine, source.affine, atol=1e-4)
            np.testing.assert_array_equal(
                np.asarray(nib.load(str(tmp_path / folder / f"label_{case}.nii.gz")).dataobj), labels)
        np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / f"exact/image_{case}.nii.gz")).dataobj), x)
        y = np.asarray(nib.load(str(tmp_path / f"cut/image_{case}.nii.gz")).dataobj)
        ceiling = np.percentile(x, 99.5, method="lower")
        assert y.max() == ceiling
        np.testing.assert_array_equal(y, np.minimum(x, ceiling))
        assert (y != x).mean() <= 0.005


@pytest.mark.realdata
def test_chaos_dicom_round_trip_of_a_shared_volume_gives_it_back(data_root, tmp_path):
    """A shared CHAOST2 volume written as a CHAOS release (DICOM slices in LPS, rows running posterior,
    PNG ground truth) comes back with the same voxel order, affine and labels: the DICOM path reproduces
    the orientation of the shared files. Intensities differ only by the MR cut."""
    source = nib.load(str(data_root / "CHAOST2/image_15.nii.gz"))
    x = np.asarray(source.dataobj, dtype=np.float32)  # [X, Y, Z], LAS
    labels = np.asarray(nib.load(str(data_root / "CHAOST2/label_15.nii.gz")).dataobj).astype(np.uint8)
    assert nib.aff2axcodes(source.affine) == ("L", "A", "S")
    base = tmp_path / "raw/Train_Sets/MR/15/T2SPIR"
    (base / "DICOM_anon").mkdir(parents=True)
    (base / "Ground").mkdir(parents=True)
    n_y = x.shape[1]
    spacing = voxel_spacing(source.affine)
    for k in range(x.shape[2]):
        # DICOM pixel (row r, column c) is voxel (c, n_y - 1 - r, k): columns run left, rows posterior
        position = (source.affine @ [0, n_y - 1, k, 1])[:3] * [-1, -1, 1]  # RAS -> LPS
        name = f"IMG-0002-{k + 1:05d}"
        write_dicom_slice(base / "DICOM_anon" / f"{name}.dcm", x[:, ::-1, k].T, position, [1, 0, 0, 0, 1, 0],
                          (spacing[1], spacing[0]), k + 1)
        grey = np.zeros(labels.shape[1::-1], np.uint8)
        for value, level in CHAOS_GREY.items():
            grey[labels[:, ::-1, k].T == value] = level
        PIL_Image.fromarray(grey).save(base / "Ground" / f"{name}.png")
    prepare("chaos", tmp_path / "raw", tmp_path / "out", progress=False)
    out = nib.load(str(tmp_path / "out/image_15.nii.gz"))
    np.testing.assert_allclose(out.affine, source.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "out/label_15.nii.gz")).dataobj), labels)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.minimum(x, np.percentile(x, 99.5, method="lower")))
