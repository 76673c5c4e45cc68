"""Multi-atlas segmentation by registration: a :class:`~medfss.inference.VolumePredictor`.

Every support (atlas) is registered onto the query (:func:`medfss.registration.ants.register`)
and its class mask is warped with nearest-neighbour interpolation; the
foreground probability of a voxel is the fraction of the supports that label
it, so the protocol's threshold 0.5 keeps the voxels a strict majority of
the atlases label (majority voting; with one support, the warped mask), or,
with ``label_fusion="jlf"``, the joint label fusion of the warped supports
(:func:`medfss.registration.ants.joint_label_fusion`: each atlas weighted per
voxel by how well its warped image matches the query there, its label taken
from its best-matching patch nearby; with one support, that local correction
alone).
No label of the query is used.

A registration depends only on the two images and the settings, not on the
class, so it is computed once per (support, query) pair and reused for every
class: in memory (the last ``cache_size`` pairs), and, with ``cache_dir``,
on disk across runs (one folder per pair and settings, holding ANTs'
transform files; several processes may share it, each folder is written
under a temporary name and renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from medfss.inference.plan import SupportScan
from medfss.registration.ants import (Registration, RegistrationConfig, coarsening_factor, joint_label_fusion,
                                     register, transforms_from)
from medfss.validation import require

LABEL_FUSIONS = ("vote", "jlf")  # majority voting, joint label fusion


def _fingerprint(image: np.ndarray, spacing: Sequence[float]) -> str:
    """A key for an image and its grid: the registration cache's."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
    digest.update(repr((image.shape, str(image.dtype), tuple(map(float, spacing)))).encode())
    return digest.hexdigest()


class RegistrationPredictor:
    """Atlas registration of every support onto the query, fused by majority voting or joint label fusion."""

    def __init__(self, config: RegistrationConfig = RegistrationConfig(), cache_size: int = 8,
                 cache_dir: str | os.PathLike | None = None, label_fusion: str = "vote"):
        require(label_fusion in LABEL_FUSIONS, "label_fusion", f"must be one of {', '.join(LABEL_FUSIONS)}, "
                                                               f"got {label_fusion!r}")
        self.config = config
        self.label_fusion = label_fusion
        self.cache_size = cache_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._cache: OrderedDict[tuple[str, str], Registration] = OrderedDict()

    def registration(self, support: SupportScan, query: np.ndarray,
                     query_spacing: tuple[float, float, float]) -> Registration:
        """The registration of ``support``'s image onto ``query``, computed once per pair."""
        key = (_fingerprint(support.image, support.spacing), _fingerprint(query, query_spacing))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        folder = None if self.cache_dir is None else self._folder(key, (support.image.shape, query.shape))
        result = self._from_disk(folder, query.shape, query_spacing)
        if result is None:
            result = register(query, query_spacing, support.image, support.spacing, self.config)
            self._to_disk(folder, result)
        self._cache[key] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)  # its temporary transform files go with it
        return result

    def segment_volume(self, supports: Sequence[SupportScan], query: np.ndarray,
                       query_spacing: tuple[float, float, float]) -> np.ndarray:
        registrations = [self.registration(support, query, query_spacing) for support in supports]
        masks = [r.warp(s.mask.astype(np.float32), s.spacing, interpolator="nearestNeighbor") > 0.5
                 for r, s in zip(registrations, supports)]  # [H, W, D] each
        if self.label_fusion == "jlf":
            images = [r.warp(s.image, s.spacing) for r, s in zip(registrations, supports)]
            return joint_label_fusion(query, query_spacing, images, masks, self.config)
        return np.mean(masks, axis=0, dtype=np.float32)  # [H, W, D] in [0, 1]

    def _folder(self, key: tuple[str, str], shapes: Sequence[tuple[int, ...]]) -> Path:
        # max_voxels changes nothing for volumes under it: it is left out of their key; syn_metric is left out
        # when unset, so that the keys of registrations cached before it existed still match
        coarsened = any(coarsening_factor(s, self.config.max_voxels) > 1 for s in shapes)
        ignored = {"threads"}
        if not coarsened:
            ignored.add("max_voxels")
        if self.config.syn_metric is None:
            ignored.add("syn_metric")
        settings = json.dumps({k: v for k, v in asdict(self.config).items() if k not in ignored}, sort_keys=True)
        name = hashlib.blake2b(f"{key[0]}{key[1]}{settings}".encode(), digest_size=16).hexdigest()
        return self.cache_dir / name

    def _from_disk(self, folder: Path | None, query_shape: tuple[int, ...], query_spacing) -> Registration | None:
        if folder is None:
            return None
        manifest = folder / "transforms.json"
        if not manifest.is_file():
            return None
        files = [str(manifest.parent / name) for name in json.loads(manifest.read_text())]
        return transforms_from(query_shape, query_spacing, files, self.config)

    def _to_disk(self, folder: Path | None, result: Registration) -> None:
        if folder is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".partial-"))
        names = [f"{i}_{Path(t).name}" for i, t in enumerate(result.transforms)]
        for source, name in zip(result.transforms, names):
            shutil.copyfile(source, staging / name)
        (staging / "transforms.json").write_text(json.dumps(names))
        try:
            staging.rename(folder)
        except OSError:  # another process stored the same pair first
            shutil.rmtree(staging, ignore_errors=True)
