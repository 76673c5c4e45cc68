"""Multi-atlas segmentation by registration: a :class:`~medfss.inference.VolumePredictor`.

Every support (atlas) is registered onto the query (:func:`medfss.registration.ants.register`)
and its class mask is warped with nearest-neighbour interpolation; the
foreground probability of a voxel is the fraction of the supports that label
it, so the protocol's threshold 0.5 keeps the voxels a strict majority of
the atlases label (majority voting; with one support, the warped mask).
No label of the query is used.

A registration depends only on the two images, not on the class, so it is
computed once per (support, query) pair and reused for every class
(:class:`RegistrationPredictor` keeps the last ``cache_size`` pairs).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from medfss.inference.plan import SupportScan
from medfss.registration.ants import Registration, RegistrationConfig, register


def _fingerprint(image: np.ndarray, spacing: Sequence[float]) -> str:
    """A key for an image and its grid: the registration cache's."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
    digest.update(repr((image.shape, str(image.dtype), tuple(map(float, spacing)))).encode())
    return digest.hexdigest()


class RegistrationPredictor:
    """Atlas registration of every support onto the query, fused by majority voting."""

    def __init__(self, config: RegistrationConfig = RegistrationConfig(), cache_size: int = 8):
        self.config = config
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Registration] = OrderedDict()

    def registration(self, support: SupportScan, query: np.ndarray,
                     query_spacing: tuple[float, float, float]) -> Registration:
        """The registration of ``support``'s image onto ``query``, computed once per pair."""
        key = (_fingerprint(support.image, support.spacing), _fingerprint(query, query_spacing))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = register(query, query_spacing, support.image, support.spacing, self.config)
        self._cache[key] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)  # its temporary transform files go with it
        return result

    def segment_volume(self, supports: Sequence[SupportScan], query: np.ndarray,
                       query_spacing: tuple[float, float, float]) -> np.ndarray:
        votes = np.zeros(query.shape, dtype=np.float32)  # [H, W, D]
        for support in supports:
            warped = self.registration(support, query, query_spacing).warp(
                support.mask.astype(np.float32), support.spacing, interpolator="nearestNeighbor")
            votes += warped > 0.5
        return votes / len(supports)  # [H, W, D] in [0, 1]
