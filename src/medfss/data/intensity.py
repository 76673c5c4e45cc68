"""Intensity normalisation: pure array functions, one place for every convention.

Three uses, each following the SSL-ALPNet preprocessing and loaders:

* ``medfss prepare`` (stored files): MR keeps its values except the top
  0.5 % of the histogram (:func:`normalise_mr`); CT is windowed to
  [-125, 275] HU and mapped to [0, 255] (:func:`normalise_ct`).
* Loading a stored volume for training or evaluation: a per-volume z-score
  (:func:`zscore`).
* ``medfss segment`` on a user's raw scan: MR z-scored, CT clipped to the
  window then z-scored (:func:`normalise_intensity`); ``auto`` calls a scan
  CT when its minimum is below -500 (air in Hounsfield units; MR intensities
  are non-negative).
"""

from __future__ import annotations

import numpy as np

MODALITIES = ("auto", "MR", "CT")
CT_WINDOW = (-125.0, 275.0)  # HU, the abdominal window of the SSL-ALPNet SABS preprocessing
CT_AIR_THRESHOLD = -500.0  # a minimum below this is air in HU: the scan is CT
CT_SCALE = 255.0  # windowed CT is mapped to [0, CT_SCALE] by prepare
MR_TOP_PERCENT = 0.5  # histogram share cut at the bright end (SSL-ALPNet HIST_CUT_TOP)


def detect_modality(image: np.ndarray) -> str:
    """``"CT"`` when the minimum is below -500 (air in HU), else ``"MR"``."""
    return "CT" if float(image.min()) < CT_AIR_THRESHOLD else "MR"


def zscore(image: np.ndarray) -> np.ndarray:
    """Per-volume z-score normalisation (the SSL-ALPNet/ADNet loaders' convention).

    ``z = (x - mean(x)) / std(x)``; a constant volume has std 0 and comes out
    as zeros (it is only shifted).
    """
    std = float(image.std())
    return ((image - image.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def clip_to_window(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``clip(x, low, high)``, without a cast of its own (float input keeps its dtype); ValueError unless
    ``low < high``."""
    low, high = window
    if not low < high:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    return np.clip(image, low, high)


def normalise_mr(image: np.ndarray, top_percent: float = MR_TOP_PERCENT) -> np.ndarray:
    """Cut the bright end of the histogram: ``min(x, P_{100 - top_percent}(x))``.

    The SSL-ALPNet CHAOS step against off-resonance spikes. No shift or
    scaling: the loaders z-score each volume. P is the order statistic just
    below the percentile position (numpy's ``method="lower"``; the reference
    interpolates between it and the next one), so that a second cut on the
    same grid finds the same P and changes nothing.
    """
    if not 0 <= top_percent < 100:
        raise ValueError(f"top_percent must be in [0, 100), got {top_percent}")
    image = np.asarray(image, dtype=np.float32)
    if top_percent == 0:
        return image
    ceiling = np.percentile(image, 100.0 - top_percent, method="lower")
    return np.minimum(image, ceiling)


def normalise_ct(image: np.ndarray, window: tuple[float, float] = CT_WINDOW,
                 scale: float = CT_SCALE) -> np.ndarray:
    """Window to ``[low, high]`` HU, then map linearly to ``[0, scale]``.

    ``y = (clip(x, low, high) - low) / (high - low) * scale``; the SABS
    preprocessing divides by the clipped volume's own range, which is the
    same map whenever the scan reaches both window ends (air and bone do).
    """
    low, high = window
    clipped = clip_to_window(np.asarray(image, dtype=np.float32), window)
    return ((clipped - low) / (high - low) * scale).astype(np.float32)


def normalise_intensity(image: np.ndarray, modality: str, ct_window: tuple[float, float] = CT_WINDOW
                        ) -> tuple[np.ndarray, str]:
    """The training intensity normalisation of a raw scan, and the modality used (``auto`` resolved).

    MR: z = (x - mean) / std over the volume. CT: x clipped to ``ct_window``, then z-scored.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "auto":
        modality = detect_modality(image)
    if modality == "CT":
        image = clip_to_window(image, ct_window)
    return zscore(image), modality
