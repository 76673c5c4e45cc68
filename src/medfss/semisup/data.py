"""ACDC and LA in the semi-supervised literature's HDF5 layout, and the labelled/unlabelled split.

ACDC (2D training, 3D evaluation)::

    ACDC/train_slices.list            slice names, e.g. patient099_frame01_slice_15
    ACDC/data/slices/{name}.h5        image [H, W] float32 in [0, 1], label [H, W] uint8 (0 bg, 1 RV, 2 MYO, 3 LV)
    ACDC/{val,test}.list              volume names, e.g. patient028_frame01
    ACDC/data/{name}.h5               image, label [D, H, W]

LA (3D)::

    LA/{train,test}.list              volume ids
    LA/2018LA_Seg_Training Set/{id}/mri_norm2.h5    image [X, Y, Z] float32 (z-scored), label 0/1

Labelled fractions follow the literature: the first ``floor(fraction * n)``
patients of the training list (ACDC: 70 patients, 5 % = 3, 10 % = 7; LA: 80
volumes, 5 % = 4, 10 % = 8) are labelled, the rest is used without labels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.nn import functional as F

from medfss.data.datasets import resolve_data_root
from medfss.errors import ConfigError, InputFileError


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
    """The non-empty lines of a list file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: list file not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise InputFileError(f"{path}: the list is empty")
    return names


def read_h5(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, label int64)`` of one HDF5 file, of the same shape."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            image, label = np.asarray(f["image"], dtype=np.float32), np.asarray(f["label"], dtype=np.int64)
    except (OSError, KeyError) as exc:
        raise InputFileError(f"{path}: not an HDF5 file with 'image' and 'label' ({exc})") from None
    if image.shape != label.shape:
        raise InputFileError(f"{path}: image {image.shape} and label {label.shape} differ in shape")
    return image, label


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


def resize(array: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """[B, C, *spatial] resampled to ``size``: ``bilinear`` for images, ``nearest`` for labels."""
    if tuple(array.shape[2:]) == tuple(size):
        return array
    if mode == "nearest":
        return F.interpolate(array, size=size, mode="nearest")
    return F.interpolate(array, size=size, mode="bilinear" if len(size) == 2 else "trilinear", align_corners=False)


def load_slices(root: Path, names: list[str], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """ACDC training slices resized to ``size``: images [S, 1, H, W] float32, labels [S, H, W] int64."""
    images, labels = [], []
    for name in names:
        image, label = read_h5(root / "data" / "slices" / f"{name}.h5")
        images.append(resize(torch.from_numpy(image)[None, None], size, "bilinear")[0])
        labels.append(resize(torch.from_numpy(label)[None, None].float(), size, "nearest")[0, 0].long())
    return torch.stack(images), torch.stack(labels)


def load_volumes(layout: DatasetLayout, root: Path, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label) of each named volume (ACDC [D, H, W], LA [X, Y, Z])."""
    return [read_h5(layout.volume_path(root, name)) for name in names]
