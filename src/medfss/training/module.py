"""The Lightning wrapper shared by every episodic model, and the episode DataModule.

The module only knows the :class:`FewShotSegmenter` contract: a training step
is ``model.loss(episode)``, every returned term is logged and the total
(``"loss"``) is minimised. Nothing model-specific lives here.

Reproducibility and exact resumption rest on two step-addressed seeds: the
episodes of step t come from (seed, rank, t) (:mod:`medfss.training.stream`),
and torch's generator, which drives dropout and any other random layer, is
reseeded from (seed, rank, t) before step t. Together with the restored
weights, optimiser and scheduler, step t after a resume computes what it
computes in an uninterrupted run.

A non-finite loss or gradient norm stops training with a
:class:`~medfss.errors.TrainingError` naming the step and every loss term,
before the optimiser step: the weights and the last checkpoint stay finite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from medfss.checkpoints import checkpoint_metadata
from medfss.config import TrainConfig
from medfss.data.episodes import Episode
from medfss.errors import TrainingError
from medfss.models.base import FewShotSegmenter
from medfss.training.schedule import build_optimizer
from medfss.training.stream import StepEpisodes, torch_step_seed

if TYPE_CHECKING:
    from medfss.data.samplers import EpisodeSampler


class EpisodicModule(L.LightningModule):
    """Trains any :class:`FewShotSegmenter` on ``(step, Episode)`` batches."""

    def __init__(self, model: FewShotSegmenter, config: TrainConfig, slice_orientation: str | None = None):
        super().__init__()
        self.model = model  # attribute name = checkpoints.LIGHTNING_PREFIX
        self.config = config
        self.slice_orientation = slice_orientation  # voxel order of the training volumes, kept in checkpoints

    def forward(self, episode: Episode) -> Tensor:  # [B, 2, H, W]
        return self.model(episode)

    def on_train_batch_start(self, batch: tuple[int, Episode], batch_idx: int) -> None:
        torch.manual_seed(torch_step_seed(self.config.runtime.seed, self.global_rank, self.global_step))

    def training_step(self, batch: tuple[int, Episode], batch_idx: int) -> Tensor:
        step, episode = batch
        if step != self.global_step:
            raise RuntimeError(f"episode stream is at step {step} but the trainer at {self.global_step}: "
                               "a resumed run would not repeat the uninterrupted one")
        terms = self.model.loss(episode)
        if "loss" not in terms:
            raise KeyError(f"{type(self.model).__name__}.loss() must return the total under 'loss', "
                           f"got {sorted(terms)}")
        if not torch.isfinite(terms["loss"]):
            raise TrainingError(f"step {self.global_step}: the loss is not finite "
                                f"({format_terms(terms)})")
        self.log("loss", terms["loss"].detach(), prog_bar=True, batch_size=episode.batch_size)
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()},
                      batch_size=episode.batch_size)
        return terms["loss"]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Before any clipping (Lightning clips after this hook): the norm the step would have taken.
        gradients = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not gradients:
            return
        norm = torch.nn.utils.get_total_norm(gradients)
        # 16-bit mixed precision overflows on purpose: its gradient scaler then skips the step
        if not torch.isfinite(norm) and self.config.runtime.precision != "16-mixed":
            raise TrainingError(f"step {self.global_step}: the gradient norm is {float(norm)} with a finite loss")
        self.log("train/grad_norm", norm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, scheduler = build_optimizer(self.model.parameters(), self.config.optim)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.update(checkpoint_metadata(self.config, self.slice_orientation))


def format_terms(terms: dict[str, Tensor]) -> str:
    """``"loss=nan, ce=1.2"``: every scalar term, for messages."""
    return ", ".join(f"{name}={float(value.detach().float().mean()):.6g}" for name, value in terms.items())


class EpisodeDataModule(L.LightningDataModule):
    """Serves :class:`StepEpisodes` starting at the trainer's current step and rank.

    The DataLoader is made when fitting starts, after Lightning has restored a
    checkpoint, so a resumed run's stream starts at the restored step.
    """

    def __init__(self, sampler: EpisodeSampler, *, batch_size: int, seed: int, num_workers: int = 0):
        super().__init__()
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        episodes = StepEpisodes(self.sampler, batch_size=self.batch_size, seed=self.seed,
                                rank=self.trainer.global_rank, start_step=self.trainer.global_step)
        return DataLoader(episodes, batch_size=None, num_workers=self.num_workers)

    def transfer_batch_to_device(self, batch: tuple[int, Episode], device: torch.device,
                                 dataloader_idx: int) -> tuple[int, Episode]:
        step, episode = batch  # Episode is a frozen dataclass: Lightning's generic mover cannot set its fields
        return step, episode.to(device)
