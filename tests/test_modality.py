"""How a scan's modality is decided (medfss.modality), label names (medfss.label_names), volume plausibility."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfss.errors import ConfigError
from medfss.label_names import label_names, parse_names, read_label_map
from medfss.modality import ModalityDecision, decide_modality, model_modality, modality_warning
from medfss.plausibility import volume_warning

CT = np.array([-1024.0, 40.0, 300.0], np.float32)
PREPARED_CT = np.array([0.0, 100.0, 255.0], np.float32)  # medfss prepare's [0, 255] window


def test_modality_rules_in_order(tmp_path):
    scan = tmp_path / "image_7.nii.gz"
    assert decide_modality(CT, "MR", scan) == ModalityDecision("MR", "given (--modality)")
    ct = decide_modality(CT, "auto", scan)
    assert ct.modality == "CT" and "Hounsfield units: minimum -1024 < -500" in ct.rule
    mr = decide_modality(PREPARED_CT, "auto", scan)  # a pre-normalised CT without its card cannot be told
    assert mr.modality == "MR" and "pass --modality CT" in mr.rule
    (tmp_path / "dataset_card.json").write_text(json.dumps({"volumes": [{"id": "7", "modality": "CT"}]}))
    card = decide_modality(PREPARED_CT, "auto", scan)
    assert card.modality == "CT" and card.rule == f"recorded by medfss prepare in {tmp_path / 'dataset_card.json'}"
    assert decide_modality(PREPARED_CT, "auto", tmp_path / "image_8.nii.gz").modality == "MR"  # not listed


def test_model_modality_and_the_mismatch_warning():
    assert model_modality("CHAOST2") == "MR" and model_modality("SABS") == "CT"
    assert model_modality("/nowhere/Dataset1") == "unknown" and model_modality(None) == "unknown"
    ct = ModalityDecision("CT", "Hounsfield units")
    assert modality_warning(ct, "MR", "the query q.nii.gz") == (
        "the query q.nii.gz is CT (Hounsfield units) but the model was trained on MR: expect poor results; "
        "use a model trained on CT (medfss train, see the README)")
    assert modality_warning(ct, "CT", "q") is None and modality_warning(ct, "unknown", "q") is None


def test_label_names_from_the_user_a_label_map_a_registered_folder_or_the_value(tmp_path):
    mask = tmp_path / "labelsTr" / "case.nii.gz"
    mask.parent.mkdir()
    assert label_names([1, 6]) == {1: "label 1", 6: "label 6"}
    assert label_names([1, 6], parse_names("spleen, liver")) == {1: "spleen", 6: "liver"}
    with pytest.raises(ConfigError, match="give one name per label: 2 labels"):
        label_names([1, 6], ["spleen"])
    with pytest.raises(ConfigError, match="comma-separated names"):
        parse_names("liver,,spleen")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "spleen": 1, "liver": 6}}))
    assert label_names([1, 6, 9], mask_path=mask) == {1: "spleen", 6: "liver", 9: "label 9"}  # nnU-Net v2
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "6": "liver"}}))
    assert read_label_map(tmp_path / "dataset.json") == {0: "background", 6: "liver"}  # nnU-Net v1
    card = tmp_path / "labelsTr" / "dataset_card.json"  # medfss prepare's, nearest first
    card.write_text(json.dumps({"label_map": {"0": "background", "6": "Liver"}}))
    assert label_names([6], mask_path=mask) == {6: "Liver"}
    registered = tmp_path / "data" / "CHAOST2" / "label_1.nii.gz"
    registered.parent.mkdir(parents=True)
    assert label_names([1, 4], mask_path=registered) == {1: "liver", 4: "spleen"}


@pytest.mark.parametrize("predicted, supports, flagged", [
    (100.0, [100.0], False), (299.0, [100.0], False), (34.0, [100.0], False),
    (301.0, [100.0], True), (33.0, [100.0], True), (0.0, [100.0], True), (250.0, [50.0, 150.0], False),
    (5.0, [0.0], False)])
def test_volume_warning_outside_a_third_to_three_times_the_support(predicted, supports, flagged):
    warning = volume_warning("label 1 (spleen)", predicted, supports)
    assert (warning is not None) == flagged
    if flagged:
        assert warning.startswith(f"label 1 (spleen): the predicted {predicted:.1f} mL is")
