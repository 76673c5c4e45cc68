"""A learned positive scalar (alpha of eq. 4, delta^k of eq. 11-13): ``value = softplus(raw)``.

Softplus rather than exp: for values well above 1 a step on ``raw`` moves
the value by about the same amount (d value / d raw = sigmoid(raw) ~ 1),
whereas under ``exp`` the step scales with the value itself, and alpha = 20
collapsed within a few SGD steps of a badly initialised network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class PositiveScalar(nn.Module):
    """``forward() -> softplus(raw)``, a 0-d tensor, starting at ``initial`` > 0."""

    def __init__(self, initial: float):
        super().__init__()
        if not initial > 0:
            raise ValueError(f"a positive scalar must start above 0, got {initial!r}")
        # inverse of softplus: x + log(1 - exp(-x))
        self.raw = nn.Parameter(torch.tensor(initial + math.log(-math.expm1(-initial))))

    def forward(self) -> Tensor:
        return F.softplus(self.raw)
