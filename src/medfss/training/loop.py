"""``train(config, run_dir)``: one Lightning loop for every episodic model.

A run folder holds, after training::

    config.yaml              the exact config of the (last) run
    checkpoints/last.ckpt    training checkpoint, rewritten every runtime.checkpoint_every
                             iterations, at the end and on SIGINT / SIGTERM: resume from it
    checkpoints/previous.ckpt  the one last.ckpt replaced, used when last.ckpt is unreadable
    logs/csv/version_N/      metrics.csv (every loss term, lr), one version per (re)start
    logs/tensorboard/...     the same for TensorBoard, when it is installed
    model.pt                 the exported model for inference (see medfss.checkpoints.export_model)
    training.json            iterations done, training wall time (summed over resumptions),
                             CPU time, machine and code revision

CPU, one GPU, or several GPUs and nodes with DDP are chosen by the runtime
section; each DDP rank draws its own episodes.

Failures lose nothing: checkpoints are written atomically (a kill at any
moment leaves a readable last.ckpt or previous.ckpt); SIGINT or SIGTERM end
training after the current step, save a checkpoint and raise
:class:`~medfss.errors.TrainingInterrupted` with the command that resumes; a
non-finite loss raises :class:`~medfss.errors.TrainingError` before its
optimiser step, the last checkpoint untouched.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from medfss.checkpoints import (checkpoint_config, export_model, read_checkpoint, record_training,
                                resumable_checkpoint, save_keeping_previous)
from medfss.config import TrainConfig, config_to_dict, save_config
from medfss.errors import ConfigError, TrainingError, TrainingInterrupted
from medfss.models.base import FewShotSegmenter
from medfss.models.registry import build_model_from_config
from medfss.training.factory import build_episode_sampler
from medfss.training.module import EpisodeDataModule, EpisodicModule

if TYPE_CHECKING:
    from medfss.data.samplers import EpisodeSampler

# Settings that may change between a run and its resumption without changing what a step computes.
RESUMABLE_CHANGES = frozenset({
    "data.data_root", "data.cache_dir", "optim.iterations", "runtime.accelerator", "runtime.devices",
    "runtime.num_nodes", "runtime.strategy", "runtime.num_workers", "runtime.checkpoint_every",
    "runtime.log_every", "runtime.precision",
})


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Section dicts -> ``{"optim.lr": 0.001, ...}`` (dict-valued options stay whole)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def resume_conflicts(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """Keys whose change would make the resumed run differ from the one that was interrupted."""
    old, now = _flatten(config_to_dict(saved)), _flatten(config_to_dict(new))
    return sorted(k for k in old.keys() | now.keys()
                  if k not in RESUMABLE_CHANGES and old.get(k) != now.get(k))


def _check_resumable(checkpoint: Path, config: TrainConfig) -> None:
    saved = checkpoint_config(read_checkpoint(checkpoint), checkpoint)
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        raise ConfigError(f"{checkpoint}: cannot resume, the config differs in {', '.join(conflicts)} "
                          "(only the runtime section, optim.iterations and data paths may change)")


def _loggers(run_dir: Path) -> list[Logger]:
    """CSV always; TensorBoard too when it is installed (an optional dependency)."""
    loggers: list[Logger] = [CSVLogger(run_dir / "logs", name="csv")]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(run_dir / "logs", name="tensorboard", default_hp_metric=False))
    return loggers


class RollingCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic and keeping the replaced file as previous.ckpt."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_keeping_previous(checkpoint, path)


class StopOnSignal(Callback):
    """SIGINT / SIGTERM ask training to stop after the current step instead of killing it mid-step.

    The handlers live from the start to the end of fitting (Lightning then
    restores the ones it found); a second signal of the same kind acts as
    usual, so a user can still force an exit. Under DDP the ranks agree to
    stop at the same step.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        self._previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        for s in self.SIGNALS:
            signal.signal(s, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def build_trainer(config: TrainConfig, run_dir: Path, callbacks: list[Callback] = ()) -> L.Trainer:
    """The Lightning trainer of ``config``: step-counted, checkpointing, logging, no validation.

    ``callbacks`` are added to the checkpoint and learning-rate ones.
    """
    runtime = config.runtime
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        every_n_train_steps=runtime.checkpoint_every,
        save_top_k=0,  # no step-named copies: one rolling last.ckpt is enough to resume
        save_last=True,
        enable_version_counter=False,  # always overwrite last.ckpt
    )
    return L.Trainer(
        max_steps=config.optim.iterations,
        max_epochs=-1,  # the episode stream is endless: steps, not epochs, end training
        accelerator=runtime.accelerator,
        devices=runtime.devices,
        num_nodes=runtime.num_nodes,
        strategy=runtime.strategy,
        precision=runtime.precision,
        gradient_clip_val=config.optim.grad_clip,
        gradient_clip_algorithm="norm",
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step"), *callbacks],
        plugins=[RollingCheckpointIO()],
        logger=_loggers(run_dir),
        log_every_n_steps=runtime.log_every,
        default_root_dir=run_dir,
        use_distributed_sampler=False,  # ranks differ by their episode seeds, not by a sampler
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def train(config: TrainConfig, run_dir: str | os.PathLike, *, resume: str | os.PathLike | None = None,
          model: FewShotSegmenter | None = None, sampler: EpisodeSampler | None = None,
          callbacks: list[Callback] = ()) -> Path:
    """Train ``config`` into ``run_dir`` and return the exported model's path (``run_dir/model.pt``).

    ``resume``: a training checkpoint to continue from; its config must match
    ``config`` but for the settings in :data:`RESUMABLE_CHANGES`, and the run
    then continues exactly where it stopped (from the ``previous.ckpt`` beside
    it, with a warning, when it is unreadable). ``model`` and ``sampler`` replace
    the ones built from the config, and ``callbacks`` are added to the
    trainer's (for custom models and tests). Under DDP
    every process calls this; rank 0 writes the config and the export.

    Raises :class:`TrainingInterrupted` after saving a checkpoint when SIGINT
    or SIGTERM stop training, and :class:`TrainingError` on a non-finite loss.
    """
    run_dir = Path(run_dir)
    if resume is not None:
        resume = resumable_checkpoint(resume)
        _check_resumable(resume, config)
    L.seed_everything(config.runtime.seed, workers=True, verbose=False)  # before the model: same init
    model = model if model is not None else build_model_from_config(config.model)
    sampler = sampler if sampler is not None else build_episode_sampler(config, run_dir)
    stop = StopOnSignal()
    trainer = build_trainer(config, run_dir, [stop, *callbacks])
    if trainer.is_global_zero:
        save_config(config, run_dir / "config.yaml")
    data = EpisodeDataModule(sampler, batch_size=config.optim.batch_size, seed=config.runtime.seed,
                             num_workers=config.runtime.num_workers)
    start, cpu_start = time.perf_counter(), time.process_time()
    module = EpisodicModule(model, config, slice_orientation=getattr(sampler, "slice_orientation", None))
    last = run_dir / "checkpoints" / "last.ckpt"  # ModelCheckpoint's save_last file
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
    except TrainingError as exc:
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved yet"
        raise TrainingError(f"{exc}; training stopped and {kept}; lower optim.lr or set optim.grad_clip, "
                            "then resume with --resume auto") from None
    elapsed, cpu_time = time.perf_counter() - start, time.process_time() - cpu_start
    if trainer.global_step % config.runtime.checkpoint_every:  # the callback did not save the final step
        trainer.save_checkpoint(last, weights_only=False)  # with the optimizer and loop state, to resume
    if trainer.is_global_zero:
        record_training(run_dir, trainer.global_step, elapsed, resumed=resume is not None, cpu_time_s=cpu_time)
    if stop.received is not None:
        raise TrainingInterrupted(
            f"training stopped by {signal.Signals(stop.received).name} at step {trainer.global_step} of "
            f"{config.optim.iterations}; checkpoint saved to {last}; to continue: medfss train --config "
            f"{run_dir / 'config.yaml'} --run-dir {run_dir} --resume auto", stop.received)
    out = run_dir / "model.pt"
    if trainer.is_global_zero:
        export_model(last, out)
    return out

