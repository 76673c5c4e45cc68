"""``build_model(name, **options)``: model name and options (a config's ``model`` section) -> model.

An explicit table, no registration by import side effect. Every model takes
the encoder options ``backbone`` (a preset of :data:`medfss.nn.backbones.BACKBONES`)
and ``pretrained`` (a local torchvision ResNet or DeepLabv3-ResNet weights
file, or None), plus the fields of its settings dataclass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Callable

from torch import nn

from medfss.config import ModelConfig
from medfss.errors import ConfigError
from medfss.models.adnet import ADNet, ADNetConfig
from medfss.models.alpnet import ALPNet, ALPNetConfig
from medfss.models.apscl import APSCL, APSCLConfig
from medfss.models.base import FewShotSegmenter
from medfss.models.lmsnet import FLMSNet, FLMSNetConfig, LMSNetConfig, build_lmsnet
from medfss.models.panet import PANet, PANetConfig
from medfss.nn.backbones import BACKBONES, build_backbone, load_backbone_weights

# name -> (model class taking (encoder, settings), settings dataclass)
MODELS: dict[str, tuple[Callable[[nn.Module, object], FewShotSegmenter], type]] = {
    "alpnet": (ALPNet, ALPNetConfig),
    "panet": (PANet, PANetConfig),
    "lmsnet": (build_lmsnet, LMSNetConfig),
    "flmsnet": (FLMSNet, FLMSNetConfig),
    "apscl": (APSCL, APSCLConfig),
    "adnet": (ADNet, ADNetConfig),
}
ENCODER_OPTIONS = ("backbone", "pretrained")
DEFAULT_BACKBONE = "resnet101"  # the papers'


def model_options(name: str) -> list[str]:
    """The options ``build_model(name, ...)`` accepts."""
    _, settings = _lookup(name)
    return [*ENCODER_OPTIONS, *(f.name for f in fields(settings))]


def _lookup(name: str):
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def check_model_options(name: str, options: Mapping[str, Any]) -> Any:
    """The settings of model ``name`` built from ``options`` (encoder options checked, not built).

    Raises :class:`ConfigError` for an unknown name, option or value: what
    :func:`medfss.config.load_config` calls so that a misspelt option fails
    when the config is read.
    """
    _, settings_class = _lookup(name)
    settings_fields = {f.name for f in fields(settings_class)}
    unknown = sorted(set(options) - settings_fields - set(ENCODER_OPTIONS))
    if unknown:
        raise ConfigError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(model_options(name))}")
    backbone = options.get("backbone", DEFAULT_BACKBONE)
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        raise ConfigError(f"model {name!r}: unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")
    pretrained = options.get("pretrained")
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise ConfigError(f"model {name!r}: pretrained must be a file path or null, got {pretrained!r}")
    try:
        return settings_class(**{k: v for k, v in options.items() if k in settings_fields})
    except ValueError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def build_model(name: str, *, backbone: str = DEFAULT_BACKBONE, pretrained: str | os.PathLike | None = None,
                **options) -> FewShotSegmenter:
    """The model ``name`` with a ``backbone`` encoder, optionally initialised from ``pretrained``.

    ``options`` are fields of the model's settings (e.g. ``ALPNetConfig``).
    Raises :class:`ConfigError` for an unknown name, option or value and
    :class:`~medfss.errors.InputFileError` for unusable pretrained weights.
    """
    model_class, _ = _lookup(name)
    settings = check_model_options(name, {"backbone": backbone, "pretrained": pretrained, **options})
    encoder = build_backbone(backbone)
    if pretrained is not None:
        load_backbone_weights(encoder, pretrained)
    return model_class(encoder, settings)


def build_model_from_config(model: ModelConfig) -> FewShotSegmenter:
    """The untrained model a config's ``model`` section describes."""
    return build_model(model.name, **model.options)
