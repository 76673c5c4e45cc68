"""The configuration convention: frozen dataclasses, one validation helper, one error type, checked on load."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfss.config import load_config
from medfss.data.superpixels import SuperpixelConfig
from medfss.data.transforms import AugmentConfig
from medfss.errors import ConfigError, MedfssError
from medfss.models.alpnet import ALPNetConfig

PRESET = Path(__file__).resolve().parents[1] / "configs" / "alpnet_cpu.yaml"


@pytest.mark.parametrize("override, message", [
    ("model.options.alpah=20", r"model 'alpnet': unknown option\(s\) alpah; valid options: .*alpha"),
    ("model.options.alpha=-1", r"model 'alpnet': alpha must be a positive number"),
    ("model.options.backbone=resnet7", r"unknown backbone 'resnet7'"),
    ("model.options.pretrained=[1, 2]", r"pretrained must be a file path or null"),
    ("data.superpixels={min_sise: 800}", r"data.superpixels: unknown field\(s\) min_sise"),
    ("data.superpixels={min_size: 0}", r"data.superpixels: min_size must be a positive integer"),
    ("data.augment={shear_deg: 95}", r"data.augment: shear_deg must be in \[0, 90\)"),
    ("data.validation_fold=0", r"data.validation_fold must be >= 0 and not the test fold 0, got 0"),
    ("data.pseudolabel_scales=[1, 0]", r"data.pseudolabel_scales must be one or more factors > 0"),
    ("data.pseudolabel_scales=[]", r"data.pseudolabel_scales must be one or more factors > 0"),
])
def test_a_misspelt_or_bad_free_form_value_fails_when_the_config_is_loaded(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PRESET, [override])


def test_a_config_of_every_preset_loads():
    from medfss.config import read_yaml
    from medfss.semisup.config import is_semisup_yaml, load_semisup_config

    for preset in sorted(PRESET.parent.glob("*.yaml")):
        (load_semisup_config if is_semisup_yaml(read_yaml(preset)) else load_config)(preset)


def test_settings_errors_are_user_errors_and_value_errors():
    for build in (lambda: ALPNetConfig(alpha=0), lambda: SuperpixelConfig(min_size=0),
                  lambda: AugmentConfig(rotate_deg=-1)):
        with pytest.raises(ConfigError) as caught:
            build()
        assert isinstance(caught.value, MedfssError) and isinstance(caught.value, ValueError)
        assert "\n" not in str(caught.value)
