"""Model name + checkpoint -> the predictor of each fold, for ``medfss evaluate``.

A no-training baseline is the same predictor for every fold. A trained model
has one checkpoint per fold (cross-validation trains one model on the other
folds' volumes), so a checkpoint path may hold ``{fold}``, replaced by the
fold number; a path without it is used for every fold, which is right for a
model trained on other data and wrong for in-data cross-validation (it would
be tested on its own training volumes), so that case prints a warning.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch

from medfss.errors import ConfigError
from medfss.evaluation.baselines import BASELINES, build_baseline
from medfss.evaluation.predictor import EpisodicPredictor, Predictor


def checkpoint_for_fold(checkpoint: str | os.PathLike, fold: int) -> str:
    """``checkpoint`` with ``{fold}`` replaced by ``fold``."""
    return str(checkpoint).replace("{fold}", str(fold))


def predictor_factory(model: str, checkpoint: str | os.PathLike | None = None, *,
                      device: str | torch.device = "cpu", batch_size: int = 8
                      ) -> Callable[[int], Predictor]:
    """``fold -> Predictor`` for the baseline or trained model called ``model``.

    Trained models are read with :func:`medfss.training.checkpoints.load_model`
    (``weights_only``), checked to be the named model, and run at the image
    size they were trained at.
    """
    if model in BASELINES:
        if checkpoint is not None:
            raise ConfigError(f"{model!r} is a no-training baseline: it takes no --checkpoint")
        predictor = build_baseline(model)
        return lambda fold: predictor
    if checkpoint is None:
        raise ConfigError(f"model {model!r} needs --checkpoint (a trained model file; '{{fold}}' in its path "
                          f"is replaced by the fold number); the baselines {sorted(BASELINES)} need none")
    if "{fold}" not in str(checkpoint):
        print(f"medfss: warning: checkpoint {checkpoint} has no '{{fold}}': the same model is evaluated on "
              "every fold; if it was trained on this data set, it is tested on its own training volumes",
              file=sys.stderr)

    def for_fold(fold: int) -> Predictor:
        from medfss.training.checkpoints import load_model  # imports Lightning: only for trained models

        path = checkpoint_for_fold(checkpoint, fold)
        network, config = load_model(path)
        if config.model.name != model:
            raise ConfigError(f"{path} holds a {config.model.name!r} model, not {model!r}")
        return EpisodicPredictor(network, image_size=config.data.image_size, batch_size=batch_size,
                                 device=device)

    return for_fold
