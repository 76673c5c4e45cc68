"""Data set registry and volume loading.

A :class:`DatasetSpec` says where a data set's files are and what its labels
mean: the map from raw label codes to class indices, the classes evaluated by
the few-shot protocol, the setting-2 organ groups and the 5 folds. The
registry is an explicit dict; a data set in the nnU-Net v2 raw layout
(``imagesTr/``, ``labelsTr/``, ``dataset.json``) is read by passing its folder
as the data set name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from medfss.data.intensity import zscore
from medfss.data.io import read_nifti
from medfss.errors import ConfigError, InputFileError, LabelMapError

DATA_ROOT_ENV = "MEDFSS_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("../shared/data")


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else ``$MEDFSS_DATA_ROOT``, else ``../shared/data``."""
    if data_root is not None:
        return Path(data_root)
    return Path(os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT))


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set lives and what its labels mean."""

    name: str
    folder: str  # sub-folder of the data root (or an absolute folder)
    modality: str  # "MR" or "CT": selects intensity normalisation
    classes: dict[int, str]  # class index -> name; 0 is background and not listed
    eval_classes: tuple[str, ...]  # classes the few-shot protocol evaluates
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # setting-2 test groups
    raw_codes: dict[int, int] = field(default_factory=dict)  # raw label value -> class index
    layout: str = "medfss"  # "medfss": image_{id}/label_{id}; "nnunet": imagesTr/labelsTr
    file_ending: str = ".nii.gz"
    n_folds: int = 5

    def class_index(self, name: str) -> int:
        for index, class_name in self.classes.items():
            if class_name == name:
                return index
        raise ConfigError(f"{self.name}: unknown class {name!r}; classes are {list(self.classes.values())}")

    def group_of(self, class_name: str) -> tuple[str, ...]:
        """The setting-2 group that contains ``class_name`` (the class alone if ungrouped)."""
        for members in self.groups.values():
            if class_name in members:
                return members
        return (class_name,)

    def label_lookup(self) -> dict[int, int]:
        """Raw label value -> class index, background included."""
        if self.raw_codes:
            return {0: 0, **self.raw_codes}
        return {0: 0, **{index: index for index in self.classes}}


CHAOST2 = DatasetSpec(
    name="CHAOST2",
    folder="CHAOST2",
    modality="MR",
    classes={1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"},
    eval_classes=("left_kidney", "right_kidney", "spleen", "liver"),
    groups={"upper": ("liver", "spleen"), "lower": ("left_kidney", "right_kidney")},
)

CMR = DatasetSpec(
    name="CMR",
    folder="CMR",
    modality="MR",
    classes={1: "LV-MYO", 2: "LV-BP", 3: "RV"},
    raw_codes={200: 1, 500: 2, 600: 3},
    eval_classes=("LV-BP", "LV-MYO", "RV"),
    groups={},  # all three classes share slices: setting 2 is impossible (SSL-ALPNet sec. 4)
)

SABS = DatasetSpec(
    name="SABS",
    folder="SABS",
    modality="CT",
    classes={1: "spleen", 2: "right_kidney", 3: "left_kidney", 4: "gallbladder", 5: "esophagus",
             6: "liver", 7: "stomach", 8: "aorta", 9: "IVC", 10: "portal_splenic_vein",
             11: "pancreas", 12: "right_adrenal", 13: "left_adrenal"},
    eval_classes=("left_kidney", "right_kidney", "spleen", "liver"),
    groups={"upper": ("liver", "spleen"), "lower": ("left_kidney", "right_kidney")},
)

REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in (CHAOST2, CMR, SABS)}


def nnunet_spec(folder: str | os.PathLike) -> DatasetSpec:
    """A spec for a data set in the nnU-Net v2 raw layout, read from its ``dataset.json``."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise InputFileError(f"{meta_path}: file not found (not an nnU-Net raw data set)") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{meta_path}: invalid JSON ({exc})") from exc
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputFileError(f"{meta_path}: missing the 'labels' map")
    classes = {}
    for name, value in labels.items():
        if isinstance(value, list):  # region-based labels are not few-shot classes
            raise InputFileError(f"{meta_path}: region label {name!r} is not supported")
        if int(value) != 0:
            classes[int(value)] = str(name)
    channels = meta.get("channel_names", meta.get("modality", {"0": "MR"}))
    modality = "CT" if str(channels.get("0", "")).upper() == "CT" else "MR"
    return DatasetSpec(
        name=folder.name,
        folder=str(folder.resolve()),
        modality=modality,
        classes=dict(sorted(classes.items())),
        eval_classes=tuple(classes[k] for k in sorted(classes)),
        layout="nnunet",
        file_ending=meta.get("file_ending", ".nii.gz"),
    )


def get_dataset_spec(name: str) -> DatasetSpec:
    """A registered data set by name, or an nnU-Net raw folder given by path."""
    if name in REGISTRY:
        return REGISTRY[name]
    if Path(name, "dataset.json").is_file():
        return nnunet_spec(name)
    if Path(name).is_dir():
        raise InputFileError(f"{name}: no dataset.json in this folder (not an nnU-Net raw data set); "
                             f"registered data sets are {sorted(REGISTRY)}")
    if os.sep in name or name.startswith("."):
        raise InputFileError(f"{name}: folder not found (give an nnU-Net raw data set folder, or one of "
                             f"{sorted(REGISTRY)})")
    raise ConfigError(f"unknown data set {name!r}; choose one of {sorted(REGISTRY)} "
                      "or give the folder of an nnU-Net raw data set (with dataset.json)")


