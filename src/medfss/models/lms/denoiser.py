"""The Mask Denoiser MD of PD-Net (sec. III-B.3, Fig. 3 and 8): a 5-layer DnCNN on one mask channel.

    CNN(u) = Conv(ReLU(BN(Conv(... ReLU(Conv(u)) ...))))    5 conv layers, 3 x 3 (DnCNN, Zhang et al. 2017)

    (a) MD(u) = u + CNN(u)                       DnCNN's residual learning
    (b) MD(u) = Sigmoid(u + CNN(u))              + a Sigmoid on the final layer, output in (0, 1)
    (c) MD(u) = Sigmoid(logit(u) + CNN(u))       + the inverse Sigmoid of u before it (the paper's MD)

Fig. 8 is not legible in our copy of the paper; the text names exactly two
changes from vanilla DnCNN ("a Sigmoid operator in the final layer and an
inverse Sigmoid to facilitate identity mapping"), so each variant adds one:
(c) is the identity when CNN outputs 0, (b) cannot be. ``logit`` clamps u
to [1e-6, 1 - 1e-6] first. MD denoises each class channel u_i separately
with shared weights (eq. 21 writes MD(u_i^k)).
Shapes: N maps, 1 channel, H W the feature grid.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

DenoiserVariant = Literal["a", "b", "c"]
VARIANTS: tuple[str, ...] = ("a", "b", "c")
LOGIT_EPS = 1e-6


def dncnn(width: int = 64, depth: int = 5) -> nn.Sequential:
    """DnCNN body: Conv+ReLU, (depth - 2) x Conv+BN+ReLU, Conv; ``[N, 1, H, W] -> [N, 1, H, W]``."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(width, 1, 3, padding=1))
    return nn.Sequential(*layers)


def _identity(u: Tensor) -> Tensor:
    return u


def _logit(u: Tensor) -> Tensor:
    return torch.logit(u, eps=LOGIT_EPS)


# variant -> (skip applied to u, final activation): MD(u) = activation(skip(u) + CNN(u))
_PARTS = {"a": (_identity, _identity), "b": (_identity, torch.sigmoid), "c": (_logit, torch.sigmoid)}


class MaskDenoiser(nn.Module):
    """MD: ``[N, 1, H, W] -> [N, 1, H, W]``, variant ``"a"``, ``"b"`` or ``"c"`` (see the module docstring)."""

    def __init__(self, variant: DenoiserVariant = "c", width: int = 64):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"denoiser variant must be one of {', '.join(VARIANTS)} (Fig. 8), got {variant!r}")
        self.variant = variant
        self.body = dncnn(width)
        self._skip, self._activation = _PARTS[variant]

    def forward(self, u: Tensor) -> Tensor:
        return self._activation(self._skip(u) + self.body(u))  # [N, 1, H, W]
