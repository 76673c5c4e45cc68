"""Dilated ResNet encoders (output stride 8), written from scratch.

SSL-ALPNet's feature extractor is the ResNet-101 of torchvision's DeepLabv3
(MS-COCO weights) without its ASPP head, followed by a 1x1 convolution to
256-d features. This module builds the same network, with torchvision's
parameter names, for any depth and width:

    conv1 (7x7, /2) - bn1 - relu - maxpool (/2) - layer1 - layer2 (/2)
      - layer3 (dilation 2) - layer4 (dilation 4) - project (1x1, no bias)

layer3 and layer4 trade their stride for dilation (torchvision's
``replace_stride_with_dilation=[False, True, True]``): the first block of a
dilated stage keeps the previous stage's dilation, the others use the new one.

Input: one grey channel. A 3-channel checkpoint (ImageNet, COCO) is loaded by
summing its ``conv1`` weights over the input channels, which gives exactly
what the 3-channel network computes on the grey slice replicated to RGB (the
papers' recipe) at a third of the first layer's cost; see
:func:`load_backbone_weights`.

Shapes: B batch, C channels, H W spatial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from medfss.errors import ConfigError, InputFileError
from medfss.validation import check_choice, check_positive_int, require

OUTPUT_STRIDE = 8


@dataclass(frozen=True)
class BackboneConfig:
    """The architecture of a :class:`DilatedResNet`.

    ``widths`` are the four stages' inner widths (torchvision's ``planes``): a
    basic-block stage outputs ``width`` channels, a bottleneck stage ``4 * width``.
    """

    block: Literal["basic", "bottleneck"]
    depths: tuple[int, int, int, int]  # blocks per stage
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64
    out_channels: int = 256  # width of the final 1x1 projection (ALPNet: 256)
    in_channels: int = 1

    def __post_init__(self):
        check_choice(self, "block", ("basic", "bottleneck"))
        for name in ("depths", "widths"):
            values = getattr(self, name)
            require(len(values) == 4 and all(isinstance(v, int) and v > 0 for v in values), name,
                    f"must be four positive integers (one per stage), got {values!r}")
        check_positive_int(self, "stem_width", "out_channels", "in_channels")


BACKBONES: dict[str, BackboneConfig] = {
    "resnet18": BackboneConfig("basic", (2, 2, 2, 2)),
    "resnet34": BackboneConfig("basic", (3, 4, 6, 3)),
    "resnet50": BackboneConfig("bottleneck", (3, 4, 6, 3)),
    "resnet101": BackboneConfig("bottleneck", (3, 4, 23, 3)),  # SSL-ALPNet's encoder
    # CPU preset: ResNet-18 layout at a quarter of the width in the deep stages, ~1.3M parameters
    "resnet18-slim": BackboneConfig("basic", (2, 2, 2, 2), widths=(32, 64, 128, 128), stem_width=32,
                                    out_channels=128),
}


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width, stride, dilation)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, 1, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride and dilation here, as torchvision's v1.5), 1x1 expand to 4 * width."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class DilatedResNet(nn.Module):
    """Fully convolutional ResNet, output stride 8: ``[B, in, H, W] -> [B, out, ceil(H/8), ceil(W/8)]``.

    Parameter names follow torchvision's ResNet (``conv1``, ``bn1``,
    ``layer3.22.conv3``, ``layer1.0.downsample.0``...) plus ``project``, the
    final 1x1 convolution that a pretrained checkpoint does not hold.
    """

    output_stride = OUTPUT_STRIDE

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        block = BasicBlock if config.block == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(config.in_channels, config.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels, dilation = config.stem_width, 1
        stages = []
        # (stride, dilation) per stage: strides 1, 2 then dilations 2, 4 in place of strides
        for (stride, new_dilation), depth, width in zip([(1, 1), (2, 1), (1, 2), (1, 4)], config.depths,
                                                        config.widths):
            stages.append(self._stage(block, channels, width, depth, stride, dilation, new_dilation))
            channels, dilation = width * block.expansion, new_dilation
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.project = nn.Conv2d(channels, config.out_channels, 1, bias=False)
        self.out_channels = config.out_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _stage(block: type[BasicBlock | Bottleneck], in_channels: int, width: int, depth: int, stride: int,
               first_dilation: int, dilation: int) -> nn.Sequential:
        out_channels = width * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_channels))
        blocks = [block(in_channels, width, stride, first_dilation, downsample)]
        blocks += [block(out_channels, width, 1, dilation) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:  # [B, in, H, W] -> [B, out, H/8, W/8]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, stem, H/4, W/4]
        x = self.layer2(self.layer1(x))  # [B, C2, H/8, W/8]
        x = self.layer4(self.layer3(x))  # [B, C4, H/8, W/8]: dilated, no stride
        return self.project(x)  # [B, out, H/8, W/8]


def build_backbone(name: str, **overrides) -> DilatedResNet:
    """The named preset (a key of :data:`BACKBONES`), with ``BackboneConfig`` fields in ``overrides`` changed.

    Raises :class:`ConfigError` for an unknown name or a bad override.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    try:
        config = replace(BACKBONES[name], **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"backbone {name!r}: {exc}") from None
    return DilatedResNet(config)


