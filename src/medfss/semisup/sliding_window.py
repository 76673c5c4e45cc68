"""Prediction of whole volumes: 3D sliding windows (LA) and slice by slice in 2D (ACDC).

3D: windows of the training patch size at the literature's strides (LA: 112 x
112 x 80 every 18, 18, 4 voxels), the class probabilities of overlapping
windows averaged, volumes smaller than a window padded and cropped back.
MONAI's ``sliding_window_inference`` does exactly this; it takes the overlap
as a fraction and places windows every ``int(window * (1 - overlap))`` voxels,
so a stride s is passed as ``1 - (s + 0.5) / window`` (the 0.5 guards the
floor against rounding). Its last window is moved back to end at the border,
as the literature's ``test_single_case`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import Tensor

from medfss.semisup.data import resize


def overlap_for_stride(window: Sequence[int], stride: Sequence[int]) -> tuple[float, ...]:
    """MONAI's overlap fractions that place windows every ``stride`` voxels."""
    if any(s < 1 or s > w for s, w in zip(stride, window)):
        raise ValueError(f"strides {tuple(stride)} must be in 1..window {tuple(window)}")
    return tuple(1.0 - (s + 0.5) / w for s, w in zip(stride, window))


@torch.no_grad()
def predict_sliding(predict: Callable[[Tensor], Tensor], volume: Tensor, window: Sequence[int],
                    stride: Sequence[int]) -> Tensor:
    """Averaged window outputs of ``predict`` ([b, 1, *window] -> [b, N, *window]) over ``volume`` [X, Y, Z].

    Returns [N, X, Y, Z].
    """
    out = sliding_window_inference(volume[None, None], roi_size=tuple(window), sw_batch_size=1,
                                   predictor=predict, overlap=overlap_for_stride(window, stride),
                                   mode="constant", padding_mode="constant")
    return out[0]


@torch.no_grad()
def predict_slices(predict: Callable[[Tensor], Tensor], volume: Tensor, size: Sequence[int],
                   batch_size: int = 16) -> Tensor:
    """``predict`` ([b, 1, *size] -> [b, N, *size]) on every slice of ``volume`` [D, H, W] at ``size``.

    Slices are resized to the network's size and its outputs back to H x W
    (bilinear). Returns [N, D, H, W].
    """
    outputs = []
    for start in range(0, volume.shape[0], batch_size):
        chunk = volume[start:start + batch_size, None]  # [b, 1, H, W]
        out = predict(resize(chunk, tuple(size), "bilinear"))  # [b, N, h, w]
        outputs.append(resize(out, tuple(volume.shape[1:]), "bilinear"))
    return torch.cat(outputs).movedim(1, 0)
