"""A tiny few-shot model and a synthetic episode sampler for checks of the training loop.

(And :func:`tiny_semisup_model`, an untrained semi-supervised model file for
checks of the readers behind ``medfss evaluate``.)

The model is cosine prototype matching on a two-layer conv encoder with
dropout: dropout makes each step's loss depend on torch's random generator,
so resume checks also check that randomness is restored. The sampler's
foreground is a bright square at a random place and size. A run of dozens of
steps at 16 px takes seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfss.config import DataConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig
from medfss.data.episodes import Episode
from medfss.models.base import FewShotSegmenter

SIZE = 16  # pixels per side


class TinySegmenter(FewShotSegmenter):
    """Cosine prototype matching on a two-layer conv encoder, with dropout."""

    def __init__(self, channels: int = 8):
        super().__init__(nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
                                       nn.Conv2d(channels, channels, 3, padding=1)))
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.seen: list[tuple[float, float]] = []  # (query fingerprint, loss) of every loss() call

    def forward(self, episode: Episode) -> torch.Tensor:  # [B, 2, H, W]
        b, s = episode.support_images.shape[:2]
        support = self.encoder(episode.support_images.flatten(0, 1))  # [B*S, C, H, W]
        query = self.encoder(episode.query_images)  # [B, C, H, W]
        fg = episode.support_masks.flatten(0, 1).unsqueeze(1)  # [B*S, 1, H, W]
        prototypes = torch.stack([(support * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1)
                                  for m in (1 - fg, fg)], dim=1)  # [B*S, 2, C]
        prototypes = prototypes.view(b, s, 2, -1).mean(1)  # [B, 2, C]
        return self.scale * F.cosine_similarity(query.unsqueeze(1), prototypes[..., None, None], dim=2)

    def loss(self, episode: Episode) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(self(episode), episode.query_masks)
        self.seen.append((float(episode.query_images.sum()), float(ce.detach())))
        return {"loss": ce, "ce": ce, "scale": self.scale.detach()}


def build_tiny(model: ModelConfig) -> TinySegmenter:
    """The ``build`` argument of :func:`medfss.checkpoints.load_model` for tiny checkpoints."""
    return TinySegmenter(**model.options)


class SquareSampler:
    """Episodes whose foreground is a bright square at a random place and size."""

    slice_orientation = "LAS"  # as if cut from LAS volumes: checkpoints must carry it

    def _view(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        side = int(rng.integers(4, 8))
        y, x = rng.integers(0, SIZE - side, 2)
        mask = torch.zeros(SIZE, SIZE)
        mask[y:y + side, x:x + side] = 1
        return torch.from_numpy(rng.normal(0, 0.5, (SIZE, SIZE))).float() + 2 * mask, mask

    def sample(self, rng: np.random.Generator) -> Episode:
        (support, support_mask), (query, query_mask) = self._view(rng), self._view(rng)
        return Episode(support_images=support[None, None, None], support_masks=support_mask[None, None],
                       query_images=query[None, None], query_masks=query_mask[None].long())


def tiny_config(iterations: int = 6, checkpoint_every: int = 3, **optim) -> TrainConfig:
    """A CPU config for :class:`TinySegmenter` on :class:`SquareSampler` episodes, batches of 2."""
    return TrainConfig(
        model=ModelConfig(name="tiny", options={"channels": 8}),
        data=DataConfig(dataset="synthetic-squares", image_size=SIZE),
        optim=OptimConfig(**{"lr": 0.05, "iterations": iterations, "batch_size": 2, **optim}),
        runtime=RuntimeConfig(accelerator="cpu", checkpoint_every=checkpoint_every, log_every=1),
    )


def tiny_semisup_model(dataset: str, path: Path) -> Path:
    """An untrained semi-supervised model file for ``dataset`` (ACDC: 2D U-Net, LA: 3D V-Net, 4 channels, 16 px)."""
    from medfss.semisup.checkpoint import save_model
    from medfss.semisup.config import InferenceConfig, SemiSupConfig, SemiSupDataConfig, SemiSupModelConfig
    from medfss.semisup.data import get_layout
    from medfss.semisup.networks import build_network

    dims = 2 if dataset == "ACDC" else 3
    config = SemiSupConfig(
        model=SemiSupModelConfig(name="supervised-only", channels=(4, 8) if dims == 2 else (4,)),
        data=SemiSupDataConfig(dataset=dataset, patch_size=(SIZE,) * dims, crop_size=(SIZE // 2,) * dims,
                               labeled_batch=2, unlabeled_batch=2),
        inference=InferenceConfig(stride=(SIZE // 2,) * 3))
    torch.manual_seed(0)
    net = build_network(dims, channels=config.model.channels, num_classes=get_layout(dataset).num_classes)
    return save_model(net, config, path)
