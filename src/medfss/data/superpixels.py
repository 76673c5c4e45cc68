"""Superpixel pseudolabels for self-supervised training (SSL-ALPNet, sec. 3.3).

SSL-ALPNet never sees a manual label during training: every slice is cut into
Felzenszwalb superpixels [Felzenszwalb & Huttenlocher 2004] and one of them
plays the part of a foreground class. Superpixels are computed per 2D slice,
inside the body only (air would give pseudolabels with nothing to learn), and
are guaranteed to be at least ``min_size`` pixels large so that a pseudolabel
always covers a piece of tissue worth a prototype.

Computing them takes about 1.5 s per CHAOST2 volume on one core, so they are cached: one
compressed ``.npz`` per (data set, case, parameter hash) in a folder the caller
puts beside its outputs, never beside the read-only inputs.

Shapes: H W spatial, D slices (slice axis last, as in :class:`Volume`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.segmentation import felzenszwalb
from tqdm.auto import tqdm

from medfss.data.datasets import Volume
from medfss.data.io import write_atomic
from medfss.validation import check_non_negative_number, check_positive_int, check_positive_number, require

log = logging.getLogger(__name__)

REFERENCE_PIXELS = 256 * 256  # slice size at which ``min_size`` is given
ALGORITHM_VERSION = 1  # bump when the output of the code below changes: stale caches are then rebuilt


@dataclass(frozen=True)
class SuperpixelConfig:
    """Settings of the superpixel pseudolabels; their :attr:`key` names the cache files.

    The defaults were tuned on CHAOST2 (z-scored T2-SPIR MRI, 256 x 256): a median of
    22 superpixels per slice (18-27 from the 10th to the 90th percentile), about 27
    on slices through the organs, following organ boundaries (78% of organ pixels
    fall in a superpixel whose majority is that organ). ``scale`` hardly changes the
    count because the size merge dominates, and above about 50 it cuts straight
    lines through organs; ``sigma`` between 1 and 1.5 gave the cleanest boundaries,
    2 blurred them.

    ``min_size`` 400 is the official code's. Trained ALPNets on CHAOST2 fold 0 favoured
    larger pseudolabels (results/alpnet_cpu-sp-*: min_size 200, 400, 800, 1600 gave
    57.9, 60.5, 62.0, 61.1 Dice; about 45, 22, 10 and 5 superpixels per organ slice);
    the default stays because every CPU table was trained with it.
    """

    kind: ClassVar[str] = "superpixel"  # for messages
    seconds_per_volume: ClassVar[float] = 1.5  # per core, 256 x 256 x 30 MRI: the first run's estimate

    scale: float = 5.0  # Felzenszwalb's k, in z-score units: larger favours larger regions
    sigma: float = 1.2  # Gaussian pre-smoothing of the slice (px)
    min_size: int = 400  # minimum superpixel size in px at 256 x 256 (scaled with the pixel count)
    body_threshold: float = 0.04  # body = above min + this fraction of the volume's [min, p99] range
    body_smoothing: float = 1.5  # Gaussian sigma (px) applied before thresholding the body

    def __post_init__(self):
        check_positive_number(self, "scale")
        check_non_negative_number(self, "sigma", "body_smoothing")
        check_positive_int(self, "min_size", hint="px at 256 x 256")
        require(isinstance(self.body_threshold, (int, float)) and 0 < self.body_threshold < 1, "body_threshold",
                f"is a fraction of the intensity range, in (0, 1); got {self.body_threshold!r}")

    def to_json(self) -> str:
        """Canonical JSON of the settings and the algorithm version (stored in each cache file)."""
        return json.dumps({**asdict(self), "algorithm_version": ALGORITHM_VERSION}, sort_keys=True)

    @property
    def key(self) -> str:
        """A short hash that is stable across runs and machines (unlike ``hash()``)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    def scaled(self, factor: float) -> SuperpixelConfig:
        """Settings for superpixels about ``factor`` times larger: ``min_size`` and Felzenszwalb's k times it."""
        if factor == 1:
            return self  # the same cache key, whatever number types the settings were given in
        return replace(self, min_size=max(1, round(self.min_size * factor)), scale=self.scale * factor)

    def min_size_for(self, shape: tuple[int, int]) -> int:
        """``min_size`` for a slice of ``shape``: proportional to its pixel count."""
        return max(1, round(self.min_size * shape[0] * shape[1] / REFERENCE_PIXELS))

    def compute(self, volume: Volume) -> np.ndarray:
        """The superpixels of ``volume`` (what :func:`superpixels_for_volume` caches)."""
        return compute_superpixels(volume.image, self)


