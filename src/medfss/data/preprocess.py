"""Preprocessing of a scan for inference: orientation and slicing axis.

Pure array functions (no files): :mod:`medfss.scan_segmentation` composes them
with the intensity normalisation of :mod:`medfss.data.intensity`.

* Orientation: a volume is turned into the model's working voxel order by
  axis permutations and flips only (no resampling), and a prediction is
  turned back with the inverse: the output lies on the scan's own grid. The
  working order is the one the model was trained in (a network is not
  invariant to flips: a CHAOST2 model has only seen LAS slices), recorded in
  its checkpoint (:func:`volumes_orientation`); RAS+ when unknown. Inside this
  module and its callers, "canonical" means that working order.
* Slicing axis: the through-plane axis, the one with the largest spacing
  (the last of them on ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np

DEFAULT_ORIENTATION = "RAS"  # nibabel's canonical order, for models that do not record theirs
DIRECTIONS = {"L": "left-right (sagittal slices)", "A": "posterior-anterior (coronal slices)",
              "S": "inferior-superior (axial slices)"}  # by the axis code's R/L, A/P, S/I pair
OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


@dataclass(frozen=True)
class Reorientation:
    """The axis permutation and flips between a scan's voxel order and a canonical one.

    ``ornt`` is nibabel's orientation transform from the scan to canonical
    (row i: the scan axis i goes to canonical axis ``ornt[i, 0]``, flipped if
    ``ornt[i, 1] == -1``); ``shape`` is the scan's shape; ``axcodes`` names
    the canonical order (e.g. ``"RAS"``: axis 0 runs to the right, 1 to the
    front, 2 up).
    """

    ornt: np.ndarray  # [3, 2]
    shape: tuple[int, int, int]
    axcodes: str = DEFAULT_ORIENTATION

    @classmethod
    def of(cls, affine: np.ndarray, shape: tuple[int, ...], axcodes: str = DEFAULT_ORIENTATION
           ) -> "Reorientation":
        start = nib.orientations.io_orientation(affine)
        end = nib.orientations.axcodes2ornt(tuple(check_axcodes(axcodes)))
        return cls(nib.orientations.ornt_transform(start, end), tuple(int(s) for s in shape[:3]), axcodes)

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

    def direction(self, canonical_axis: int) -> str:
        """The anatomical direction along canonical axis ``canonical_axis``, e.g. "inferior-superior (axial slices)"."""
        code = self.axcodes[canonical_axis]
        return DIRECTIONS.get(code) or DIRECTIONS[OPPOSITE[code]]

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


def check_axcodes(axcodes: str) -> str:
    """``axcodes`` if it names a voxel order (one of R/L, A/P, S/I each, e.g. "LAS"), else ValueError."""
    pairs = sorted(OPPOSITE[c] + c if c in "LPI" else c + OPPOSITE[c] for c in axcodes if c in OPPOSITE)
    if len(axcodes) != 3 or pairs != ["AP", "RL", "SI"]:
        raise ValueError(f"orientation must be three axis codes, one of R/L, A/P and S/I each "
                         f"(e.g. RAS or LAS), got {axcodes!r}")
    return axcodes


def volumes_orientation(affines: Sequence[np.ndarray]) -> str | None:
    """The voxel order (axis codes, e.g. "LAS") shared by volumes with these affines; None if mixed.

    Models learn on slices cut from the stored arrays, so this is the order a
    scan must be put in before a model trained on these volumes sees it.
    """
    codes = {"".join(nib.orientations.aff2axcodes(affine)) for affine in affines}
    return codes.pop() if len(codes) == 1 else None


def through_plane_axis(spacing: tuple[float, float, float]) -> int:
    """The axis with the largest spacing; on ties the last of them."""
    return max(range(3), key=lambda axis: (spacing[axis], axis))
