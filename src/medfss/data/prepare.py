"""Raw public releases -> the normalised format (``medfss prepare``).

One conversion per public data set, reachable from the command line, that
writes what ``../shared/data`` holds: ``image_{id}.nii.gz`` (float32, 256 x 256
in-plane, intensities normalised) and ``label_{id}.nii.gz`` (the data set's raw
label values), plus ``dataset_card.json`` and ``README.md``.

The steps follow the SSL-ALPNet preprocessing (``data/CHAOST2/*.ipynb`` and
``data/SABS/*.ipynb`` of cheng-01037/Self-supervised-Fewshot-Medical-Image-
Segmentation), re-implemented here without SimpleITK:

1. **Reading and orientation.** NIfTI sources keep their voxel order, as the
   reference does (the shared CMR files are still oblique); only when the
   largest spacing is not on the last axis is that axis moved last, so that
   slices are ``[..., z]``. DICOM slices (CHAOS) are sorted along the slice
   normal and the affine is built from ImagePositionPatient,
   ImageOrientationPatient and PixelSpacing (LPS -> RAS); the in-plane and
   slice axes are then flipped (never permuted) to the closest LAS order,
   which is what dcm2nii wrote for the reference and what the shared
   CHAOST2 files hold.
2. **Intensities**, on the source grid. MR: the top 0.5 % of the histogram is
   cut (values above the 99.5th percentile are set to it) against
   off-resonance spikes; no z-score, which the loaders apply per volume
   (:func:`medfss.data.datasets.zscore`). CT: clipped to the abdominal window
   [-125, 275] HU, then mapped linearly to [0, 255].
3. **In-plane grid.** MR (CHAOS, MS-CMRSeg, generic): resampled to
   1.25 x 1.25 mm, then centre-cropped or padded (with the image minimum) to
   256 x 256, a 320 mm field of view. (The CMR preprocessing is not in that
   repository; the shared CMR files, 1.25 mm, 256 x 256, oblique, raw codes,
   show the same steps.) Synapse CT: the central 7/8 of the
   field of view (the reference cuts a 32-pixel border of the 512 x 512
   slices) is resampled to fill 256 x 256. Images are interpolated linearly,
   labels by nearest neighbour; the slice spacing is kept (``slice_spacing``
   resamples it, as the reference does for CHAOS: 7.7 mm). Unlike the
   reference, whose crop kept the uncropped origin, the affine is updated at
   every step: a voxel keeps its physical position.

Already-normalised input (``--source nifti`` on files like ../shared/data,
1.25 mm, 256 x 256): the grid steps are exact identities (no interpolation),
labels and affines come out unchanged, and the only change is the MR
histogram cut: the voxels above the volume's 99.5th percentile (at most
0.5 % of them) are lowered to it. The cut is not idempotent on those files
because the reference applied it before resampling and cropping, which left
the top of their histogram sloped rather than flat; ``mr_top_percent=0``
turns it off and makes the conversion an exact identity. On data that needs
no resampling, ``prepare`` is idempotent: the first cut flattens the top and
a second pass changes nothing.

Heavy modules (nibabel, scipy, pydicom, PIL) are imported inside the
functions, so that building the ``medfss`` parser stays fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfss import __version__
from medfss.errors import ConfigError, InputFileError, LabelMapError, one_line

if TYPE_CHECKING:
    import nibabel as nib

    from medfss.data.datasets import DatasetSpec

MR_TOP_PERCENT = 0.5  # histogram share cut at the bright end (SSL-ALPNet HIST_CUT_TOP)
MR_SPACING = 1.25  # mm, in-plane target spacing of the CHAOST2 / CMR preprocessing
FIT_FOV_FRACTION = 448 / 512  # Synapse: the central FOV kept, 512 px minus a 32 px border
CT_SCALE = 255.0  # windowed CT is mapped to [0, CT_SCALE]
DICOM_TARGET_AXCODES = ("L", "A", "S")  # dcm2nii's storage order, that of the shared CHAOST2
# CHAOS ground-truth grey levels (organisers' ranges) -> CHAOST2 labels
CHAOS_PNG_RANGES = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))


# ---------------------------------------------------------------- intensities

def normalise_mr(image: np.ndarray, top_percent: float = MR_TOP_PERCENT) -> np.ndarray:
    """Cut the bright end of the histogram: ``min(x, P_{100 - top_percent}(x))``.

    The SSL-ALPNet CHAOS step against off-resonance spikes. No shift or
    scaling: the loaders z-score each volume. P is the order statistic just
    below the percentile position (numpy's ``method="lower"``; the reference
    interpolates between it and the next one), so that a second cut on the
    same grid finds the same P and changes nothing.
    """
    if not 0 <= top_percent < 100:
        raise ValueError(f"top_percent must be in [0, 100), got {top_percent}")
    image = np.asarray(image, dtype=np.float32)
    if top_percent == 0:
        return image
    ceiling = np.percentile(image, 100.0 - top_percent, method="lower")
    return np.minimum(image, ceiling)


def normalise_ct(image: np.ndarray, window: tuple[float, float] | None = None,
                 scale: float = CT_SCALE) -> np.ndarray:
    """Window to ``[low, high]`` HU, then map linearly to ``[0, scale]``.

    ``y = (clip(x, low, high) - low) / (high - low) * scale``; the SABS
    preprocessing divides by the clipped volume's own range, which is the
    same map whenever the scan reaches both window ends (air and bone do).
    ``window`` None: the abdominal window [-125, 275] HU
    (:data:`medfss.data.preprocess.CT_WINDOW`).
    """
    if window is None:
        from medfss.data.preprocess import CT_WINDOW as window
    low, high = window
    if not low < high:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    clipped = np.clip(np.asarray(image, dtype=np.float32), low, high)
    return ((clipped - low) / (high - low) * scale).astype(np.float32)


# ----------------------------------------------------------------- geometry

def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Spacing of each voxel axis: the length of the affine's columns."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def resample_inplane(array: np.ndarray, affine: np.ndarray, spacing: float, *, order: int,
                     slice_spacing: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resample axes 0 and 1 to ``spacing`` mm (and axis 2 to ``slice_spacing`` if given).

    Centre-aligned grids: along an axis of n voxels at spacing s, the output
    has m = round(n s / t) voxels at spacing t and output index i samples input
    index ``c_in + (i - c_out) t / s`` (c = (n - 1) / 2), so the field of view
    keeps its centre. The affine is composed with that index map.
    ``order``: 1 linear (images), 0 nearest (labels). An axis already at the
    target spacing is not touched.
    """
    from scipy import ndimage

    array = np.asarray(array)  # [X, Y, Z]
    old = voxel_spacing(affine)
    new = np.array([spacing, spacing, old[2] if slice_spacing is None else slice_spacing], dtype=np.float64)
    if (new <= 0).any():
        raise ValueError(f"target spacing must be positive, got {new.tolist()}")
    ratio = np.where(np.isclose(new, old, rtol=1e-6, atol=0), 1.0, new / old)  # input voxels per output voxel
    n_in = np.array(array.shape[:3])
    n_out = np.where(ratio == 1.0, n_in, np.maximum(1, np.round(n_in / ratio))).astype(int)
    offset = (n_in - 1) / 2 - (n_out - 1) / 2 * ratio
    if (ratio == 1.0).all():
        return array, np.asarray(affine, dtype=np.float64)
    out = ndimage.affine_transform(array, ratio, offset=offset, output_shape=tuple(n_out), order=order,
                                   mode="nearest", prefilter=False)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(ratio)
    index_map[:3, 3] = offset
    return out, np.asarray(affine, dtype=np.float64) @ index_map