def body_threshold(image: np.ndarray, fraction: float) -> float:
    """Intensity above which a voxel is body: ``min + fraction * (p99 - min)`` over the volume.

    Taken over the whole volume so that slices with little or no body (the first and
    last of a scan) are not thresholded inside their noise.
    """
    low = float(image.min())
    return low + fraction * (float(np.percentile(image, 99)) - low)


def body_mask(image: np.ndarray, threshold: float, smoothing: float) -> np.ndarray:
    """The body on one slice ``[H, W]``: smoothed threshold, largest component, holes filled.

    Smoothing makes the mask robust to noise in the air, at the cost of reaching
    1-2 px beyond the skin. Returns a bool ``[H, W]`` mask, all False where nothing
    exceeds ``threshold``.
    """
    above = ndi.gaussian_filter(image, smoothing) > threshold if smoothing > 0 else image > threshold
    components, count = ndi.label(above)
    if count == 0:
        return above
    largest = 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    return ndi.binary_fill_holes(components == largest)


def _relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Map the labels to 0, 1, ..., n in their order, keeping 0 as 0 (labels are non-negative).

    A lookup table over 0..max rather than ``np.unique``: unique sorts every
    voxel, which took 30 % of a CHAOST2 volume's supervoxel pass.
    """
    present = np.bincount(labels.ravel()) > 0  # [max + 1]
    # the rank of each present label among the present ones; 1-based when 0 is absent
    lookup = np.cumsum(present) - present[0]  # [max + 1]
    return lookup[labels].astype(np.int32)


def _contact_counts(labels: np.ndarray, n: int) -> np.ndarray:
    """Symmetric ``[n + 1, n + 1]`` counts of face-neighbour pairs (4 in 2D, 6 in 3D) between regions > 0."""
    counts = np.zeros((n + 1) * (n + 1), dtype=np.int64)
    for axis in range(labels.ndim):
        a = np.take(labels, np.arange(labels.shape[axis] - 1), axis=axis)
        b = np.take(labels, np.arange(1, labels.shape[axis]), axis=axis)
        touching = (a != b) & (a > 0) & (b > 0)
        counts += np.bincount(a[touching] * (n + 1) + b[touching], minlength=counts.size)
    counts = counts.reshape(n + 1, n + 1)
    return counts + counts.T


def merge_small_regions(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge every region smaller than ``min_size`` into its neighbour with the longest shared border.

    ``labels``: int ``[H, W]`` (or ``[H, W, D]``: supervoxels, faces instead of edges), 0 = outside
    (never merged into). The smallest region is
    merged first and sizes are updated as regions grow, so the result holds exactly:
    every label of the output has at least ``min_size`` pixels. A small region with no
    labelled face neighbour (an island) is dropped to 0. Returns int32 labels 1..n of
    the input's shape; regions connected through faces stay so.
    """
    labels = _relabel_consecutive(labels)
    n = int(labels.max())
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    contact = _contact_counts(labels, n)
    parent = np.arange(n + 1)
    while True:
        small = np.flatnonzero((sizes > 0) & (sizes < min_size))
        if small.size == 0:
            break
        region = small[np.argmin(sizes[small])]
        target = int(np.argmax(contact[region]))
        if contact[region, target] > 0:  # merge ``region`` into ``target``
            sizes[target] += sizes[region]
            contact[target] += contact[region]
            contact[:, target] += contact[:, region]
            contact[target, target] = 0
        else:  # an island: drop it
            target = 0
        parent[region] = target
        sizes[region] = 0
        contact[region] = 0
        contact[:, region] = 0
    while not np.array_equal(parent, parent[parent]):  # follow merge chains to their final region
        parent = parent[parent]
    return _relabel_consecutive(parent[labels])


def slice_superpixels(image: np.ndarray, threshold: float, params: SuperpixelConfig) -> np.ndarray:
    """Superpixels of one slice ``[H, W]`` inside its body mask.

    Felzenszwalb segments are cut by the body mask, split into connected pieces, and
    pieces under the size limit are merged into a neighbour (or dropped if isolated).
    Returns int32 ``[H, W]``: 0 outside the body, 1..n superpixels of at least
    ``params.min_size_for(image.shape)`` pixels each.
    """
    body = body_mask(image, threshold, params.body_smoothing)
    if not body.any():
        return np.zeros(image.shape, dtype=np.int32)
    min_size = params.min_size_for(image.shape)
    segments = felzenszwalb(image, scale=params.scale, sigma=params.sigma, min_size=min_size)
    pieces = connected_components(np.where(body, segments + 1, 0), background=0, connectivity=2)
    return merge_small_regions(pieces, min_size)


