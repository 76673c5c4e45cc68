"""Model name + checkpoint -> the predictor of each (fold, class), for ``medfss evaluate``.

A no-training baseline is the same predictor everywhere. A trained model has
one checkpoint per fold (cross-validation trains one model on the other
folds' volumes), and in setting 2 one per test group (trained without the
group's slices), so a checkpoint path may hold ``{fold}`` and ``{group}``,
replaced by the fold number and by the setting-2 group of the class
(``upper``/``lower`` on the abdominal sets). A path without ``{fold}`` is
used for every fold, which is right for a model trained on other data and
wrong for in-data cross-validation. Every checkpoint records the data set it
was trained on and the fold it held out, so the warning is exact: it is
printed when a model trained on this data set is evaluated on a fold other
than the one it held out (whose volumes it was trained on), and only then.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from medfss.data.datasets import DatasetSpec
from medfss.errors import ConfigError
from medfss.evaluation.baselines import BASELINES, build_baseline
from medfss.inference.predictor import Predictor, VolumePredictor

if TYPE_CHECKING:
    from medfss.registration.predictor import RegistrationPredictor

REGISTRATION = "registration"  # atlas registration: a no-training floor (medfss.registration)


def group_name(spec: DatasetSpec, class_name: str) -> str:
    """The name of the setting-2 group holding ``class_name`` (the class itself if ungrouped)."""
    return next((name for name, members in spec.groups.items() if class_name in members), class_name)


def checkpoint_path(checkpoint: str | os.PathLike, fold: int, group: str = "") -> str:
    """``checkpoint`` with ``{fold}`` and ``{group}`` filled in."""
    return str(checkpoint).replace("{fold}", str(fold)).replace("{group}", group)


def training_fold_warning(path: str, info: dict, spec: DatasetSpec | None, fold: int) -> str | None:
    """A warning when the model of ``path`` (``info``: its load_predictor description) trained on ``fold``'s volumes."""
    held_out = (info.get("fold"), info.get("validation_fold"))
    if spec is None or info.get("dataset") not in (spec.name, spec.folder) or fold in held_out:
        return None
    return (f"checkpoint {path} was trained on {spec.name} with fold {info['fold']} held out: on fold {fold} it "
            "is tested on its own training volumes (use one checkpoint per fold: '{fold}' in the path)")


def predictor_factory(model: str, checkpoint: str | os.PathLike | None = None, *,
                      spec: DatasetSpec | None = None, device: str | torch.device = "cpu",
                      batch_size: int = 8, registration: RegistrationPredictor | None = None,
                      guide: Callable[[Predictor, int, str], VolumePredictor] | None = None
                      ) -> Callable[[int, str], Predictor | VolumePredictor]:
    """``(fold, class_name) -> Predictor`` for the baseline or trained model called ``model``.

    ``registration`` is atlas registration (:mod:`medfss.registration`), a
    no-training floor like the baselines; pass the configured predictor as
    ``registration`` (default: ANTsPy's settings, no disk cache). ``guide(network, fold, class_name)``
    wraps each trained model's predictor, e.g. in a registration-guided
    :class:`~medfss.registration.guided.GuidedPredictor`.

    Trained models are read with :func:`medfss.checkpoints.load_predictor`
    (``weights_only``), checked to be the named model, run at the image size
    they were trained at, and loaded once per distinct file.
    """
    if model == REGISTRATION:
        from medfss.registration.predictor import RegistrationPredictor

        if checkpoint is not None:
            raise ConfigError("'registration' trains nothing: it takes no --checkpoint")
        volume_predictor = registration if registration is not None else RegistrationPredictor()
        return lambda fold, class_name: volume_predictor
    if model in BASELINES:
        if checkpoint is not None:
            raise ConfigError(f"{model!r} is a no-training baseline: it takes no --checkpoint")
        predictor = build_baseline(model)
        return lambda fold, class_name: predictor
    if checkpoint is None:
        raise ConfigError(f"model {model!r} needs --checkpoint (a trained model file; '{{fold}}' and "
                          f"'{{group}}' in its path are filled in); the baselines "
                          f"{sorted([*BASELINES, REGISTRATION])} need none")
    if "{group}" in str(checkpoint) and spec is None:
        raise ConfigError("a checkpoint path with '{group}' needs the data set (its setting-2 groups)")
    loaded: dict[str, Predictor] = {}

    def predictor_for(fold: int, class_name: str) -> Predictor | VolumePredictor:
        from medfss.checkpoints import load_predictor  # imports the models: only for trained models

        path = checkpoint_path(checkpoint, fold, group_name(spec, class_name) if spec is not None else "")
        if path not in loaded:
            loaded.clear()  # one model in memory at a time: the protocol runs fold by fold
            network, info = load_predictor(path, device=device, batch_size=batch_size, model_name=model)
            loaded[path] = network
            warning = training_fold_warning(path, info, spec, fold)
            if warning is not None:
                print(f"medfss: warning: {warning}", file=sys.stderr)
        return loaded[path] if guide is None else guide(loaded[path], fold, class_name)

    return predictor_for