def crop_or_pad_inplane(array: np.ndarray, affine: np.ndarray, size: int, pad_value: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop or pad axes 0 and 1 to ``size`` (integer shifts only, no interpolation).

    Output index j reads input index ``j + (n - size) // 2``; the affine gets
    the same translation.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    shift = [(n - size) // 2 for n in array.shape[:2]]
    if shift == [0, 0] and array.shape[:2] == (size, size):
        return array, affine
    out = np.full((size, size, *array.shape[2:]), pad_value, dtype=array.dtype)  # [X, Y, Z]
    src, dst = [], []
    for axis in range(2):
        lo = max(0, shift[axis])
        hi = min(array.shape[axis], shift[axis] + size)
        src.append(slice(lo, hi))
        dst.append(slice(lo - shift[axis], hi - shift[axis]))
    out[dst[0], dst[1]] = array[src[0], src[1]]
    translate = np.eye(4)
    translate[:2, 3] = shift
    return out, np.asarray(affine, dtype=np.float64) @ translate


def move_slice_axis_last(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put the through-plane axis (largest spacing, ties: the last) last; a permutation only."""
    from medfss.data.preprocess import through_plane_axis

    axis = through_plane_axis(tuple(voxel_spacing(affine)))
    if axis == 2:
        return array, affine
    order = [a for a in range(3) if a != axis] + [axis]
    permute = np.eye(4)[:, [*order, 3]]
    return np.transpose(array, order), np.asarray(affine, dtype=np.float64) @ permute


def flip_to_axcodes(array: np.ndarray, affine: np.ndarray, axcodes: Sequence[str] = DICOM_TARGET_AXCODES
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Flip (never permute) voxel axes so each runs along its closest direction in ``axcodes``.

    A flipped axis of n voxels maps output index j to input index n - 1 - j.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)  # [3, 2]: (RAS axis, +-1) per voxel axis
    wanted = {0: -1 if "L" in axcodes else 1, 1: 1 if "A" in axcodes else -1, 2: 1 if "S" in axcodes else -1}
    affine = np.asarray(affine, dtype=np.float64)
    for axis, (ras_axis, sign) in enumerate(ornt):
        if sign != wanted[int(ras_axis)]:
            array = np.flip(array, axis)
            flip = np.eye(4)
            flip[axis, axis] = -1
            flip[axis, 3] = array.shape[axis] - 1
            affine = affine @ flip
    return np.ascontiguousarray(array), affine


# --------------------------------------------------------------------- DICOM

@dataclass(frozen=True)
class DicomSeries:
    """A DICOM series stacked into a volume."""

    array: np.ndarray  # [X, Y, Z] float32: X the column index, Y the row index, Z ascending along the normal
    affine: np.ndarray  # [4, 4] voxel -> RAS mm
    files: tuple[Path, ...]  # in Z order
    instance_numbers: tuple[int | None, ...]


@dataclass(frozen=True)
class _DicomSlice:
    path: Path
    position: np.ndarray  # [3] ImagePositionPatient, LPS mm
    orientation: np.ndarray  # [6] ImageOrientationPatient: row cosines, column cosines
    pixel_spacing: np.ndarray  # [2] row spacing, column spacing
    pixels: np.ndarray  # [rows, columns] float32, rescaled
    instance: int | None
    thickness: float


def _dicom_slice(path: Path) -> _DicomSlice:
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    # pydicom parses lazily: a damaged element raises any of these when it is first touched
    errors = (InvalidDicomError, BytesLengthException, OSError, EOFError, ValueError, TypeError, KeyError,
              IndexError, AttributeError, NotImplementedError, OverflowError, struct.error)
    try:
        ds = pydicom.dcmread(path)
        missing = [tag for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
                   if tag not in ds]
        geometry = [] if missing else [np.array(getattr(ds, tag), dtype=np.float64).reshape(-1)
                                       for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")]
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        instance = getattr(ds, "InstanceNumber", None)
        instance = None if instance is None else int(instance)
        thickness = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)
    except errors as exc:
        raise InputFileError(f"{path}: cannot read DICOM ({one_line(exc)})") from None
    if missing:
        raise InputFileError(f"{path}: DICOM slice lacks {', '.join(missing)}")
    position, orientation, pixel_spacing = geometry
    if (position.shape, orientation.shape, pixel_spacing.shape) != ((3,), (6,), (2,)) or not all(
            np.isfinite(g).all() for g in geometry) or pixel_spacing.min() <= 0 or \
            np.linalg.norm(np.cross(orientation[:3], orientation[3:])) < 0.5:  # not two orthogonal directions
        raise InputFileError(f"{path}: invalid DICOM geometry (ImagePositionPatient {position.tolist()}, "
                             f"ImageOrientationPatient {orientation.tolist()}, PixelSpacing {pixel_spacing.tolist()}"
                             "): a finite point, two orthogonal unit directions and two positive spacings expected")
    if not np.isfinite([slope, intercept, thickness]).all():
        raise InputFileError(f"{path}: non-finite RescaleSlope {slope}, RescaleIntercept {intercept} or slice "
                             f"thickness {thickness}")
    try:
        pixels = ds.pixel_array.astype(np.float32)  # [rows, columns]
    except errors + (RuntimeError,) as exc:
        raise InputFileError(f"{path}: cannot decode DICOM pixel data ({one_line(exc)})") from None
    if pixels.ndim != 2:
        raise InputFileError(f"{path}: expected a single-frame greyscale slice, got pixel shape {pixels.shape}")
    pixels = pixels * np.float32(slope) + np.float32(intercept)
    if not np.isfinite(pixels).all():
        raise InputFileError(f"{path}: rescaled pixel values overflow float32 (RescaleSlope {slope}, "
                             f"RescaleIntercept {intercept})")
    return _DicomSlice(path=path, position=position, orientation=orientation, pixel_spacing=pixel_spacing,
                       pixels=pixels, instance=instance, thickness=thickness)


def dicom_affine(first_position: np.ndarray, orientation: np.ndarray, pixel_spacing: np.ndarray,
                 slice_step: np.ndarray) -> np.ndarray:
    """Voxel [column, row, slice] -> RAS mm from the DICOM geometry tags.

    LPS: ``p = IPP_0 + i * F_r * dc + j * F_c * dr + k * step``, with F_r, F_c
    the ImageOrientationPatient row and column cosines, (dr, dc) the
    PixelSpacing (row spacing first) and ``step`` the position difference of
    consecutive slices; RAS = diag(-1, -1, 1) LPS.
    """
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * pixel_spacing[1]
    lps[:3, 1] = orientation[3:] * pixel_spacing[0]
    lps[:3, 2] = slice_step
    lps[:3, 3] = first_position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_dicom_series(folder: str | os.PathLike, pattern: str = "*.dcm") -> DicomSeries:
    """Stack the single-frame slices of one series, sorted by position along the slice normal.

    Slices must share orientation, pixel spacing and size, and be evenly
    spaced (1 % tolerance); pixel values get RescaleSlope / RescaleIntercept.
    """
    folder = Path(folder)
    files = sorted(folder.glob(pattern))
    if not files:
        raise InputFileError(f"{folder}: no DICOM files ({pattern})")
    slices = [_dicom_slice(path) for path in files]
    first = slices[0]
    for other in slices[1:]:
        if not np.allclose(other.orientation, first.orientation, atol=1e-4):
            raise InputFileError(f"{other.path}: ImageOrientationPatient differs from {first.path.name} "
                                 "(several series in one folder?)")
        if not np.allclose(other.pixel_spacing, first.pixel_spacing, rtol=1e-4) or \
                other.pixels.shape != first.pixels.shape:
            raise InputFileError(f"{other.path}: pixel spacing or size differs from {first.path.name} "
                                 "(several series in one folder?)")
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    slices.sort(key=lambda s: float(s.position @ normal))
    if len(slices) > 1:
        gaps = np.diff([s.position @ normal for s in slices])
        if gaps.min() <= 1e-3:
            i = int(np.argmin(gaps))
            raise InputFileError(f"{folder}: slices {slices[i].path.name} and {slices[i + 1].path.name} share a "
                                 "position (several series in one folder?)")
        if np.abs(gaps - np.median(gaps)).max() > 0.01 * np.median(gaps):
            raise InputFileError(f"{folder}: uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm); "
                                 "missing slices?")
        step = (slices[-1].position - slices[0].position) / (len(slices) - 1)
    else:
        step = normal * first.thickness
    array = np.stack([s.pixels.T for s in slices], axis=-1)  # [rows, cols] -> [X, Y]; stacked: [X, Y, Z]
    affine = dicom_affine(slices[0].position, first.orientation, first.pixel_spacing, step)
    return DicomSeries(array=array, affine=affine, files=tuple(s.path for s in slices),
                       instance_numbers=tuple(s.instance for s in slices))


def chaos_png_labels(png: np.ndarray, path: Path) -> np.ndarray:
    """CHAOS ground-truth grey levels -> labels (63 liver 1, 126 right kidney 2, 189 left kidney 3,
    252 spleen 4; the organisers' ranges 55-70, 110-135, 175-200, 240-255 are accepted)."""
    labels = np.zeros(png.shape, dtype=np.uint8)
    known = png == 0
    for low, high, value in CHAOS_PNG_RANGES:
        inside = (png >= low) & (png <= high)
        labels[inside] = value
        known |= inside
    if not known.all():
        raise LabelMapError(f"{path}: grey levels {sorted(np.unique(png[~known]).tolist())[:5]} are not CHAOS "
                            "organ codes (0, 63, 126, 189, 252)")
    return labels


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            png = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, zlib.error) as exc:
        raise InputFileError(f"{path}: cannot read PNG ({type(exc).__name__}: {exc})") from exc
    if png.ndim == 3 and png.shape[-1] in (3, 4) and (png[..., :3] == png[..., :1]).all():
        png = png[..., 0]  # grey stored as RGB(A)
    if png.ndim != 2:
        raise InputFileError(f"{path}: expected a greyscale PNG, got shape {png.shape}")
    return png


def match_ground_truth(series: DicomSeries, pngs: Sequence[Path], folder: Path) -> list[Path]:
    """The ground-truth PNG of each slice of ``series``, in its Z order.

    CHAOS names each PNG like its DICOM slice (``IMG-0002-00007.dcm`` ->
    ``IMG-0002-00007.png``, the trailing number being the instance number), so
    names are matched first. Otherwise, with as many PNGs as slices, the PNGs
    sorted by their trailing number are paired with the slices sorted by
    InstanceNumber (the order the SSL-ALPNet notebook stacks them in).
    """
    by_stem = {p.stem: p for p in pngs}
    if all(f.stem in by_stem for f in series.files):
        return [by_stem[f.stem] for f in series.files]
    if len(pngs) != len(series.files):
        raise InputFileError(f"{folder}: {len(pngs)} ground-truth PNGs for {len(series.files)} DICOM slices")
    if any(n is None for n in series.instance_numbers):
        raise InputFileError(f"{folder}: PNG names do not match the DICOM names and the slices lack "
                             "InstanceNumber: cannot pair them")
    trailing = [re.findall(r"\d+", p.stem) for p in pngs]
    if not all(trailing):
        raise InputFileError(f"{folder}: PNG names carry no slice number to pair them with the DICOM slices")
    pngs_sorted = [p for _, p in sorted(zip((int(t[-1]) for t in trailing), pngs))]
    by_instance = np.argsort(np.array(series.instance_numbers), kind="stable")  # rank -> z
    matched: list[Path] = [Path()] * len(pngs)
    for rank, z in enumerate(by_instance):
        matched[int(z)] = pngs_sorted[rank]
    return matched


# ------------------------------------------------------------------ sources

@dataclass(frozen=True)
class RawCase:
    """One volume of a raw release: an image (file or DICOM folder) and its label (file or PNG folder)."""

    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class RawVolume:
    image: np.ndarray  # [X, Y, Z] float32, source intensities
    label: np.ndarray  # [X, Y, Z] raw label values
    affine: np.ndarray  # [4, 4]


@dataclass(frozen=True)
class SourceSpec:
    """A raw release: how to find its cases, read one, and what its labels mean."""

    name: str
    title: str
    expects: str  # the input layout, in words (help text and errors)
    modality: str  # "MR", "CT" or "auto"
    spacing: float | str  # in-plane target spacing in mm, or "fit": FIT_FOV_FRACTION of the FOV fills the size
    dataset: str | None  # the registered data set its output is (label map, folder name)
    find: Callable[..., tuple[list[RawCase], list[str]]]  # (root, image_glob, label_glob) -> cases, skipped
    read: Callable[[RawCase], RawVolume]

    @property
    def dataset_spec(self) -> DatasetSpec | None:
        from medfss.data.datasets import REGISTRY

        return None if self.dataset is None else REGISTRY[self.dataset]


def _unique(cases: list[RawCase]) -> list[RawCase]:
    from medfss.data.datasets import natural_key

    seen: dict[str, RawCase] = {}
    for case in cases:
        if case.case_id in seen:
            raise InputFileError(f"case id {case.case_id!r} found twice: {seen[case.case_id].image} and "
                                 f"{case.image}; point --input at one copy")
        seen[case.case_id] = case
    return sorted(seen.values(), key=lambda c: natural_key(c.case_id))


def find_chaos_cases(root: Path, *_) -> tuple[list[RawCase], list[str]]:
    """``.../MR/{id}/T2SPIR/DICOM_anon/*.dcm`` with ``.../T2SPIR/Ground/*.png``."""
    cases, skipped = [], []
    for dicom in sorted(root.rglob("T2SPIR/DICOM_anon")):
        ground = dicom.parent / "Ground"
        if dicom.is_dir() and ground.is_dir():
            cases.append(RawCase(dicom.parent.parent.name, dicom, ground))
        elif dicom.is_dir():
            skipped.append(f"{dicom}: no Ground folder")
    return _unique(cases), skipped


def read_chaos_case(case: RawCase) -> RawVolume:
    series = read_dicom_series(case.image)
    pngs = sorted(case.label.glob("*.png"))
    if not pngs:
        raise InputFileError(f"{case.label}: no ground-truth PNG files")
    slices = []
    for png_path in match_ground_truth(series, pngs, case.label):
        png = _read_png(png_path)
        if png.shape != series.array.shape[1::-1]:
            raise InputFileError(f"{png_path}: PNG shape {png.shape} differs from its DICOM slice "
                                 f"{series.array.shape[1::-1]}")
        slices.append(chaos_png_labels(png, png_path).T)  # [rows, cols] -> [X, Y], as the image
    label = np.stack(slices, axis=-1)  # [X, Y, Z]
    image, affine = flip_to_axcodes(series.array, series.affine)
    label, _ = flip_to_axcodes(label, series.affine)
    return RawVolume(image=image, label=label, affine=affine)


def _paired(images: list[Path], label_of: Callable[[Path], Path | None], case_id_of: Callable[[Path], str]
            ) -> tuple[list[RawCase], list[str]]:
    cases, skipped = [], []
    for image in sorted(images):
        label = label_of(image)
        if label is None or not label.is_file():
            skipped.append(f"{image}: no label file")
        else:
            cases.append(RawCase(case_id_of(image), image, label))
    return _unique(cases), skipped


def find_synapse_cases(root: Path, *_) -> tuple[list[RawCase], list[str]]:
    """``img/img0001.nii.gz`` with ``label/label0001.nii.gz``; the id is the number (``1``)."""
    # An img/ folder without a label/ folder beside it is an unlabelled (test) set: not looked at.
    images = [image for folder in root.rglob("img") if (folder.parent / "label").is_dir()
              for image in folder.glob("img*.nii.gz") if re.search(r"\d", image.name)]
    return _paired(images, lambda image: image.parent.parent / "label" / image.name.replace("img", "label", 1),
                   lambda image: str(int(re.findall(r"\d+", image.name)[0])))


def find_mscmrseg_cases(root: Path, *_) -> tuple[list[RawCase], list[str]]:
    """``patientN_C0.nii.gz`` with ``patientN_C0_manual.nii.gz`` anywhere under the input; the id is N."""
    manual = {p.name: p for p in root.rglob("patient*_C0_manual.nii.gz")}
    return _paired(list(root.rglob("patient*_C0.nii.gz")),
                   lambda image: manual.get(image.name.replace("_C0", "_C0_manual")),
                   lambda image: re.findall(r"\d+", image.name)[0])


def _glob_regex(pattern: str) -> re.Pattern:
    """A glob -> a regex capturing each wildcard (``**``, ``*``, ``?``, ``[...]``)."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):  # zero or more folders
            parts.append("(?:(.*)/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append("(.*)")
            i += 2
        elif pattern[i] == "*":
            parts.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            parts.append("([^/])")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            parts.append("([" + ("^" + body[1:] if body.startswith("!") else body) + "])")
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def find_nifti_pairs(root: Path, image_glob: str | None = None, label_glob: str | None = None
                     ) -> tuple[list[RawCase], list[str]]:
    """Images and labels matched by what their globs' wildcards capture.

    Without globs: ``imagesTr/*_0000.nii.gz`` + ``labelsTr/*.nii.gz`` (nnU-Net)
    when ``imagesTr/`` exists, else ``image_*.nii.gz`` + ``label_*.nii.gz``.
    """
    if (image_glob is None) != (label_glob is None):
        raise ConfigError("give both --image-glob and --label-glob, or neither")
    if image_glob is None:
        image_glob, label_glob = (("imagesTr/*_0000.nii.gz", "labelsTr/*.nii.gz") if (root / "imagesTr").is_dir()
                                  else ("image_*.nii.gz", "label_*.nii.gz"))

    def keyed(pattern: str) -> dict[str, Path]:
        regex, found = _glob_regex(pattern), {}
        for path in root.glob(pattern):
            match = regex.fullmatch(path.relative_to(root).as_posix())
            if match and path.is_file():
                found["_".join(g for g in match.groups() if g)] = path
        return found

    images, labels = keyed(image_glob), keyed(label_glob)
    cases = [RawCase(re.sub(r"[^A-Za-z0-9._-]+", "_", key or path.name.split(".")[0]), path, labels[key])
             for key, path in images.items() if key in labels]
    skipped = [f"{path}: no label matching {label_glob}" for key, path in images.items() if key not in labels]
    return _unique(cases), sorted(skipped)


def read_nifti_case(case: RawCase) -> RawVolume:
    from medfss.data.io import label_values, read_nifti

    image = read_nifti(case.image)
    label = read_nifti(case.label, dtype=np.float64)
    if image.array.shape != label.array.shape:
        raise InputFileError(f"{case.label}: shape {label.array.shape} differs from its image "
                             f"{case.image.name} {image.array.shape}")
    if not np.allclose(image.affine, label.affine, atol=1e-2):
        raise InputFileError(f"{case.label}: affine differs from its image {case.image.name} (not aligned)")
    label_values(label.array, case.label)
    array, affine = move_slice_axis_last(image.array, image.affine)
    label_array, _ = move_slice_axis_last(label.array, image.affine)
    return RawVolume(image=array, label=label_array.astype(np.int64), affine=affine)


SOURCES: dict[str, SourceSpec] = {spec.name: spec for spec in (
    SourceSpec("chaos", "CHAOS (ISBI 2019) MR T2-SPIR, DICOM + PNG ground truth",
               "Train_Sets/MR/{id}/T2SPIR/DICOM_anon/*.dcm and .../T2SPIR/Ground/*.png",
               "MR", MR_SPACING, "CHAOST2", find_chaos_cases, read_chaos_case),
    SourceSpec("synapse", "Synapse multi-atlas abdomen (BTCV) CT, 13 labels",
               "img/img00XX.nii.gz and label/label00XX.nii.gz",
               "CT", "fit", "SABS", find_synapse_cases, read_nifti_case),
    SourceSpec("mscmrseg", "MS-CMRSeg 2019 bSSFP cardiac MR (raw codes 200/500/600)",
               "patientN_C0.nii.gz and patientN_C0_manual.nii.gz",
               "MR", MR_SPACING, "CMR", find_mscmrseg_cases, read_nifti_case),
    SourceSpec("nifti", "a folder of NIfTI image/label pairs",
               "--image-glob/--label-glob, imagesTr/*_0000.nii.gz + labelsTr/*.nii.gz, or image_*/label_*",
               "auto", MR_SPACING, None, find_nifti_pairs, read_nifti_case),
)}


