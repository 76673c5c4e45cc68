"""Training episode samplers: self-supervised (superpixels, supervoxels) and supervised (base classes).

Each sampler turns volumes into 1-way S-shot :class:`Episode` objects with B = 1
(``Episode.collate`` stacks them), at a fixed ``image_size``: slices are
resized, images bilinearly and masks with nearest neighbour. A sampler is
immutable after construction; all randomness comes from the
``numpy.random.Generator`` passed to :meth:`sample`, so the same seed gives the
same episodes. :class:`EpisodeStream` wraps a sampler as an endless
``IterableDataset`` with one reproducible stream per (seed, rank, worker).

The two settings of SSL-ALPNet (sec. 4) decide what training may see:

* setting 1: test classes are not trained on, but may appear unlabelled
  (as background) in training slices;
* setting 2: every slice containing a class of the test group
  (:meth:`DatasetSpec.group_of`) is removed from training, even unlabelled.

Shapes: B episodes (1 per sample), S shots, H W spatial (= ``image_size``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from medfss.data.datasets import DatasetSpec, Volume
from medfss.data.episodes import Episode
from medfss.data.preprocess import volumes_orientation
from medfss.data.transforms import AugmentConfig, augment_pair, resize_image, resize_label

MIN_IMAGE_SIZE = 16
# Smallest mask, as a fraction of the slice: half the smallest superpixel (400 px of 256 x 256);
# masks of a few pixels give prototypes of a few feature cells and noisy episodes.
DEFAULT_MIN_MASK_AREA = 0.003


def setting2_excluded_classes(spec: DatasetSpec, test_classes: Iterable[str]) -> frozenset[int]:
    """Class indices of the setting-2 groups of ``test_classes``.

    Setting 2 removes every training slice that contains one of them. Example: in
    CHAOST2 a test class "liver" gives the indices of {liver, spleen}.
    """
    return frozenset(spec.class_index(member) for name in test_classes for member in spec.group_of(name))


def _check_common(image_size: int, shots: int, min_mask_area: float) -> None:
    if not (isinstance(image_size, int) and image_size >= MIN_IMAGE_SIZE):
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if not (isinstance(shots, int) and shots >= 1):
        raise ValueError(f"shots must be an integer >= 1, got {shots!r}")
    if not 0 <= min_mask_area < 1:
        raise ValueError(f"min_mask_area is a fraction of the slice area, in [0, 1); got {min_mask_area}")


def _min_pixels(min_mask_area: float, image_size: int) -> int:
    return max(1, math.ceil(min_mask_area * image_size * image_size))


def _slices_without(label: np.ndarray, classes: frozenset[int]) -> np.ndarray:
    """bool ``[D]``: the slices of ``label [H, W, D]`` that contain none of ``classes``."""
    if not classes:
        return np.ones(label.shape[-1], dtype=bool)
    return ~np.isin(label, list(classes)).any(axis=(0, 1))


def _slice(volume: np.ndarray, z: int) -> Tensor:
    """Slice ``z`` of a ``[H, W, D]`` array as a contiguous ``[H, W]`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(volume[..., z]))


def _episode(support: Sequence[tuple[Tensor, Tensor]], query: tuple[Tensor, Tensor],
             class_id: int | None = None) -> Episode:
    """Stack S (image, mask) support views and one query view (each ``[H, W]``) into B = 1."""
    return Episode(
        support_images=torch.stack([image for image, _ in support])[None, :, None].float(),  # [1, S, 1, H, W]
        support_masks=torch.stack([mask for _, mask in support])[None].float(),  # [1, S, H, W]
        query_images=query[0][None, None].float(),  # [1, 1, H, W]
        query_masks=query[1][None].long(),  # [1, H, W]
        class_ids=None if class_id is None else torch.tensor([class_id]),  # [1]
    )


class _PseudolabelSampler:
    """What the samplers of pseudolabels (superpixels, supervoxels) share: the checked inputs and settings."""

    def __init__(self, volumes: Sequence[Volume], maps: Sequence[np.ndarray], what: str, *, image_size: int,
                 shots: int, augment: AugmentConfig, exclude_classes: Iterable[int], min_mask_area: float):
        _check_common(image_size, shots, min_mask_area)
        if len(volumes) != len(maps):
            raise ValueError(f"got {len(volumes)} volumes but {len(maps)} {what} maps")
        for volume, labels in zip(volumes, maps):
            if labels.shape != volume.image.shape:
                raise ValueError(f"case {volume.case_id}: {what}s {labels.shape} do not match the image "
                                 f"{volume.image.shape}")
        self.image_size = image_size
        self.shots = shots
        self.augment = augment
        self.slice_orientation = volumes_orientation([volume.affine for volume in volumes])  # e.g. "LAS"
        self.exclude_classes = frozenset(int(c) for c in exclude_classes)
        self._images = [volume.image for volume in volumes]  # each [H, W, D]
        self._maps = list(maps)  # each [H, W, D] int: the pseudolabels of the volume


class SelfSupervisedSampler(_PseudolabelSampler):
    """SSL-ALPNet's superpixel episodes (sec. 3.3): no manual label is used as supervision.

    An episode takes a random training slice x and one of its superpixels y, drawn
    uniformly among those covering at least ``min_mask_area`` of the slice after
    resizing (smaller ones give prototypes of a handful of pixels). Support and
    query are:

    * support view 1: (x, y) unchanged;
    * support views 2..S (k-shot): independently transformed views
      (T_g(T_i(x)), T_g(y)), so the S shots differ as real shots from other
      slices would, while staying the same pseudolabel;
    * query: one more independent view (T_g(T_i(x)), T_g(y)).

    The labels of ``volumes`` serve only ``exclude_classes``: every slice that
    contains one of those class indices is dropped (setting 2, see
    :func:`setting2_excluded_classes`).

    ``superpixels[i]`` is the int ``[H, W, D]`` map of ``volumes[i]``
    (:func:`medfss.data.superpixels.superpixels_for_volume`).
    """

    def __init__(self, volumes: Sequence[Volume], superpixels: Sequence[np.ndarray], *,
                 image_size: int = 128, shots: int = 1, augment: AugmentConfig = AugmentConfig(),
                 exclude_classes: Iterable[int] = (), min_mask_area: float = DEFAULT_MIN_MASK_AREA):
        super().__init__(volumes, superpixels, "superpixel", image_size=image_size, shots=shots, augment=augment,
                         exclude_classes=exclude_classes, min_mask_area=min_mask_area)
        min_pixels = _min_pixels(min_mask_area, image_size)
        self._slices = [(index, z, candidates)
                        for index, volume in enumerate(volumes)
                        for z in np.flatnonzero(_slices_without(volume.label, self.exclude_classes))
                        if (candidates := self._candidates(index, int(z), min_pixels)).size]
        if not self._slices:
            raise ValueError("no training slice left: every slice holds an excluded class or no "
                             f"superpixel covering {min_pixels} px at {image_size} x {image_size}; "
                             "lower min_mask_area or check exclude_classes")

    def _candidates(self, index: int, z: int, min_pixels: int) -> np.ndarray:
        """Superpixel labels of slice ``z`` with at least ``min_pixels`` after resizing."""
        labels = resize_label(_slice(self._maps[index], z), self.image_size)  # [H, W]
        counts = torch.bincount(labels.flatten().long()).numpy()
        counts[0] = 0  # outside the body
        return np.flatnonzero(counts >= min_pixels)

    def __len__(self) -> int:
        """Number of training slices."""
        return len(self._slices)

    def sample(self, rng: np.random.Generator) -> Episode:
        """One episode with B = 1: support ``[1, S, 1, H, W]``, query ``[1, 1, H, W]``."""
        index, z, candidates = self._slices[rng.integers(len(self._slices))]
        chosen = candidates[rng.integers(len(candidates))]
        image = resize_image(_slice(self._images[index], z), self.image_size)  # [H, W]
        labels = resize_label(_slice(self._maps[index], z), self.image_size)  # [H, W]
        mask = (labels == int(chosen)).float()  # [H, W]
        support = [(image, mask)] + [augment_pair(image, mask, rng, self.augment)
                                     for _ in range(self.shots - 1)]
        return _episode(support, augment_pair(image, mask, rng, self.augment))


class SupervoxelSampler(_PseudolabelSampler):
    """ADNet's supervoxel episodes (Hansen et al. 2022): support and query are two slices of one 3D pseudolabel.

    An episode draws a supervoxel uniformly among those covering at least
    ``min_mask_area`` of two or more training slices (after resizing), a
    query slice among those, and S support slices among the others (with
    replacement only when fewer than S remain). The mask of each slice is the
    supervoxel's cross-section there, so the model learns to find the same
    piece of tissue in a neighbouring slice, as a real support and query show
    one organ at two positions. The query is transformed as in SSL-ALPNet
    (``augment``); the supports are left unchanged. ``exclude_classes`` drops
    slices as in :class:`SelfSupervisedSampler` (setting 2).

    ``supervoxels[i]`` is the int ``[H, W, D]`` map of ``volumes[i]``
    (:func:`medfss.data.supervoxels.compute_supervoxels`, labels global to the volume).
    """

    def __init__(self, volumes: Sequence[Volume], supervoxels: Sequence[np.ndarray], *,
                 image_size: int = 128, shots: int = 1, augment: AugmentConfig = AugmentConfig(),
                 exclude_classes: Iterable[int] = (), min_mask_area: float = DEFAULT_MIN_MASK_AREA):
        super().__init__(volumes, supervoxels, "supervoxel", image_size=image_size, shots=shots, augment=augment,
                         exclude_classes=exclude_classes, min_mask_area=min_mask_area)
        min_pixels = _min_pixels(min_mask_area, image_size)
        # (volume, supervoxel label, the slices where it covers >= min_pixels), for those on 2 slices or more
        self._pseudolabels = [(index, label, slices) for index, volume in enumerate(volumes)
                              for label, slices in self._slices_by_label(index, volume, min_pixels).items()
                              if slices.size >= 2]
        if not self._pseudolabels:
            raise ValueError("no supervoxel covers two training slices with "
                             f"{min_pixels} px at {image_size} x {image_size}; lower min_mask_area, "
                             "use smaller supervoxels or check exclude_classes")

    def _slices_by_label(self, index: int, volume: Volume, min_pixels: int) -> dict[int, np.ndarray]:
        found: dict[int, list[int]] = {}
        for z in np.flatnonzero(_slices_without(volume.label, self.exclude_classes)):
            labels = resize_label(_slice(self._maps[index], int(z)), self.image_size)  # [H, W]
            counts = torch.bincount(labels.flatten().long()).numpy()
            counts[0] = 0  # outside the body
            for label in np.flatnonzero(counts >= min_pixels):
                found.setdefault(int(label), []).append(int(z))
        return {label: np.array(zs) for label, zs in found.items()}

    def __len__(self) -> int:
        """Number of supervoxels that can form an episode."""
        return len(self._pseudolabels)

    def _view(self, index: int, z: int, label: int) -> tuple[Tensor, Tensor]:
        image = resize_image(_slice(self._images[index], z), self.image_size)  # [H, W]
        mask = resize_label(_slice(self._maps[index], z), self.image_size) == label  # [H, W]
        return image, mask.float()

    def sample(self, rng: np.random.Generator) -> Episode:
        """One episode with B = 1: support ``[1, S, 1, H, W]``, query ``[1, 1, H, W]``."""
        index, label, slices = self._pseudolabels[rng.integers(len(self._pseudolabels))]
        query_z = int(slices[rng.integers(slices.size)])
        others = slices[slices != query_z]
        support_z = rng.choice(others, size=self.shots, replace=others.size < self.shots)
        support = [self._view(index, int(z), label) for z in support_z]
        return _episode(support, augment_pair(*self._view(index, query_z, label), rng, self.augment))


class SupervisedSampler:
    """Episodes of annotated base classes, for methods that train on manual labels.

    An episode draws a training class c uniformly, a query slice containing c, and S
    support slices containing c from volumes other than the query's (uniformly over
    those slices, without replacement unless there are fewer than S). Masks are the
    foreground of c; every other class is background. A slice counts as containing c
    when c covers at least ``min_mask_area`` of it after resizing.

    Training classes are all classes but ``test_classes`` (setting 1) or but their
    setting-2 groups (setting 2, where slices containing any class of the groups are
    also removed). SSL-ALPNet holds the two kidneys out together in setting 1: pass
    both as ``test_classes``. Only classes found in at least two volumes can form an
    episode.
    ``augment`` optionally transforms the query (image and mask) as in SSL-ALPNet.
    """

    def __init__(self, volumes: Sequence[Volume], spec: DatasetSpec, *, test_classes: Sequence[str],
                 setting: int, image_size: int = 128, shots: int = 1,
                 min_mask_area: float = DEFAULT_MIN_MASK_AREA, augment: AugmentConfig | None = None):
        _check_common(image_size, shots, min_mask_area)
        if setting not in (1, 2):
            raise ValueError(f"setting must be 1 (test classes may appear as background) or 2 "
                             f"(slices with the test group removed), got {setting!r}")
        if isinstance(test_classes, str) or not test_classes:
            raise ValueError(f"test_classes must be a non-empty sequence of class names, "
                             f"got {test_classes!r}")
        held_out = frozenset(spec.class_index(name) for name in test_classes)
        removed = setting2_excluded_classes(spec, test_classes) if setting == 2 else frozenset()
        self.image_size = image_size
        self.shots = shots
        self.augment = augment
        self.slice_orientation = volumes_orientation([volume.affine for volume in volumes])  # e.g. "LAS"
        self.setting = setting
        self._images = [volume.image for volume in volumes]  # each [H, W, D]
        self._labels = [volume.label for volume in volumes]  # each [H, W, D]
        candidates = [c for c in spec.classes if c not in held_out and c not in removed]
        index = self._index(volumes, frozenset(candidates), removed, _min_pixels(min_mask_area, image_size))
        # class -> {volume: slices}, kept only for classes present in two volumes or more
        self._index_by_class = {c: slices for c, slices in index.items() if len(slices) >= 2}
        self.classes = tuple(sorted(self._index_by_class))
        if not self.classes:
            raise ValueError(f"no training class of {spec.name} appears in two volumes (candidates "
                             f"{[spec.classes[c] for c in candidates]}, setting {setting}); "
                             "add volumes or lower min_mask_area")

    def _index(self, volumes: Sequence[Volume], classes: frozenset[int], removed: frozenset[int],
               min_pixels: int) -> dict[int, dict[int, np.ndarray]]:
        """class -> {volume index: slices holding >= ``min_pixels`` of it after resizing}."""
        found: dict[int, dict[int, list[int]]] = {c: {} for c in classes}
        for v, volume in enumerate(volumes):
            for z in np.flatnonzero(_slices_without(volume.label, removed)):
                labels = resize_label(_slice(volume.label, int(z)), self.image_size)  # [H, W]
                counts = torch.bincount(labels.flatten()).numpy()
                for c in classes:
                    if c < counts.size and counts[c] >= min_pixels:
                        found[c].setdefault(v, []).append(int(z))
        return {c: {v: np.array(zs) for v, zs in slices.items()} for c, slices in found.items()}

    def __len__(self) -> int:
        """Number of (class, slice) pairs that can serve as a query."""
        return sum(zs.size for slices in self._index_by_class.values() for zs in slices.values())

    def _view(self, volume: int, z: int, c: int) -> tuple[Tensor, Tensor]:
        image = resize_image(_slice(self._images[volume], z), self.image_size)  # [H, W]
        mask = resize_label(_slice(self._labels[volume], z), self.image_size) == c  # [H, W]
        return image, mask.float()

    def sample(self, rng: np.random.Generator) -> Episode:
        """One episode with B = 1: support ``[1, S, 1, H, W]``, query ``[1, 1, H, W]``."""
        c = self.classes[rng.integers(len(self.classes))]
        slices = self._index_by_class[c]
        volumes = sorted(slices)
        query_volume = volumes[rng.integers(len(volumes))]
        query_z = slices[query_volume][rng.integers(slices[query_volume].size)]
        pool = [(v, int(z)) for v in volumes if v != query_volume for z in slices[v]]
        picks = rng.choice(len(pool), size=self.shots, replace=len(pool) < self.shots)
        support = [self._view(*pool[p], c) for p in picks]
        query = self._view(query_volume, int(query_z), c)
        if self.augment is not None:
            query = augment_pair(*query, rng, self.augment)
        return _episode(support, query, int(c))


class MixtureSampler:
    """Episodes drawn from several samplers, one chosen uniformly per episode.

    Used for pseudolabels at several sizes (``data.pseudolabel_scales``): one
    supervoxel size fits organs of one size (results/adnet_cpu-supervoxels-20000),
    and drawing the size first keeps the many small pseudolabels of the finer
    map from outnumbering the coarse ones. The samplers cut the same volumes,
    so the first one's ``slice_orientation`` is theirs.
    """

    def __init__(self, samplers: Sequence[EpisodeSampler]):
        if not samplers:
            raise ValueError("a mixture needs at least one sampler")
        self.samplers = tuple(samplers)
        self.slice_orientation = getattr(samplers[0], "slice_orientation", None)

    def sample(self, rng: np.random.Generator) -> Episode:
        return self.samplers[rng.integers(len(self.samplers))].sample(rng)


class EpisodeSampler(Protocol):
    """What :class:`EpisodeStream` needs: one episode from a generator.

    A sampler may also have ``slice_orientation``, the voxel order (e.g. "LAS")
    of the volumes its slices are cut from; training stores it in checkpoints.
    """

    def sample(self, rng: np.random.Generator) -> Episode: ...


def _distributed_rank() -> int | None:
    """The ``torch.distributed`` rank, or None outside a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else None


class EpisodeStream(IterableDataset):
    """An endless, reproducible stream of episodes for a ``DataLoader``.

    Each (rank, worker) draws from its own generator seeded by
    ``(seed, rank, worker_id, epoch)``: DDP ranks and DataLoader workers never
    repeat each other's episodes, and a run restarted with the same seed replays
    them exactly. ``rank`` defaults to the ``torch.distributed`` rank, read when the
    stream is built (so that workers started with "spawn", which have no process
    group, still know it) or else when it is iterated; 0 when not distributed.
    Every ``iter()`` restarts the stream of the current epoch; call :meth:`set_epoch`
    between epochs to get fresh episodes. Use with
    ``DataLoader(stream, batch_size=B, collate_fn=Episode.collate)``.
    """

    def __init__(self, sampler: EpisodeSampler, seed: int, *, rank: int | None = None):
        super().__init__()
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.sampler = sampler
        self.seed = seed
        self.rank = rank if rank is not None else _distributed_rank()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the stream of ``epoch`` (as ``DistributedSampler.set_epoch`` does)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def generator(self) -> np.random.Generator:
        """The generator of the calling process: seeded by (seed, rank, worker id, epoch)."""
        worker = get_worker_info()
        rank = self.rank if self.rank is not None else (_distributed_rank() or 0)
        return np.random.default_rng([self.seed, rank, 0 if worker is None else worker.id, self.epoch])

    def __iter__(self) -> Iterator[Episode]:
        rng = self.generator()
        while True:
            yield self.sampler.sample(rng)
