"""ACDC and LA in the semi-supervised literature's HDF5 layout, and the labelled/unlabelled split.

ACDC (2D training, 3D evaluation)::

    ACDC/train_slices.list            slice names, e.g. patient099_frame01_slice_15
    ACDC/data/slices/{name}.h5        image [H, W] float32 in [0, 1], label [H, W] uint8 (0 bg, 1 RV, 2 MYO, 3 LV)
    ACDC/{val,test}.list              volume names, e.g. patient028_frame01
    ACDC/data/{name}.h5               image, label [D, H, W]; a training frame, which has
                                      no such file, is its slices {name}_slice_{k} stacked

LA (3D)::

    LA/{train,test}.list              volume ids
    LA/2018LA_Seg_Training Set/{id}/mri_norm2.h5    image [X, Y, Z] float32 (z-scored), label 0/1

The readers check what they read (:func:`read_h5`, :func:`read_list`): a
damaged, hostile or mislabelled file is a one-line error naming it, never a
traceback or an allocation of what a corrupt header declares.

Labelled fractions follow the literature: the first ``floor(fraction * n)``
patients of the training list (ACDC: 70 patients, 5 % = 3, 10 % = 7; LA: 80
volumes, 5 % = 4, 10 % = 8) are labelled, the rest is used without labels.
"""

from __future__ import annotations

import glob
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.nn import functional as F

from medfss.data.datasets import resolve_data_root
from medfss.data.io import label_values
from medfss.errors import ConfigError, InputFileError, LabelMapError, one_line

# Voxels per array: 15 times the largest LA volume; bounds what a corrupt or sparse file makes a reader allocate.
MAX_VOXELS = 2 ** 26
H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)  # what h5py raises on a damaged file


@dataclass(frozen=True)
class DatasetLayout:
    """Where a data set's files are and what its classes are."""

    name: str
    folder: str
    train_list: str
    classes: tuple[str, ...]  # foreground classes, label values 1..N-1
    normalisation: str  # how the files' intensities were normalised, for raw scans ('minmax' or 'zscore')

    @property
    def num_classes(self) -> int:
        return len(self.classes) + 1

    def volume_path(self, root: Path, name: str) -> Path:
        if self.name == "LA":
            return root / "2018LA_Seg_Training Set" / name / "mri_norm2.h5"
        return root / "data" / f"{name}.h5"


LAYOUTS = {
    "ACDC": DatasetLayout("ACDC", "ACDC", "train_slices.list", ("RV", "MYO", "LV"), "minmax"),
    "LA": DatasetLayout("LA", "LA", "train.list", ("LA",), "zscore"),
}


