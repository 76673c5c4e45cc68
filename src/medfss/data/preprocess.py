"""Preprocessing of a scan for inference: orientation, slicing axis, intensities.

Pure array functions (no files): :mod:`medfss.scan_segmentation` composes them.

* Orientation: a volume is turned into the closest canonical (RAS+) voxel
  order by axis permutations and flips only (no resampling), and a prediction
  is turned back with the inverse: the output lies on the scan's own grid.
* Slicing axis: the through-plane axis, the one with the largest spacing
  (the axial axis on ties: 2 in canonical order).
* Intensities: MR is z-scored per volume; CT is first clipped to a window
  (default the abdominal window [-125, 275] HU of the SSL-ALPNet SABS
  preprocessing), then z-scored. ``auto`` calls a scan CT when its minimum is
  below -500 (air in Hounsfield units; MR intensities are non-negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from medfss.data.datasets import zscore

MODALITIES = ("auto", "MR", "CT")
CT_WINDOW = (-125.0, 275.0)  # HU, the abdominal window of the SSL-ALPNet SABS preprocessing
CT_AIR_THRESHOLD = -500.0  # a minimum below this is air in HU: the scan is CT


@dataclass(frozen=True)
class Reorientation:
    """The axis permutation and flips between a scan's voxel order and canonical RAS+ order.

    ``ornt`` is nibabel's orientation transform from the scan to canonical
    (row i: the scan axis i goes to canonical axis ``ornt[i, 0]``, flipped if
    ``ornt[i, 1] == -1``); ``shape`` is the scan's shape.
    """

    ornt: np.ndarray  # [3, 2]
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, affine: np.ndarray, shape: tuple[int, ...]) -> "Reorientation":
        start = nib.orientations.io_orientation(affine)
        end = nib.orientations.axcodes2ornt(("R", "A", "S"))
        return cls(nib.orientations.ornt_transform(start, end), tuple(int(s) for s in shape[:3]))

    @property
    def inverse_ornt(self) -> np.ndarray:
        """The transform from canonical order back to the scan's."""
        inverse = np.empty_like(self.ornt)
        for axis, (target, flip) in enumerate(self.ornt):
            inverse[int(target)] = (axis, flip)
        return inverse

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        shape = [0, 0, 0]
        for axis, (target, _) in enumerate(self.ornt):
            shape[int(target)] = self.shape[axis]
        return tuple(shape)

    def canonical_axis(self, axis: int) -> int:
        """The canonical axis that scan axis ``axis`` becomes."""
        return int(self.ornt[axis, 0])

    def scan_axis(self, canonical_axis: int) -> int:
        """The scan axis that becomes canonical axis ``canonical_axis``."""
        return int(self.inverse_ornt[canonical_axis, 0])

    def is_flipped(self, axis: int) -> bool:
        """Whether scan axis ``axis`` runs against its canonical direction."""
        return bool(self.ornt[axis, 1] == -1)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """[X, Y, Z, ...] in the scan's voxel order -> canonical order (a view where possible)."""
        return nib.orientations.apply_orientation(array, self.ornt)

    def to_scan(self, array: np.ndarray) -> np.ndarray:
        """[X, Y, Z, ...] in canonical order -> the scan's voxel order."""
        return nib.orientations.apply_orientation(array, self.inverse_ornt)

    def canonical_spacing(self, spacing: tuple[float, ...]) -> tuple[float, float, float]:
        out = [0.0, 0.0, 0.0]
        for axis, (target, _) in enumerate(self.ornt):
            out[int(target)] = float(spacing[axis])
        return tuple(out)

    def range_to_canonical(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        """Half-open slice range ``start:stop`` of scan axis ``axis`` -> of its canonical axis."""
        if self.is_flipped(axis):
            n = self.shape[axis]
            return n - stop, n - start
        return start, stop

    def range_to_scan(self, canonical_axis: int, start: int, stop: int) -> tuple[int, int]:
        """Half-open slice range of canonical axis ``canonical_axis`` -> of its scan axis."""
        axis = self.scan_axis(canonical_axis)
        if self.is_flipped(axis):
            n = self.shape[axis]
            return n - stop, n - start
        return start, stop


def through_plane_axis(spacing: tuple[float, float, float]) -> int:
    """The axis with the largest spacing; on ties the last of them (axial in canonical order)."""
    return max(range(3), key=lambda axis: (spacing[axis], axis))


def detect_modality(image: np.ndarray) -> str:
    """``"CT"`` when the minimum is below -500 (air in HU), else ``"MR"``."""
    return "CT" if float(image.min()) < CT_AIR_THRESHOLD else "MR"


def normalize_intensity(image: np.ndarray, modality: str, ct_window: tuple[float, float] = CT_WINDOW
                        ) -> tuple[np.ndarray, str]:
    """The training intensity normalisation, and the modality used (``auto`` resolved).

    MR: z = (x - mean) / std over the volume. CT: x clipped to ``ct_window``, then z-scored.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "auto":
        modality = detect_modality(image)
    if modality == "CT":
        low, high = ct_window
        if not low < high:
            raise ValueError(f"ct_window must be (low, high) with low < high, got {ct_window}")
        image = np.clip(image, low, high)
    return zscore(image), modality
