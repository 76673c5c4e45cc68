"""APSCL: the KL of eq. 1, the FEM of eq. 2, the spatial interaction of eq. 3-6, the contrastive
loss of eq. 7-8, the decoder of eq. 9-12 and the total of eq. 13, with its component ablation."""

from __future__ import annotations

import pytest
import torch

from medfss.data.episodes import Episode
from medfss.models.apscl import APSCL, APSCLConfig
from medfss.models.apscl.contrastive import spatial_contrastive_loss
from medfss.models.apscl.decoder import MutualGuidanceDecoder, channel_attention
from medfss.models.apscl.fem import FeatureEnrichment, gaussian_kl
from medfss.models.apscl.interaction import SpatialInteraction, cross_attention
from medfss.models.registry import build_model

from test_models import square_episode


def slim_apscl(seed: int = 0, **options) -> APSCL:
    torch.manual_seed(seed)
    return build_model("apscl", backbone="resnet18-slim", **options)


# --- eq. 1: KL of diagonal Gaussians ------------------------------------------------------------------

def test_kl_of_identical_gaussians_is_zero():
    mean, log_var = torch.randn(4, 32), torch.randn(4, 32)
    assert float(gaussian_kl(mean, log_var, mean, log_var)) == pytest.approx(0, abs=1e-6)


def test_kl_grows_with_the_distance_of_the_means_and_matches_the_closed_form():
    zero = torch.zeros(1, 3)
    kls = [float(gaussian_kl(torch.full((1, 3), d), zero, zero, zero)) for d in (0.0, 0.5, 1.0, 2.0)]
    assert kls == sorted(kls) and kls[0] == 0
    assert kls[-1] == pytest.approx(0.5 * 3 * 2.0 ** 2)  # unit variances: ||m_p - m_q||^2 / 2
    # different variances: KL(N(0, 1) || N(0, e^2)) = 1/2 (2 + e^-2 - 1) per factor
    assert float(gaussian_kl(zero, zero, zero, torch.full((1, 3), 2.0))) == pytest.approx(
        0.5 * 3 * (2 + torch.exp(torch.tensor(-2.0)).item() - 1), rel=1e-5)


def test_kl_is_asymmetric_and_non_negative():
    generator = torch.Generator().manual_seed(0)
    a, b, c, d = (torch.randn(5, 8, generator=generator) for _ in range(4))
    assert float(gaussian_kl(a, b, c, d)) > 0 and float(gaussian_kl(c, d, a, b)) > 0
    assert float(gaussian_kl(a, b, c, d)) != pytest.approx(float(gaussian_kl(c, d, a, b)))


# --- eq. 2: FEM ---------------------------------------------------------------------------------------

def test_fem_starts_as_the_identity_and_samples_only_in_training():
    fem = FeatureEnrichment(channels=16, latent=8, hidden=32)
    features = torch.randn(3, 16, 6, 6)
    torch.testing.assert_close(fem(features), features)  # zero-initialised last FiLM layers
    with torch.no_grad():
        for layer in (fem.scale[-1], fem.shift[-1]):
            layer.weight.normal_()
    fem.eval()
    torch.testing.assert_close(fem(features), fem(features))  # the prior's mean at inference
    fem.train()
    assert not torch.allclose(fem(features), fem(features))  # a fresh sample of z_x per call
    assert fem.kl(features, torch.rand(3, 48, 48) > 0.5).ndim == 0


# --- eq. 3-6: spatial interaction ----------------------------------------------------------------------

def test_cross_attention_shapes_and_rows_sum_to_one():
    weights = cross_attention(torch.randn(2, 20, 8), torch.randn(2, 12, 8))
    assert weights.shape == (2, 20, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 20))
    sim = SpatialInteraction(channels=16, embed=8)
    attention = sim.attention(torch.randn(1, 16, 4, 5), torch.randn(1, 16, 3, 3))
    assert attention.shape == (1, 20, 9)
    torch.testing.assert_close(attention.sum(-1), torch.ones(1, 20))


def test_relevance_is_eq_6_pair_by_pair():
    torch.manual_seed(0)
    sim = SpatialInteraction(channels=16, embed=8)
    support, query = torch.randn(3, 16, 4, 4), torch.randn(2, 16, 4, 4)
    relevance = sim.relevance(support, query)
    assert relevance.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            (q_s, k_s, v_s), (q_q, k_q, v_q) = sim.embed(support[i:i + 1]), sim.embed(query[j:j + 1])
            v_q_at_s = torch.softmax(q_s @ k_q.transpose(1, 2) / 8 ** 0.5, -1) @ v_q  # V_{q|s}
            v_s_at_q = torch.softmax(q_q @ k_s.transpose(1, 2) / 8 ** 0.5, -1) @ v_s  # V_{s|q}
            expected = (torch.cosine_similarity(v_s, v_q_at_s, dim=-1).mean()
                        + torch.cosine_similarity(v_q, v_s_at_q, dim=-1).mean())
            torch.testing.assert_close(relevance[i, j], expected)
    assert relevance.abs().max() <= 2 + 1e-5


# --- eq. 7-8: spatial contrastive loss -----------------------------------------------------------------

