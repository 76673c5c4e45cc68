"""The names of label values, for legends, printouts and summaries.

A label value means nothing to a reader ("label 6"); its name comes from,
in this order:

1. names given by the user (``--label-names liver,spleen``, one per label);
2. a label map beside the support mask (in its folder or the one above, as
   in the nnU-Net raw layout): an nnU-Net ``dataset.json`` (v2
   ``{"labels": {"liver": 1}}`` or v1 ``{"labels": {"1": "liver"}}``) or the
   ``dataset_card.json`` that ``medfss prepare`` writes (``label_map``);
3. the class names of a registered data set (CHAOST2, CMR, SABS) when the
   mask lies in its folder;
4. ``label N`` when none of these names the value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from medfss.errors import ConfigError, InputFileError

LABEL_MAP_FILES = ("dataset.json", "dataset_card.json")


def parse_names(text: str) -> list[str]:
    """``"liver, spleen"`` -> ``["liver", "spleen"]`` (empty entries refused)."""
    names = [t.strip() for t in text.split(",")]
    if any(not n for n in names):
        raise ConfigError(f"--label-names takes comma-separated names, one per --label, got {text!r}")
    return names


def read_label_map(path: str | os.PathLike) -> dict[int, str]:
    """Value -> name from an nnU-Net ``dataset.json`` or a ``medfss prepare`` ``dataset_card.json``."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: unreadable label map ({exc})") from None
    table = meta.get("label_map", meta.get("labels")) if isinstance(meta, dict) else None
    if not isinstance(table, dict):
        raise InputFileError(f"{path}: no 'labels' or 'label_map' table")
    names = {}
    for key, value in table.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # nnU-Net v2: name -> value
            names[int(value)] = str(key)
        elif str(key).isdigit():  # nnU-Net v1 and prepare's card: value -> name
            names[int(key)] = str(value)
    return names


def find_label_map(mask_path: str | os.PathLike) -> Path | None:
    """The first label map file in the mask's folder or the folder above, or None."""
    folder = Path(mask_path).resolve().parent
    for where in (folder, folder.parent):
        for name in LABEL_MAP_FILES:
            if (where / name).is_file():
                return where / name
    return None


def registered_names(folder_name: str) -> dict[int, str]:
    """Raw label value -> class name of the registered data set stored in a folder of this name ({} if none)."""
    from medfss.data.datasets import REGISTRY

    spec = next((s for s in REGISTRY.values() if s.folder == folder_name), None)
    if spec is None:
        return {}
    return {raw: spec.classes[index] for raw, index in spec.label_lookup().items() if index != 0}


def label_names(labels: Sequence[int], given: Sequence[str] | None = None,
                mask_path: str | os.PathLike | None = None) -> dict[int, str]:
    """Label value -> name for ``labels``, by the rules of the module docstring."""
    if given is not None:
        if len(given) != len(labels):
            raise ConfigError(f"give one name per label: {len(labels)} labels {list(labels)} but "
                              f"{len(given)} names {list(given)}")
        return dict(zip(labels, given))
    known = {}
    if mask_path is not None:
        found = find_label_map(mask_path)
        known = read_label_map(found) if found is not None else registered_names(Path(mask_path).parent.name)
    return {label: known.get(label, f"label {label}") for label in labels}
