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
   (:func:`medfss.data.intensity.zscore`). CT: clipped to the abdominal window
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

The parts: :mod:`.sources` (one finder and reader per public release),
:mod:`.dicom` (a DICOM series -> volume and affine), :mod:`medfss.data.intensity`
(step 2), :mod:`.grid` (step 3 and the axis moves of step 1) and :mod:`.card`
(``dataset_card.json`` and ``README.md``); this module runs them per volume
and writes the files. The ``prepare`` subcommand is built in :mod:`medfss.cli`.

Heavy modules (nibabel, scipy, pydicom, PIL, tqdm) are imported inside the
functions, so that building the ``medfss`` parser stays fast.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfss.data.intensity import CT_WINDOW, MODALITIES, MR_TOP_PERCENT, detect_modality, normalise_ct, normalise_mr
from medfss.data.prepare.card import card_readme, command_line, dataset_card
from medfss.data.prepare.grid import MR_SPACING, crop_or_pad_inplane, fit_spacing, resample_inplane, voxel_spacing
from medfss.data.prepare.sources import RawVolume, get_source
from medfss.errors import ConfigError, InputFileError, LabelMapError

if TYPE_CHECKING:
    import nibabel as nib

    from medfss.data.datasets import DatasetSpec


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides the output; saved in the dataset card."""

    source: str
    size: int = 256
    spacing: float | str = MR_SPACING  # in-plane mm, or "fit": FIT_FOV_FRACTION of the FOV fills `size`
    slice_spacing: float | None = None  # None keeps the slice spacing
    modality: str = "auto"  # "MR", "CT" or "auto" (CT when the minimum is below -500)
    mr_top_percent: float = MR_TOP_PERCENT
    ct_window: tuple[float, float] = CT_WINDOW  # HU

    def __post_init__(self):
        if self.size < 8:
            raise ConfigError(f"--size must be at least 8, got {self.size}")
        if self.spacing != "fit" and not (isinstance(self.spacing, (int, float)) and self.spacing > 0):
            raise ConfigError(f"--spacing must be a positive number of mm or 'fit', got {self.spacing!r}")
        if self.slice_spacing is not None and not self.slice_spacing > 0:
            raise ConfigError(f"--slice-spacing must be positive, got {self.slice_spacing}")
        if not 0 <= self.mr_top_percent < 100:
            raise ConfigError(f"--mr-top-percent must be in [0, 100), got {self.mr_top_percent}")
        if self.modality not in MODALITIES:
            raise ConfigError(f"--modality must be auto, MR or CT, got {self.modality!r}")


@dataclass(frozen=True)
class PreparedVolume:
    image: np.ndarray  # [X, Y, Z] float32, size x size in-plane
    label: np.ndarray  # [X, Y, Z] raw label values, uint8 or uint16
    affine: np.ndarray  # [4, 4]
    modality: str


def prepare_volume(raw: RawVolume, settings: PrepareConfig) -> PreparedVolume:
    """Intensities on the source grid, then the in-plane grid (image linear, label nearest), then crop/pad."""
    modality = detect_modality(raw.image) if settings.modality == "auto" else settings.modality
    image = (normalise_ct(raw.image, settings.ct_window) if modality == "CT"
             else normalise_mr(raw.image, settings.mr_top_percent))
    spacing = (fit_spacing(raw.image.shape, raw.affine, settings.size) if settings.spacing == "fit"
               else settings.spacing)
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
    settings = PrepareConfig(source=source, size=size, spacing=spec.spacing if spacing is None else spacing,
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
                        command or command_line(settings, input_dir, out_dir, image_glob, label_glob))
    write_text_atomic(json.dumps(card, indent=2) + "\n", out_dir / "dataset_card.json")
    write_text_atomic(card_readme(card), out_dir / "README.md")
    return card
