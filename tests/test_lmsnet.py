"""LMS-Net and fLMS-Net: each unfolded step against its equation, the contract, the registry, the explain figure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.autograd import gradcheck

from medfss.errors import ConfigError
from medfss.evaluation.explain import explain_figure
from medfss.models.lms.data_consistency import data_consistency, primal_energy
from medfss.models.lms.denoiser import MaskDenoiser
from medfss.models.lms.initialisation import representative_prototypes, voronoi_partition
from medfss.models.lms.mut import MomentumUpdateTransformer, masked_prototype_attention, mut_mask
from medfss.models.lms.pdnet import PDNet, dual_update, primal_dual_step
from medfss.models.lmsnet import FLMSNet, FLMSNetConfig, LMSNet, LMSNetConfig
from medfss.models.registry import build_model
from medfss.nn.prototypes import masked_average_pooling
from test_models import SLIM, slim, square_episode


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyEncoder(nn.Sequential):
    """A 2-layer stride-8 stand-in for the ResNet: ``[N, 1, H, W] -> [N, C, H/8, W/8]``."""

    def __init__(self, channels: int = 8):
        super().__init__(nn.Conv2d(1, channels, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.AvgPool2d(4))
        self.out_channels = channels


def tiny(model_class=LMSNet, seed: int = 0, **settings):
    torch.manual_seed(seed)
    config_class = LMSNetConfig if model_class is LMSNet else FLMSNetConfig
    return model_class(TinyEncoder(), config_class(denoiser_width=8, **settings))


# --- DC (eq. 10, 12) ------------------------------------------------------------------------------------


def test_dc_is_the_closed_form_softmax_and_the_exact_minimiser_of_eq_10():
    generator = torch.Generator().manual_seed(0)
    distance = torch.rand(2, 2, 3, 4, generator=generator, dtype=torch.float64) * 2 - 1  # rho in [-1, 1]
    v = torch.randn(2, 2, 3, 4, generator=generator, dtype=torch.float64)
    alpha = 3.0
    u, logits = data_consistency(distance, v, alpha)
    torch.testing.assert_close(u, torch.softmax(alpha * (-distance - v), dim=1))
    torch.testing.assert_close(logits.softmax(dim=1), u)
    best = primal_energy(u, distance, v, alpha)  # [B]
    # any other point of the simplex, pixel by pixel, has higher energy: far ones and near ones
    others = torch.distributions.Dirichlet(torch.ones(2, dtype=torch.float64)).sample((500, 2, 3, 4))
    others = others.permute(0, 1, 4, 2, 3)  # [500, B, 2, H, W]
    nudged = (u + 1e-3 * torch.randn(500, *u.shape, generator=generator, dtype=torch.float64)).clamp(1e-9)
    for candidates in (others, nudged / nudged.sum(dim=2, keepdim=True)):
        energies = torch.stack([primal_energy(c, distance, v, alpha) for c in candidates])  # [500, B]
        assert (energies > best).all()


# --- PD-Net (eq. 13, 20-21) -------------------------------------------------------------------------------


@pytest.mark.parametrize("carry", [False, True])
def test_identity_denoiser_gives_zero_dual_and_pdnet_reduces_to_dc(carry):
    distance = torch.rand(2, 2, 5, 5, dtype=torch.float64) * 2 - 1
    v_prev = torch.randn_like(distance) if carry else torch.zeros_like(distance)
    pdnet = PDNet(nn.Identity(), delta=0.7).double()
    u, v, logits = pdnet(distance, v_prev, torch.tensor(5.0, dtype=torch.float64))
    torch.testing.assert_close(v, torch.zeros_like(v), atol=1e-12, rtol=0)
    dc_u, dc_logits = data_consistency(distance, torch.zeros_like(distance), 5.0)
    torch.testing.assert_close(u, dc_u)
    torch.testing.assert_close(logits, dc_logits)


class Halve(nn.Module):
    """A stand-in denoiser: MD(x) = x / 2."""

    def forward(self, x):
        return 0.5 * x


def test_dual_update_is_the_skip_connection_of_eq_13():
    u = torch.rand(1, 2, 4, 4).softmax(dim=1)
    v_prev = torch.randn(1, 2, 4, 4)
    expected = 2.0 * u + v_prev - 2.0 * 0.5 * (u + v_prev / 2.0)
    torch.testing.assert_close(dual_update(u, v_prev, 2.0, Halve()), expected)


@pytest.mark.parametrize("variant", ["a", "b", "c"])
def test_denoiser_variants(variant):
    torch.manual_seed(0)
    denoiser = MaskDenoiser(variant, width=4)
    u = torch.rand(3, 1, 6, 6)
    out = denoiser(u)
    assert out.shape == u.shape
    if variant != "a":
        assert ((out > 0) & (out < 1)).all()
    last = denoiser.body[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    expected = {"a": u, "b": torch.sigmoid(u), "c": u}[variant]  # with CNN = 0 only (c) is the identity on masks
    torch.testing.assert_close(denoiser(u), expected, atol=1e-6, rtol=1e-5)


# --- MUT (eq. 17-19) --------------------------------------------------------------------------------------


def test_mut_mask_keeps_exactly_the_prototypes_above_epsilon():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0, 50.0],
                           [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    valid = torch.tensor([[True, True, True, True, True, False],
                          [True, True, False, False, False, False]])
    kept = mut_mask(scores, valid)
    # row 0: valid scores 1, 2, 3, 4, 10 -> eps = (1 + 4) / 2 = 2.5; the invalid 50 is never kept
    # row 1: all valid scores equal, none exceeds eps -> every valid prototype is kept
    assert kept.tolist() == [[False, False, True, True, True, False], [True, True, False, False, False, False]]
    # the same through the module, with p = scores * e_1 and l_1 = e_1
    p = torch.zeros(2, 6, 8)
    p[..., 0] = scores
    l1 = torch.zeros(2, 8)
    l1[:, 0] = 1
    _, _, module_kept = MomentumUpdateTransformer(8, heads=2)(p, l1, valid)
    assert torch.equal(module_kept, kept)


def test_masked_attention_updates_only_the_kept_prototypes():
    p, l1 = torch.randn(2, 5, 4), torch.randn(2, 4)
    kept = torch.tensor([[True, False, True, False, False], [False, False, False, False, True]])
    out = masked_prototype_attention(p, l1, kept)
    torch.testing.assert_close(out[~kept], p[~kept])
    weights = (out - p)[kept] / l1.repeat_interleave(kept.sum(1), dim=0)  # each kept row moved by w_n l_1
    assert torch.allclose(weights, weights[:, :1].expand_as(weights), atol=1e-5)
    torch.testing.assert_close(out[1, 4], p[1, 4] + l1[1])  # a lone kept prototype takes all of l_1


def test_mut_returns_opposite_prototypes_from_the_valid_ones():
    torch.manual_seed(0)
    mut = MomentumUpdateTransformer(8, heads=2)
    p, l1 = torch.randn(1, 4, 8), torch.randn(1, 8)
    valid = torch.tensor([[True, True, True, False]])
    out, l, _ = mut(p, l1, valid)
    torch.testing.assert_close(l[:, 1], out[:, :3].mean(dim=1))
    torch.testing.assert_close(l[:, 0], -l[:, 1])
    p_changed = p.clone()
    p_changed[0, 3] = 100.0  # an invalid prototype changes nothing
    torch.testing.assert_close(mut(p_changed, l1, valid)[1], l)


# --- gradcheck of the hand-written steps ------------------------------------------------------------------


def _double(*shape, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).requires_grad_()


def test_gradcheck_data_consistency():
    distance, v, alpha = _double(1, 2, 3, 3, scale=0.5), _double(1, 2, 3, 3, seed=1, scale=0.3), _double(1, seed=2)
    assert gradcheck(lambda d, w, a: data_consistency(d, w, a.abs() + 1), (distance, v, alpha))


def test_gradcheck_primal_dual_step():
    torch.manual_seed(0)
    denoiser = MaskDenoiser("c", width=3).double().eval()
    distance, v_prev = _double(1, 2, 4, 4, scale=0.5), _double(1, 2, 4, 4, seed=1, scale=0.1)
    alpha, delta = _double(1, seed=2), _double(1, seed=3)

    def step(d, w, a, e):
        return primal_dual_step(d, w, a.abs() + 1, e.abs() + 0.5, denoiser)

    assert gradcheck(step, (distance, v_prev, alpha, delta))


def test_gradcheck_mut_masked_attention_and_module():
    p, l1 = _double(2, 5, 4), _double(2, 4, seed=1)
    kept = mut_mask(torch.einsum("bkc,bc->bk", p, l1).detach(), torch.ones(2, 5, dtype=torch.bool))
    assert gradcheck(lambda a, b: masked_prototype_attention(a, b, kept), (p, l1))
    torch.manual_seed(0)
    mut = MomentumUpdateTransformer(4, heads=2).double()
    valid = torch.tensor([[True, True, True, True, False], [True] * 5])
    assert gradcheck(lambda a, b: mut(a, b, valid)[:2], (p, l1))


# --- Voronoi representative prototypes ---------------------------------------------------------------------


def _blob_masks():
    yy, xx = torch.meshgrid(torch.arange(24), torch.arange(24), indexing="ij")
    disc = (((yy - 10) ** 2 + (xx - 13) ** 2) <= 49).float()
    ring = disc * (((yy - 10) ** 2 + (xx - 13) ** 2) >= 9).float()  # non-convex
    few = torch.zeros(24, 24)
    few[3, 3:6] = 1  # 3 pixels, fewer than the regions
    return torch.stack([disc, ring, few, torch.zeros(24, 24)])  # [4, 24, 24]


def test_voronoi_regions_partition_the_foreground_exactly_and_deterministically():
    masks, regions = _blob_masks(), 7
    labels = voronoi_partition(masks, regions)
    assert labels.shape == masks.shape and labels.dtype == torch.long
    assert torch.equal(labels >= 0, masks > 0.5)  # every foreground pixel in exactly one region, nothing else
    for item in (0, 1):  # enough pixels: all regions used
        assert set(labels[item][labels[item] >= 0].tolist()) == set(range(regions))
    assert set(labels[2][labels[2] >= 0].tolist()) == {0, 1, 2}  # 3 pixels -> 3 one-pixel regions
    assert torch.equal(voronoi_partition(masks.clone(), regions), labels)
    assert torch.equal(voronoi_partition(masks.flip(0), regions).flip(0), labels)  # independent of the batch


def test_representative_prototypes_are_the_map_of_each_region():
    masks = _blob_masks()  # as 4 episodes of 1 shot
    features = torch.randn(4, 1, 5, 6, 6)
    prototypes, valid = representative_prototypes(features, masks.unsqueeze(1), regions=7)
    assert prototypes.shape == (4, 7, 5) and valid.shape == (4, 7)
    labels = voronoi_partition(masks, 7)
    for region in range(7):
        expected = masked_average_pooling(features[0, 0:1], (labels[0:1] == region).float())
        torch.testing.assert_close(prototypes[0, region], expected[0])
    assert valid[0].all() and valid[2].tolist() == [True] * 3 + [False] * 4
    assert valid[3].all() and (prototypes[3] == 0).all()  # empty support: all zero, all usable


# --- the models ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, shots", [("lmsnet", 1), ("lmsnet", 3), ("flmsnet", 1), ("flmsnet", 3)])
def test_forward_gives_logits_at_episode_size_in_both_modes(name, shots):
    model = slim(name)
    episode = square_episode(batch=2, shots=shots, size=32)
    logits = model(episode)
    assert logits.shape == (2, 2, 32, 32) and torch.isfinite(logits).all()
    with torch.no_grad():
        assert model.eval()(episode).shape == (2, 2, 32, 32)


def test_logits_are_those_of_the_final_mask():
    model = tiny(num_blocks=2).eval()
    episode = square_episode(size=32)
    with torch.no_grad():
        stages = model.stages(episode)
        assert len(stages) == 3
        torch.testing.assert_close(stages[-1]["logits"].softmax(dim=1), stages[-1]["u"])
        expected = F.interpolate(stages[-1]["logits"], size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(episode), expected)
        assert (stages[0]["v"] == 0).all()


ABLATIONS = [  # (model, settings)
    (LMSNet, {}), (LMSNet, {"num_blocks": 1}), (LMSNet, {"num_blocks": 3}), (LMSNet, {"pdnet": False}),
    (LMSNet, {"denoiser": "a"}), (LMSNet, {"denoiser": "b"}), (LMSNet, {"carry_dual": True}),
    (LMSNet, {"num_prototypes": 1}), (LMSNet, {"support_residual": False}), (FLMSNet, {}),
    (FLMSNet, {"num_blocks": 3}), (FLMSNet, {"pdnet": False}),
    (FLMSNet, {"denoiser": "a"}),
]


@pytest.mark.parametrize("model_class, settings", ABLATIONS)
def test_every_ablation_builds_runs_and_trains_every_parameter(model_class, settings):
    model = tiny(model_class, **settings)
    episode = square_episode(batch=2, shots=2, size=32)
    stages = model.stages(episode)
    assert len(stages) == model.config.num_blocks + 1
    if not model.config.pdnet:
        assert all((stage["v"] == 0).all() for stage in stages)
    terms = model.loss(episode)
    assert set(terms) == {"loss", "ce", "align"} and all(torch.isfinite(t) for t in terms.values())
    terms["loss"].backward()
    no_gradient = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_gradient


@pytest.mark.parametrize("name", ["lmsnet", "flmsnet"])
def test_gradients_reach_every_parameter_with_the_resnet_encoder(name):
    model = slim(name)
    model.loss(square_episode(size=32))["loss"].backward()
    no_gradient = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_gradient
    names = {n for n, _ in model.named_parameters()}
    assert {"alpha.raw", "blocks.0.mask_step.delta.raw", "blocks.1.mask_step.delta.raw"} <= names


def test_flmsnet_never_changes_the_prototypes():
    model = tiny(FLMSNet, num_blocks=3)
    episode = square_episode(shots=2, size=32)
    stages = model.stages(episode)
    support = model.encoder(episode.support_images.flatten(0, 1)).unflatten(0, (2, 2))  # [B, S, C, h, w]
    l1 = torch.stack([masked_average_pooling(support[:, s], episode.support_masks[:, s]) for s in range(2)]).mean(0)
    for stage in stages:
        torch.testing.assert_close(stage["prototypes"], torch.stack([-l1, l1], dim=1))
    assert not any("kept" in stage for stage in stages)
    assert all(torch.equal(stages[k]["prototypes"], stages[0]["prototypes"]) for k in range(4))


def test_lmsnet_updates_the_prototypes_with_mut():
    model = tiny(num_blocks=2)
    stages = model.stages(square_episode(size=32))
    assert not torch.allclose(stages[1]["prototypes"], stages[0]["prototypes"])
    assert stages[1]["kept"].shape == (2, 10) and stages[1]["kept"].any(dim=1).all()
    torch.testing.assert_close(stages[2]["prototypes"][:, 0], -stages[2]["prototypes"][:, 1])


def _gap(stage):  # GAP over the valid representatives of a stage: [B, C]
    weights = stage["valid"].to(stage["representatives"].dtype).unsqueeze(2)  # [B, K, 1]
    return (stage["representatives"] * weights).sum(dim=1) / weights.sum(dim=1)


@pytest.mark.parametrize("shots", [1, 2])
def test_lms_block_prototype_is_the_support_prototype_plus_gap_of_mut(shots):
    model = tiny(num_blocks=3)
    stages = model.stages(square_episode(shots=shots, size=32))
    support = stages[0]["prototypes"][:, 1]  # l_1^s [B, C]
    for stage in stages[1:]:  # l^k = [-(l_1^s + GAP(p^k)), l_1^s + GAP(p^k)]
        torch.testing.assert_close(stage["prototypes"][:, 1], support + _gap(stage))
        torch.testing.assert_close(stage["prototypes"][:, 0], -stage["prototypes"][:, 1])
    literal = tiny(num_blocks=2, support_residual=False)  # eq. 18 as printed: l^k = GAP(p^k)
    for stage in literal.stages(square_episode(shots=shots, size=32))[1:]:
        torch.testing.assert_close(stage["prototypes"][:, 1], _gap(stage))


def _collapse(model, value: float = 0.5):
    """Make every MUT emit one fixed vector: the last LayerNorm's gain 0, its bias constant."""
    with torch.no_grad():
        for block in model.blocks:
            norm = block.prototype_step.transformer.norm_mlp
            norm.weight.zero_()
            norm.bias.fill_(value)
    return model.eval()


