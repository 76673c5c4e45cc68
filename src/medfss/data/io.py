"""Geometry-preserving NIfTI reading and writing.

Readers return the voxel array together with its affine, header and spacing so
that a prediction can be written back aligned with the scan it came from.
Writers go through a temporary file and an atomic rename: a failed run never
leaves a half-written output.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medfss.errors import InputFileError, LabelMapError


@dataclass(frozen=True)
class NiftiArray:
    """A voxel array with the geometry it was read with."""

    array: np.ndarray  # [X, Y, Z] (NIfTI voxel axes; Z is the slice axis)
    affine: np.ndarray  # [4, 4]
    header: nib.Nifti1Header
    path: Path

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(z) for z in self.header.get_zooms()[: self.array.ndim])


def read_nifti(path: str | os.PathLike, *, dtype=np.float32, ndim: int | None = 3,
               allow_nonfinite: bool = False) -> NiftiArray:
    """Read a NIfTI file, failing with a one-line :class:`InputFileError` naming it.

    ``ndim`` checks the dimensionality (None accepts any); non-finite voxels are
    rejected unless ``allow_nonfinite``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        array = np.asarray(img.dataobj, dtype=dtype)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError,
            nib.filebasedimages.ImageFileError) as exc:
        raise InputFileError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    if ndim is not None and array.ndim != ndim:
        # Trailing singleton axes (e.g. [X, Y, Z, 1]) are a common export artefact.
        squeezed = array.reshape(array.shape[:ndim]) if array.ndim > ndim and all(
            s == 1 for s in array.shape[ndim:]) else None
        if squeezed is None:
            raise InputFileError(f"{path}: expected a {ndim}D volume, got shape {array.shape}")
        array = squeezed
    if not allow_nonfinite and not np.isfinite(array).all():
        n_bad = int((~np.isfinite(array)).sum())
        raise InputFileError(f"{path}: {n_bad} voxels are NaN or Inf")
    return NiftiArray(array=array, affine=np.asarray(img.affine, dtype=np.float64),
                      header=img.header.copy(), path=path)


def label_values(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """The distinct values of a label map read from ``path``; they must be non-negative integers."""
    values = np.unique(array)
    if not np.array_equal(values, np.round(values)) or values.min() < 0:
        raise LabelMapError(f"{path}: label values must be non-negative integers, found {values[:5].tolist()}")
    return values


def write_atomic(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    Readers never see a half-written file, and a failed write leaves no file behind.
    ``suffix`` keeps the file type for writers that infer it from the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide outputs from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def write_nifti_atomic(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
                       header: nib.Nifti1Header | None = None) -> Path:
    """Write ``array`` to ``path`` via a temporary file in the same folder and a rename."""
    out_header = header.copy() if header is not None else None
    img = nib.Nifti1Image(array, affine, header=out_header)
    img.set_data_dtype(array.dtype)
    return write_atomic(path, lambda tmp: nib.save(img, tmp), suffix="".join(Path(path).suffixes) or ".nii.gz")


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write a text file via a temporary file and a rename."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))
