"""Which modality a scan is, which one a model knows, and how each was decided.

A scan's modality selects its intensity normalisation
(:func:`medfss.data.intensity.normalise_intensity`) and is checked against
the model's. It is decided, in this order (the rule used is recorded):

1. given by the user (``--modality MR`` or ``CT``);
2. recorded by ``medfss prepare``: a ``dataset_card.json`` beside the file
   lists its volume with the modality it was prepared as (a prepared CT is
   windowed to [0, 255], so its intensities no longer say CT);
3. Hounsfield units: CT when the minimum is below -500 (air is -1000 HU;
   MR intensities are non-negative);
4. otherwise MR, with the caveat that a CT normalised elsewhere looks the same.

A model knows the modality of the data set it was trained on (its
checkpoint's ``data.dataset``: a registered set, or an nnU-Net folder's
``dataset.json``); a model whose data set cannot be found knows "unknown"
and is never warned about.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREPARE_CARD = "dataset_card.json"


@dataclass(frozen=True)
class ModalityDecision:
    """A scan's modality ("MR" or "CT") and the rule that decided it, in words."""

    modality: str
    rule: str


def prepared_modality(path: str | os.PathLike) -> tuple[str, Path] | None:
    """The modality ``medfss prepare`` recorded for the file at ``path`` and the card's path, or None."""
    path = Path(path)
    card = path.parent / PREPARE_CARD
    if not card.is_file():
        return None
    try:
        volumes = json.loads(card.read_text()).get("volumes", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    for record in volumes:
        if isinstance(record, dict) and f"image_{record.get('id')}.nii.gz" == path.name \
                and record.get("modality") in ("MR", "CT"):
            return record["modality"], card
    return None


def decide_modality(image: np.ndarray, given: str, path: str | os.PathLike) -> ModalityDecision:
    """The modality of the scan read from ``path`` (``given``: "auto", "MR" or "CT"), by the module's rules."""
    from medfss.data.intensity import CT_AIR_THRESHOLD, detect_modality

    if given != "auto":
        return ModalityDecision(given, "given (--modality)")
    prepared = prepared_modality(path)
    if prepared is not None:
        return ModalityDecision(prepared[0], f"recorded by medfss prepare in {prepared[1]}")
    low = float(image.min())
    if detect_modality(image) == "CT":
        return ModalityDecision("CT", f"Hounsfield units: minimum {low:.0f} < {CT_AIR_THRESHOLD:.0f} (air)")
    return ModalityDecision("MR", f"minimum {low:.4g} >= {CT_AIR_THRESHOLD:.0f}, so not Hounsfield units; a CT "
                                  "normalised beforehand looks the same: pass --modality CT for one")


def model_modality(dataset: str | None) -> str:
    """The modality of the data set a model was trained on ("MR", "CT" or "unknown")."""
    from medfss.data.datasets import REGISTRY, nnunet_spec
    from medfss.errors import MedfssError

    if dataset is None:
        return "unknown"
    if dataset in REGISTRY:
        return REGISTRY[dataset].modality
    try:
        return nnunet_spec(dataset).modality
    except MedfssError:
        return "unknown"


def modality_warning(scan: ModalityDecision, model: str, what: str) -> str | None:
    """A warning when the scan's modality differs from the model's known one; ``what`` names the scan."""
    if model == "unknown" or scan.modality == model:
        return None
    return (f"{what} is {scan.modality} ({scan.rule}) but the model was trained on {model}: expect poor "
            f"results; use a model trained on {scan.modality} (medfss train, see the README)")