def test_contrastive_loss_is_lowest_when_the_positives_match():
    classes = torch.arange(4)
    matched = torch.full((4, 4), -1.0).fill_diagonal_(2.0)  # each support most relevant to its own query
    unmatched = matched.roll(1, dims=1)  # most relevant to another episode's query
    uniform = torch.zeros(4, 4)
    losses = [float(spatial_contrastive_loss(r, classes, classes, 0.1)) for r in (matched, uniform, unmatched)]
    assert losses[0] < losses[1] < losses[2]
    assert losses[1] == pytest.approx(torch.log(torch.tensor(4.0)).item())  # no preference: log Q


def test_contrastive_loss_counts_every_query_of_the_class_as_positive():
    relevance = torch.tensor([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0]])
    same_class = spatial_contrastive_loss(relevance, torch.tensor([0, 0]), torch.tensor([0, 0, 1]), 0.5)
    own_only = spatial_contrastive_loss(relevance, torch.tensor([0, 1]), torch.tensor([0, 1, 2]), 0.5)
    assert float(same_class) < float(own_only) + 1e-6
    one_episode = spatial_contrastive_loss(torch.tensor([[0.3]]), torch.tensor([0]), torch.tensor([0]), 0.1)
    assert float(one_episode) == pytest.approx(0.0, abs=1e-6)


# --- eq. 9-12: the decoder -------------------------------------------------------------------------------

def test_channel_attention_is_row_stochastic_and_decoder_gives_two_class_logits():
    attention = channel_attention(torch.randn(2, 6, 30), torch.randn(2, 6, 30))
    assert attention.shape == (2, 6, 6)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 6))
    decoder = MutualGuidanceDecoder(channels=16, embed=8)
    logits = decoder(torch.randn(2, 16, 5, 5), torch.randn(2, 3, 16, 5, 5), (torch.rand(2, 3, 40, 40) > 0.5).float())
    assert logits.shape == (2, 2, 5, 5) and logits.abs().max() <= 20 + 1e-4


# --- eq. 13 and the ablation -------------------------------------------------------------------------

@pytest.mark.parametrize("components, terms", [
    ({}, {"loss", "ce", "kl_support", "kl_query", "scl"}),
    ({"fem": False}, {"loss", "ce", "scl"}),
    ({"scl": False}, {"loss", "ce", "kl_support", "kl_query"}),
    ({"mgd": False}, {"loss", "ce", "kl_support", "kl_query", "scl"}),
    ({"fem": False, "scl": False, "mgd": False}, {"loss", "ce"}),
])
def test_loss_is_eq_13_for_every_component_set_and_every_parameter_learns(components, terms):
    model = slim_apscl(**components)
    episode = square_episode(batch=3, shots=2)
    result = model.loss(episode)
    assert set(result) == terms
    expected = result["ce"] + 0.1 * (result.get("kl_support", 0) + result.get("kl_query", 0)) \
        + 0.07 * result.get("scl", 0)
    torch.testing.assert_close(result["loss"], expected)
    # the FiLM MLPs' last layers start at zero, so the layers before them learn from the second step on
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model.loss(episode)["loss"].backward()
        optimizer.step()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert (model.fem is None) == (not components.get("fem", True))
    assert (model.mgd is None) == (not components.get("mgd", True))


def test_scl_uses_the_episode_classes_when_the_sampler_gives_them():
    model = slim_apscl()
    episode = square_episode(batch=4)
    fields = {name: getattr(episode, name) for name in ("support_images", "support_masks", "query_images",
                                                         "query_masks")}
    torch.manual_seed(1)
    own = model.loss(episode)["scl"]
    torch.manual_seed(1)
    shared = model.loss(Episode(**fields, class_ids=torch.tensor([0, 0, 1, 1])))["scl"]
    assert float(own.detach()) != pytest.approx(float(shared.detach()))


def test_inference_is_deterministic_and_uses_no_label():
    model = slim_apscl().eval()
    episode = square_episode()
    with torch.no_grad():
        torch.testing.assert_close(model(episode), model(episode))


def test_explain_maps_give_attention_rows_summing_to_one():
    model = slim_apscl().eval()
    maps = model.explain_maps(square_episode(size=32), index=1)
    assert maps["grid"] == (4, 4) and maps["support_to_query"].shape == (16, 16)
    torch.testing.assert_close(maps["query_to_support"].sum(-1), torch.ones(16))
    assert maps["logits"].shape == (2, 4, 4)


@pytest.mark.parametrize("options, message", [({"latent": 0}, "latent"), ({"temperature": 0}, "temperature"),
                                              ({"fem": 1}, "fem"), ({"kl_weight": -1}, "kl_weight")])
def test_bad_settings_raise(options, message):
    with pytest.raises(ValueError, match=message):
        APSCLConfig(**options)


def test_explain_figure_draws_the_attention_panels(tmp_path):
    from medfss.evaluation.explain import explain_figure

    model = slim_apscl()
    info = explain_figure(model, square_episode(size=32), tmp_path / "apscl.png", index=1)
    assert info["panels"] == 5 and "W_qs" in info["description"] and model.training
    assert (tmp_path / "apscl.png").stat().st_size > 1000 and [p.name for p in tmp_path.iterdir()] == ["apscl.png"]


def test_explain_needs_the_spatial_interaction_module():
    from medfss.errors import ConfigError

    with pytest.raises(ConfigError, match="scl: false"):
        slim_apscl(scl=False).eval().explain_maps(square_episode(size=32))