def test_a_collapsed_mut_cannot_make_the_prediction_ignore_the_support():
    # the failure of eq. 18 read literally: a MUT that outputs a constant makes l^K, and so the
    # segmentation, the same whatever the support; the anchor l_1^s keeps both tied to the support
    episode = square_episode(batch=2, size=32, seed=1)
    other = dataclasses.replace(episode, support_images=episode.support_images.flip(0),
                                support_masks=episode.support_masks.flip(0))  # the other episode's support
    with torch.no_grad():
        literal = _collapse(tiny(num_blocks=2, support_residual=False))
        torch.testing.assert_close(literal(episode), literal(other))
        final = literal.stages(episode)[-1]["prototypes"]  # [B, 2, C]
        torch.testing.assert_close(final[0], final[1])  # both episodes get the same prototype
        model = _collapse(tiny(num_blocks=2))
        stages = model.stages(episode)
        support = stages[0]["prototypes"][:, 1]
        torch.testing.assert_close(stages[-1]["prototypes"][:, 1], support + 0.5)
        assert not torch.allclose(model(episode), model(other), atol=1e-3)


@pytest.mark.parametrize("kind", ["empty_support", "empty_query"])
def test_empty_masks_give_finite_logits_and_loss(kind):
    model = tiny()
    episode = square_episode(size=32, **{kind: True})
    assert torch.isfinite(model(episode)).all()
    assert all(torch.isfinite(value) for value in model.loss(episode).values())


