"""Mean Teacher (Tarvainen & Valpola 2017): the teacher is an exponential moving average of the student.

After optimisation step t (counted from 0),

    theta_teacher <- a_t * theta_teacher + (1 - a_t) * theta_student,   a_t = min(1 - 1 / (t + 1), decay)

The warm-up ``1 - 1/(t+1)`` makes the teacher the plain average of the
student's first weights, so it is not stuck at its initial value (it is 0 at
t = 0: the teacher copies the student). BatchNorm running statistics are
averaged the same way; integer buffers (batch counters) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_factor(step: int, decay: float) -> float:
    """a_t = min(1 - 1 / (t + 1), decay)."""
    return min(1.0 - 1.0 / (step + 1), decay)


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of the student, in eval mode (its pseudo-labels are deterministic)."""
    teacher = copy.deepcopy(student).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, step: int, decay: float) -> None:
    """One EMA step of every parameter and floating buffer of ``teacher`` towards ``student``."""
    a = ema_factor(step, decay)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(a).add_(s.detach(), alpha=1.0 - a)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            t.mul_(a).add_(s.detach(), alpha=1.0 - a)
        else:
            t.copy_(s)