def compute_superpixels(image: np.ndarray, params: SuperpixelConfig) -> np.ndarray:
    """Superpixels of every slice of a volume ``[H, W, D]`` (no cache): int32 ``[H, W, D]``.

    Labels restart at 1 on every slice; 0 is outside the body.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be a volume [H, W, D], got shape {image.shape}")
    threshold = body_threshold(image, params.body_threshold)
    return np.stack([slice_superpixels(image[..., z], threshold, params)
                     for z in range(image.shape[-1])], axis=-1)


def _image_fingerprint(image: np.ndarray) -> str:
    """Shape and CRC-32 of the voxels: a cache built from another image is never reused."""
    return f"{'x'.join(map(str, image.shape))}-{zlib.crc32(np.ascontiguousarray(image).tobytes()):08x}"


def _dataset_tag(volume: Volume) -> str:
    """The data set's folder name (``imagesTr`` of the nnU-Net layout is skipped)."""
    folder = volume.image_path.parent
    return folder.parent.name if folder.name == "imagesTr" else folder.name


def cache_path(volume: Volume, params: SuperpixelConfig, cache_dir: str | os.PathLike,
               dataset: str | None = None) -> Path:
    """``{cache_dir}/{dataset}_{case}_sp-{params.key}.npz``."""
    return Path(cache_dir) / f"{dataset or _dataset_tag(volume)}_{volume.case_id}_sp-{params.key}.npz"


def _check_cache_dir(cache_dir: Path, volume: Volume) -> None:
    inputs = volume.image_path.parent.resolve()
    resolved = cache_dir.resolve()
    if resolved == inputs or inputs in resolved.parents:
        raise ValueError(f"cache_dir {cache_dir} is inside the input folder {inputs}; inputs are "
                         "read-only: put the cache beside your output folder instead")


def _read_cache(path: Path, params: SuperpixelConfig, fingerprint: str) -> np.ndarray | None:
    """The cached superpixels if the file exists and matches ``params`` and the image, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["params"]) != params.to_json() or str(stored["image"]) != fingerprint:
                log.info("%s: built with other settings or another image; rebuilding", path)
                return None
            return stored["superpixels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("%s: unreadable superpixel cache (%s: %s); rebuilding", path, type(exc).__name__, exc)
        return None


def _write_cache(path: Path, superpixels: np.ndarray, params: SuperpixelConfig, fingerprint: str) -> None:
    """Write through a temporary file and a rename: concurrent readers never see half a file."""
    write_atomic(path, lambda tmp: np.savez_compressed(tmp, superpixels=superpixels,
                                                       params=np.array(params.to_json()), image=np.array(fingerprint)),
                 suffix=".npz")


def superpixels_for_volume(volume: Volume, params: SuperpixelConfig, cache_dir: str | os.PathLike,
                           *, dataset: str | None = None) -> np.ndarray:
    """Superpixels of ``volume`` (int32 ``[H, W, D]``), read from or written to ``cache_dir``.

    ``params``: :class:`SuperpixelConfig`, or any settings with ``key``,
    ``to_json()`` and ``compute(volume)`` (e.g.
    :class:`~medfss.data.supervoxels.SupervoxelConfig`).

    The file name holds ``params.key``; the file also stores the full settings and a
    fingerprint of the image, and is rebuilt if either differs. ``dataset`` names the
    data set in the file name (default: the folder the image was read from).
    ``cache_dir`` must not lie inside the input folder.
    """
    cache_dir = Path(cache_dir)
    _check_cache_dir(cache_dir, volume)
    path = cache_path(volume, params, cache_dir, dataset)
    fingerprint = _image_fingerprint(volume.image)
    cached = _read_cache(path, params, fingerprint)
    if cached is not None:
        return cached
    superpixels = params.compute(volume)
    _write_cache(path, superpixels, params, fingerprint)
    return superpixels


def superpixels_for_volumes(volumes: Sequence[Volume], params: SuperpixelConfig,
                            cache_dir: str | os.PathLike, *, dataset: str | None = None,
                            progress: bool = True) -> list[np.ndarray]:
    """:func:`superpixels_for_volume` for many volumes, with a progress bar.

    With ``progress``, a line first says how many volumes have no cache yet
    (the once-per-data-set pass that precedes the first training step).
    """
    missing = sum(not cache_path(v, params, cache_dir, dataset).is_file() for v in volumes)
    if progress and missing:
        print(f"medfss: computing the {params.kind} pseudolabels of {missing} of {len(volumes)} training volumes "
              f"before training starts (once; cached in {cache_dir}): about {params.seconds_per_volume:g} s per "
              "256 x 256 x 30 MRI volume per core, minutes for a data set of large CT volumes", file=sys.stderr)
    return [superpixels_for_volume(volume, params, cache_dir, dataset=dataset)
            for volume in tqdm(volumes, desc=f"{params.kind}s", unit="volume", disable=not progress)]
