"""The episode: the one input every few-shot model takes.

A 1-way S-shot episode holds S labelled support slices and one query slice;
a batch stacks B episodes. Shapes use the project alphabet: B episodes,
S shots, H W spatial.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Episode:
    support_images: Tensor  # [B, S, 1, H, W] float
    support_masks: Tensor  # [B, S, H, W] float in {0, 1}: foreground of the episode's class
    query_images: Tensor  # [B, 1, H, W] float
    query_masks: Tensor | None = None  # [B, H, W] long in {0, 1}; None at inference
    # [B] long: the class each training episode segments, where the sampler knows it (supervised
    # episodes); losses that compare episodes (APSCL's spatial contrastive loss) read it. None: unknown,
    # every episode is taken to be of its own class.
    class_ids: Tensor | None = None

    def __post_init__(self):
        b, s, c, h, w = self.support_images.shape
        if c != 1:
            raise ValueError(f"support_images must be [B, S, 1, H, W], got {tuple(self.support_images.shape)}")
        if tuple(self.support_masks.shape) != (b, s, h, w):
            raise ValueError(f"support_masks must be [B, S, H, W] = {(b, s, h, w)}, "
                             f"got {tuple(self.support_masks.shape)}")
        if tuple(self.query_images.shape[:2]) != (b, 1):
            raise ValueError(f"query_images must be [B, 1, H, W], got {tuple(self.query_images.shape)}")
        if self.query_masks is not None and tuple(self.query_masks.shape) != (
                b, *self.query_images.shape[-2:]):
            raise ValueError(f"query_masks must be [B, H, W], got {tuple(self.query_masks.shape)}")
        if self.class_ids is not None and tuple(self.class_ids.shape) != (b,):
            raise ValueError(f"class_ids must be [B] = ({b},), got {tuple(self.class_ids.shape)}")

    @property
    def batch_size(self) -> int:
        return self.support_images.shape[0]

    @property
    def shots(self) -> int:
        return self.support_images.shape[1]

    def to(self, device: torch.device | str) -> "Episode":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})

    @staticmethod
    def collate(episodes: list["Episode"]) -> "Episode":
        """Concatenate episodes along B (a DataLoader ``collate_fn``)."""
        def cat(name):
            values = [getattr(e, name) for e in episodes]
            return None if any(v is None for v in values) else torch.cat(values)
        return Episode(**{f.name: cat(f.name) for f in fields(Episode)})
