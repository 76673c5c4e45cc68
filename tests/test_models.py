"""The shared FewShotSegmenter base, ALPNet and PANet on it, their losses, and the model registry."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from medfss.checkpoints import load_model, model_state_dict, read_checkpoint
from medfss.config import ModelConfig, load_config
from medfss.data.episodes import Episode
from medfss.errors import ConfigError, InputFileError
from medfss.models.alpnet import ALPNet, ALPNetConfig
from medfss.models.base import FewShotSegmenter, LossWeights
from medfss.models.panet import PANet, PANetConfig
from medfss.models.registry import MODELS, build_model, build_model_from_config, model_options
from medfss.nn.backbones import build_backbone
from medfss.nn.losses import prototype_alignment_loss, weighted_cross_entropy
from medfss.nn.prototypes import cosine_similarity_map, masked_average_pooling
from medfss.weights import DEFAULT_MODEL

REPO_ROOT = Path(__file__).resolve().parents[1]
SLIM = {"backbone": "resnet18-slim"}


def square_episode(batch: int = 2, shots: int = 1, size: int = 32, seed: int = 0, empty_support: bool = False,
                   empty_query: bool = False) -> Episode:
    """Bright squares of random place and side on noise; the square is the foreground."""
    generator = torch.Generator().manual_seed(seed)

    def view(empty: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.zeros(size, size)
        if not empty:
            side = int(torch.randint(size // 4, size // 2, (1,), generator=generator))
            y, x = torch.randint(0, size - side, (2,), generator=generator).tolist()
            mask[y:y + side, x:x + side] = 1
        return torch.randn(size, size, generator=generator) * 0.3 + 2 * mask, mask

    supports = [[view(empty_support) for _ in range(shots)] for _ in range(batch)]
    queries = [view(empty_query) for _ in range(batch)]
    return Episode(
        support_images=torch.stack([torch.stack([image for image, _ in row]) for row in supports]).unsqueeze(2),
        support_masks=torch.stack([torch.stack([mask for _, mask in row]) for row in supports]),
        query_images=torch.stack([image for image, _ in queries]).unsqueeze(1),
        query_masks=torch.stack([mask for _, mask in queries]).long())


def slim(name: str, seed: int = 0, **options) -> FewShotSegmenter:
    torch.manual_seed(seed)
    return build_model(name, **SLIM, **options)


# --- the contract: shapes, finiteness, gradients ---------------------------------------------------

CASES = [  # (model, shots, size)
    ("alpnet", 1, 32), ("alpnet", 3, 32), ("alpnet", 1, 64), ("alpnet", 2, 44),
    ("panet", 1, 32), ("panet", 3, 32), ("panet", 1, 44),
]


@pytest.mark.parametrize("name, shots, size", CASES)
def test_forward_gives_logits_at_episode_size_in_both_modes(name, shots, size):
    model = slim(name)
    episode = square_episode(batch=2, shots=shots, size=size)
    logits = model(episode)
    assert logits.shape == (2, 2, size, size) and torch.isfinite(logits).all()
    with torch.no_grad():
        assert model.eval()(episode).shape == (2, 2, size, size)


@pytest.mark.parametrize("name, shots", [("alpnet", 1), ("alpnet", 3), ("panet", 2)])
def test_loss_is_finite_and_every_parameter_gets_a_gradient(name, shots):
    model = slim(name)
    terms = model.loss(square_episode(shots=shots))
    assert set(terms) == {"loss", "ce", "align"}
    assert all(torch.isfinite(value) for value in terms.values())
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["align"])  # align_weight 1
    terms["loss"].backward()
    no_gradient = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_gradient


@pytest.mark.parametrize("kind", ["empty_support", "empty_query"])
def test_empty_masks_give_finite_logits_and_loss(kind):
    model = slim("alpnet")
    episode = square_episode(**{kind: True})
    assert torch.isfinite(model(episode)).all()
    assert all(torch.isfinite(value) for value in model.loss(episode).values())


@pytest.mark.parametrize("name", list(MODELS))
def test_sgd_steps_reduce_the_loss(name):
    model = slim(name)
    episode = square_episode(batch=2, size=32, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = model.loss(episode)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.7 * losses[0], losses


# --- the shared base: encoding, upsampling, the loss and its extension hook ----------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_upsamples_the_classify_logits_of_one_encoder_pass(name):
    model = slim(name).eval()
    episode = square_episode(shots=2, size=40)
    calls = []
    model.encoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    with torch.no_grad():
        logits = model(episode)
        assert calls == [(2 * 2 + 2, 1, 40, 40)]  # support and query in one pass
        support, query = model.encode(episode)
        assert support.shape == (2, 2, 128, 5, 5) and query.shape == (2, 128, 5, 5)
        small = model.classify(query, support, episode.support_masks)  # [B, 2, h, w]
    assert small.shape == (2, 2, 5, 5)
    torch.testing.assert_close(logits, F.interpolate(small, size=(40, 40), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("name, weights", [("alpnet", {}), ("panet", {"align_weight": 0.5, "bg_weight": 1.0}),
                                           ("lmsnet", {"fg_weight": 2.0}), ("flmsnet", {"align_weight": 0.0})])
def test_every_model_trains_on_the_shared_weighted_ce_plus_alignment_loss(name, weights):
    model = slim(name, **weights)
    w = LossWeights(**weights)
    episode = square_episode(shots=2)
    terms = model.loss(episode)
    support, query = model.encode(episode)
    logits = model.classify(query, support, episode.support_masks)  # [B, 2, h, w]
    ce = weighted_cross_entropy(F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False),
                                episode.query_masks, w.bg_weight, w.fg_weight)
    torch.testing.assert_close(terms["ce"], ce)
    if w.align_weight == 0:
        assert set(terms) == {"loss", "ce"} and torch.equal(terms["loss"], terms["ce"])
        return
    align = prototype_alignment_loss(model.classify, query, logits, support, episode.support_masks)
    assert set(terms) == {"loss", "ce", "align"}
    torch.testing.assert_close(terms["align"], align)
    torch.testing.assert_close(terms["loss"], ce + w.align_weight * align)


class PANetWithPenalty(PANet):
    """A model with one extra loss term: the mean squared foreground logit, weight 0.5."""

    def extra_loss_terms(self, episode, support_features, query_features, logits):
        return {"penalty": (0.5, logits[:, 1].pow(2).mean())}


def test_extra_loss_terms_are_weighted_into_the_total_and_reported():
    episode = square_episode()
    torch.manual_seed(0)
    model = PANetWithPenalty(build_backbone("resnet18-slim"))
    terms = model.loss(episode)
    support, query = model.encode(episode)
    penalty = model.classify(query, support, episode.support_masks)[:, 1].pow(2).mean()
    assert list(terms) == ["loss", "ce", "align", "penalty"]
    torch.testing.assert_close(terms["penalty"], penalty)
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["align"] + 0.5 * penalty)
    model.extra_loss_terms = lambda *args: {"align": (1.0, penalty)}
    with pytest.raises(ValueError, match="extra loss term 'align' clashes"):
        model.loss(episode)


@pytest.mark.parametrize("name", list(MODELS))
def test_bad_episodes_raise_value_error(name):
    model = slim(name)
    episode = square_episode()
    nan_query = dataclasses.replace(episode, query_images=episode.query_images.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(nan_query)
    with pytest.raises(ValueError, match="needs an episode with query_masks"):
        model.loss(dataclasses.replace(episode, query_masks=None))


# --- what the models compute -------------------------------------------------------------------------


def test_alpnet_pools_local_prototypes_with_the_window_of_its_mode():
    episode = square_episode(size=64)
    torch.manual_seed(0)
    encoder = build_backbone("resnet18-slim")
    alpnet = ALPNet(copy.deepcopy(encoder), ALPNetConfig(pool_window_train=None, pool_window_eval=2))
    panet = PANet(encoder)  # class-level prototypes only
    with torch.no_grad():
        assert torch.equal(alpnet.train()(episode), panet.train()(episode))  # no window in training
        assert not torch.allclose(alpnet.eval()(episode), panet.eval()(episode))  # 2 x 2 windows at inference


def test_panet_computes_alpnet_without_local_prototypes_bit_for_bit():
    # the PANet runs in results/ were ALPNet with pool windows None: the PANet class must reproduce them exactly
    episode = square_episode(shots=2, seed=4)
    torch.manual_seed(1)
    encoder = build_backbone("resnet18-slim")
    panet = PANet(copy.deepcopy(encoder), PANetConfig(align_weight=0.5))
    alpnet = ALPNet(encoder, ALPNetConfig(pool_window_train=None, pool_window_eval=None, align_weight=0.5))
    for mode in (True, False):
        panet.train(mode)
        alpnet.train(mode)
        assert torch.equal(panet(episode), alpnet(episode))
        ours, theirs = panet.loss(episode), alpnet.loss(episode)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    ours["loss"].backward()
    theirs["loss"].backward()
    alpnet_gradients = dict(alpnet.named_parameters())
    for name, parameter in panet.named_parameters():
        assert torch.equal(parameter.grad, alpnet_gradients[name].grad), name


def test_panet_logits_are_scaled_cosine_to_the_masked_average_prototypes():
    model = slim("panet").eval()
    episode = square_episode(batch=2, shots=1)
    with torch.no_grad():
        support, query = model.encode(episode)
        logits = model.classify(query, support, episode.support_masks)  # [B, 2, h, w]
        fg = episode.support_masks[:, 0]
        prototypes = torch.stack([masked_average_pooling(support[:, 0], mask) for mask in (1 - fg, fg)], dim=1)
        torch.testing.assert_close(logits, cosine_similarity_map(query, prototypes, scale=20.0))


# --- losses ---------------------------------------------------------------------------------------------


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[0, 1]]])
    nll_bg = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    nll_fg = -torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1]
    expected = (0.05 * nll_bg + 1.0 * nll_fg) / (0.05 + 1.0)
    torch.testing.assert_close(weighted_cross_entropy(logits, target), expected)


def test_alignment_loss_segments_the_support_with_the_query_prediction():
    b, s, c, h, w, size = 2, 3, 4, 4, 4, 8
    query_features, support_features = torch.randn(b, c, h, w), torch.randn(b, s, c, h, w)
    query_logits = torch.randn(b, 2, h, w)
    support_masks = (torch.rand(b, s, size, size) > 0.5).float()
    calls = []

    def classify(features, sup_features, sup_masks):
        calls.append((features, sup_features, sup_masks))
        return torch.stack([features.mean(1), features.sum(1)], dim=1)  # any [N, 2, h, w]

    loss = prototype_alignment_loss(classify, query_features, query_logits, support_features, support_masks)
    (features, sup_features, sup_masks), = calls
    assert features.shape == (b * s, c, h, w) and torch.equal(features[s + 1], support_features[1, 1])
    assert sup_features.shape == (b * s, 1, c, h, w) and torch.equal(sup_features[s + 1, 0], query_features[1])
    assert torch.equal(sup_masks[s + 1, 0], query_logits[1].argmax(0).float())
    logits = F.interpolate(torch.stack([features.mean(1), features.sum(1)], 1), size=(size, size),
                           mode="bilinear", align_corners=False)
    torch.testing.assert_close(loss, F.cross_entropy(logits, support_masks.flatten(0, 1).long()))


# --- registry ------------------------------------------------------------------------------------------


def test_registry_options_reach_what_the_model_computes():
    assert set(MODELS) == {"alpnet", "panet", "lmsnet", "flmsnet", "apscl", "adnet"}
    episode = square_episode()
    torch.manual_seed(0)
    alpnet = build_model("alpnet", **SLIM, pool_window_eval=1, threshold=0.9, alpha=10.0, align_weight=0.0,
                         bg_weight=0.1, fg_weight=2.0)
    torch.manual_seed(0)
    by_hand = ALPNet(build_backbone("resnet18-slim"), ALPNetConfig(pool_window_eval=1, threshold=0.9, alpha=10.0,
                                                                   align_weight=0.0, bg_weight=0.1, fg_weight=2.0))
    assert isinstance(alpnet, ALPNet) and alpnet.eval().pool_window == 1
    with torch.no_grad():
        assert torch.equal(alpnet(episode), by_hand.eval()(episode))
        terms = alpnet.loss(episode)
        assert set(terms) == {"loss", "ce"}
        torch.testing.assert_close(terms["ce"], weighted_cross_entropy(alpnet(episode), episode.query_masks, 0.1, 2.0))
    panet = build_model("panet", **SLIM, bg_weight=1.0)
    assert isinstance(panet, PANet) and panet.loss_weights.bg_weight == 1.0
    assert "pool_window_train" not in model_options("panet") and "pretrained" in model_options("panet")


@pytest.mark.parametrize("name, options, message", [
    ("unet", {}, r"^unknown model 'unet'; valid models: alpnet, panet, lmsnet, flmsnet, apscl, adnet$"),
    ("alpnet", {"window": 4}, r"^model 'alpnet': unknown option\(s\) window; valid options: backbone, pretrained, "
                              r"align_weight, bg_weight, fg_weight, pool_window_train, "),
    ("panet", {"pool_window_train": 4}, r"unknown option\(s\) pool_window_train; valid options: backbone, "),
    ("alpnet", {"threshold": 1.5}, r"threshold must be in \(0, 1\]"),
    ("alpnet", {"threshold": "high"}, r"threshold must be in \(0, 1\]"),
    ("alpnet", {"pool_window_eval": 0}, "pool_window_eval must be a positive integer or None"),
    ("alpnet", {"pool_window_train": True}, "pool_window_train must be a positive integer or None"),
    ("alpnet", {"align_weight": -1}, r"align_weight must be >= 0 \(0 turns the alignment loss off\)"),
    ("panet", {"alpha": 0}, "alpha must be a positive number"),
    ("panet", {"alpha": True}, "alpha must be a positive number, got True"),
    ("panet", {"bg_weight": "0.05"}, "bg_weight must be a positive number, got '0.05'"),
    ("alpnet", {"backbone": "vgg16"}, "unknown backbone 'vgg16'; valid backbones: "),
])
def test_registry_errors_are_one_clear_line(name, options, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_model(name, **{**SLIM, **options})
    assert "\n" not in str(error.value)


def test_registry_loads_pretrained_backbone_weights(tmp_path):
    torch.manual_seed(5)
    weights = build_backbone("resnet18-slim").state_dict()
    torch.save(weights, tmp_path / "slim.pth")
    model = build_model("alpnet", **SLIM, pretrained=str(tmp_path / "slim.pth"))
    for key, value in weights.items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)
    with pytest.raises(InputFileError, match="pretrained weights not found"):
        build_model("alpnet", **SLIM, pretrained=str(tmp_path / "missing.pth"))


def test_the_bundled_alpnet_checkpoint_loads_strictly_with_its_parameter_names():
    state = model_state_dict(read_checkpoint(DEFAULT_MODEL))  # the file saved before the models shared a base
    model, config = load_model(DEFAULT_MODEL)  # the registry's ALPNet, load_state_dict(strict=True)
    assert type(model) is ALPNet and config.model.name == "alpnet"
    assert list(model.state_dict()) == list(state) and all(key.startswith("encoder.") for key in state)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("config_name", ["alpnet_cpu", "panet_cpu"])
def test_cpu_configs_build_through_the_training_factory(config_name):
    config = load_config(REPO_ROOT / "configs" / f"{config_name}.yaml")
    model = build_model_from_config(config.model)
    assert type(model) is {"alpnet": ALPNet, "panet": PANet}[config.model.name]
    assert model(square_episode(size=config.data.image_size // 4)).shape[1] == 2


# Presets compared under one budget share every setting with the ALPNet preset of their size, but for
# the model and the listed exceptions (each with its reason in the preset's comment).
SAME_BUDGET_EXCEPTIONS = {"lmsnet_cpu": {"optim.grad_clip"}, "flmsnet_cpu": {"optim.grad_clip"},
                          # what the model trains on: manual labels of base classes, 3D supervoxels
                          "apscl_paper": {"data.supervision"}, "adnet_cpu": {"data.supervision"},
                          "adnet_paper": {"data.supervision"}}


def _flat_settings(config_name: str) -> dict[str, object]:
    tree = yaml.safe_load((REPO_ROOT / "configs" / f"{config_name}.yaml").read_text())
    return {f"{section}.{key}": value for section, values in tree.items() if section != "model"
            for key, value in values.items()}


@pytest.mark.parametrize("config_name", ["panet_cpu", "lmsnet_cpu", "flmsnet_cpu", "apscl_cpu", "adnet_cpu",
                                         "panet_paper", "lmsnet_paper", "apscl_paper", "adnet_paper"])
def test_presets_share_the_alpnet_budget_but_for_the_model(config_name):
    model_name, size = config_name.split("_")
    ours, alpnet = _flat_settings(config_name), _flat_settings(f"alpnet_{size}")
    exceptions = SAME_BUDGET_EXCEPTIONS.get(config_name, set())
    assert {k: v for k, v in ours.items() if k not in exceptions} == {
        k: v for k, v in alpnet.items() if k not in exceptions}
    assert all(ours.get(key) != alpnet.get(key) for key in exceptions)  # an exception is a real difference
    config = load_config(REPO_ROOT / "configs" / f"{config_name}.yaml")
    assert config.model.name == model_name
    assert config.model.options == load_config(REPO_ROOT / "configs" / f"alpnet_{size}.yaml").model.options
    if size == "cpu":
        model = build_model_from_config(config.model)
        assert model(square_episode(size=32)).shape == (2, 2, 32, 32)


@pytest.mark.parametrize("config_name", ["alpnet_paper", "panet_paper"])
def test_paper_configs_use_the_resnet101_encoder(config_name):
    model_config = load_config(REPO_ROOT / "configs" / f"{config_name}.yaml").model
    assert model_config.options == {"backbone": "resnet101"}
    model = build_model_from_config(ModelConfig(name=model_config.name, options=model_config.options))
    assert model.encoder.config.depths == (3, 4, 23, 3) and model.encoder.out_channels == 256
