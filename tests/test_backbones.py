"""Dilated ResNet encoders: presets, output stride, and loading torchvision / DeepLabv3 weights."""

from __future__ import annotations

import functools

import pytest
import torch

from medfss.errors import ConfigError, InputFileError
from medfss.nn.backbones import BACKBONES, build_backbone, load_backbone_weights, map_checkpoint_keys

# --- presets and shapes --------------------------------------------------------------------------

# preset -> (output channels, channels out of layer4)
PRESETS = {
    "resnet18-slim": (128, 128),
    "resnet18": (256, 512),
    "resnet34": (256, 512),
    "resnet50": (256, 2048),
    "resnet101": (256, 2048),
}


def test_every_preset_is_tested():
    assert set(PRESETS) == set(BACKBONES)


@functools.cache
def preset(name: str):
    """Each preset built once per session (in eval mode); tests must not change its weights."""
    return build_backbone(name).eval()


@pytest.mark.parametrize("name", PRESETS)
def test_presets_have_output_stride_8(name):
    out_channels, layer4_channels = PRESETS[name]
    backbone = preset(name)
    with torch.no_grad():
        features = backbone(torch.randn(2, 1, 36, 36))
    assert backbone.output_stride == 8
    assert features.shape == (2, out_channels, 5, 5)  # ceil(36 / 8)
    assert backbone.project.in_channels == layer4_channels
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("size, grid", [(32, 4), (64, 8), (65, 9), (128, 16)])
def test_feature_grid_is_input_over_8_rounded_up(size, grid):
    with torch.no_grad():
        assert preset("resnet18-slim")(torch.randn(1, 1, size, size)).shape == (1, 128, grid, grid)


def test_dilated_stages_follow_torchvision():
    """Stride 2 only in layer2; layer3/layer4 dilated 2/4, their first block keeping the previous dilation."""
    backbone = preset("resnet101")
    assert backbone.layer2[0].conv2.stride == (2, 2)
    assert backbone.layer3[0].conv2.stride == backbone.layer4[0].conv2.stride == (1, 1)
    assert [backbone.layer3[i].conv2.dilation for i in (0, 1, 22)] == [(1, 1), (2, 2), (2, 2)]
    assert [backbone.layer4[i].conv2.dilation for i in (0, 1, 2)] == [(2, 2), (4, 4), (4, 4)]
    assert backbone.layer4[2].conv2.padding == (4, 4)


def test_slim_preset_has_about_1_3_million_parameters():
    count = sum(p.numel() for p in build_backbone("resnet18-slim").parameters())
    assert 1.2e6 < count < 1.4e6, count


def test_unknown_backbone_or_bad_override_raise_config_error():
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet7'; valid backbones: resnet18, .*resnet18-slim"):
        build_backbone("resnet7")
    with pytest.raises(ConfigError, match="depths must be four positive integers"):
        build_backbone("resnet18", depths=(2, 2, 2))
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build_backbone("resnet18", colour=True)


# --- torchvision key layout, written down independently of our module ------------------------------


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def torchvision_resnet_layout(depths=(3, 4, 23, 3)) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``torchvision.models.resnet101().state_dict()`` (bottleneck ResNets), fc included."""
    layout = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    in_channels = 64
    for stage, (depth, width) in enumerate(zip(depths, (64, 128, 256, 512)), start=1):
        out = 4 * width
        for index in range(depth):
            prefix = f"layer{stage}.{index}"
            layout[f"{prefix}.conv1.weight"] = (width, in_channels if index == 0 else out, 1, 1)
            layout[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
            layout[f"{prefix}.conv3.weight"] = (out, width, 1, 1)
            layout.update({**_bn(f"{prefix}.bn1", width), **_bn(f"{prefix}.bn2", width), **_bn(f"{prefix}.bn3", out)})
            if index == 0:
                layout[f"{prefix}.downsample.0.weight"] = (out, in_channels, 1, 1)
                layout.update(_bn(f"{prefix}.downsample.1", out))
        in_channels = out
    layout.update({"fc.weight": (1000, 2048), "fc.bias": (1000,)})
    return layout


def deeplabv3_layout() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of torchvision's ``deeplabv3_resnet101(aux_loss=True)`` COCO checkpoint (heads abridged)."""
    layout = {f"backbone.{key}": shape for key, shape in torchvision_resnet_layout().items()
              if not key.startswith("fc.")}
    layout.update({
        "classifier.0.convs.0.0.weight": (256, 2048, 1, 1), **_bn("classifier.0.convs.0.1", 256),
        "classifier.0.convs.1.0.weight": (256, 2048, 3, 3),
        "classifier.0.convs.4.1.weight": (256, 2048, 1, 1),
        "classifier.0.project.0.weight": (256, 1280, 1, 1),
        "classifier.1.weight": (256, 256, 3, 3), **_bn("classifier.2", 256),
        "classifier.4.weight": (21, 256, 1, 1), "classifier.4.bias": (21,),
        "aux_classifier.0.weight": (256, 1024, 3, 3), **_bn("aux_classifier.1", 256),
        "aux_classifier.4.weight": (21, 256, 1, 1), "aux_classifier.4.bias": (21,),
    })
    return layout


def random_state_dict(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: (torch.randint(0, 100, shape, generator=generator) if key.endswith("num_batches_tracked")
                  else torch.rand(shape, generator=generator) + 0.5)  # positive: running_var stays valid
            for key, shape in layout.items()}


