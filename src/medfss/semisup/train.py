"""Training of the semi-supervised models: two Lightning stages (MPER sec. II).

1. *Pre-training* on the labelled images with copy-paste between them
   (CE + Dice against the mixed ground truth).
2. *Self-training*: student and teacher start from the pre-trained network;
   the teacher (EMA of the student, :mod:`~medfss.semisup.mean_teacher`)
   pseudo-labels the unlabelled images; the student learns from the
   bidirectional copy-paste mixtures (:mod:`~medfss.semisup.copy_paste`)
   with eq. 4-6 (:mod:`~medfss.semisup.losses`); for ``multi-prototype`` the
   prototypes (:mod:`~medfss.semisup.prototypes`) are initialised by k-means
   on the pre-trained embeddings of the labelled images and updated by eq. 2.

``supervised-only`` is one plain supervised stage of as many iterations as
both stages, without copy-paste. A run folder holds afterwards::

    config.yaml      the exact config
    pretrain.pt      the network after stage 1 (two-stage models)
    model.pt         the trained student, for evaluate / segment (see checkpoint.py)
    training.json    iterations and wall time per stage, machine, threads, code revision
    logs/<stage>/    Lightning's CSV logs (every loss term)

Runs cannot be resumed: a CPU preset trains in minutes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torch.utils.data import DataLoader

from medfss.config import save_config
from medfss.data.io import write_text_atomic
from medfss.errors import ConfigError
from medfss.provenance import provenance
from medfss.semisup.batches import BatchSource, ImagePool, StepBatches
from medfss.semisup.checkpoint import save_model
from medfss.semisup.config import SemiSupConfig
from medfss.semisup.copy_paste import bidirectional
from medfss.semisup.data import (dataset_root, get_layout, load_slices, load_volumes, read_list, split_labeled,
                                 without_patients)
from medfss.semisup.losses import ce_dice, sigmoid_rampup, total_loss, zero
from medfss.semisup.mean_teacher import ema_update, make_teacher
from medfss.semisup.networks import SegmentationNet, build_network
from medfss.semisup.prototypes import MultiPrototypeClassifier, flatten_voxels, prototype_infonce
from medfss.training.schedule import build_optimizer

PRETRAIN, SELFTRAIN = 0, 1  # stage tags of the batch streams


def supervised_loss(net: SegmentationNet, batch: dict[str, Tensor], *, copy_paste: bool) -> Tensor:
    """CE + Dice on the labelled images; with ``copy_paste`` on their mixtures, each with another's box."""
    image, label = batch["labeled"], batch["label"]  # [B, 1, *S], [B, *S]
    if copy_paste:
        image = torch.cat(bidirectional(image, image.roll(1, 0), batch["mask"]))
        label = torch.cat(bidirectional(label, label.roll(1, 0), batch["mask"]))
    return ce_dice(net(image), label)


def pseudo_labels(teacher: SegmentationNet, unlabeled: Tensor) -> tuple[Tensor, Tensor]:
    """The teacher's (class, confidence) per voxel: [B, *S] each."""
    teacher.eval()  # Lightning's train() at fit start reaches it too
    with torch.no_grad():
        confidence, label = teacher(unlabeled).softmax(dim=1).max(dim=1)
    return label, confidence


