"""The learned fusion of registration guidance: a logistic model of the network, the atlas and the query's appearance.

Step 4 of :mod:`medfss.registration.guided` in its learned form. Each voxel
x of the predicted slices gets the posterior log-odds of the class

    logit p(x) = c_0 + sum_k c_k phi_k(x)                                  (1)

over the features phi of :data:`FEATURES`:

- ``network_registered``, ``network_chunks``: the few-shot network's
  foreground probability with the registered support slices and with the
  chunk rule's;
- ``prior_{s}mm``: the registered prior (the trusted registrations'
  probability at x: the fraction of warped masks holding x, or their joint
  label fusion) softened in-plane by a Gaussian of s = 0, 2.5, 5, 10 mm;
- ``signed_distance_cm``: the in-plane distance from x to the boundary of
  the registered label (prior >= 1/2), positive inside, clipped to +-3 cm;
- ``appearance_log_ratio``: the query's own appearance model (eq. 2);
- ``network_x_prior``: ``network_registered`` times ``prior_5mm``.

The appearance model is estimated on the query itself, with the warped mask
as its labels: the log-ratio of the intensity densities inside the mask and
in a ring of ``RING_MM`` around it (within the body),

    lambda(x) = log h_in(I(x)) - log h_ring(I(x))                           (2)

(smoothed histograms of the z-scored intensities). Registration says
roughly where the organ is; lambda says which voxels look like it in this
patient. An atlas prior combined with an intensity likelihood learnt on
the target is the classic model-based segmentation (Van Leemput et al.,
IEEE TMI 1999, atlas-guided EM; Rother et al., SIGGRAPH 2004, GrabCut);
here eq. 1 learns how much each cue, and the network, is trusted.

The coefficients c are fitted by logistic regression (scikit-learn) on
voxels of queries whose labels are known: the training folds of a nested
cross-validation (:mod:`medfss.registration.selection`), never the fold
that is scored. They are a few numbers, stored as a
:class:`~medfss.registration.guided.GuidanceConfig` field.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PRIOR_SIGMAS_MM = (0.0, 2.5, 5.0, 10.0)  # the softenings of the registered prior among the features
FEATURES = ("network_registered", "network_chunks", *(f"prior_{s:g}mm" for s in PRIOR_SIGMAS_MM),
            "signed_distance_cm", "appearance_log_ratio", "network_x_prior")
NETWORK_RULES = ("registered", "chunks")  # the support-slice rules whose network probabilities are features
DISTANCE_CLIP_MM = 30.0  # farther from the warped boundary than this, distance tells nothing more
RING_MM = 10.0  # the width of the background ring of eq. 2
INTENSITY_RANGE = (-3.0, 5.0)  # z-scored intensities, clipped to this range by eq. 2's histograms
INTENSITY_BINS = 64
DENSITY_FLOOR = 1e-3  # added to both densities, so that an intensity seen on one side only gives a finite ratio
SAMPLE_MARGIN_MM = 30.0  # training voxels lie within this in-plane distance of the warped mask (or the network's)


@dataclass(frozen=True)
class AppearanceModel:
    """Eq. 2: the log-ratio of the query's intensity densities in the warped mask and in a ring around it."""

    log_ratio: np.ndarray  # [INTENSITY_BINS] lambda per intensity bin

    @classmethod
    def fit(cls, image: np.ndarray, mask: np.ndarray, body: np.ndarray, spacing: Sequence[float]
            ) -> AppearanceModel:
        """From ``image`` [H, W, D] and the warped ``mask`` and ``body`` (bool, same shape)."""
        if not mask.any():
            return cls(np.zeros(INTENSITY_BINS))
        structure = _disc(RING_MM, spacing)
        inside, ring = np.zeros(INTENSITY_BINS), np.zeros(INTENSITY_BINS)
        for z in np.flatnonzero(mask.any(axis=(0, 1))):  # a slice at a time: no full-volume temporaries
            ring_z = ndimage.binary_dilation(mask[..., z], structure) & ~mask[..., z] & body[..., z]
            inside += _histogram(image[..., z][mask[..., z]])
            ring += _histogram(image[..., z][ring_z])
        return cls(np.log(_density(inside) / _density(ring)))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """lambda of every voxel of ``image`` (any shape), float32."""
        return self.log_ratio[_bin(image)].astype(np.float32)


