"""What ``medfss prepare`` writes beside the volumes: ``dataset_card.json`` and ``README.md``.

The card records the source, every volume (source files, shapes, spacings,
label values), the label map, the settings and the steps in words, and the
command line that reproduces the folder, with the date, medfss version and
git revision; the README says the same for a reader.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfss import __version__
from medfss.data.intensity import CT_SCALE, MR_TOP_PERCENT
from medfss.data.prepare.grid import FIT_FOV_FRACTION
from medfss.data.prepare.sources import SOURCES, SourceSpec

if TYPE_CHECKING:
    from medfss.data.datasets import DatasetSpec
    from medfss.data.prepare import PrepareConfig


def raw_label_names(spec: DatasetSpec | None) -> dict[int, str]:
    """Raw label value -> name, background included."""
    if spec is None:
        return {}
    return {raw: ("background" if index == 0 else spec.classes[index])
            for raw, index in sorted(spec.label_lookup().items())}


def command_line(settings: PrepareConfig, input_dir: Path, out_dir: Path, image_glob: str | None,
                 label_glob: str | None) -> str:
    """The ``medfss prepare`` command that reproduces this output (defaults left out)."""
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


def dataset_card(spec: SourceSpec, settings: PrepareConfig, records: list[dict], skipped: list[str],
                 dataset: DatasetSpec | None, input_dir: Path, command: str) -> dict:
    """What ``dataset_card.json`` holds, from the per-volume ``records`` of one run."""
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


def preprocessing_steps(settings: PrepareConfig, modalities: set[str]) -> list[str]:
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
    """The folder's ``README.md``: the card in words."""
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
