"""Config -> the episode sampler a training run needs.

With :func:`medfss.models.registry.build_model_from_config` for the model,
this is the only place where the trainer meets the data pipeline; everything
else in :mod:`medfss.training` takes built parts, so it runs just as well
with any model or sampler passed in by hand (the tests do so).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medfss.config import TrainConfig, sub_config
from medfss.data.datasets import Dataset
from medfss.errors import ConfigError

if TYPE_CHECKING:
    from medfss.data.samplers import EpisodeSampler


def build_episode_sampler(config: TrainConfig, run_dir: str | Path) -> EpisodeSampler:
    """The training episode sampler of ``config``: the fold's training volumes, cut to episodes.

    Self-supervised: superpixel (or, with ``supervision: supervoxels``,
    supervoxel) pseudolabels (cached under ``data.cache_dir``, default
    ``<run_dir>/superpixels``), at each size of ``data.pseudolabel_scales``
    (episodes drawn from the sizes uniformly); setting 2 drops the slices of
    the test classes' groups. Supervised: the manual labels of every class but the test
    classes. ``data.augment`` changes the query transforms from SSL-ALPNet's.
    """
    # imported here, not at the top: they pull in MONAI and scikit-image
    from medfss.data.samplers import (MixtureSampler, SelfSupervisedSampler, SupervisedSampler,
                                      SupervoxelSampler, setting2_excluded_classes)
    from medfss.data.superpixels import SuperpixelConfig, superpixels_for_volumes
    from medfss.data.supervoxels import SupervoxelConfig
    from medfss.data.transforms import AugmentConfig

    data = config.data
    dataset = Dataset.from_name(data.dataset, data.data_root)
    for name in data.test_classes:
        dataset.spec.class_index(name)  # a misspelt class fails here, before any loading
    augment = sub_config(AugmentConfig, data.augment, "data.augment") if data.augment is not None else None
    volumes = [dataset.load(case_id) for case_id in dataset.train_case_ids(data.fold, data.validation_fold)]
    try:
        if data.supervision == "supervised":
            return SupervisedSampler(volumes, dataset.spec, test_classes=data.test_classes, setting=data.setting,
                                     image_size=data.image_size, shots=data.shots, augment=augment)
        supervoxels = data.supervision == "supervoxels"
        params = sub_config(SupervoxelConfig if supervoxels else SuperpixelConfig, data.superpixels,
                            "data.superpixels")
        cache_dir = Path(data.cache_dir) if data.cache_dir is not None else Path(run_dir) / "superpixels"
        exclude = setting2_excluded_classes(dataset.spec, data.test_classes) if data.setting == 2 else ()
        sampler = SupervoxelSampler if supervoxels else SelfSupervisedSampler
        samplers = [sampler(volumes, superpixels_for_volumes(volumes, params.scaled(factor), cache_dir,
                                                             dataset=dataset.spec.name),
                            image_size=data.image_size, shots=data.shots, exclude_classes=exclude,
                            **({"augment": augment} if augment else {}))
                    for factor in data.pseudolabel_scales]
        return samplers[0] if len(samplers) == 1 else MixtureSampler(samplers)
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None

