"""Geometry-preserving NIfTI reading and writing.

Readers return the voxel array together with its affine, header and spacing so
that a prediction can be written back aligned with the scan it came from.
Writers go through a temporary file and an atomic rename: a failed run never
leaves a half-written output.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medfss.errors import InputFileError, LabelMapError, one_line


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


# A voxel larger than a metre or smaller than a micrometre is a corrupt header, not a scan.
SPACING_RANGE_MM = (1e-3, 1e3)
MAX_DEFLATE_RATIO = 1032  # no deflate (gzip) stream expands by more: a bound on what a .gz file can hold
READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, TypeError, OverflowError,
               nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError)


def read_nifti(path: str | os.PathLike, *, dtype=np.float32, ndim: int | None = 3,
               allow_nonfinite: bool = False) -> NiftiArray:
    """Read a NIfTI file, failing with a one-line :class:`InputFileError` naming it.

    ``ndim`` checks the dimensionality (None accepts any); non-finite voxels are
    rejected unless ``allow_nonfinite``. Before any voxel is read the header
    must declare a real-valued type and a positive shape the file can hold
    (so a corrupt header never makes it allocate without bound); after, the
    affine must be finite and invertible and the spacing within
    :data:`SPACING_RANGE_MM`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        header = img.header
        shape, voxel_type = header.get_data_shape(), header.get_data_dtype()
        data_file = Path(img.file_map["image"].filename)
    except READ_ERRORS as exc:
        raise InputFileError(f"{path}: cannot read NIfTI ({one_line(exc)})") from None
    _check_declared_data(path, shape, voxel_type, data_file, header.get_data_offset())
    try:
        array = np.asarray(img.dataobj, dtype=dtype)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = _stored_zooms(img)
    except READ_ERRORS as exc:
        raise InputFileError(f"{path}: cannot read NIfTI ({one_line(exc)})") from None
    except MemoryError:
        raise InputFileError(f"{path}: {shape} voxels do not fit in memory") from None
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
    _check_geometry(path, affine, zooms[: min(array.ndim, 3)])
    return NiftiArray(array=array, affine=affine, header=header.copy(), path=path)


def _check_declared_data(path: Path, shape: tuple[int, ...], voxel_type: np.dtype, data_file: Path,
                         offset: int) -> None:
    """The header's shape and type describe real-valued voxels that ``data_file`` can hold."""
    if voxel_type.fields is not None or voxel_type.kind not in "biuf":
        kind = "colour (RGB)" if voxel_type.fields is not None else f"{voxel_type} ({voxel_type.kind})"
        raise InputFileError(f"{path}: {kind} voxels are not supported; convert the image to one greyscale "
                             "real-valued channel")
    if not shape or min(shape) <= 0:
        raise InputFileError(f"{path}: header declares the shape {shape}: corrupt header")
    declared = int(np.prod(shape, dtype=np.float64)) * voxel_type.itemsize
    size = data_file.stat().st_size
    if data_file.suffix == ".gz":
        if declared > size * MAX_DEFLATE_RATIO:
            raise InputFileError(f"{path}: header declares {shape} voxels ({declared} bytes), more than a "
                                 f"{size}-byte gzip file can hold: corrupt header or truncated file")
    elif data_file.suffix in (".nii", ".img") and offset + declared > size:
        raise InputFileError(f"{path}: header declares {shape} voxels ({declared} bytes from byte {offset}) "
                             f"but the file has {size} bytes: truncated file or corrupt header")


def _stored_zooms(img) -> tuple[float, ...]:
    """The voxel sizes as the file stores them: nibabel silently turns zero and negative ones into 1 and |x|."""
    holder = img.file_map.get("header", img.file_map["image"])  # single-file NIfTI: one "image" entry
    with nib.openers.ImageOpener(holder.filename) as fh:
        stored = type(img.header).from_fileobj(fh, check=False)
    if "pixdim" not in stored:
        return img.header.get_zooms()
    return tuple(float(z) for z in stored["pixdim"][1: len(img.shape) + 1])


def _check_geometry(path: Path, affine: np.ndarray, zooms: tuple[float, ...]) -> None:
    """A finite, invertible affine and voxel sizes (affine and header) within SPACING_RANGE_MM."""
    low, high = SPACING_RANGE_MM
    if not np.isfinite(affine).all():
        raise InputFileError(f"{path}: the affine (qform/sform) holds NaN or Inf: corrupt header")
    sizes = np.linalg.norm(affine[:3, :3], axis=0)  # mm per voxel step along each axis, from the affine
    zooms = np.asarray(zooms, dtype=np.float64)
    for name, values in (("affine", sizes), ("header pixdim", zooms)):
        if not (np.isfinite(values).all() and (values >= low).all() and (values <= high).all()):
            raise InputFileError(f"{path}: voxel spacing {np.round(values, 6).tolist()} mm ({name}) is outside "
                                 f"{low:g}..{high:g} mm: corrupt header")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * np.prod(sizes):
        raise InputFileError(f"{path}: the affine's axes are collinear (not invertible): corrupt header")


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
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide outputs from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_folder_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> bool:
    """Call ``write(staging)`` on a temporary folder beside ``path``, then rename it to ``path``.

    The folder analogue of :func:`write_atomic`: readers see all of its files or no folder, and a failed
    write leaves none behind. When ``path`` already exists (another process wrote it first) it is kept and
    False is returned.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide the folder from other users
        write(staging)
        staging.rename(path)
        return True
    except OSError:
        if path.is_dir():  # another process renamed its copy there first: keep it
            return False
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when renamed


def current_umask() -> int:
    """The process's umask: the mode bits a new file or folder must not have."""
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
