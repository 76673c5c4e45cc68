"""The contract every few-shot model implements.

The trainer and the evaluation protocol only ever see this interface:

* ``forward(episode) -> logits [B, 2, H, W]`` (channel 0 background,
  channel 1 the episode's foreground class), at the episode's resolution;
* ``loss(episode) -> dict[str, Tensor]`` with the total under ``"loss"`` and
  its named terms beside it, for training episodes that carry query masks.
"""

from __future__ import annotations

from torch import Tensor, nn

from medfss.data.episodes import Episode


class FewShotSegmenter(nn.Module):
    """Base class: subclasses implement ``forward`` and ``loss``."""

    def forward(self, episode: Episode) -> Tensor:  # [B, 2, H, W]
        raise NotImplementedError

    def loss(self, episode: Episode) -> dict[str, Tensor]:
        raise NotImplementedError