def get_source(name: str) -> SourceSpec:
    if name not in SOURCES:
        raise ConfigError(f"unknown source {name!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[name]


# -------------------------------------------------------------- conversion

@dataclass(frozen=True)
class PrepareSettings:
    """Everything that decides the output; saved in the dataset card."""

    source: str
    size: int = 256
    spacing: float | str = MR_SPACING  # in-plane mm, or "fit": FIT_FOV_FRACTION of the FOV fills `size`
    slice_spacing: float | None = None  # None keeps the slice spacing
    modality: str = "auto"  # "MR", "CT" or "auto" (CT when the minimum is below -500)
    mr_top_percent: float = MR_TOP_PERCENT
    ct_window: tuple[float, float] | None = None  # HU; None: medfss.data.preprocess.CT_WINDOW

    def __post_init__(self):
        if self.ct_window is None:
            from medfss.data.preprocess import CT_WINDOW

            object.__setattr__(self, "ct_window", CT_WINDOW)
        if self.size < 8:
            raise ConfigError(f"--size must be at least 8, got {self.size}")
        if self.spacing != "fit" and not (isinstance(self.spacing, (int, float)) and self.spacing > 0):
            raise ConfigError(f"--spacing must be a positive number of mm or 'fit', got {self.spacing!r}")
        if self.slice_spacing is not None and not self.slice_spacing > 0:
            raise ConfigError(f"--slice-spacing must be positive, got {self.slice_spacing}")
        if not 0 <= self.mr_top_percent < 100:
            raise ConfigError(f"--mr-top-percent must be in [0, 100), got {self.mr_top_percent}")
        if self.modality not in ("auto", "MR", "CT"):
            raise ConfigError(f"--modality must be auto, MR or CT, got {self.modality!r}")


@dataclass(frozen=True)
class PreparedVolume:
    image: np.ndarray  # [X, Y, Z] float32, size x size in-plane
    label: np.ndarray  # [X, Y, Z] raw label values, uint8 or uint16
    affine: np.ndarray  # [4, 4]
    modality: str


def prepare_volume(raw: RawVolume, settings: PrepareSettings) -> PreparedVolume:
    """Intensities on the source grid, then the in-plane grid (image linear, label nearest), then crop/pad."""
    from medfss.data.preprocess import detect_modality

    modality = detect_modality(raw.image) if settings.modality == "auto" else settings.modality
    image = (normalise_ct(raw.image, settings.ct_window) if modality == "CT"
             else normalise_mr(raw.image, settings.mr_top_percent))
    spacing = settings.spacing
    if spacing == "fit":  # the central FIT_FOV_FRACTION of the larger in-plane FOV fills `size`
        fov = float((voxel_spacing(raw.affine)[:2] * np.array(raw.image.shape[:2])).max())
        spacing = fov * FIT_FOV_FRACTION / settings.size
    image, affine = resample_inplane(image, raw.affine, spacing, order=1, slice_spacing=settings.slice_spacing)
    label, label_affine = resample_inplane(raw.label, raw.affine, spacing, order=0,
                                           slice_spacing=settings.slice_spacing)
    image, affine = crop_or_pad_inplane(image, affine, settings.size, float(image.min()))
    label, _ = crop_or_pad_inplane(label, label_affine, settings.size, 0)
    label_dtype = np.uint8 if label.max() <= np.iinfo(np.uint8).max else np.uint16
    return PreparedVolume(image=image.astype(np.float32), label=label.astype(label_dtype), affine=affine,
                          modality=modality)


def check_labels(label: np.ndarray, spec: DatasetSpec | None, path: Path) -> None:
    """Raw label values must be in the data set's map (registered, or an nnU-Net ``dataset.json``)."""
    if spec is None:
        return
    unknown = sorted(set(np.unique(label).astype(int).tolist()) - set(spec.label_lookup()))
    if unknown:
        raise LabelMapError(f"{path}: label values {unknown} are not in the {spec.name} label map "
                            f"{sorted(spec.label_lookup())}")


def raw_label_names(spec: DatasetSpec | None) -> dict[int, str]:
    """Raw label value -> name, background included."""
    if spec is None:
        return {}
    return {raw: ("background" if index == 0 else spec.classes[index])
            for raw, index in sorted(spec.label_lookup().items())}


def _nifti_header(affine: np.ndarray) -> nib.Nifti1Header:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_qform(affine, code=1)  # scanner coordinates, as the shared files
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return header


OUTPUT_NAMES = re.compile(r"(image_.+\.nii\.gz|label_.+\.nii\.gz|dataset_card\.json|README\.md|\.tmp-.*)")


def check_output_folder(input_dir: Path, out_dir: Path) -> None:
    """The input must exist; the output must be neither the input nor inside it, and hold nothing but
    the files ``prepare`` writes (a new, empty or earlier ``prepare`` folder: nothing else is overwritten)."""
    if not input_dir.is_dir():
        raise InputFileError(f"{input_dir}: input folder not found")
    inp, out = input_dir.resolve(), out_dir.resolve()
    if out == inp or out.is_relative_to(inp):
        raise ConfigError(f"--out {out_dir} is inside the input folder {input_dir}: choose a folder outside "
                          "it (inputs are never written next to)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    foreign = sorted(p.name for p in out.iterdir() if not OUTPUT_NAMES.fullmatch(p.name)) if out.is_dir() else []
    if foreign:
        raise ConfigError(f"--out {out_dir} holds other files ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder")


def _command(settings: PrepareSettings, input_dir: Path, out_dir: Path, image_glob, label_glob) -> str:
    source = SOURCES[settings.source]
    argv = ["medfss", "prepare", "--source", settings.source, "--input", str(input_dir), "--out", str(out_dir),
            "--size", str(settings.size)]
    if settings.spacing != source.spacing:
        argv += ["--spacing", str(settings.spacing) if settings.spacing == "fit" else f"{settings.spacing:g}"]
    if settings.slice_spacing is not None:
        argv += ["--slice-spacing", f"{settings.slice_spacing:g}"]
    if settings.modality != source.modality:
        argv += ["--modality", settings.modality]
    if settings.mr_top_percent != MR_TOP_PERCENT:
        argv += ["--mr-top-percent", f"{settings.mr_top_percent:g}"]
    if image_glob is not None:
        argv += ["--image-glob", image_glob, "--label-glob", label_glob]
    return shlex.join(argv)


def prepare(source: str, input_dir: str | os.PathLike, out_dir: str | os.PathLike, *, size: int = 256,
            spacing: float | str | None = None, slice_spacing: float | None = None,
            modality: str | None = None, mr_top_percent: float = MR_TOP_PERCENT, image_glob: str | None = None,
            label_glob: str | None = None, progress: bool = True, command: str | None = None) -> dict:
    """Convert a raw release under ``input_dir`` into ``out_dir``; returns the dataset card.

    ``spacing``: in-plane mm, ``"fit"`` (the central 7/8 of the field of view
    fills ``size``, the Synapse preprocessing) or None (the source's default:
    1.25 mm, fit for Synapse). ``modality`` (MR, CT or auto) can
    only be chosen for the ``nifti`` source; ``mr_top_percent`` is the MR
    histogram share cut (0: none). Every file is written through a
    temporary file and a rename; nothing is written under ``input_dir``.
    """
    from tqdm.auto import tqdm

    from medfss.data.datasets import nnunet_spec
    from medfss.data.io import write_nifti_atomic, write_text_atomic

    spec = get_source(source)
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if modality is not None and spec.modality != "auto" and modality != spec.modality:
        raise ConfigError(f"--modality {modality} does not apply to --source {source} ({spec.modality})")
    if image_glob is not None and source != "nifti":
        raise ConfigError("--image-glob/--label-glob apply to --source nifti only")
    settings = PrepareSettings(source=source, size=size, spacing=spec.spacing if spacing is None else spacing,
                               slice_spacing=slice_spacing, modality=modality or spec.modality,
                               mr_top_percent=mr_top_percent)
    check_output_folder(input_dir, out_dir)
    cases, skipped = spec.find(input_dir, image_glob, label_glob)
    if not cases:
        raise InputFileError(f"{input_dir}: no {source} volumes found (expected {spec.expects})")
    dataset = spec.dataset_spec
    if dataset is None and (input_dir / "dataset.json").is_file():
        dataset = nnunet_spec(input_dir)
    # The card is written last: a folder without one is an unfinished run, never a stale description.
    (out_dir / "dataset_card.json").unlink(missing_ok=True)

    records = []
    for case in tqdm(cases, desc=f"prepare {source}", unit="volume", disable=not progress):
        raw = spec.read(case)
        if raw.image.shape != raw.label.shape:
            raise InputFileError(f"{case.label}: label shape {raw.label.shape} differs from image {raw.image.shape}")
        check_labels(raw.label, dataset, case.label)
        out = prepare_volume(raw, settings)
        header = _nifti_header(out.affine)
        write_nifti_atomic(out.image, out.affine, out_dir / f"image_{case.case_id}.nii.gz", header=header)
        write_nifti_atomic(out.label, out.affine, out_dir / f"label_{case.case_id}.nii.gz", header=header)
        records.append({
            "id": case.case_id,
            "source_image": case.image.relative_to(input_dir).as_posix(),
            "source_label": case.label.relative_to(input_dir).as_posix(),
            "source_shape": list(raw.image.shape),
            "source_spacing": [round(float(s), 4) for s in voxel_spacing(raw.affine)],
            "shape": list(out.image.shape),
            "spacing": [round(float(s), 4) for s in voxel_spacing(out.affine)],
            "modality": out.modality,
            "label_values": np.unique(out.label).astype(int).tolist(),
        })

    card = dataset_card(spec, settings, records, skipped, dataset, input_dir,
                        command or _command(settings, input_dir, out_dir, image_glob, label_glob))
    write_text_atomic(json.dumps(card, indent=2) + "\n", out_dir / "dataset_card.json")
    write_text_atomic(card_readme(card), out_dir / "README.md")
    return card


def dataset_card(spec: SourceSpec, settings: PrepareSettings, records: list[dict], skipped: list[str],
                 dataset: DatasetSpec | None, input_dir: Path, command: str) -> dict:
    from medfss.data.datasets import natural_key
    from medfss.provenance import git_revision

    spacings = np.array([r["spacing"] for r in records])
    names = raw_label_names(dataset)
    if not names:  # unknown map: the values found
        names = {v: ("background" if v == 0 else f"label {v}")
                 for v in sorted({v for r in records for v in r["label_values"]})}
    return {
        "source": spec.name,
        "source_title": spec.title,
        "input": str(input_dir.resolve()),
        "dataset": dataset.name if dataset is not None else None,
        "n_volumes": len(records),
        "ids": [r["id"] for r in records],
        "spacing_min": spacings.min(axis=0).round(4).tolist(),
        "spacing_max": spacings.max(axis=0).round(4).tolist(),
        "shapes": sorted({"x".join(map(str, r["shape"])) for r in records}, key=natural_key),
        "label_map": {str(k): v for k, v in names.items()},
        "settings": {**asdict(settings), "ct_window": list(settings.ct_window)},
        "steps": preprocessing_steps(settings, {r["modality"] for r in records}),
        "volumes": records,
        "skipped": skipped,
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "medfss_version": __version__,
        "git_revision": git_revision(),
    }


def preprocessing_steps(settings: PrepareSettings, modalities: set[str]) -> list[str]:
    """The steps applied to volumes of these modalities, in words, for the card."""
    inplane = (f"in-plane resampled to {settings.spacing:g} mm" if settings.spacing != "fit" else
               f"the central {FIT_FOV_FRACTION:.3g} of the in-plane field of view resampled to "
               f"{settings.size} x {settings.size}")
    mr = (f"MR: values above the {100 - settings.mr_top_percent:g}th percentile set to it (no z-score)"
          if settings.mr_top_percent else "MR: intensities kept")
    ct = f"CT: clipped to [{settings.ct_window[0]:g}, {settings.ct_window[1]:g}] HU, mapped to [0, {CT_SCALE:g}]"
    return [
        "orientation: DICOM flipped to LAS" if settings.source == "chaos" else
        "orientation: voxel order kept (the slice axis moved last if needed)",
        *([mr] if "MR" in modalities else []),
        *([ct] if "CT" in modalities else []),
        f"{inplane} (image linear, label nearest), centre-cropped/padded to {settings.size} x {settings.size}"
        " (image padded with its minimum, label with 0)",
        "slice spacing kept" if settings.slice_spacing is None else
        f"slices resampled to {settings.slice_spacing:g} mm",
        "affine updated at every step (a voxel keeps its physical position)",
    ]


def card_readme(card: dict) -> str:
    lo, hi = card["spacing_min"], card["spacing_max"]
    spacing = " x ".join(f"{a:g}" if a == b else f"{a:g}-{b:g}" for a, b in zip(lo, hi))
    labels = ", ".join(f"{k} {v}" for k, v in card["label_map"].items())
    lines = [
        f"# {card['dataset'] or 'Prepared data'} ({card['source']})",
        "",
        f"Converted from {card['source_title']} by `medfss prepare` {card['medfss_version']} "
        f"on {card['date']}.",
        "",
        f"- Source: `{card['input']}`",
        f"- Volumes: {card['n_volumes']} (`image_{{id}}.nii.gz`, `label_{{id}}.nii.gz`), "
        f"ids {' '.join(card['ids'])}",
        f"- Shapes: {', '.join(card['shapes'])}; spacing {spacing} mm",
        f"- Labels: {labels}",
        f"- Command: `{card['command']}`",
        "",
        "Steps:",
        "",
        *[f"- {step}" for step in card["steps"]],
        "",
        "Images are float32; labels keep the data set's raw values. `dataset_card.json` lists every "
        "volume with its source files, shapes and spacings.",
    ]
    if card["skipped"]:
        lines += ["", f"Skipped (no label): {len(card['skipped'])} images."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- CLI

def _spacing_arg(text: str) -> float | str:
    if text == "fit":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a spacing in mm or 'fit', got {text!r}") from None


def add_prepare_parser(subparsers) -> argparse.ArgumentParser:
    """The ``prepare`` subcommand."""
    sources = "; ".join(f"{s.name}: {s.expects}" for s in SOURCES.values())
    parser = subparsers.add_parser(
        "prepare", help="convert a raw public release into the normalised format (image_{id}/label_{id})",
        description="Convert a raw release into image_{id}.nii.gz (float32, SIZE x SIZE in-plane, intensities "
                    "normalised as in the SSL-ALPNet preprocessing) and label_{id}.nii.gz (raw label values), "
                    f"plus dataset_card.json and README.md. Inputs: {sources}.")
    parser.add_argument("--source", required=True, help=f"one of {', '.join(SOURCES)}")
    parser.add_argument("--input", required=True, type=Path, help="the raw release's folder (read only)")
    parser.add_argument("--out", required=True, type=Path, help="output folder, outside the input folder")
    parser.add_argument("--size", type=int, default=256, help="in-plane size after crop/pad (default 256)")
    parser.add_argument("--spacing", type=_spacing_arg, default=None,
                        help="in-plane spacing in mm, or 'fit' (the central 7/8 of the field of view fills "
                             "SIZE); default 1.25, fit for synapse")
    parser.add_argument("--slice-spacing", type=float, default=None,
                        help="resample the slices to this spacing in mm (default: keep; the reference "
                             "CHAOST2 files use 7.7)")
    parser.add_argument("--modality", choices=("auto", "MR", "CT"), default=None,
                        help="nifti source only: intensity normalisation (auto: CT when the minimum is below -500)")
    parser.add_argument("--mr-top-percent", type=float, default=MR_TOP_PERCENT,
                        help="MR: share of the histogram cut at the bright end (default 0.5; 0: none)")
    parser.add_argument("--image-glob", default=None, help="nifti source: images, relative to --input, e.g. "
                                                           "'images/*.nii.gz'")
    parser.add_argument("--label-glob", default=None, help="nifti source: labels, matched to the images by "
                                                           "what the wildcards capture, e.g. 'labels/*_seg.nii.gz'")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_prepare)
    return parser


def cmd_prepare(args) -> int:
    card = prepare(args.source, args.input, args.out, size=args.size, spacing=args.spacing,
                   slice_spacing=args.slice_spacing, modality=args.modality,
                   mr_top_percent=args.mr_top_percent, image_glob=args.image_glob,
                   label_glob=args.label_glob, progress=not args.quiet)
    spacing = " x ".join(f"{a:g}" if a == b else f"{a:g}-{b:g}"
                         for a, b in zip(card["spacing_min"], card["spacing_max"]))
    print(f"wrote {card['n_volumes']} volumes to {args.out} ({', '.join(card['shapes'])}; {spacing} mm)")
    if card["skipped"]:
        print(f"skipped {len(card['skipped'])} images without a label (listed in dataset_card.json)")
    return 0
