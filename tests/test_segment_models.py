"""`medfss segment --checkpoint` with every registered model: the one inference path adapts any of them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medfss.checkpoints import checkpoint_metadata, save_atomic
from medfss.cli import main
from medfss.config import DataConfig, ModelConfig, TrainConfig
from medfss.models.registry import build_model

from test_segment import scans, segment_argv  # noqa: F401  (scans is a fixture)


@pytest.mark.parametrize("name", ["apscl", "adnet"])
def test_segment_runs_with_a_checkpoint_of(name, scans, tmp_path, capsys):  # noqa: F811
    torch.manual_seed(0)
    options = {"backbone": "resnet18-slim"}
    config = TrainConfig(model=ModelConfig(name, options), data=DataConfig(image_size=32))
    checkpoint = save_atomic({"state_dict": build_model(name, **options).state_dict(),
                              **checkpoint_metadata(config)}, tmp_path / f"{name}.pt")
    out = tmp_path / "out"
    assert main(segment_argv(scans, checkpoint, out)) == 0
    assert "label 1:" in capsys.readouterr().out
    prediction = nib.load(out / "pred.nii.gz")
    assert prediction.shape == nib.load(scans["query"]).shape
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}
