"""The body mask: where a scan holds the patient, and the rule that no organ lies outside it.

A few-shot model compares every query pixel with the support's prototypes;
nothing in that comparison knows that air cannot be liver, so a dark, empty
slice can match a dark support organ (an all-zero demo slice was given a
10,834-voxel liver). The rule: a label is never predicted outside the body.

The body is found from the scan's own intensities, per slice, exactly as the
superpixel pseudolabels of self-supervised training find it
(:func:`medfss.data.superpixels.body_mask`): Gaussian smoothing (sigma 1.5 px),
threshold at t = min + f (p99 - min) of the *volume* with f = 0.04, largest
2D component, holes filled. The settings are
:class:`~medfss.data.superpixels.SuperpixelConfig`' defaults, not tuned on any
score (fold 0's included): they are the definition of "inside" with which
the self-supervised models (the bundled one among them) were trained, whose
pseudolabels, hence every foreground they learned, lie inside this mask. The threshold is a fixed fraction of the intensity
range, so it is the same on the raw and on the z-scored volume (an affine
map moves min and p99 with it); on CT, normalised after clipping to
[-125, 275] HU, it lies at -109 HU when bone reaches the window's top: air and lung (at the window floor) are
outside unless enclosed by the body, fat and soft tissue inside. Holes are
filled, so enclosed air (bowel gas, lungs inside the chest wall) counts as
body: the mask removes predictions in the air around the patient and on
slices without a patient, not everywhere a label is unlikely.

A volume that is constant (all zero, or one value everywhere) has no body
and carries no image: :func:`check_informative` refuses it before any work.

Shapes: H W in-plane, D slices (slicing axis last).
"""

from __future__ import annotations

import numpy as np

from medfss.errors import InputFileError


def check_informative(image: np.ndarray, name: str) -> None:
    """Raise :class:`InputFileError` when every voxel of ``image`` has one value (nothing to segment)."""
    low, high = float(image.min()), float(image.max())
    if low == high:
        what = "every voxel is 0 (an empty scan)" if low == 0 else f"every voxel equals {low:g} (a constant scan)"
        raise InputFileError(f"{name}: {what}; there is no image to segment or to learn from")


def body_mask(image: np.ndarray) -> np.ndarray:
    """The body of a volume [H, W, D] (slicing axis last): bool [H, W, D], per slice (see the module docstring)."""
    from medfss.data.superpixels import SuperpixelConfig, body_mask as slice_body, body_threshold

    params = SuperpixelConfig()
    threshold = body_threshold(image, params.body_threshold)
    return np.stack([slice_body(image[..., z], threshold, params.body_smoothing)
                     for z in range(image.shape[-1])], axis=-1)  # [H, W, D]
