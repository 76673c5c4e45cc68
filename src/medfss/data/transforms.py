"""Query transforms of SSL-ALPNet (sec. 3.3): random geometric T_g and intensity T_i.

The self-supervised query is the support slice seen through random transforms,

    query image = T_g(T_i(x)),    query mask = T_g(y),

so the network must match a superpixel across shape and contrast changes, the
two largest sources of variation between medical images. T_g is an affine map
(rotation, shear, translation, isotropic scale) composed with an elastic
deformation; T_i is a gamma transform. The image is resampled bilinearly, the
mask with nearest neighbour from the *same* sampling grid, so the two stay
aligned and the mask stays binary.

Everything is a pure function of its inputs and a ``numpy.random.Generator``:
no global random state. The resampling goes through MONAI (``AffineGrid``,
``GaussianFilter``, ``Resample``, ``AdjustContrast``).

Lengths are given in pixels of a 256 x 256 slice (the paper's resolution) and
scaled with the slice size, so a 128 x 128 slice sees the same relative
deformation. Shapes: H W spatial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter
from monai.transforms import AdjustContrast, AffineGrid, Resample
from monai.transforms.utils import create_grid
from monai.utils import convert_to_tensor
from torch import Tensor

from medfss.validation import check_bool, check_non_negative_number, check_positive_number, require

REFERENCE_SIZE = 256  # side (px) at which the lengths of :class:`AugmentConfig` are given
ELASTIC_TRUNCATE = 2.0  # the elastic smoothing kernel spans +-2 sigma


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random query transforms; defaults are SSL-ALPNet's (``sabs_aug``).

    The elastic field follows Simard et al. (2003): uniform noise in [-1, 1]
    smoothed by a Gaussian of ``elastic_sigma_px`` and multiplied by
    ``elastic_alpha_px``. With the paper's alpha = 10, sigma = 5 the displacement is
    small (about 0.5 px RMS): most of the shape change comes from the affine part.
    The field is most of the cost (measured on one CPU thread, per view: 2 ms with
    and 1 ms without at 128 x 128, 4-10 ms with and 1.6 ms without at 256 x 256);
    ``elastic=False`` skips it.
    """

    rotate_deg: float = 5.0  # rotation drawn from U(-r, r) degrees
    shear_deg: float = 5.0  # shear angle drawn from U(-s, s) degrees
    translate_px: float = 5.0  # shift per axis drawn from U(-t, t) px at 256
    scale_range: tuple[float, float] = (0.9, 1.2)  # isotropic magnification of the content
    elastic: bool = True
    elastic_alpha_px: float = 10.0  # displacement gain, px at 256
    elastic_sigma_px: float = 5.0  # smoothness of the displacement field, px at 256
    gamma_range: tuple[float, float] = (0.5, 1.5)  # gamma drawn from U(low, high)

    def __post_init__(self):
        check_non_negative_number(self, "rotate_deg", "translate_px", "elastic_alpha_px")
        check_bool(self, "elastic")
        require(0 <= self.shear_deg < 90, "shear_deg", f"must be in [0, 90), got {self.shear_deg}")
        if self.elastic:
            check_positive_number(self, "elastic_sigma_px")
        for name in ("scale_range", "gamma_range"):
            low, high = getattr(self, name)
            require(0 < low <= high, name, f"must be (low, high) with 0 < low <= high, got {(low, high)}")


def resize_image(image: Tensor, size: int) -> Tensor:
    """Bilinear resize of an image ``[H, W]`` to ``[size, size]`` (a no-op at that size)."""
    if tuple(image.shape) == (size, size):
        return image
    return F.interpolate(image[None, None].float(), size=(size, size), mode="bilinear",
                         align_corners=False)[0, 0]


def resize_label(label: Tensor, size: int) -> Tensor:
    """Nearest-neighbour resize of an integer map ``[H, W]`` to ``[size, size]``; values are kept."""
    if tuple(label.shape) == (size, size):
        return label
    # float32 holds integers exactly up to 2**24: enough for class and superpixel indices
    return F.interpolate(label[None, None].float(), size=(size, size),
                         mode="nearest-exact")[0, 0].to(label.dtype)


def random_sampling_grid(rng: np.random.Generator, shape: tuple[int, int],
                         params: AugmentConfig) -> Tensor:
    """A random geometric transform T_g as a sampling grid ``[3, H, W]`` (MONAI's layout).

    Output pixel p samples the input at ``A (p + d(p))``: the elastic displacement d
    (``[2, H, W]``) is applied first, then the affine A, as in the reference code.
    Coordinates are pixels from the slice centre, homogeneous (row 2 is ones).
    """
    factor = math.sqrt(shape[0] * shape[1]) / REFERENCE_SIZE
    rotation = math.radians(rng.uniform(-params.rotate_deg, params.rotate_deg))
    shear = math.tan(math.radians(rng.uniform(-params.shear_deg, params.shear_deg)))
    shift = rng.uniform(-params.translate_px, params.translate_px, size=2) * factor
    magnification = rng.uniform(*params.scale_range)
    grid = create_grid(shape, backend="torch", dtype=torch.float32)  # [3, H, W]
    if params.elastic:
        noise = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(1, 2, *shape)).astype(np.float32))  # [1, 2, H, W]
        # truncated at 2 sigma like the reference code's cv2 kernel (4x faster than MONAI's 4 sigma)
        smooth = GaussianFilter(2, params.elastic_sigma_px * factor, truncated=ELASTIC_TRUNCATE)(noise)
        grid[:2] += params.elastic_alpha_px * factor * smooth[0]  # [2, H, W]
    affine = AffineGrid(rotate_params=rotation, shear_params=(shear, 0.0), translate_params=tuple(shift),
                        scale_params=(1.0 / magnification, 1.0 / magnification))
    warped, _ = affine(grid=grid)  # [3, H, W]
    return convert_to_tensor(warped, track_meta=False)


def warp(image: Tensor, grid: Tensor, *, mode: str, padding_mode: str) -> Tensor:
    """Resample ``image [H, W]`` at ``grid [3, H, W]`` (from :func:`random_sampling_grid`).

    ``mode``: "bilinear" for images, "nearest" for masks; ``padding_mode``: "border"
    repeats the edge (air for an image), "zeros" pads a mask with background.
    """
    resample = Resample(mode=mode, padding_mode=padding_mode, dtype=torch.float32)
    out = resample(image[None].float(), grid)[0]  # [H, W]
    return convert_to_tensor(out, track_meta=False).to(image.dtype)


def gamma_transform(image: Tensor, gamma: float) -> Tensor:
    """T_i: ``min + range * ((x - min) / range) ** gamma`` over the slice ``[H, W]``."""
    return convert_to_tensor(AdjustContrast(gamma)(image), track_meta=False)


def augment_pair(image: Tensor, mask: Tensor, rng: np.random.Generator,
                 params: AugmentConfig) -> tuple[Tensor, Tensor]:
    """One random query view: ``(T_g(T_i(image)), T_g(mask))`` for ``image, mask [H, W]``.

    The mask is warped with nearest neighbour from the same grid: it keeps its values
    (binary stays binary) and stays aligned with the image.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image and mask must have the same shape, got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    gamma = rng.uniform(*params.gamma_range)
    grid = random_sampling_grid(rng, tuple(image.shape), params)  # [3, H, W]
    image = warp(gamma_transform(image, gamma), grid, mode="bilinear", padding_mode="border")
    mask = warp(mask, grid, mode="nearest", padding_mode="zeros")
    return image, mask
