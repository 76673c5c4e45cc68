"""Shared fixtures: the real data root and small synthetic volumes made in code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# ITK fixes its thread count at its first use in a process: one thread for the whole suite, whatever test
# registers first, so that registrations and joint label fusions repeat bit for bit (a user's count stands)
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data: ``$MEDFSS_DATA_ROOT`` or ``../shared/data`` beside the repository."""
    root = Path(os.environ.get("MEDFSS_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
    if not (root / "CHAOST2").is_dir():
        pytest.skip(f"real data not found at {root} (set MEDFSS_DATA_ROOT)")
    return root


def make_phantom(shape=(64, 64, 24), seed=0, spacing=(1.25, 1.25, 7.7)):
    """A synthetic abdomen-like volume: a body ellipse holding two bright ellipsoid organs.

    Returns (image [H, W, D] float32, label [H, W, D] int64 with classes 1 and 2, affine).
    """
    rng = np.random.default_rng(seed)
    h, w, d = shape
    yy, xx, zz = np.meshgrid(np.arange(h), np.arange(w), np.arange(d), indexing="ij")
    body = ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 <= 1
    organ1 = ((yy - 0.4 * h) / (0.15 * h)) ** 2 + ((xx - 0.4 * w) / (0.12 * w)) ** 2 + \
        ((zz - 0.4 * d) / (0.25 * d)) ** 2 <= 1
    organ2 = ((yy - 0.62 * h) / (0.1 * h)) ** 2 + ((xx - 0.62 * w) / (0.1 * w)) ** 2 + \
        ((zz - 0.6 * d) / (0.2 * d)) ** 2 <= 1
    image = np.where(body, 100.0, 0.0) + 150.0 * organ1 + 80.0 * organ2
    image = (image + rng.normal(0, 5, shape) * body).astype(np.float32)
    label = np.zeros(shape, dtype=np.int64)
    label[organ1] = 1
    label[organ2 & ~organ1] = 2
    affine = np.diag([*spacing, 1.0])
    return image, label, affine


def write_nnunet_phantoms(root: Path, n_cases: int, shape=(32, 32, 8), spacing=(1.25, 1.25, 7.7),
                          modality: str = "CT") -> Path:
    """An nnU-Net raw data set at ``root`` of ``n_cases`` phantoms (classes organ = 1, tumour = 2)."""
    import json

    from medfss.data.io import write_nifti_atomic

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": modality}, "labels": {"background": 0, "organ": 1, "tumour": 2},
        "numTraining": n_cases, "file_ending": ".nii.gz"}))
    for i in range(n_cases):
        image, label, affine = make_phantom(shape=shape, seed=i, spacing=spacing)
        write_nifti_atomic(image, affine, root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_nifti_atomic(label.astype(np.uint8), affine, root / "labelsTr" / f"case_{i:03d}.nii.gz")
    return root


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An exported model file as ``export_model`` writes it: an untrained ALPNet at 32 px.

    For the tools that take any model (segment, demo): what they do must not depend on its skill.
    """
    from medfss.config import DataConfig, ModelConfig, TrainConfig
    from medfss.models.registry import build_model
    from medfss.checkpoints import checkpoint_metadata, save_atomic

    torch.manual_seed(0)
    model = build_model("alpnet", backbone="resnet18-slim")
    config = TrainConfig(model=ModelConfig("alpnet", {"backbone": "resnet18-slim"}), data=DataConfig(image_size=32))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_atomic({"state_dict": model.state_dict(), **checkpoint_metadata(config)}, path)
    return path


class PairDataset:
    """The part of :class:`~medfss.data.datasets.Dataset` the protocol uses: one fold of two copies of a volume."""

    def __init__(self, image: np.ndarray, label: np.ndarray, spacing=(1.0, 1.0, 1.0)):
        from medfss.data.datasets import DatasetSpec

        self.spec = DatasetSpec(name="TOY", folder="TOY", modality="MR", classes={1: "organ"},
                                eval_classes=("organ",))
        self.image, self.label, self.spacing = image, label, spacing

    def fold_case_ids(self, fold: int) -> list[str]:
        return ["s", "q"]

    def load(self, case_id: str):
        from medfss.data.datasets import Volume

        return Volume(case_id, self.image, self.label, self.spacing, np.eye(4), Path(case_id), Path(case_id))


@pytest.fixture
def pair_dataset():
    """``pair_dataset(image, label, spacing)``: a one-fold TOY data set whose support and query are that volume."""
    return PairDataset
