"""No-training floors: what the protocol gives away before any learning.

The protocol hands every method the class extent and a support slice from
the same part of the organ, so even a method that learns nothing scores well
above zero. These two floors say how much of a trained model's Dice is
learnt:

* :class:`CopySupportPredictor` pastes the support mask onto the query slice:
  the score of anatomy alone (position and size, no image).
* :class:`IntensityPrototypePredictor` is PANet's prototype matching with
  the network replaced by fixed image features: the score of intensity alone.

Both implement :class:`~medfss.inference.predictor.Predictor`. Shapes:
S shots, Q query slices, C feature channels, K prototypes, H W spatial.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medfss.errors import ConfigError
from medfss.inference.predictor import Predictor, check_predict_inputs
from medfss.nn.prototypes import cosine_similarity_map, masked_average_pooling


class CopySupportPredictor:
    """Predicts the support mask unchanged on every query slice.

    With k shots the probability is the mean of the k masks, so the
    protocol's 0.5 threshold keeps the pixels a strict majority of the shots
    label foreground.
    """

    def predict(self, support_images: Tensor, support_masks: Tensor, query_images: Tensor) -> Tensor:
        check_predict_inputs(support_images, support_masks, query_images)
        probability = support_masks.float().mean(dim=0)  # [H, W]
        return probability.expand_as(query_images).clone()  # [Q, H, W]


def intensity_features(images: Tensor, kernel_sizes: Sequence[int], bias: float) -> Tensor:
    """Per-pixel features of z-scored slices: local means at several scales plus a constant.

    images: [N, H, W]. Channel k is the mean of the image over a
    ``kernel_sizes[k]`` square window (1 = the pixel itself); the last
    channel is ``bias``. Without the constant, cosine similarity would see
    only the direction of the vector, and a dark organ (all channels -1)
    would match a bright one (all +1) up to sign; the constant makes the
    angle depend on the intensity level. Returns [N, C, H, W], C = len(kernel_sizes) + 1.
    """
    x = images.unsqueeze(1)  # [N, 1, H, W]
    channels = [x if k == 1 else F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
                for k in kernel_sizes]
    channels.append(torch.full_like(x, bias))
    return torch.cat(channels, dim=1)  # [N, C, H, W]


def pooled_prototype(features: Tensor, masks: Tensor) -> Tensor:
    """One prototype from all shots at once: masked average pooling over every masked pixel.

    features: [S, C, H, W]; masks: [S, H, W]. Pooling the shots jointly (rather
    than averaging per-shot prototypes) weights each shot by its mask area.
    Returns [C].
    """
    s, c, h, w = features.shape
    stacked = features.permute(1, 0, 2, 3).reshape(1, c, s * h, w)  # [1, C, S*H, W]
    return masked_average_pooling(stacked, masks.reshape(1, s * h, w))[0]  # [C]


class IntensityPrototypePredictor:
    """Cosine prototype matching on fixed intensity features (no network).

    A foreground and a background prototype are pooled from the support
    features (SSL-ALPNet eq. 3); each query pixel gets
    p = softmax(alpha * [cos(f, p_bg), cos(f, p_fg)])[fg] (eq. 4), so it is
    foreground when it is closer in angle to the foreground prototype.
    ``alpha`` only sharpens the probability; the 0.5 decision does not
    depend on it.

    Defaults (kernel sizes 1, 5, 11 and bias 1) scored best on CHAOST2 fold 0
    among the variants we tried (see the package report); smoothing helps
    because single-pixel MR intensities are noisy.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (1, 5, 11), bias: float = 1.0, alpha: float = 20.0):
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd window sizes >= 1 (1 = the pixel), got {kernel_sizes}")
        if bias <= 0:
            raise ValueError(f"bias must be > 0 (it makes cosine similarity see intensity level), got {bias}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0 (PANet uses 20), got {alpha}")
        self.kernel_sizes = tuple(kernel_sizes)
        self.bias = bias
        self.alpha = alpha

    def predict(self, support_images: Tensor, support_masks: Tensor, query_images: Tensor) -> Tensor:
        check_predict_inputs(support_images, support_masks, query_images)
        support = intensity_features(support_images.float(), self.kernel_sizes, self.bias)  # [S, C, H, W]
        query = intensity_features(query_images.float(), self.kernel_sizes, self.bias)  # [Q, C, H, W]
        masks = support_masks.float()  # [S, H, W]
        prototypes = torch.stack([pooled_prototype(support, 1 - masks),
                                  pooled_prototype(support, masks)])  # [2, C]: bg, fg
        prototypes = prototypes.expand(query.shape[0], -1, -1)  # [Q, 2, C]
        similarity = cosine_similarity_map(query, prototypes, scale=self.alpha)  # [Q, 2, H, W]
        return similarity.softmax(dim=1)[:, 1]  # [Q, H, W]


BASELINES: dict[str, Callable[..., Predictor]] = {
    "copy-support": CopySupportPredictor,
    "intensity-prototype": IntensityPrototypePredictor,
}


def build_baseline(name: str, **kwargs) -> Predictor:
    """The baseline registered under ``name``, built with ``kwargs``."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name](**kwargs)
