"""The settings of a semi-supervised run: typed frozen dataclasses, read like :mod:`medfss.config`.

A YAML file is a semi-supervised config when it says ``task: semi-supervised``
at the top level; ``medfss train`` then builds a :class:`SemiSupConfig` from
it (same YAML + ``--set`` rules, same one-line :class:`ConfigError`) and hands
it to :func:`medfss.semisup.train.train`. Defaults are the paper's ACDC
settings (MPER sec. III-A, BCP for what MPER leaves to it); the presets in
``configs/mper_*.yaml`` change what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medfss.config import OptimConfig, load_config
from medfss.validation import require

TASK = "semi-supervised"
MODEL_NAMES = ("supervised-only", "mean-teacher-copy-paste", "multi-prototype")


@dataclass(frozen=True)
class SemiSupModelConfig:
    """The network and the method.

    ``name``: ``supervised-only`` (the network on the labelled images alone),
    ``mean-teacher-copy-paste`` (two stages, Mean Teacher with bidirectional
    copy-paste, the linear classifier only: Table III row 1) or
    ``multi-prototype`` (the full method, eq. 1-6). ``prototype_consistency``
    and ``gamma`` = 0 give Table III's other rows.
    """

    name: Literal["supervised-only", "mean-teacher-copy-paste", "multi-prototype"] = "multi-prototype"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # U-Net level widths; V-Net: [n_filters]
    prototypes_per_class: int = 3  # K
    tau1: float = 0.1  # eq. 1
    tau2: float = 0.1  # eq. 5
    prototype_momentum: float = 0.999  # eta, eq. 2
    confidence: float = 0.9  # alpha: unlabelled voxels above it update the prototypes
    gamma: float = 0.1  # eq. 6 (0.1 ACDC, 0.02 LA)
    prototype_consistency: bool = True  # L_cons^p in eq. 6 (Table III)
    ema_decay: float = 0.99  # teacher = EMA of the student (BCP's value)
    kmeans_voxels: int = 20_000  # embeddings per class fed to MiniBatchKMeans at initialisation

    def __post_init__(self):
        require(len(self.channels) >= 1 and all(c >= 1 for c in self.channels), "model.channels",
                 f"must be positive widths, got {list(self.channels)}")
        require(self.prototypes_per_class >= 1, "model.prototypes_per_class",
                 f"must be >= 1, got {self.prototypes_per_class}")
        require(self.tau1 > 0 and self.tau2 > 0, "model.tau1/tau2", "must be > 0")
        require(0 < self.prototype_momentum < 1, "model.prototype_momentum", "must be in (0, 1)")
        require(0 <= self.confidence < 1, "model.confidence", "must be in [0, 1)")
        require(self.gamma >= 0, "model.gamma", f"must be >= 0, got {self.gamma}")
        require(0 < self.ema_decay < 1, "model.ema_decay", "must be in (0, 1)")
        require(self.kmeans_voxels >= self.prototypes_per_class, "model.kmeans_voxels",
                 "must be >= prototypes_per_class")


@dataclass(frozen=True)
class SemiSupDataConfig:
    """The data set, the labelled/unlabelled split and the training batches.

    ACDC: 2D slices resized to ``patch_size``; LA: random ``patch_size`` crops
    of the volumes. ``crop_size``: the zero-value region of the copy-paste
    mask (ACDC 170 x 170 of 256 x 256, LA 74 x 74 x 53 of 112 x 112 x 80).
    ``labeled_fraction``: of the training patients (ACDC: 70, LA: 80 volumes),
    the first ``floor(fraction * n)`` in the list order are labelled.
    ``holdout_list``: a list file of volume names (ACDC frames, LA ids) whose
    patients are left out of training altogether, neither labelled nor
    unlabelled: an inner validation split on which to choose settings without
    the validation volumes. The labelled patients stay the literature's.
    """

    dataset: Literal["ACDC", "LA"] = "ACDC"
    data_root: str | None = None  # None: $MEDFSS_DATA_ROOT, else ../shared/data
    labeled_fraction: float = 0.1
    patch_size: tuple[int, ...] = (256, 256)
    crop_size: tuple[int, ...] = (170, 170)
    labeled_batch: int = 12
    unlabeled_batch: int = 12
    holdout_list: str | None = None

    def __post_init__(self):
        dims = 2 if self.dataset == "ACDC" else 3
        require(0 < self.labeled_fraction <= 1, "data.labeled_fraction",
                 f"must be in (0, 1], got {self.labeled_fraction}")
        require(len(self.patch_size) == dims, "data.patch_size", f"needs {dims} sizes for {self.dataset}")
        require(len(self.crop_size) == dims and all(0 < c <= p for c, p in zip(self.crop_size, self.patch_size)),
                 "data.crop_size", f"needs {dims} sizes, each in 1..patch_size, got {list(self.crop_size)}")
        # BCP splits each batch in two halves: one pasted into the other's partner
        require(self.labeled_batch >= 2 and self.labeled_batch % 2 == 0, "data.labeled_batch",
                 f"must be even and >= 2, got {self.labeled_batch}")
        require(self.unlabeled_batch == self.labeled_batch, "data.unlabeled_batch",
                 "must equal data.labeled_batch (bidirectional copy-paste pairs them)")

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)


@dataclass(frozen=True)
class ScheduleConfig:
    """Iterations of the two stages (sec. II): copy-paste pre-training, then self-training.

    ``supervised-only`` trains for the sum of both on the labelled images.
    ``rampup_iterations``: length of the sigmoid ramp-up of lambda(t) (eq. 6);
    None: the whole self-training stage.
    """

    pretrain_iterations: int = 10_000
    selftrain_iterations: int = 30_000
    rampup_iterations: int | None = None

    def __post_init__(self):
        require(self.pretrain_iterations >= 0, "schedule.pretrain_iterations", "must be >= 0")
        require(self.selftrain_iterations >= 0, "schedule.selftrain_iterations", "must be >= 0")
        require(self.pretrain_iterations + self.selftrain_iterations >= 1, "schedule",
                 "needs at least one iteration")
        require(self.rampup_iterations is None or self.rampup_iterations >= 1, "schedule.rampup_iterations",
                 "must be >= 1 or null")


@dataclass(frozen=True)
class InferenceConfig:
    """3D sliding-window inference (LA): the literature's strides 18, 18, 4 for 112 x 112 x 80 windows."""

    stride: tuple[int, ...] = (18, 18, 4)

    def __post_init__(self):
        require(all(s >= 1 for s in self.stride), "inference.stride", "must be >= 1 voxel")