def _disc(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """An in-plane disc of ``radius_mm`` on the voxel grid, bool [2r+1, 2r'+1]."""
    ry, rx = (max(1, int(radius_mm / float(s))) for s in spacing[:2])
    y, x = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    return (y * float(spacing[0])) ** 2 + (x * float(spacing[1])) ** 2 <= radius_mm ** 2


def _bin(values: np.ndarray) -> np.ndarray:
    low, high = INTENSITY_RANGE
    scaled = (np.clip(values, low, high) - low) / (high - low) * INTENSITY_BINS
    return np.minimum(scaled.astype(np.int64), INTENSITY_BINS - 1)


def _histogram(values: np.ndarray) -> np.ndarray:
    return np.bincount(_bin(values).ravel(), minlength=INTENSITY_BINS).astype(np.float64)


def _density(counts: np.ndarray) -> np.ndarray:
    """Counts per bin as a density over the intensity range, smoothed by one bin, floored."""
    width = (INTENSITY_RANGE[1] - INTENSITY_RANGE[0]) / INTENSITY_BINS
    density = counts / max(counts.sum(), 1.0) / width
    return ndimage.gaussian_filter1d(density, 1.0) + DENSITY_FLOOR


def signed_distance_cm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """In-plane signed distance of every pixel of ``mask`` [H, W] to its boundary, cm, positive inside, clipped."""
    clip = DISTANCE_CLIP_MM
    if not mask.any():
        return np.full(mask.shape, -clip / 10, dtype=np.float32)
    sampling = [float(s) for s in spacing[:2]]
    inside = ndimage.distance_transform_edt(mask, sampling=sampling)
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)
    return (np.clip(inside - outside, -clip, clip) / 10).astype(np.float32)


def soften(prior: np.ndarray, sigma_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``prior`` [H, W] smoothed in-plane by a Gaussian of ``sigma_mm``."""
    if not sigma_mm:
        return prior
    return ndimage.gaussian_filter(prior, [sigma_mm / float(s) for s in spacing[:2]])


def slice_features(networks: dict[str, np.ndarray], prior: np.ndarray, image: np.ndarray,
                   appearance: AppearanceModel, spacing: Sequence[float]) -> np.ndarray:
    """The features of eq. 1 on one slice: [H, W, F] float32, in the order of :data:`FEATURES`.

    ``networks`` maps each rule of :data:`NETWORK_RULES` to its probability
    [H, W]; ``prior`` and ``image`` are the slice's [H, W].
    """
    softened = [soften(prior, s, spacing) for s in PRIOR_SIGMAS_MM]
    network = networks["registered"]
    features = [network, networks["chunks"], *softened, signed_distance_cm(prior >= 0.5, spacing),
                appearance(image), network * softened[PRIOR_SIGMAS_MM.index(5.0)]]
    return np.stack(features, axis=-1).astype(np.float32)  # [H, W, F]


def volume_features(networks: dict[str, np.ndarray], prior: np.ndarray, image: np.ndarray, body: np.ndarray,
                    spacing: Sequence[float], extent: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    """(z, features [H, W, F]) for every slice z of ``extent`` (inclusive); the appearance model fitted once.

    ``networks`` are slabs [H, W, n] over ``extent``; ``prior``, ``image`` and ``body`` volumes [H, W, D].
    """
    appearance = AppearanceModel.fit(image, prior >= 0.5, body, spacing)
    top, bottom = extent
    for z in range(top, bottom + 1):
        yield z, slice_features({r: networks[r][..., z - top] for r in NETWORK_RULES}, prior[..., z], image[..., z],
                                appearance, spacing)


def logistic(features: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    """Eq. 1: sigmoid(c_0 + features @ c_1..F) for features [..., F]; float32 [...]."""
    c = np.asarray(coefficients, dtype=np.float64)
    if c.shape != (len(FEATURES) + 1,):
        raise ValueError(f"the learned fusion takes {len(FEATURES) + 1} coefficients (intercept and one per "
                         f"feature of {FEATURES}), got {c.size}")
    logit = c[0] + features.astype(np.float64) @ c[1:]
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def training_voxels(features: np.ndarray) -> np.ndarray:
    """Which voxels of a slice's features [H, W, F] the fit learns from: near the warped mask or the network."""
    near_prior = features[..., FEATURES.index("signed_distance_cm")] > -SAMPLE_MARGIN_MM / 10
    return near_prior | (features[..., FEATURES.index("network_registered")] > 0)


def fit_coefficients(samples: Sequence[tuple[np.ndarray, np.ndarray]], features: Sequence[str] = FEATURES,
                     regularisation: float = 1.0) -> tuple[float, ...]:
    """Eq. 1's (c_0, ..., c_F) by L2-regularised logistic regression on (features [n, F], labels [n]) pairs.

    Only the named ``features`` are fitted; the others keep a coefficient of
    0, i.e. are left out of eq. 1 (an ablation).
    """
    from sklearn.linear_model import LogisticRegression

    unknown = sorted(set(features) - set(FEATURES))
    if unknown or not features:
        raise ValueError(f"fit at least one of the features {', '.join(FEATURES)}; unknown: {unknown}")
    columns = [FEATURES.index(name) for name in features]
    values = np.concatenate([x for x, _ in samples])[:, columns]  # [n, len(features)]
    labels = np.concatenate([y for _, y in samples]).astype(bool)
    if values.shape[0] == 0 or labels.all() or not labels.any():
        raise ValueError("the learned fusion needs training voxels of both classes")
    model = LogisticRegression(C=regularisation, max_iter=1000).fit(values, labels)
    weights = np.zeros(len(FEATURES))
    weights[columns] = model.coef_[0]
    return (float(model.intercept_[0]), *(float(c) for c in weights))
