"""APSCL's feature enrichment module (FEM, sec. 3.2): a Gaussian anatomical prior and FiLM.

    (mu_x, sigma_x) = prior(f(x)),   (mu_y, sigma_y) = posterior(f_phi(y))
    L_KL = D_KL( N(mu_x, sigma_x^2) || N(mu_y, sigma_y^2) )                       (1)
    z_x ~ N(mu_x, sigma_x^2),   beta = 1 + MLP_beta(z_x),   alpha = MLP_alpha(z_x)
    f'_t(x) = beta_t f_t(x) + alpha_t        (t: channel)                         (2)

The prior and posterior blocks are "one flattening layer and three sequential
linear layers" giving the mean and log-variance of ``latent`` factors. The
label encoder f_phi maps a mask to a feature grid like the image encoder's.
At test time only the image prior is used (and its mean rather than a
sample, so that a prediction is deterministic); the label branch exists for
the KL term of training (eq. 13).

Choices where the paper is silent, all for a model that trains on a CPU:
the features are average-pooled to a ``grid x grid`` map before flattening
(the paper flattens 256 x 32 x 32 values; pooling keeps the first linear
layer at channels * grid^2 inputs whatever the image size); the label
encoder is three stride-2 3x3 convolutions (output stride 8, like the
encoder's) rather than a second ResNet; beta is written ``1 + MLP`` and the
last layers of both MLPs start at zero, so the FEM starts as the identity
and cannot scramble the encoder's features at the first steps.
Shapes: N images, C channels, h w feature grid, Z latent factors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfss.nn.prototypes import resize_mask


def gaussian_kl(mean_p: Tensor, log_var_p: Tensor, mean_q: Tensor, log_var_q: Tensor) -> Tensor:
    """D_KL(N(mean_p, e^log_var_p) || N(mean_q, e^log_var_q)) of diagonal Gaussians (eq. 1), mean over N.

        KL = 1/2 sum_z [ log s_q^2 - log s_p^2 + (s_p^2 + (m_p - m_q)^2) / s_q^2 - 1 ]

    Every argument is [N, Z]; returns a scalar >= 0, 0 iff the Gaussians are equal.
    """
    terms = log_var_q - log_var_p + (log_var_p.exp() + (mean_p - mean_q) ** 2) / log_var_q.exp() - 1
    return 0.5 * terms.sum(dim=1).mean()


class GaussianBlock(nn.Module):
    """Prior / posterior block: pool to ``grid x grid``, flatten, three linear layers -> (mean, log-variance)."""

    def __init__(self, channels: int, latent: int, hidden: int, grid: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(channels * grid * grid, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * latent))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:  # [N, C, h, w] -> [N, Z], [N, Z]
        mean, log_var = self.layers(self.pool(features)).chunk(2, dim=1)
        return mean, log_var.clamp(-10, 10)  # a bounded variance keeps exp() and 1 / s^2 finite


def label_encoder(channels: int) -> nn.Sequential:
    """f_phi: a mask [N, 1, H, W] -> [N, channels, H/8, W/8] (three stride-2 convolutions)."""
    layers, width = [], 1
    for _ in range(3):
        layers += [nn.Conv2d(width, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        width = channels
    return nn.Sequential(*layers)


def film_mlp(latent: int, hidden: int, channels: int) -> nn.Sequential:
    """A 3-layer MLP z [N, Z] -> [N, C] whose last layer starts at zero (eq. 2's beta or alpha)."""
    mlp = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                        nn.ReLU(inplace=True), nn.Linear(hidden, channels))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class FeatureEnrichment(nn.Module):
    """The FEM: ``forward`` enriches features (eq. 2), ``kl`` is the training regulariser (eq. 1)."""

    def __init__(self, channels: int, latent: int = 32, hidden: int = 256, grid: int = 4, label_channels: int = 32):
        super().__init__()
        self.prior = GaussianBlock(channels, latent, hidden, grid)
        self.label_encoder = label_encoder(label_channels)
        self.posterior = GaussianBlock(label_channels, latent, hidden, grid)
        self.scale = film_mlp(latent, hidden, channels)  # beta - 1
        self.shift = film_mlp(latent, hidden, channels)  # alpha

    def latent(self, features: Tensor) -> Tensor:
        """z_x [N, Z]: a reparameterised sample of the prior in training, its mean at inference."""
        mean, log_var = self.prior(features)
        if not self.training:
            return mean
        return mean + (0.5 * log_var).exp() * torch.randn_like(mean)

    def forward(self, features: Tensor) -> Tensor:  # [N, C, h, w] -> f' [N, C, h, w] (eq. 2)
        z = self.latent(features)  # [N, Z]
        beta = 1 + self.scale(z)[:, :, None, None]  # [N, C, 1, 1]
        alpha = self.shift(z)[:, :, None, None]  # [N, C, 1, 1]
        return beta * features + alpha

    def kl(self, features: Tensor, masks: Tensor) -> Tensor:
        """Eq. 1 for images of ``features`` [N, C, h, w] and their foreground ``masks`` [N, H, W]: a scalar."""
        mean_x, log_var_x = self.prior(features)
        size = tuple(8 * n for n in features.shape[-2:])  # the label encoder's input, stride 8 above the grid
        labels = resize_mask(masks.float(), size).unsqueeze(1)  # [N, 1, 8h, 8w]
        mean_y, log_var_y = self.posterior(self.label_encoder(labels))
        return gaussian_kl(mean_x, log_var_x, mean_y, log_var_y)
