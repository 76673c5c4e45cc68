"""The backbones of the semi-supervised mode: a 2D U-Net (ACDC) and a 3D V-Net (LA).

Both are the literature's (SSL4MIS / BCP / MPER) networks, written here
because the multi-prototype classifier needs the decoder's last feature map,
the voxel *embedding* Z [B, d, *spatial], and not only the class scores:
MONAI's UNet and VNet end in their own output convolution with no clean way
to take the features before it. A :class:`SegmentationNet` is then

    Z = backbone(X)                       # [B, d, *spatial]
    logits = W^T Z  (1x1 convolution)     # [B, N, *spatial], the linear classifier (eq. 3)

and the prototype classifier (eq. 1, :mod:`medfss.semisup.prototypes`)
reads the same Z.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _conv(spatial_dims: int):
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _norm(spatial_dims: int):
    return nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d


class DoubleConv(nn.Module):
    """(conv 3x3 - BN - LeakyReLU) twice with dropout between: the U-Net stage of SSL4MIS."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.LeakyReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class UNet2d(nn.Module):
    """2D U-Net encoder-decoder returning the embedding of the last decoder stage.

    channels: the widths of the resolution levels (the literature: 16, 32,
    64, 128, 256); the embedding has ``channels[0]`` channels; dropout: per
    encoder level (default: the literature's, the deepest ones for fewer levels). H and W must be
    divisible by ``2 ** (len(channels) - 1)``.
    """

    spatial_dims = 2
    DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)  # the literature's, per encoder level

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128, 256),
                 dropout: Sequence[float] | None = None):
        super().__init__()
        dropout = self.DROPOUT[-len(channels):] if dropout is None else dropout  # fewer levels: the deepest rates
        if len(channels) < 2 or len(dropout) != len(channels):
            raise ValueError(f"channels ({len(channels)}) and dropout ({len(dropout)}) need one entry per "
                             "level, at least 2")
        self.embedding_dim = channels[0]
        self.divisor = 2 ** (len(channels) - 1)
        widths = [in_channels, *channels]
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1], dropout[i]) for i in range(len(channels)))
        self.up_conv = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 1) for i in range(len(channels) - 1))
        self.up = nn.ModuleList(DoubleConv(2 * channels[i], channels[i], 0.0) for i in range(len(channels) - 1))

    def forward(self, x: Tensor) -> Tensor:  # [B, 1, H, W] -> [B, d, H, W]
        skips = []
        for i, stage in enumerate(self.down):
            x = stage(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(len(self.up))):
            x = nn.functional.interpolate(self.up_conv[i](x), scale_factor=2, mode="bilinear", align_corners=True)
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return x


class ResidualStage(nn.Module):
    """``n`` (conv 3x3x3 - BN - ReLU) layers with the V-Net residual connection (input added before the last ReLU)."""

    def __init__(self, n: int, in_channels: int, out_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                       nn.BatchNorm3d(out_channels)]
            if i < n - 1:
                layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)
        self.residual = in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return torch.relu(y + x if self.residual else y)


def _resample(down: bool, in_channels: int, out_channels: int) -> nn.Sequential:
    """V-Net's learnt down (stride-2 conv) or up (stride-2 transposed conv) sampling, with BN and ReLU."""
    conv = nn.Conv3d if down else nn.ConvTranspose3d
    return nn.Sequential(conv(in_channels, out_channels, 2, stride=2), nn.BatchNorm3d(out_channels),
                         nn.ReLU(inplace=True))


class VNet3d(nn.Module):
    """3D V-Net (Milletari et al. 2016, as in the LA literature) returning its last decoder features.

    n_filters: width of the first level (the literature: 16); levels double it
    four times, with 1, 2, 3, 3, 3 convolutions per encoder stage and 3, 3, 2, 1
    per decoder stage; skips are added. Every spatial size must be divisible by 16.
    """

    spatial_dims = 3
    divisor = 16
    ENCODER_DEPTHS = (1, 2, 3, 3, 3)
    DECODER_DEPTHS = (3, 3, 2, 1)

    def __init__(self, in_channels: int = 1, n_filters: int = 16, dropout: float = 0.5):
        super().__init__()
        widths = [n_filters * 2 ** i for i in range(5)]
        self.embedding_dim = n_filters
        self.encoder = nn.ModuleList(ResidualStage(self.ENCODER_DEPTHS[0], in_channels, widths[0]) if i == 0
                                     else ResidualStage(self.ENCODER_DEPTHS[i], widths[i], widths[i])
                                     for i in range(5))
        self.downs = nn.ModuleList(_resample(True, widths[i], widths[i + 1]) for i in range(4))
        self.ups = nn.ModuleList(_resample(False, widths[4 - i], widths[3 - i]) for i in range(4))
        self.decoder = nn.ModuleList(ResidualStage(d, widths[3 - i], widths[3 - i])
                                     for i, d in enumerate(self.DECODER_DEPTHS))
        self.dropout = nn.Dropout3d(dropout)

    def forward(self, x: Tensor) -> Tensor:  # [B, 1, X, Y, Z] -> [B, d, X, Y, Z]
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.downs[i - 1](x))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up, stage in zip(self.ups, self.decoder):
            x = stage(up(x) + skips.pop())
        return self.dropout(x)


class SegmentationNet(nn.Module):
    """A backbone and the linear classifier on its embedding (eq. 3, before the softmax).

    ``forward`` returns the class logits; :meth:`embed_and_classify` also the
    embedding, for the prototype classifier and its losses.
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = _conv(backbone.spatial_dims)(backbone.embedding_dim, num_classes, 1)
        self.num_classes = num_classes

    @property
    def spatial_dims(self) -> int:
        return self.backbone.spatial_dims

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return self.backbone.divisor

    def embed_and_classify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.backbone(x)  # [B, d, *spatial]
        return z, self.classifier(z)  # [B, N, *spatial]

    def forward(self, x: Tensor) -> Tensor:
        return self.embed_and_classify(x)[1]


def build_network(spatial_dims: int, *, channels: Sequence[int], num_classes: int) -> SegmentationNet:
    """The literature's network for the data set's dimensionality: 2D U-Net or 3D V-Net.

    channels: the U-Net's level widths (5 values), or ``[n_filters]`` of the V-Net.
    """
    if spatial_dims == 2:
        return SegmentationNet(backbone=UNet2d(1, channels), num_classes=num_classes)
    if spatial_dims == 3:
        if len(channels) != 1:
            raise ValueError(f"the V-Net takes one width (n_filters), got channels={list(channels)}")
        return SegmentationNet(backbone=VNet3d(1, channels[0]), num_classes=num_classes)
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
