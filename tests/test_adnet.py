"""ADNet: the anomaly score against one prototype, the learned threshold and its loss."""

from __future__ import annotations

import pytest
import torch

from medfss.models.adnet import ADNet, ADNetConfig
from medfss.models.registry import build_model
from medfss.nn.prototypes import class_prototype

from test_models import square_episode


def slim_adnet(seed: int = 0, **options) -> ADNet:
    torch.manual_seed(seed)
    return build_model("adnet", backbone="resnet18-slim", **options)


def test_foreground_is_where_the_anomaly_score_is_below_the_threshold():
    model = slim_adnet(threshold_init=-7.0).eval()
    episode = square_episode(shots=2)
    with torch.no_grad():
        support, query = model.encode(episode)
        score = model.anomaly_score(query, support, episode.support_masks)  # [B, 1, h, w]
        logits = model.classify(query, support, episode.support_masks)
    prototype = class_prototype(support, episode.support_masks)
    expected = -20 * torch.cosine_similarity(query, prototype[:, :, None, None], dim=1)
    torch.testing.assert_close(score[:, 0], expected)
    probability = logits.softmax(dim=1)[:, 1]
    torch.testing.assert_close(probability, torch.sigmoid(0.5 * (-7.0 - score[:, 0])))
    assert torch.equal(probability > 0.5, score[:, 0] < -7.0)


def test_loss_terms_and_the_threshold_term():
    model = slim_adnet()
    terms = model.loss(square_episode())
    assert set(terms) == {"loss", "ce", "align", "threshold"}
    assert float(terms["threshold"]) == pytest.approx(-10 / 20)
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["align"] + terms["threshold"])
    terms["loss"].backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert set(slim_adnet(threshold_weight=0).loss(square_episode())) == {"loss", "ce", "align"}


def test_the_threshold_moves_under_training():
    model = slim_adnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    episode = square_episode(batch=2, seed=4)
    start = float(model.threshold)
    for _ in range(5):
        optimizer.zero_grad()
        model.loss(episode)["loss"].backward()
        optimizer.step()
    assert abs(float(model.threshold) - start) > 1e-2


def test_explain_maps_hold_the_score_and_the_threshold():
    maps = slim_adnet().eval().explain_maps(square_episode(size=32))
    assert maps["score"].shape == (4, 4) and float(maps["threshold"]) == -10.0
    assert maps["score"].abs().max() <= 20 + 1e-4


@pytest.mark.parametrize("options", [{"alpha": 0}, {"sharpness": -1}, {"threshold_weight": -1},
                                     {"threshold_init": "low"}])
def test_bad_settings_raise(options):
    with pytest.raises(ValueError):
        ADNetConfig(**options)


def test_explain_figure_draws_the_score_and_the_threshold(tmp_path):
    from medfss.evaluation.explain import explain_figure

    info = explain_figure(slim_adnet(), square_episode(size=32), tmp_path / "adnet.png")
    assert info["panels"] == 4 and "T = -10.00" in info["description"]
    assert (tmp_path / "adnet.png").stat().st_size > 1000
