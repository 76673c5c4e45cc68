"""The public releases ``medfss prepare`` reads: how to find each one's cases and read a case.

A :class:`SourceSpec` per release (``SOURCES``): CHAOS (DICOM + PNG ground
truth), Synapse / BTCV (NIfTI), MS-CMRSeg (NIfTI) and any folder of NIfTI
image/label pairs. A reader returns the volume in its source intensities on
its source grid, slices along the last axis: NIfTI sources keep their voxel
order (only a through-plane axis that is not last is moved last); CHAOS
DICOM is flipped, never permuted, to LAS.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfss.data.prepare.dicom import DicomSeries, read_dicom_series
from medfss.data.prepare.grid import MR_SPACING, flip_to_axcodes, move_slice_axis_last
from medfss.errors import ConfigError, InputFileError, LabelMapError

if TYPE_CHECKING:
    from medfss.data.datasets import DatasetSpec

# CHAOS ground-truth grey levels (organisers' ranges) -> CHAOST2 labels
CHAOS_PNG_RANGES = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))


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


# ------------------------------------------------------------------ CHAOS


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


# ------------------------------------------------------------ Synapse, MS-CMRSeg


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


# ------------------------------------------------------------- NIfTI pairs


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
