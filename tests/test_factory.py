"""Config -> training episode sampler: the inner validation split and pseudolabels at several sizes."""

from __future__ import annotations

import json

import numpy as np

from medfss.config import load_config
from medfss.data.io import write_nifti_atomic
from medfss.data.samplers import MixtureSampler, SupervoxelSampler
from medfss.data.supervoxels import SupervoxelConfig
from medfss.training.factory import build_episode_sampler

from conftest import REPO_ROOT, make_phantom


def phantom_dataset(root, n_cases=5):
    """An nnU-Net raw data set of ``n_cases`` phantoms: 5 folds of one volume each."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "organ": 1, "tumour": 2},
        "numTraining": n_cases, "file_ending": ".nii.gz"}))
    for i in range(n_cases):
        image, label, affine = make_phantom(shape=(48, 48, 16), seed=i, spacing=(1.25, 1.25, 3.0))
        write_nifti_atomic(image, affine, root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_nifti_atomic(label.astype(np.uint8), affine, root / "labelsTr" / f"case_{i:03d}.nii.gz")
    return root


def test_validation_fold_leaves_training_and_scales_make_a_mixture(tmp_path):
    root = phantom_dataset(tmp_path / "Dataset042_Phantom")
    config = load_config(REPO_ROOT / "configs" / "adnet_cpu.yaml", [
        f"data.dataset={root}", "data.image_size=48", "data.fold=0", "data.validation_fold=1",
        "data.pseudolabel_scales=[1, 3]", f"data.cache_dir={tmp_path / 'cache'}"])
    sampler = build_episode_sampler(config, tmp_path / "run")
    assert isinstance(sampler, MixtureSampler) and len(sampler.samplers) == 2
    fine, coarse = sampler.samplers
    assert isinstance(fine, SupervoxelSampler) and len(fine._images) == 3  # 5 cases less fold 0 and fold 1
    assert len(coarse) < len(fine)  # three times larger supervoxels: fewer of them
    cached = sorted(path.name for path in (tmp_path / "cache").glob("*.npz"))  # {dataset}_{case}_sp-{key}.npz
    fine_key, coarse_key = SupervoxelConfig().key, SupervoxelConfig().scaled(3).key
    assert cached == sorted(f"Dataset042_Phantom_case_{i:03d}_sp-{key}.npz"
                            for i in (2, 3, 4) for key in (fine_key, coarse_key))  # folds 0 and 1 never loaded
    single = build_episode_sampler(load_config(REPO_ROOT / "configs" / "adnet_cpu.yaml", [
        f"data.dataset={root}", "data.image_size=48", f"data.cache_dir={tmp_path / 'cache'}"]), tmp_path / "run")
    assert isinstance(single, SupervoxelSampler) and len(single._images) == 4