def self_training_loss(student: SegmentationNet, teacher: SegmentationNet,
                       prototypes: MultiPrototypeClassifier | None, batch: dict[str, Tensor],
                       config: SemiSupConfig, step: int) -> tuple[Tensor, dict[str, Tensor], tuple | None]:
    """Eq. 6 on the bidirectional copy-paste mixtures of one step (eq. 4 alone without prototypes).

    Returns the loss, its terms, and the arguments of the prototypes' eq. 2
    update, which must wait for the backward pass (it needs p_t).
    """
    mask, model = batch["mask"], config.model
    pseudo, confidence = pseudo_labels(teacher, batch["unlabeled"])
    image = torch.cat(bidirectional(batch["labeled"], batch["unlabeled"], mask))  # X^m [B, 1, *S]
    label = torch.cat(bidirectional(batch["label"], pseudo, mask))  # Y^m [B, *S]
    trust = torch.cat(bidirectional(torch.ones_like(confidence), confidence, mask))  # 1 on labelled voxels
    z, logits = student.embed_and_classify(image)
    cons_linear = ce_dice(logits, label)
    if prototypes is None:
        return cons_linear, {"cons_linear": cons_linear}, None
    voxels, labels = flatten_voxels(z), label.reshape(-1)  # [V, d], [V]
    keep = trust.reshape(-1) > model.confidence
    cons_proto = ce_dice(prototypes(z), label) if model.prototype_consistency else zero(cons_linear)
    contrastive = prototype_infonce(voxels[keep], labels[keep], prototypes, model.tau2)
    ramp = sigmoid_rampup(step, config.schedule.rampup_iterations or config.schedule.selftrain_iterations)
    loss = total_loss(cons_linear, cons_proto, contrastive, ramp=ramp, gamma=model.gamma)
    terms = {"cons_linear": cons_linear, "cons_prototype": cons_proto, "contrastive": contrastive,
             "ramp": cons_linear.new_tensor(ramp), "kept_voxels": keep.float().mean()}
    return loss, terms, (voxels.detach(), labels, keep)


class SupervisedStage(L.LightningModule):
    """Stage 1 (``copy_paste``) or the whole of ``supervised-only``: :func:`supervised_loss`."""

    def __init__(self, net: SegmentationNet, config: SemiSupConfig, *, copy_paste: bool):
        super().__init__()
        self.net = net
        self.config = config
        self.copy_paste = copy_paste

    def training_step(self, batch: tuple[int, dict[str, Tensor]], batch_idx: int) -> Tensor:
        loss = supervised_loss(self.net, batch[1], copy_paste=self.copy_paste)
        self.log("loss", loss.detach(), batch_size=len(batch[1]["labeled"]))
        return loss

    def configure_optimizers(self):
        return build_optimizer(self.net.parameters(), self.config.optim)[0]


class SelfTrainingStage(L.LightningModule):
    """Stage 2: :func:`self_training_loss`, then eq. 2 and the teacher's EMA after each optimiser step."""

    def __init__(self, student: SegmentationNet, config: SemiSupConfig,
                 prototypes: MultiPrototypeClassifier | None = None):
        super().__init__()
        self.student = student
        self.teacher = make_teacher(student)
        self.prototypes = prototypes
        self.config = config
        self._update: tuple | None = None

    def training_step(self, batch: tuple[int, dict[str, Tensor]], batch_idx: int) -> Tensor:
        loss, terms, self._update = self_training_loss(self.student, self.teacher, self.prototypes, batch[1],
                                                       self.config, self.global_step)
        size = 2 * len(batch[1]["labeled"])
        self.log("loss", loss.detach(), batch_size=size)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._update is not None:
            self.prototypes.momentum_update(*self._update)
        ema_update(self.teacher, self.student, self.global_step - 1, self.config.model.ema_decay)

    def configure_optimizers(self):
        return build_optimizer(self.student.parameters(), self.config.optim)[0]


def build_source(config: SemiSupConfig) -> BatchSource:
    """The labelled and unlabelled training pools of the config's data set and fraction."""
    data = config.data
    layout = get_layout(data.dataset)
    root = dataset_root(layout, data.data_root)
    labeled, unlabeled = split_labeled(read_list(root / layout.train_list), data.labeled_fraction)
    if data.holdout_list is not None:
        holdout = read_list(data.holdout_list)
        if without_patients(labeled, holdout) != labeled:
            raise ConfigError(f"data.holdout_list {data.holdout_list} holds labelled patients; hold out "
                              "patients from the end of the training list")
        unlabeled = without_patients(unlabeled, holdout)
    if not unlabeled and config.model.name != "supervised-only":
        raise ConfigError(f"data.labeled_fraction={data.labeled_fraction} labels every training patient: "
                          "nothing is left for self-training (use model.name=supervised-only)")
    pools = []
    for names in (labeled, unlabeled or labeled):
        if data.spatial_dims == 2:
            images, labels = load_slices(layout, root, names, data.patch_size)
            pools.append(ImagePool(list(images[:, 0]), list(labels), data.patch_size))
        else:
            volumes = load_volumes(layout, root, names)
            pools.append(ImagePool([torch.from_numpy(i) for i, _ in volumes],
                                   [torch.from_numpy(l) for _, l in volumes], data.patch_size))
    held_out = f", patients of {data.holdout_list} held out" if data.holdout_list else ""
    print(f"{data.dataset}: {len(labeled)} labelled and {len(unlabeled)} unlabelled training images "
          f"(labelled fraction {data.labeled_fraction}{held_out})", flush=True)
    return BatchSource(pools[0], pools[1], data.labeled_batch, data.crop_size)


