"""The exported semi-supervised model (``model.pt``) and its safe reader.

``{"state_dict", "config", "medfss_version", "model_name", "task",
"labeled_fraction", "torch_version", "torch_threads"}`` and, for
``multi-prototype``, ``"prototypes"`` [N, K, d]. Read with
``torch.load(weights_only=True)`` by
:func:`medfss.checkpoints.read_checkpoint` (same checks: readable,
a dict, the metadata keys, not from a newer medfss); ``task`` tells it from a
few-shot model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from medfss import __version__
from medfss.config import config_from_dict, config_to_dict
from medfss.errors import ConfigError, InputFileError
from medfss.semisup.config import TASK, SemiSupConfig
from medfss.semisup.data import get_layout
from medfss.semisup.networks import SegmentationNet, build_network
from medfss.semisup.prototypes import MultiPrototypeClassifier
from medfss.checkpoints import read_checkpoint, save_atomic


def save_model(net: SegmentationNet, config: SemiSupConfig, path: str | os.PathLike,
               prototypes: MultiPrototypeClassifier | None = None) -> Path:
    """Write the network, its config and provenance to ``path`` (atomically)."""
    data = {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "config": config_to_dict(config), "medfss_version": __version__, "model_name": config.model.name,
            "task": TASK, "labeled_fraction": config.data.labeled_fraction, "torch_version": str(torch.__version__),
            "torch_threads": torch.get_num_threads()}
    if prototypes is not None:
        data["prototypes"] = prototypes.prototypes.detach().cpu()
    return save_atomic(data, path)


def is_semisup_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable semi-supervised model file (False for anything else)."""
    try:
        return Path(path).is_file() and read_checkpoint(path).get("task") == TASK
    except InputFileError:
        return False


def load_model(path: str | os.PathLike) -> tuple[SegmentationNet, SemiSupConfig, dict]:
    """The trained network (eval mode, CPU), its config and the file's contents."""
    data = read_checkpoint(path)
    if data.get("task") != TASK:
        raise InputFileError(f"{path}: not a semi-supervised model (no task: {TASK})")
    try:
        config = config_from_dict(data["config"], SemiSupConfig)
    except ConfigError as exc:
        raise ConfigError(f"{path}: stored config is invalid for this medfss ({exc})") from None
    net = build_network(config.data.spatial_dims, channels=config.model.channels,
                        num_classes=get_layout(config.data.dataset).num_classes)
    try:
        net.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise InputFileError(f"{path}: weights do not fit the network of its config ({exc})") from None
    return net.eval(), config, data