@dataclass(frozen=True)
class Volume:
    """One loaded scan: z-scored image and class-index label, slice axis last."""

    case_id: str
    image: np.ndarray  # [H, W, D] float32, z-scored per volume
    label: np.ndarray  # [H, W, D] int64 class indices (0 = background)
    spacing: tuple[float, float, float]  # mm, (H, W, D) axes
    affine: np.ndarray  # [4, 4]
    image_path: Path
    label_path: Path

    @property
    def num_slices(self) -> int:
        return self.image.shape[-1]

    @cached_property
    def classes_per_slice(self) -> list[frozenset[int]]:
        """The class indices present on each slice (background excluded)."""
        return [frozenset(int(c) for c in np.unique(self.label[..., z]) if c != 0)
                for z in range(self.num_slices)]

    def class_slices(self, class_index: int) -> np.ndarray:
        """Indices of the slices that contain ``class_index``, ascending."""
        return np.flatnonzero((self.label == class_index).any(axis=(0, 1)))

    def class_extent(self, class_index: int) -> tuple[int, int]:
        """First and last slice (inclusive) containing ``class_index``."""
        slices = self.class_slices(class_index)
        if slices.size == 0:
            raise LabelMapError(f"{self.label_path}: class {class_index} is absent from this volume")
        return int(slices[0]), int(slices[-1])


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    image: Path
    label: Path


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: "case2" before "case10"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


class Dataset:
    """The volumes of one data set under a data root, with its folds."""

    def __init__(self, spec: DatasetSpec, data_root: str | os.PathLike | None = None):
        self.spec = spec
        self.root = Path(spec.folder) if Path(spec.folder).is_absolute() else \
            resolve_data_root(data_root) / spec.folder
        if not self.root.is_dir():
            raise InputFileError(f"{self.root}: data set folder not found (set --data-root or ${DATA_ROOT_ENV})")
        self.cases = self._discover()
        if not self.cases:
            raise InputFileError(f"{self.root}: no image/label pairs found")

    @classmethod
    def from_name(cls, name: str, data_root: str | os.PathLike | None = None) -> "Dataset":
        return cls(get_dataset_spec(name), data_root)

    def _discover(self) -> list[CaseFiles]:
        ending = self.spec.file_ending
        if self.spec.layout == "nnunet":
            images = self.root / "imagesTr"
            labels = self.root / "labelsTr"
            cases = []
            for label in sorted(labels.glob(f"*{ending}"), key=lambda p: natural_key(p.name)):
                case_id = label.name[: -len(ending)]
                cases.append(CaseFiles(case_id, images / f"{case_id}_0000{ending}", label))
            return cases
        cases = []
        for image in self.root.glob(f"image_*{ending}"):
            case_id = image.name[len("image_"): -len(ending)]
            cases.append(CaseFiles(case_id, image, self.root / f"label_{case_id}{ending}"))
        return sorted(cases, key=lambda c: natural_key(c.case_id))

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def fold_case_ids(self, fold: int) -> list[str]:
        """Test volumes of ``fold``: the literature's consecutive groups of the sorted ids."""
        n = self.spec.n_folds
        if not 0 <= fold < n:
            raise ConfigError(f"fold must be in 0..{n - 1}, got {fold}")
        return [str(c) for c in np.array_split(np.array(self.case_ids, dtype=object), n)[fold]]

    def train_case_ids(self, fold: int, validation_fold: int | None = None) -> list[str]:
        """Training volumes of ``fold``: every volume outside its test group (and ``validation_fold``'s)."""
        held_out = set(self.fold_case_ids(fold))
        if validation_fold is not None:
            held_out |= set(self.fold_case_ids(validation_fold))
        return [c for c in self.case_ids if c not in held_out]

    def load(self, case_id: str) -> Volume:
        files = {c.case_id: c for c in self.cases}.get(case_id)
        if files is None:
            raise ConfigError(f"{self.spec.name}: no case {case_id!r}; cases are {self.case_ids}")
        return load_volume(files.image, files.label, self.spec, case_id)


def map_labels(raw: np.ndarray, spec: DatasetSpec, path: Path) -> np.ndarray:
    """Raw label values -> class indices; unknown or non-integer values are an error."""
    lookup = spec.label_lookup()
    values = np.unique(raw)
    if not np.allclose(values, np.round(values)):
        raise LabelMapError(f"{path}: label values must be integers, found {values[:5].tolist()}")
    unknown = sorted(int(v) for v in values if int(round(v)) not in lookup)
    if unknown:
        raise LabelMapError(f"{path}: label values {unknown} are not in the {spec.name} label map "
                            f"{sorted(lookup)}")
    raw_int = np.round(raw).astype(np.int64)
    table = np.zeros(max(lookup) + 1, dtype=np.int64)
    for raw_value, index in lookup.items():
        table[raw_value] = index
    return table[raw_int]


def load_volume(image_path: Path, label_path: Path, spec: DatasetSpec, case_id: str) -> Volume:
    image = read_nifti(image_path)
    label = read_nifti(label_path)
    if image.array.shape != label.array.shape:
        raise InputFileError(f"{label_path}: shape {label.array.shape} differs from its image "
                             f"{image_path.name} {image.array.shape}")
    return Volume(
        case_id=case_id,
        image=zscore(image.array),
        label=map_labels(label.array, spec, label_path),
        spacing=tuple(image.spacing),
        affine=image.affine,
        image_path=image_path,
        label_path=label_path,
    )