def _fit(module: L.LightningModule, source: BatchSource, config: SemiSupConfig, run_dir: Path,
         stage: int, name: str, steps: int) -> float:
    """Train ``module`` for ``steps`` iterations on the step-addressed batches; returns the wall time (s)."""
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator=config.runtime.accelerator, devices=1,
                        logger=CSVLogger(run_dir / "logs", name=name), log_every_n_steps=config.runtime.log_every,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=run_dir)
    loader = DataLoader(StepBatches(source, seed=config.runtime.seed, stage=stage), batch_size=None)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    elapsed = time.perf_counter() - start
    print(f"{name}: {steps} iterations in {elapsed:.0f} s, last loss "
          f"{float(trainer.callback_metrics.get('loss', float('nan'))):.4f}", flush=True)
    return elapsed


@torch.no_grad()
def initial_prototypes(net: SegmentationNet, source: BatchSource, config: SemiSupConfig
                       ) -> MultiPrototypeClassifier:
    """Prototypes at the MiniBatchKMeans centres of the pre-trained embeddings of labelled images."""
    model = config.model
    prototypes = MultiPrototypeClassifier(net.num_classes, model.prototypes_per_class, net.backbone.embedding_dim,
                                          tau=model.tau1, momentum=model.prototype_momentum)
    rng = np.random.default_rng(config.runtime.seed)
    images, labels = source.labeled.draw(rng, source.batch_size)
    net.eval()
    z = flatten_voxels(net.backbone(images))  # [V, d]
    labels = labels.reshape(-1)
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels.numpy() == c))[:model.kmeans_voxels]
                           for c in range(net.num_classes)])  # at most kmeans_voxels voxels per class
    prototypes.initialise(z[keep], labels[keep], seed=config.runtime.seed)
    net.train()
    return prototypes


def train(config: SemiSupConfig, run_dir: str | os.PathLike) -> Path:
    """Train ``config`` into ``run_dir``; returns the path of ``model.pt``."""
    run_dir = Path(run_dir)
    if config.runtime.threads is not None:
        torch.set_num_threads(config.runtime.threads)
    L.seed_everything(config.runtime.seed, verbose=False)
    save_config(config, run_dir / "config.yaml")
    source = build_source(config)
    layout = get_layout(config.data.dataset)
    net = build_network(config.data.spatial_dims, channels=config.model.channels, num_classes=layout.num_classes)
    schedule, stages = config.schedule, {}
    if config.model.name == "supervised-only":
        steps = schedule.pretrain_iterations + schedule.selftrain_iterations
        stages["supervised"] = (steps, _fit(SupervisedStage(net, config, copy_paste=False), source, config,
                                            run_dir, PRETRAIN, "supervised", steps))
        prototypes = None
    else:
        if schedule.pretrain_iterations:
            stages["pretrain"] = (schedule.pretrain_iterations,
                                  _fit(SupervisedStage(net, config, copy_paste=True), source, config, run_dir,
                                       PRETRAIN, "pretrain", schedule.pretrain_iterations))
            save_model(net, config, run_dir / "pretrain.pt")
        prototypes = initial_prototypes(net, source, config) if config.model.name == "multi-prototype" else None
        if schedule.selftrain_iterations:
            stages["selftrain"] = (schedule.selftrain_iterations,
                                   _fit(SelfTrainingStage(net, config, prototypes), source, config, run_dir,
                                        SELFTRAIN, "selftrain", schedule.selftrain_iterations))
    out = save_model(net.cpu(), config, run_dir / "model.pt", prototypes=prototypes)
    record = {"iterations": sum(s for s, _ in stages.values()),
              "wall_time_s": sum(t for _, t in stages.values()),
              "stages": {name: {"iterations": s, "wall_time_s": t} for name, (s, t) in stages.items()},
              **provenance()}
    write_text_atomic(json.dumps(record, indent=2) + "\n", run_dir / "training.json")
    return out
