"""``medfss segment`` for a semi-supervised model: fixed classes, no supports.

The scan (NIfTI) is normalised as the training files were (ACDC: min-max to
[0, 1] per volume; LA: z-score) and predicted whole: ACDC slice by slice along
the third voxel axis, LA by sliding windows. The ACDC HDF5 slices are
SimpleITK arrays, [Y, X] for a NIfTI's [X, Y] plane, so each NIfTI slice is
transposed for the network and back. The label map (uint8, values 1..N-1 as
in training) is written with the scan's affine and header: it opens aligned
with the scan.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfss.data.io import read_nifti, write_nifti_atomic
from medfss.semisup.checkpoint import load_model
from medfss.semisup.data import get_layout
from medfss.semisup.evaluate import predict_volume


def normalise(array: np.ndarray, how: str) -> np.ndarray:
    """``minmax``: (x - min) / (max - min); ``zscore``: (x - mean) / std (a constant scan becomes 0)."""
    array = array.astype(np.float32)
    if how == "minmax":
        span = float(array.max() - array.min())
        return (array - array.min()) / span if span > 0 else np.zeros_like(array)
    std = float(array.std())
    return (array - array.mean()) / std if std > 0 else np.zeros_like(array)


def segment_fixed(checkpoint: str | os.PathLike, query: str | os.PathLike, out: str | os.PathLike,
                  device: str = "cpu") -> dict[int, int]:
    """Write the label map of ``query`` to ``out``; returns the voxel count per label."""
    net, config, _ = load_model(checkpoint)
    scan = read_nifti(query)
    layout = get_layout(config.data.dataset)
    image = normalise(scan.array, layout.normalisation)  # [X, Y, Z]
    if config.data.spatial_dims == 2:
        labels = predict_volume(net, config, image.transpose(2, 1, 0), device).transpose(2, 1, 0)  # via [Z, Y, X]
    else:
        labels = predict_volume(net, config, image, device)
    write_nifti_atomic(np.ascontiguousarray(labels, dtype=np.uint8), scan.affine, Path(out), scan.header)
    return {c: int((labels == c).sum()) for c in range(1, layout.num_classes)}
