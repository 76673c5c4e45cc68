"""Supervoxel pseudolabels for ADNet's self-supervised training (Hansen et al. 2022, sec. 3).

ADNet replaces SSL-ALPNet's 2D superpixels by 3D supervoxels, so that a
pseudolabel spans several slices: support and query of an episode are two
different slices through the same supervoxel, as support and query of a
real episode are two slices through the same organ.

The reference implementation runs a 3D variant of Felzenszwalb's graph
segmentation with anisotropic voxel spacing. scikit-image has Felzenszwalb
in 2D only, so here the volume is cut by 3D SLIC (k-means in intensity and
millimetre space, which takes the spacing as the reference's graph does)
inside the body, then, as for superpixels, split into face-connected pieces
and every piece under ``min_size`` voxels is merged into the neighbour it
shares most faces with (or dropped if it has none). Each supervoxel is thus
one 3D face-connected region of at least ``min_size_for`` voxels.

Shapes: H W spatial, D slices (slice axis last, as in :class:`Volume`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np
from skimage.measure import label as connected_components
from skimage.segmentation import slic

from medfss.data.datasets import Volume
from medfss.data.superpixels import REFERENCE_PIXELS, body_mask, body_threshold, merge_small_regions

ALGORITHM_VERSION = 1  # bump when the output of the code below changes: stale caches are then rebuilt


@dataclass(frozen=True)
class SupervoxelConfig:
    """Settings of the supervoxel pseudolabels; their :attr:`key` names the cache files.

    ``segments`` is SLIC's target count per volume (inside the body); with
    CHAOST2's 256 x 256 x ~30 volumes 200 segments give pieces of a few
    thousand voxels spanning 3-6 slices. ``min_size`` 5000 voxels (at 256 x
    256 in-plane) is the size the reference gives its 3D Felzenszwalb.
    """

    kind: ClassVar[str] = "supervoxel"  # for messages
    seconds_per_volume: ClassVar[float] = 3.0  # per core, CHAOST2 256 x 256 x ~30 MRI, measured (3D SLIC dominates)

    segments: int = 200
    compactness: float = 0.1  # SLIC's weight of space against intensity (z-scored intensities)
    sigma: float = 1.0  # Gaussian pre-smoothing, in mm (SLIC scales it by the spacing)
    min_size: int = 5000  # minimum supervoxel size in voxels at 256 x 256 in-plane (scaled with it)
    body_threshold: float = 0.04  # as SuperpixelConfig: the body is found slice by slice
    body_smoothing: float = 1.5

    def __post_init__(self):
        for name, ok, rule in (("segments", isinstance(self.segments, int) and self.segments >= 1, "an integer >= 1"),
                               ("compactness", self.compactness > 0, "> 0"), ("sigma", self.sigma >= 0, ">= 0"),
                               ("min_size", isinstance(self.min_size, int) and self.min_size >= 1,
                                "an integer >= 1 (voxels at 256 x 256 in-plane)"),
                               ("body_threshold", 0 < self.body_threshold < 1, "in (0, 1)"),
                               ("body_smoothing", self.body_smoothing >= 0, ">= 0")):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    def to_json(self) -> str:
        """Canonical JSON of the settings and the algorithm version (stored in each cache file)."""
        return json.dumps({"kind": "supervoxels", **asdict(self), "algorithm_version": ALGORITHM_VERSION},
                          sort_keys=True)

    @property
    def key(self) -> str:
        """A short hash, stable across runs and machines."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    def scaled(self, factor: float) -> SupervoxelConfig:
        """Settings for supervoxels about ``factor`` times larger: ``min_size`` times it, ``segments`` divided."""
        if factor == 1:
            return self  # the same cache key, whatever number types the settings were given in
        return replace(self, min_size=max(1, round(self.min_size * factor)),
                       segments=max(1, round(self.segments / factor)))

    def min_size_for(self, shape: tuple[int, int, int]) -> int:
        """``min_size`` for a volume of ``shape``: proportional to its in-plane pixel count."""
        return max(1, round(self.min_size * shape[0] * shape[1] / REFERENCE_PIXELS))

    def compute(self, volume: Volume) -> np.ndarray:
        """The supervoxels of ``volume`` (what :func:`~medfss.data.superpixels.superpixels_for_volume` caches)."""
        return compute_supervoxels(volume.image, volume.spacing, self)


def compute_supervoxels(image: np.ndarray, spacing: tuple[float, float, float],
                        params: SupervoxelConfig = SupervoxelConfig()) -> np.ndarray:
    """Supervoxels of a volume ``[H, W, D]`` with voxel ``spacing`` (mm): int32 ``[H, W, D]``.

    0 is outside the body; labels 1..n are face-connected 3D regions of at
    least ``params.min_size_for(image.shape)`` voxels.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be a volume [H, W, D], got shape {image.shape}")
    threshold = body_threshold(image, params.body_threshold)
    body = np.stack([body_mask(image[..., z], threshold, params.body_smoothing)
                     for z in range(image.shape[-1])], axis=-1)  # [H, W, D]
    if not body.any():
        return np.zeros(image.shape, dtype=np.int32)
    segments = slic(image.astype(np.float64), n_segments=params.segments, compactness=params.compactness,
                    sigma=params.sigma, spacing=np.asarray(spacing, dtype=float), mask=body, channel_axis=None,
                    start_label=1)  # [H, W, D], 0 outside the mask
    pieces = connected_components(segments, background=0, connectivity=1)  # face-connected pieces
    return merge_small_regions(pieces, params.min_size_for(image.shape))
