"""A DICOM series -> a volume and its affine (pydicom; no SimpleITK).

Slices are sorted along the slice normal and the affine is built from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing (LPS -> RAS).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfss.errors import InputFileError, one_line


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