def test_hand_written_torchvision_layout_is_right():
    layout = deeplabv3_layout()
    assert layout["backbone.layer3.22.conv3.weight"] == (1024, 256, 1, 1)
    assert layout["backbone.layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert layout["backbone.layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert layout["backbone.conv1.weight"] == (64, 3, 7, 7)
    assert "backbone.layer4.22.conv2.weight" not in layout  # layer4 has 3 blocks
    assert "backbone.layer3.23.conv1.weight" not in layout  # layer3 has 23 blocks
    assert "backbone.layer1.1.downsample.0.weight" not in layout


def test_deeplabv3_checkpoint_maps_onto_resnet101(tmp_path):
    checkpoint = random_state_dict(deeplabv3_layout())
    path = tmp_path / "deeplabv3_resnet101_coco.pth"
    torch.save(checkpoint, path)
    backbone = build_backbone("resnet101")
    project_before = backbone.project.weight.clone()
    load_backbone_weights(backbone, path)
    ours = backbone.state_dict()
    loaded = 0
    for key, value in checkpoint.items():
        if not key.startswith("backbone."):
            continue
        name = key.removeprefix("backbone.")
        expected = value.sum(dim=1, keepdim=True) if name == "conv1.weight" else value  # grey = summed RGB
        torch.testing.assert_close(ours[name], expected, rtol=0, atol=0)
        loaded += 1
    assert loaded == len(ours) - 1  # everything but the projection
    assert ours["layer3.22.conv3.weight"].shape == (1024, 256, 1, 1)
    torch.testing.assert_close(backbone.project.weight, project_before)  # not in the checkpoint: untouched


def test_mapping_drops_heads_and_prefixes():
    mapped = map_checkpoint_keys(random_state_dict(deeplabv3_layout()))
    assert "layer3.22.conv3.weight" in mapped and "conv1.weight" in mapped
    assert not any(key.startswith(("backbone.", "classifier.", "aux_classifier.")) for key in mapped)
    plain = map_checkpoint_keys(random_state_dict(torchvision_resnet_layout(depths=(3, 4, 6, 3))))
    assert "layer1.0.downsample.1.running_var" in plain and "fc.weight" not in plain


def test_plain_resnet50_state_dict_loads(tmp_path):
    checkpoint = random_state_dict(torchvision_resnet_layout(depths=(3, 4, 6, 3)), seed=1)
    torch.save(checkpoint, tmp_path / "resnet50.pth")
    backbone = load_backbone_weights(build_backbone("resnet50"), tmp_path / "resnet50.pth")
    torch.testing.assert_close(backbone.layer4[2].bn3.running_var, checkpoint["layer4.2.bn3.running_var"])
    torch.testing.assert_close(backbone.conv1.weight, checkpoint["conv1.weight"].sum(1, keepdim=True))


def test_summed_conv1_equals_replicated_grey_input(tmp_path):
    """conv(x, sum_c W_c) == conv(repeat(x, 3), W): the 1-channel encoder computes the RGB one on grey slices."""
    torch.manual_seed(0)
    rgb = build_backbone("resnet18-slim", in_channels=3).eval()
    torch.save({**rgb.state_dict(), "fc.weight": torch.zeros(10, 128)}, tmp_path / "rgb.pth")
    grey = load_backbone_weights(build_backbone("resnet18-slim"), tmp_path / "rgb.pth").eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


def test_unfitting_weights_name_the_culprits(tmp_path):
    resnet50 = random_state_dict(torchvision_resnet_layout(depths=(3, 4, 6, 3)))
    torch.save(resnet50, tmp_path / "resnet50.pth")
    # layer3 blocks 6-22: 17 blocks x (3 convs + 3 BN x 4 tensors)
    with pytest.raises(InputFileError, match=r"weights do not fit.*: missing 255 keys: layer3\.10\.bn1\.bias, "):
        load_backbone_weights(build_backbone("resnet101"), tmp_path / "resnet50.pth")
    with pytest.raises(InputFileError, match=r"basic backbone .*: unexpected \d+ keys: .*; shape-mismatched \d+ keys: "
                                             r"layer1\.0\.conv1\.weight \(64, 64, 1, 1\) vs \(64, 64, 3, 3\)"):
        load_backbone_weights(build_backbone("resnet18"), tmp_path / "resnet50.pth")
    slim = build_backbone("resnet18-slim").state_dict()
    torch.save({**slim, "layer9.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(InputFileError, match=r"unexpected 1 keys: layer9\.weight"):
        load_backbone_weights(build_backbone("resnet18-slim"), tmp_path / "extra.pth")
    torch.save(build_backbone("resnet18").state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(InputFileError, match=r"shape-mismatched \d+ keys: bn1\.bias \(64,\) vs \(32,\)"):
        load_backbone_weights(build_backbone("resnet18-slim"), tmp_path / "resnet18.pth")


def test_missing_or_unreadable_weights_raise_input_file_error(tmp_path):
    backbone = build_backbone("resnet18-slim")
    with pytest.raises(InputFileError, match="pretrained weights not found"):
        load_backbone_weights(backbone, tmp_path / "nowhere.pth")
    (tmp_path / "garbage.pth").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(InputFileError, match="not a readable weights file"):
        load_backbone_weights(backbone, tmp_path / "garbage.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(InputFileError, match="expected a state dict of tensors"):
        load_backbone_weights(backbone, tmp_path / "list.pth")
