"""The in-plane grid of ``medfss prepare``: spacing, resampling, crop/pad, axis order.

Every function returns the array with its affine composed with the step's
index map, so that a voxel keeps its physical position through resampling,
cropping, padding, permutation and flips. Images are interpolated linearly
(``order=1``), labels by nearest neighbour (``order=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MR_SPACING = 1.25  # mm, in-plane target spacing of the CHAOST2 / CMR preprocessing
FIT_FOV_FRACTION = 448 / 512  # Synapse: the central FOV kept, 512 px minus a 32 px border
DICOM_TARGET_AXCODES = ("L", "A", "S")  # dcm2nii's storage order, that of the shared CHAOST2


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Spacing of each voxel axis: the length of the affine's columns."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def fit_spacing(shape: Sequence[int], affine: np.ndarray, size: int) -> float:
    """The in-plane spacing at which the central FIT_FOV_FRACTION of the larger in-plane FOV fills ``size``."""
    fov = float((voxel_spacing(affine)[:2] * np.array(shape[:2])).max())
    return fov * FIT_FOV_FRACTION / size


def resample_inplane(array: np.ndarray, affine: np.ndarray, spacing: float, *, order: int,
                     slice_spacing: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resample axes 0 and 1 to ``spacing`` mm (and axis 2 to ``slice_spacing`` if given).

    Centre-aligned grids: along an axis of n voxels at spacing s, the output
    has m = round(n s / t) voxels at spacing t and output index i samples input
    index ``c_in + (i - c_out) t / s`` (c = (n - 1) / 2), so the field of view
    keeps its centre. The affine is composed with that index map.
    ``order``: 1 linear (images), 0 nearest (labels). An axis already at the
    target spacing is not touched.
    """
    from scipy import ndimage

    array = np.asarray(array)  # [X, Y, Z]
    old = voxel_spacing(affine)
    new = np.array([spacing, spacing, old[2] if slice_spacing is None else slice_spacing], dtype=np.float64)
    if (new <= 0).any():
        raise ValueError(f"target spacing must be positive, got {new.tolist()}")
    ratio = np.where(np.isclose(new, old, rtol=1e-6, atol=0), 1.0, new / old)  # input voxels per output voxel
    n_in = np.array(array.shape[:3])
    n_out = np.where(ratio == 1.0, n_in, np.maximum(1, np.round(n_in / ratio))).astype(int)
    offset = (n_in - 1) / 2 - (n_out - 1) / 2 * ratio
    if (ratio == 1.0).all():
        return array, np.asarray(affine, dtype=np.float64)
    out = ndimage.affine_transform(array, ratio, offset=offset, output_shape=tuple(n_out), order=order,
                                   mode="nearest", prefilter=False)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(ratio)
    index_map[:3, 3] = offset
    return out, np.asarray(affine, dtype=np.float64) @ index_map


def crop_or_pad_inplane(array: np.ndarray, affine: np.ndarray, size: int, pad_value: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop or pad axes 0 and 1 to ``size`` (integer shifts only, no interpolation).

    Output index j reads input index ``j + (n - size) // 2``; the affine gets
    the same translation.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    shift = [(n - size) // 2 for n in array.shape[:2]]
    if shift == [0, 0] and array.shape[:2] == (size, size):
        return array, affine
    out = np.full((size, size, *array.shape[2:]), pad_value, dtype=array.dtype)  # [X, Y, Z]
    src, dst = [], []
    for axis in range(2):
        lo = max(0, shift[axis])
        hi = min(array.shape[axis], shift[axis] + size)
        src.append(slice(lo, hi))
        dst.append(slice(lo - shift[axis], hi - shift[axis]))
    out[dst[0], dst[1]] = array[src[0], src[1]]
    translate = np.eye(4)
    translate[:2, 3] = shift
    return out, np.asarray(affine, dtype=np.float64) @ translate


def move_slice_axis_last(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put the through-plane axis (largest spacing, ties: the last) last; a permutation only."""
    from medfss.data.preprocess import through_plane_axis

    axis = through_plane_axis(tuple(voxel_spacing(affine)))
    if axis == 2:
        return array, affine
    order = [a for a in range(3) if a != axis] + [axis]
    permute = np.eye(4)[:, [*order, 3]]
    return np.transpose(array, order), np.asarray(affine, dtype=np.float64) @ permute


def flip_to_axcodes(array: np.ndarray, affine: np.ndarray, axcodes: Sequence[str] = DICOM_TARGET_AXCODES
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Flip (never permute) voxel axes so each runs along its closest direction in ``axcodes``.

    A flipped axis of n voxels maps output index j to input index n - 1 - j.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)  # [3, 2]: (RAS axis, +-1) per voxel axis
    wanted = {0: -1 if "L" in axcodes else 1, 1: 1 if "A" in axcodes else -1, 2: 1 if "S" in axcodes else -1}
    affine = np.asarray(affine, dtype=np.float64)
    for axis, (ras_axis, sign) in enumerate(ornt):
        if sign != wanted[int(ras_axis)]:
            array = np.flip(array, axis)
            flip = np.eye(4)
            flip[axis, axis] = -1
            flip[axis, 3] = array.shape[axis] - 1
            affine = affine @ flip
    return np.ascontiguousarray(array), affine
