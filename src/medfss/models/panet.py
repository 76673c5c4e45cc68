"""PANet (Wang et al., ICCV 2019) as compared in SSL-ALPNet: one class-level prototype per class.

    p(c) = mean over shots of MAP(f(x_s), y_s(c))             (SSL-ALPNet eq. 3)
    logits_c(h, w) = alpha * cos(p(c), f(x_q)(h, w))          (eq. 4, alpha = 20)
    loss = CE + lambda * prototype alignment                  (eq. 7-9)

That is ALPNet with adaptive local pooling turned off: with a single
prototype per class the fused similarity of eq. 5 is the plain scaled cosine.
The class weights default to SSL-ALPNet's (0.05, 1.0), under which its PANet
baselines were trained; ``bg_weight=1`` gives the unweighted loss of the
original PANet.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medfss.models.alpnet import ALPNet, ALPNetConfig


@dataclass(frozen=True)
class PANetConfig:
    """Settings of :class:`PANet`: those of :class:`ALPNetConfig` that do not concern local prototypes."""

    alpha: float = 20.0
    align_weight: float = 1.0
    bg_weight: float = 0.05
    fg_weight: float = 1.0

    def as_alpnet(self) -> ALPNetConfig:
        """The equivalent ALPNet settings: no local prototypes (validated there)."""
        return ALPNetConfig(pool_window_train=None, pool_window_eval=None, alpha=self.alpha,
                            align_weight=self.align_weight, bg_weight=self.bg_weight, fg_weight=self.fg_weight)

    def __post_init__(self):
        self.as_alpnet()


class PANet(ALPNet):
    """ALPNet with class-level prototypes only."""

    def __init__(self, encoder: nn.Module, config: PANetConfig = PANetConfig()):
        super().__init__(encoder, config.as_alpnet())
