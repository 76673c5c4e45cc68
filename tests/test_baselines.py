"""The no-training floors and the predictor factory."""

from __future__ import annotations

import pytest
import torch

from medfss.errors import ConfigError
from medfss.evaluation.baselines import CopySupportPredictor, IntensityPrototypePredictor, build_baseline
from medfss.inference.predictor import Predictor
from medfss.data.datasets import get_dataset_spec
from medfss.evaluation.predictors import checkpoint_path, group_name, predictor_factory


def square(size=16, top=4, side=6):
    mask = torch.zeros(size, size)
    mask[top:top + side, top:top + side] = 1
    return mask


def test_copy_support_pastes_the_support_mask_on_every_query():
    support = square()[None]  # [1, H, W]
    queries = torch.randn(3, 16, 16)
    out = CopySupportPredictor().predict(torch.randn(1, 16, 16), support, queries)
    assert out.shape == (3, 16, 16) and torch.equal(out, support.expand(3, -1, -1))


def test_copy_support_k_shot_is_the_mean_of_the_masks():
    masks = torch.stack([square(top=2), square(top=4), square(top=6)])  # [3, H, W]
    out = CopySupportPredictor().predict(torch.zeros(3, 16, 16), masks, torch.zeros(1, 16, 16))
    assert out[0, 2, 2] == pytest.approx(1 / 3) and out[0, 6, 6] == pytest.approx(1.0)
    assert out[0, 0, 0] == 0


def test_intensity_prototype_finds_the_bright_organ_anywhere():
    support_mask = square(size=32, top=4, side=8)
    support = -1 + 2 * support_mask  # bright organ on a dark background
    query_mask = square(size=32, top=18, side=10)  # elsewhere, of another size
    query = -1 + 2 * query_mask + 0.05 * torch.randn(32, 32)
    out = IntensityPrototypePredictor(kernel_sizes=(1,)).predict(support[None], support_mask[None], query[None])
    assert torch.equal(out[0] > 0.5, query_mask.bool())


def test_intensity_prototype_tells_dark_from_bright_through_the_bias():
    # without the constant channel a single-channel feature would have cosine +-1 only
    mask = square(size=16)
    image = 0.5 + 1.5 * mask  # organ 2.0, background 0.5: same sign, different level
    out = IntensityPrototypePredictor(kernel_sizes=(1,)).predict(image[None], mask[None], image[None])
    assert torch.equal(out[0] > 0.5, mask.bool())


def test_baselines_are_predictors_and_bad_names_fail():
    assert isinstance(build_baseline("copy-support"), Predictor)
    with pytest.raises(ConfigError, match="copy-support"):
        build_baseline("nope")
    with pytest.raises(ValueError, match="odd"):
        IntensityPrototypePredictor(kernel_sizes=(2,))


def test_predictor_factory():
    factory = predictor_factory("copy-support")
    assert factory(0, "liver") is factory(3, "spleen")
    with pytest.raises(ConfigError, match="takes no --checkpoint"):
        predictor_factory("copy-support", "x.pt")
    with pytest.raises(ConfigError, match="needs --checkpoint"):
        predictor_factory("alpnet")
    assert checkpoint_path("runs/fold{fold}/model.pt", 3) == "runs/fold3/model.pt"
    spec = get_dataset_spec("CHAOST2")
    assert group_name(spec, "spleen") == "upper" and group_name(spec, "left_kidney") == "lower"
    assert checkpoint_path("runs/{group}-fold{fold}/model.pt", 1, "upper") == "runs/upper-fold1/model.pt"


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="query_images"):
        CopySupportPredictor().predict(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), torch.zeros(2, 9, 8))