# --- registry and configs -------------------------------------------------------------------------------------


def test_registry_builds_both_models_with_their_settings():
    model = build_model("lmsnet", **SLIM, num_blocks=3, num_prototypes=5, heads=8, pdnet=False, alpha=10.0,
                        align_weight=0.0, bg_weight=1.0)
    assert isinstance(model, LMSNet) and model.config == LMSNetConfig(num_blocks=3, num_prototypes=5, heads=8,
                                                                      pdnet=False, alpha=10.0, align_weight=0.0,
                                                                      bg_weight=1.0)
    assert len(model.blocks) == 3 and float(model.alpha().detach()) == pytest.approx(10.0)
    model = build_model("flmsnet", **SLIM, denoiser="b", delta=0.5)
    assert isinstance(model, FLMSNet) and model.blocks[0].mask_step.denoiser.variant == "b"
    assert float(model.blocks[1].mask_step.delta().detach()) == pytest.approx(0.5)


@pytest.mark.parametrize("name, options, message", [
    ("lmsnet", {"K": 2}, r"^model 'lmsnet': unknown option\(s\) K; valid options: backbone, pretrained, "
                         r"align_weight, bg_weight, fg_weight, num_blocks, "),
    ("flmsnet", {"num_prototypes": 4}, r"^model 'flmsnet': unknown option\(s\) num_prototypes; valid options: "),
    ("lmsnet", {"denoiser": "d"}, r"^model 'lmsnet': denoiser must be one of a, b, c"),
    ("lmsnet", {"heads": 3}, r"^model 'lmsnet': heads \(3\) must divide the 128 feature channels"),
    ("lmsnet", {"num_blocks": 0}, "num_blocks must be a positive integer"),
    ("flmsnet", {"denoiser_width": 2.5}, "denoiser_width must be a positive integer, got 2.5"),
    ("flmsnet", {"pdnet": "yes"}, "pdnet must be true or false"),
    ("lmsnet", {"support_residual": 1}, "support_residual must be true or false"),
    ("lmsnet", {"alpha": 0}, "alpha must be a positive number"),
    ("flmsnet", {"delta": -1.0}, "delta must be a positive number"),
    ("lmsnet", {"align_weight": -1}, "align_weight must be >= 0"),
])
def test_registry_errors_are_one_clear_line(name, options, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_model(name, **{**SLIM, **options})
    assert "\n" not in str(error.value)


# --- explain figure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class, blocks", [(FLMSNet, 3), (LMSNet, 1)])
def test_explain_figure_draws_three_panels_per_stage(tmp_path, model_class, blocks):
    model = tiny(model_class, num_blocks=blocks)
    out = tmp_path / "figs" / "explain.png"
    info = explain_figure(model, square_episode(size=32), out, index=1)
    assert model.training  # the mode is restored
    assert info["stages"] == blocks + 1 and info["panels"] == 3 * (blocks + 1)
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (info["height_px"], info["width_px"])
    assert info["height_px"] / info["width_px"] == pytest.approx((blocks + 1) / 3, rel=0.02)
    assert [p.name for p in out.parent.iterdir()] == ["explain.png"]


def test_explain_figure_never_leaves_a_partial_file(tmp_path, monkeypatch):
    def broken_savefig(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        explain_figure(tiny(), square_episode(size=32), tmp_path / "explain.png")
    assert list(tmp_path.iterdir()) == []


def test_explain_figure_needs_an_unfolded_model(tmp_path):
    with pytest.raises(ConfigError, match="has no unfolded stages"):
        explain_figure(slim("alpnet"), square_episode(size=32), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