def get_layout(name: str) -> DatasetLayout:
    if name not in LAYOUTS:
        raise ConfigError(f"unknown semi-supervised data set {name!r}; valid: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def dataset_root(layout: DatasetLayout, data_root: str | os.PathLike | None) -> Path:
    """The folder of the data set: ``data_root/ACDC`` when it exists, else ``data_root`` itself."""
    root = resolve_data_root(data_root)
    return root / layout.folder if (root / layout.folder).is_dir() else root


def read_list(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a list file: case names (file names without folders)."""
    path = Path(path)
    _require_file(path, "list file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not part of a name
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a text list of case names ({one_line(exc)})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputFileError(f"{path}: the list is empty")
    for name in names:
        if name in (".", "..") or any(c in name for c in "/\\\0"):
            raise InputFileError(f"{path}: {name[:80]!r} is not a case name (e.g. patient028_frame01): names "
                                 "are file names, without folders")
    return names


def _require_file(path: Path, what: str) -> None:
    """A one-line InputFileError unless ``path`` is a file."""
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise InputFileError(f"{str(path)[:300]}: {what} cannot be opened ({exc.strerror})") from None
    if not found:
        raise InputFileError(f"{path}: {what} not found")


def read_h5(path: str | os.PathLike, *, ndim: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, label int64)``, both [*S] with ``ndim`` axes, of one HDF5 file.

    Before any voxel is read, the datasets ``image`` and ``label`` must be
    real-valued ``ndim``-D arrays of one shape and at most :data:`MAX_VOXELS`
    voxels, so that a corrupt file, or one declaring 4000^3 voxels of which it
    stores none, never makes it allocate without bound. After: the image must
    be finite in float32 and the labels integers 0..``num_classes`` - 1.
    Anything else is a one-line :class:`InputFileError` (or
    :class:`LabelMapError`) naming the file.
    """
    path = Path(path)
    _require_file(path, "HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            image, label = (_dataset(f, key, path, ndim) for key in ("image", "label"))
            if image.shape != label.shape:
                raise InputFileError(f"{path}: image {image.shape} and label {label.shape} differ in shape")
            stored_image, stored_label = image[()], label[()]
    except H5_ERRORS as exc:
        raise InputFileError(f"{path}: cannot read HDF5 ({one_line(exc)})") from None
    return _finite_image(stored_image, path), _class_labels(stored_label, num_classes, path)


def _dataset(f: h5py.File, key: str, path: Path, ndim: int) -> h5py.Dataset:
    """``f[key]``, declared (not yet read) as a real-valued ``ndim``-D array of 1 to MAX_VOXELS voxels."""
    dataset = f.get(key)
    if not isinstance(dataset, h5py.Dataset):
        link = f.get(key, getlink=True)
        what = "missing" if link is None else "a link to nothing readable" if dataset is None else "not an array"
        found = ", ".join(repr(k) for k in itertools.islice(f.keys(), 5))
        raise InputFileError(f"{path}: {key!r} is {what} (the file holds {found or 'nothing'}); expected the "
                             "arrays 'image' and 'label'")
    dtype, shape = dataset.dtype, dataset.shape
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise InputFileError(f"{path}: {key!r} holds {dtype} values (kind {dtype.kind!r}); expected real numbers")
    if shape is None or len(shape) != ndim or 0 in shape:
        raise InputFileError(f"{path}: {key!r} has shape {shape}; expected a non-empty {ndim}D array")
    voxels = int(np.prod(shape, dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise InputFileError(f"{path}: {key!r} declares {shape} = {voxels:.3g} voxels, more than the "
                             f"{MAX_VOXELS:.3g} a volume may hold: corrupt file or not a scan")
    return dataset


def _finite_image(stored: np.ndarray, path: Path) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become Inf: refused below
        image = np.asarray(stored, dtype=np.float32)
    bad = image.size - np.count_nonzero(np.isfinite(image))
    if bad:
        raise InputFileError(f"{path}: {bad} image voxels are NaN or Inf (in float32)")
    return image


def _class_labels(stored: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    values = label_values(stored.astype(np.uint8) if stored.dtype.kind == "b" else stored, path)  # >= 0, integers
    if values[-1] >= num_classes:
        raise LabelMapError(f"{path}: label value {values[-1].item()} is not a class of this data set "
                            f"(0..{num_classes - 1})")
    return stored.astype(np.int64)


def patient_of(name: str) -> str:
    """``patient099_frame01_slice_15`` -> ``patient099``; an LA id is its own patient."""
    return name.split("_")[0]


def split_labeled(names: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(labelled, unlabelled) names: those of the first ``floor(fraction * patients)`` patients in list order.

    At least one patient is labelled; a fraction that labels every patient leaves none unlabelled.
    """
    patients = list(dict.fromkeys(patient_of(n) for n in names))
    n_labeled = max(1, math.floor(fraction * len(patients) + 1e-9))  # 0.1 * 70 is 7.000000000000001
    chosen = set(patients[:n_labeled])
    return [n for n in names if patient_of(n) in chosen], [n for n in names if patient_of(n) not in chosen]


def without_patients(names: list[str], holdout: list[str]) -> list[str]:
    """``names`` less those of any patient of ``holdout`` (an inner validation split)."""
    excluded = {patient_of(n) for n in holdout}
    return [n for n in names if patient_of(n) not in excluded]


def resize(array: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """[B, C, *spatial] resampled to ``size``: ``bilinear`` for images, ``nearest`` for labels."""
    if tuple(array.shape[2:]) == tuple(size):
        return array
    if mode == "nearest":
        return F.interpolate(array, size=size, mode="nearest")
    return F.interpolate(array, size=size, mode="bilinear" if len(size) == 2 else "trilinear", align_corners=False)


def load_slices(layout: DatasetLayout, root: Path, names: list[str], size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """ACDC training slices resized to ``size``: images [S, 1, H, W] float32, labels [S, H, W] int64."""
    images, labels = [], []
    for name in names:
        image, label = read_h5(root / "data" / "slices" / f"{name}.h5", ndim=2, num_classes=layout.num_classes)
        images.append(resize(torch.from_numpy(image)[None, None], size, "bilinear")[0])
        labels.append(resize(torch.from_numpy(label)[None, None].float(), size, "nearest")[0, 0].long())
    return torch.stack(images), torch.stack(labels)


def load_volume(layout: DatasetLayout, root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) of the named volume (ACDC [D, H, W], LA [X, Y, Z]).

    An ACDC training frame has no volume file: its slices
    ``data/slices/{name}_slice_{k}.h5`` are stacked in the order of k, so that
    an inner validation split of training frames is scored like ``val.list``.
    """
    path = layout.volume_path(root, name)
    slices = frame_slices(root, name) if layout.name == "ACDC" and not _exists(path) else []
    if not slices:
        return read_h5(path, ndim=3, num_classes=layout.num_classes)
    stack = [read_h5(s, ndim=2, num_classes=layout.num_classes) for s in slices]
    shapes = {image.shape for image, _ in stack}
    if len(shapes) > 1:
        raise InputFileError(f"{slices[0].parent}: the slices of {name} differ in shape ({sorted(shapes)})")
    return np.stack([image for image, _ in stack]), np.stack([label for _, label in stack])


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name longer than the file system allows: read_h5 says so
        return True


def frame_slices(root: Path, name: str) -> list[Path]:
    """The slice files ``data/slices/{name}_slice_{k}.h5`` of an ACDC frame, in the order of k."""
    found = {}
    for path in (root / "data" / "slices").glob(f"{glob.escape(name)}_slice_*.h5"):
        k = path.name[len(name) + len("_slice_"):-len(".h5")]
        if k.isdigit():
            found[int(k)] = path
    return [found[k] for k in sorted(found)]


def load_volumes(layout: DatasetLayout, root: Path, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label) of each named volume (ACDC [D, H, W], LA [X, Y, Z])."""
    return [load_volume(layout, root, name) for name in names]