@dataclass(frozen=True)
class SemiSupRuntimeConfig:
    seed: int = 0
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    log_every: int = 50
    threads: int | None = None  # torch.set_num_threads; None: torch's default

    def __post_init__(self):
        require(self.seed >= 0, "runtime.seed", f"must be >= 0, got {self.seed}")
        require(self.log_every >= 1, "runtime.log_every", f"must be >= 1, got {self.log_every}")
        require(self.threads is None or self.threads >= 1, "runtime.threads", "must be >= 1 or null")


def _paper_optim() -> OptimConfig:
    """BCP / MPER: SGD, lr 0.01, momentum 0.9, weight decay 1e-4, no decay."""
    return OptimConfig(lr=0.01, momentum=0.9, weight_decay=1e-4, lr_gamma=1.0, lr_step=1000,
                       iterations=1, batch_size=1)


@dataclass(frozen=True)
class SemiSupConfig:
    """Everything a semi-supervised run depends on (``optim.iterations`` and ``batch_size`` are unused)."""

    task: Literal["semi-supervised"] = TASK
    model: SemiSupModelConfig = field(default_factory=SemiSupModelConfig)
    data: SemiSupDataConfig = field(default_factory=SemiSupDataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=_paper_optim)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    runtime: SemiSupRuntimeConfig = field(default_factory=SemiSupRuntimeConfig)

    def __post_init__(self):
        require(self.data.dataset == "LA" or self.model.channels and len(self.model.channels) >= 2,
                 "model.channels", "the 2D U-Net needs at least 2 level widths")
        require(self.data.dataset == "ACDC" or len(self.model.channels) == 1, "model.channels",
                 "the 3D V-Net takes one width, e.g. [16]")
        require(len(self.inference.stride) == 3 or self.data.dataset == "ACDC", "inference.stride",
                 "needs 3 strides for LA")


def load_semisup_config(path, overrides=()) -> SemiSupConfig:
    """A :class:`SemiSupConfig` from a YAML file and ``section.key=value`` overrides."""
    return load_config(path, overrides, cls=SemiSupConfig)


def is_semisup_yaml(values) -> bool:
    """The dispatch rule of ``medfss train``: a top-level ``task: semi-supervised``."""
    return isinstance(values, dict) and values.get("task") == TASK
