"""Training batches: labelled and unlabelled images of a step, augmented, with its copy-paste mask.

What step t trains on is a pure function of (seed, stage, t), drawn with
:func:`medfss.training.stream.step_seed`, as for the episodic models.
ACDC batches are slices (resized once, at loading, to the patch size); LA
batches are random patch-size crops of the volumes (zero-padded when a volume
is smaller), as in the literature. Both get a random rotation by a multiple of
90 degrees and a random flip in the first two axes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from medfss.semisup.copy_paste import zero_box_mask
from medfss.training.stream import EPISODES, step_seed


def rot_flip(image: Tensor, label: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """The same random 90-degree rotation and flip of image [1, *spatial] and label [*spatial]."""
    k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
    image = torch.flip(torch.rot90(image, k, dims=(1, 2)), dims=(1 + axis,))
    label = torch.flip(torch.rot90(label, k, dims=(0, 1)), dims=(axis,))
    return image, label


def random_crop(image: Tensor, label: Tensor, size: Sequence[int], rng: np.random.Generator
                ) -> tuple[Tensor, Tensor]:
    """A random ``size`` crop of image [*spatial] and label [*spatial], zero-padded where smaller."""
    pad = [max(s - d, 0) for s, d in zip(size, image.shape)]
    if any(pad):
        widths = [w for p in reversed(pad) for w in (p // 2, p - p // 2)]  # F.pad order: last axis first
        image = torch.nn.functional.pad(image, widths)
        label = torch.nn.functional.pad(label, widths)
    corner = [int(rng.integers(0, d - s + 1)) for d, s in zip(image.shape, size)]
    window = tuple(slice(c, c + s) for c, s in zip(corner, size))
    return image[window], label[window]


@dataclass(frozen=True)
class ImagePool:
    """Training images at the patch size (ACDC slices) or whole volumes to crop from (LA)."""

    images: Sequence[Tensor]  # each [*spatial]
    labels: Sequence[Tensor]  # each [*spatial] int64 (zeros where unlabelled)
    patch_size: tuple[int, ...]

    def draw(self, rng: np.random.Generator, n: int) -> tuple[Tensor, Tensor]:
        """``n`` random augmented samples: images [n, 1, *patch], labels [n, *patch]."""
        images, labels = [], []
        for index in rng.integers(0, len(self.images), size=n):
            image, label = random_crop(self.images[index], self.labels[index], self.patch_size, rng)
            image, label = rot_flip(image[None], label, rng)
            images.append(image)
            labels.append(label)
        return torch.stack(images), torch.stack(labels)


@dataclass(frozen=True)
class BatchSource:
    """The batch of a step: ``labeled`` [B, 1, *patch], ``label`` [B, *patch], ``unlabeled`` [B, 1, *patch]
    and the copy-paste ``mask`` [*patch]."""

    labeled: ImagePool
    unlabeled: ImagePool
    batch_size: int
    crop_size: tuple[int, ...]

    def batch(self, rng: np.random.Generator) -> dict[str, Tensor]:
        image, label = self.labeled.draw(rng, self.batch_size)
        unlabeled, _ = self.unlabeled.draw(rng, self.batch_size)
        mask = zero_box_mask(self.labeled.patch_size, self.crop_size, rng)
        return {"labeled": image.contiguous(), "label": label.contiguous(), "unlabeled": unlabeled.contiguous(),
                "mask": mask}


class StepBatches(IterableDataset):
    """Endless ``(step, batch)`` pairs; the batch of step t depends on (seed, stage, t) only."""

    def __init__(self, source: BatchSource, *, seed: int, stage: int):
        self.source = source
        self.seed = seed
        self.stage = stage

    def batch_at(self, step: int) -> dict[str, Tensor]:
        rng = np.random.default_rng(step_seed(self.seed, self.stage, step, EPISODES))
        return self.source.batch(rng)

    def __iter__(self) -> Iterator[tuple[int, dict[str, Tensor]]]:
        step = 0
        while True:
            yield step, self.batch_at(step)
            step += 1
