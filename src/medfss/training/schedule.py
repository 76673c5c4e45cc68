"""The optimiser and its learning-rate schedule (SSL-ALPNet sec. 4: SGD, step decay).

At iteration t (0-based, counted in optimisation steps)

    lr_t = lr * gamma ** floor(t / step)

with lr = 1e-3, gamma = 0.98, step = 1000 in the paper. The factor is a closed
form of t, so the learning rate after a resume is exactly that of an
uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from torch import nn
from torch.optim import SGD
from torch.optim.lr_scheduler import LambdaLR

from medfss.config import OptimConfig


def step_decay(iteration: int, *, gamma: float, step: int) -> float:
    """The multiplier of the base learning rate at ``iteration``: ``gamma ** (iteration // step)``."""
    return gamma ** (iteration // step)


def build_optimizer(parameters: Iterable[nn.Parameter], optim: OptimConfig) -> tuple[SGD, LambdaLR]:
    """SGD with momentum and weight decay, and its per-iteration step decay.

    The scheduler must be stepped once per optimisation step (Lightning
    ``interval="step"``). Its state holds no function, so checkpoints stay
    loadable with ``torch.load(weights_only=True)``.
    """
    optimizer = SGD(parameters, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    scheduler = LambdaLR(optimizer, partial(step_decay, gamma=optim.lr_gamma, step=optim.lr_step))
    return optimizer, scheduler