# --- pretrained weights -----------------------------------------------------------------------

# Checkpoint parts that are not the encoder: DeepLabv3's ASPP head and auxiliary FCN head, ResNet's classifier.
IGNORED_PREFIXES = ("classifier.", "aux_classifier.", "fc.")
DEEPLAB_PREFIX = "backbone."


def _abbreviate(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def map_checkpoint_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoint keys -> :class:`DilatedResNet` keys.

    Accepts torchvision's DeepLabv3-ResNet checkpoint (``backbone.layer1.0.conv1.weight``;
    ``classifier.*`` and ``aux_classifier.*`` dropped) and a plain torchvision
    ResNet state dict (``layer1.0.conv1.weight``; ``fc.*`` dropped). Other keys
    pass through unchanged (and are reported as unexpected when loading).
    """
    deeplab = any(key.startswith(DEEPLAB_PREFIX) for key in state_dict)
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith(IGNORED_PREFIXES):
            continue
        if deeplab and key.startswith(DEEPLAB_PREFIX):
            key = key[len(DEEPLAB_PREFIX):]
        mapped[key] = value
    return mapped


def load_backbone_weights(backbone: DilatedResNet, path: str | os.PathLike) -> DilatedResNet:
    """Load a torchvision DeepLabv3-ResNet or ResNet checkpoint from ``path`` into ``backbone`` (in place).

    The file is read with ``torch.load(weights_only=True)``. A 3-channel
    ``conv1`` loaded into a 1-channel backbone is summed over its input
    channels: ``conv(x, sum_c W_c) == conv(repeat(x, 3), W)``, the grey slice
    replicated to RGB. ``project`` (absent from such checkpoints) and BatchNorm
    ``num_batches_tracked`` counters may be missing and keep their values.
    Raises :class:`InputFileError` when the file is missing or unreadable or
    when its keys or shapes do not fit, naming the missing, unexpected and
    shape-mismatched keys.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: pretrained weights not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or pickled file
        raise InputFileError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise InputFileError(f"{path}: expected a state dict of tensors, got {type(loaded).__name__}")
    weights = map_checkpoint_keys(loaded)
    own = backbone.state_dict()
    conv1 = weights.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3 and own["conv1.weight"].shape[1] == 1:
        weights["conv1.weight"] = conv1.sum(dim=1, keepdim=True)  # [C, 3, 7, 7] -> [C, 1, 7, 7]
    optional = {key for key in own if key.startswith("project.") or key.endswith("num_batches_tracked")}
    missing = sorted(key for key in own if key not in weights and key not in optional)
    unexpected = sorted(key for key in weights if key not in own)
    mismatched = sorted(f"{key} {tuple(weights[key].shape)} vs {tuple(own[key].shape)}"
                        for key in own if key in weights and weights[key].shape != own[key].shape)
    if missing or unexpected or mismatched:
        problems = [f"{label} {len(keys)} keys: {_abbreviate(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)) if keys]
        raise InputFileError(f"{path}: weights do not fit the {backbone.config.block} backbone "
                             f"(depths {backbone.config.depths}): {'; '.join(problems)}")
    backbone.load_state_dict({**own, **weights})
    return backbone
