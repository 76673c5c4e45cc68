"""Config -> training episode sampler: the inner validation split and pseudolabels at several sizes."""

from __future__ import annotations

from medfss.config import load_config
from medfss.data.samplers import MixtureSampler, SupervoxelSampler
from medfss.data.supervoxels import SupervoxelConfig
from medfss.training.factory import build_episode_sampler

from conftest import REPO_ROOT, write_nnunet_phantoms


def test_validation_fold_leaves_training_and_scales_make_a_mixture(tmp_path):
    root = write_nnunet_phantoms(tmp_path / "Dataset042_Phantom", n_cases=5, shape=(48, 48, 16),
                                 spacing=(1.25, 1.25, 3.0), modality="MRI")  # 5 folds of one volume
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
