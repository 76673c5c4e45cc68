"""The one interface every inference path calls.

Inference is written once against :class:`Predictor`: given the support
slices of one chunk and the query slices of the matching chunk, return the
foreground probability of every query pixel. Trained networks reach it
through :class:`EpisodicPredictor`, which turns the call into the
:class:`~medfss.data.episodes.Episode` batches of the model contract
(``forward(episode) -> logits [B, 2, H, W]``); the no-training baselines
implement it directly. Shapes: S shots, Q query slices, B episodes, H W spatial.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor

from medfss.data.episodes import Episode
from medfss.models.base import FewShotSegmenter

if TYPE_CHECKING:
    from medfss.inference.plan import SupportScan


@runtime_checkable
class Predictor(Protocol):
    """Segments query slices of one class from labelled support slices."""

    def predict(self, support_images: Tensor, support_masks: Tensor, query_images: Tensor) -> Tensor:
        """Foreground probabilities of the query slices.

        support_images: [S, H, W] float32 (z-scored, CPU);
        support_masks: [S, H, W] float32 in {0, 1}, the class on each support slice;
        query_images: [Q, H, W] float32 (z-scored, CPU), same in-plane size as the support.
        Returns [Q, H, W] float32 CPU probabilities in [0, 1] at that size.
        """
        ...


@runtime_checkable
class VolumePredictor(Protocol):
    """Segments a whole query volume of one class from whole support volumes (e.g. atlas registration).

    Methods that need the volumes rather than slices implement this instead
    of :class:`Predictor`; the protocol and ``medfss segment`` call it in
    place of :func:`medfss.inference.predict_volume`.
    """

    def segment_volume(self, supports: Sequence[SupportScan], query: np.ndarray,
                       query_spacing: tuple[float, float, float]) -> np.ndarray:
        """Foreground probabilities [H, W, D] float32 of ``query`` [H, W, D] (normalised, slicing axis last).

        Each support is the class mask on its own grid, in the query's voxel
        order, with its spacing (mm).
        """
        ...


def check_predict_inputs(support_images: Tensor, support_masks: Tensor, query_images: Tensor) -> None:
    """Raise ``ValueError`` unless the arguments follow :meth:`Predictor.predict`'s shapes."""
    if support_images.ndim != 3 or tuple(support_masks.shape) != tuple(support_images.shape):
        raise ValueError(f"support_images and support_masks must both be [S, H, W], got "
                         f"{tuple(support_images.shape)} and {tuple(support_masks.shape)}")
    if query_images.ndim != 3 or query_images.shape[-2:] != support_images.shape[-2:]:
        raise ValueError(f"query_images must be [Q, H, W] with the support's H, W "
                         f"{tuple(support_images.shape[-2:])}, got {tuple(query_images.shape)}")


def resize_slices(slices: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Resize a stack of slices [N, H, W] to [N, *size] (``mode`` as in ``F.interpolate``)."""
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    align = False if mode == "bilinear" else None
    return F.interpolate(slices.unsqueeze(1), size=size, mode=mode,
                         align_corners=align).squeeze(1)  # [N, h, w]


class EpisodicPredictor:
    """Adapts a model obeying :mod:`medfss.models.base` to :class:`Predictor`.

    The model was trained on ``image_size`` x ``image_size`` episodes, so the
    slices are resized to that size (image bilinear; mask bilinear then
    thresholded at 0.5, which keeps it binary without the one-pixel shifts of
    nearest-neighbour sampling), each query slice becomes one episode with the
    same support, episodes run ``batch_size`` at a time without gradients in
    eval mode, and the foreground softmax is resized back to the native size.
    """

    def __init__(self, model: FewShotSegmenter, image_size: int, batch_size: int = 8,
                 device: torch.device | str = "cpu"):
        if image_size < 1:
            raise ValueError(f"image_size must be a positive pixel count (the training size, e.g. 256), "
                             f"got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.image_size = (image_size, image_size)
        self.batch_size = batch_size

    @torch.no_grad()
    def predict(self, support_images: Tensor, support_masks: Tensor, query_images: Tensor) -> Tensor:
        check_predict_inputs(support_images, support_masks, query_images)
        self.model.eval()
        native = tuple(query_images.shape[-2:])
        sup_img = resize_slices(support_images.float(), self.image_size, "bilinear")  # [S, h, w]
        sup_msk = (resize_slices(support_masks.float(), self.image_size, "bilinear") > 0.5).float()
        sup_img = sup_img.unsqueeze(1).to(self.device)  # [S, 1, h, w]
        sup_msk = sup_msk.to(self.device)  # [S, h, w]
        queries = resize_slices(query_images.float(), self.image_size, "bilinear")  # [Q, h, w]
        probabilities = []
        for batch in queries.split(self.batch_size):  # [B, h, w]
            b = batch.shape[0]
            episode = Episode(
                support_images=sup_img.unsqueeze(0).expand(b, -1, -1, -1, -1),  # [B, S, 1, h, w]
                support_masks=sup_msk.unsqueeze(0).expand(b, -1, -1, -1),  # [B, S, h, w]
                query_images=batch.unsqueeze(1).to(self.device),  # [B, 1, h, w]
            )
            logits = self.model(episode)  # [B, 2, h, w]
            if tuple(logits.shape) != (b, 2, *self.image_size):
                raise ValueError(f"{type(self.model).__name__}.forward must return logits "
                                 f"[B, 2, H, W] = {(b, 2, *self.image_size)} at the episode's size, "
                                 f"got {tuple(logits.shape)}")
            probabilities.append(logits.float().softmax(dim=1)[:, 1].cpu())  # [B, h, w]
        return resize_slices(torch.cat(probabilities), native, "bilinear").clamp(0, 1)  # [Q, H, W]
