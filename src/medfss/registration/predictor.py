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
alone). The same probability is the registration guidance's prior
(:mod:`medfss.registration.guided`).
No label of the query is used.

A registration depends only on the two images and the settings, not on the
class, so it is computed once per (support, query) pair and reused for every
class: in memory (the last ``cache_size`` pairs), and, with ``cache_dir``,
on disk across runs (one folder per pair and settings, holding ANTs'
transform files; several processes may share it, each folder is written
under a temporary name and renamed). Joint label fusion, tens of seconds a
class, is kept there too: one file per supports, query and settings (the registration's and the fusion's).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from medfss.data.io import write_atomic, write_folder_atomic
from medfss.inference.plan import SupportScan
from medfss.registration.ants import (JointLabelFusionConfig, Registration, RegistrationConfig, coarsening_factor,
                                     joint_label_fusion, register, transforms_from)
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
                 cache_dir: str | os.PathLike | None = None, label_fusion: str = "vote",
                 jlf: JointLabelFusionConfig = JointLabelFusionConfig()):
        require(label_fusion in LABEL_FUSIONS, "label_fusion", f"must be one of {', '.join(LABEL_FUSIONS)}, "
                                                               f"got {label_fusion!r}")
        self.config = config
        self.label_fusion = label_fusion
        self.jlf = jlf  # read with label_fusion="jlf" only
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

    def warp(self, support: SupportScan, query: np.ndarray, query_spacing: tuple[float, float, float]
             ) -> SupportScan:
        """``support`` resampled on the query's grid: image linear, mask nearest neighbour."""
        registration = self.registration(support, query, query_spacing)
        return SupportScan(registration.warp(support.image, support.spacing),
                           registration.warp(support.mask.astype(np.float32), support.spacing,
                                             interpolator="nearestNeighbor") > 0.5,
                           tuple(query_spacing))

    def label_probability(self, supports: Sequence[SupportScan], warped_masks: Sequence[np.ndarray],
                          warped_images: Sequence[np.ndarray] | None, query: np.ndarray,
                          query_spacing: tuple[float, float, float]) -> np.ndarray:
        """P(foreground) [H, W, D] from ``supports`` warped onto the query (masks [H, W, D] bool, images float).

        Voting reads the warped masks alone (``warped_images`` may be None);
        joint label fusion reads the warped images too.
        """
        if self.label_fusion == "vote":
            return np.mean(warped_masks, axis=0, dtype=np.float32)  # [H, W, D] in [0, 1]
        require(warped_images is not None, "warped_images", "joint label fusion needs the warped support images")
        file = None if self.cache_dir is None else self._fusion_file(supports, query, query_spacing)
        if file is not None and file.is_file():
            return np.load(file)["probability"]
        probability = joint_label_fusion(query, query_spacing, list(warped_images), list(warped_masks), self.config,
                                         self.jlf)
        if file is not None:  # atomic: a reader sees the whole file or none
            write_atomic(file, lambda tmp: np.savez_compressed(tmp, probability=probability), suffix=".npz")
        return probability

    def segment_volume(self, supports: Sequence[SupportScan], query: np.ndarray,
                       query_spacing: tuple[float, float, float]) -> np.ndarray:
        warped = [self.warp(support, query, query_spacing) for support in supports]
        return self.label_probability(supports, [w.mask for w in warped], [w.image for w in warped], query,
                                      query_spacing)

    def record(self) -> dict:
        """The settings a result was made with, for results.json (read back by :meth:`from_record`)."""
        fusion = {"jlf": asdict(self.jlf)} if self.label_fusion == "jlf" else {}
        return {**asdict(self.config), "label_fusion": self.label_fusion, **fusion}

    @classmethod
    def from_record(cls, record: dict, cache_dir: str | os.PathLike | None = None) -> RegistrationPredictor:
        """The predictor of a :meth:`record` (records written before label fusion was recorded: voting; before
        its settings were: ANTs' defaults, the only ones used then)."""
        settings = dict(record)
        label_fusion = settings.pop("label_fusion", "vote")
        jlf = JointLabelFusionConfig(**settings.pop("jlf", {}))
        return cls(RegistrationConfig(**settings), cache_dir=cache_dir, label_fusion=label_fusion, jlf=jlf)

    def _settings(self, shapes: Sequence[tuple[int, ...]]) -> str:
        """The registration settings of a cache key, as JSON."""
        # max_voxels changes nothing for volumes under it: it is left out of their key; syn_metric is left out
        # when unset, so that the keys of registrations cached before it existed still match
        coarsened = any(coarsening_factor(s, self.config.max_voxels) > 1 for s in shapes)
        ignored = {"threads"}
        if not coarsened:
            ignored.add("max_voxels")
        if self.config.syn_metric is None:
            ignored.add("syn_metric")
        return json.dumps({k: v for k, v in asdict(self.config).items() if k not in ignored}, sort_keys=True)

    def _folder(self, key: tuple[str, str], shapes: Sequence[tuple[int, ...]]) -> Path:
        settings = self._settings(shapes)
        name = hashlib.blake2b(f"{key[0]}{key[1]}{settings}".encode(), digest_size=16).hexdigest()
        return self.cache_dir / name

    def _fusion_file(self, supports: Sequence[SupportScan], query: np.ndarray,
                     query_spacing: tuple[float, float, float]) -> Path:
        """Where the joint label fusion of ``supports`` (images and masks) onto ``query`` is cached."""
        parts = [_fingerprint(s.image, s.spacing) + _fingerprint(s.mask, s.spacing) for s in supports]
        parts += [_fingerprint(query, query_spacing), self._settings([s.image.shape for s in supports] + [query.shape]),
                  json.dumps(asdict(self.jlf), sort_keys=True)]
        return self.cache_dir / "jlf" / (hashlib.blake2b("".join(parts).encode(), digest_size=16).hexdigest() + ".npz")

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
        names = [f"{i}_{Path(t).name}" for i, t in enumerate(result.transforms)]

        def write(staging: Path) -> None:
            for source, name in zip(result.transforms, names):
                shutil.copyfile(source, staging / name)
            (staging / "transforms.json").write_text(json.dumps(names))

        write_folder_atomic(folder, write)  # kept as it is when another process stored the same pair first
