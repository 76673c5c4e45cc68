"""Reading the real data sets and the registry: shapes, spacing, labels, folds."""

from __future__ import annotations

import numpy as np
import pytest

from medfss.data.datasets import REGISTRY, Dataset, get_dataset_spec, map_labels
from medfss.errors import ConfigError, LabelMapError

from conftest import write_nnunet_phantoms

CHAOST2_IDS = ["1", "2", "3", "5", "8", "10", "13", "15", "19", "20", "21", "22",
               "31", "32", "33", "34", "36", "37", "38", "39"]


@pytest.mark.realdata
def test_every_chaost2_volume_reads_as_documented(data_root):
    dataset = Dataset.from_name("CHAOST2", data_root)
    assert dataset.case_ids == CHAOST2_IDS
    for case_id in dataset.case_ids:
        volume = dataset.load(case_id)
        h, w, d = volume.image.shape
        assert (h, w) == (256, 256) and 31 <= d <= 46, case_id
        assert volume.label.shape == volume.image.shape
        assert volume.spacing[:2] == pytest.approx((1.25, 1.25))
        assert volume.spacing[2] == pytest.approx(7.7, abs=0.01)
        assert set(np.unique(volume.label)) == {0, 1, 2, 3, 4}, case_id
        assert volume.image.dtype == np.float32
        assert abs(volume.image.mean()) < 1e-3 and volume.image.std() == pytest.approx(1, abs=1e-3)


@pytest.mark.realdata
def test_every_cmr_volume_reads_as_documented(data_root):
    dataset = Dataset.from_name("CMR", data_root)
    assert dataset.case_ids == [str(i) for i in range(1, 36)]
    for case_id in dataset.case_ids:
        volume = dataset.load(case_id)
        h, w, d = volume.image.shape
        assert (h, w) == (256, 256) and 10 <= d <= 20, case_id
        assert volume.spacing[:2] == pytest.approx((1.25, 1.25))
        assert 7 <= volume.spacing[2] <= 9
        # raw codes 200/500/600 map to LV-MYO/LV-BP/RV = 1/2/3
        assert set(np.unique(volume.label)) == {0, 1, 2, 3}, case_id


@pytest.mark.realdata
def test_folds_are_consecutive_groups_covering_every_volume(data_root):
    dataset = Dataset.from_name("CHAOST2", data_root)
    folds = [dataset.fold_case_ids(f) for f in range(5)]
    assert folds[0] == ["1", "2", "3", "5"] and folds[4] == ["36", "37", "38", "39"]
    assert sum(folds, []) == dataset.case_ids
    assert set(dataset.train_case_ids(2)) == set(dataset.case_ids) - set(folds[2])
    assert set(dataset.train_case_ids(2, validation_fold=3)) == set(dataset.case_ids) - set(folds[2] + folds[3])
    with pytest.raises(ConfigError, match="fold"):
        dataset.fold_case_ids(5)


def test_cmr_raw_codes_map_to_class_indices(tmp_path):
    raw = np.array([[0, 200], [500, 600]], dtype=np.float64)
    assert map_labels(raw, REGISTRY["CMR"], tmp_path / "x").tolist() == [[0, 1], [2, 3]]


def test_unknown_label_value_names_the_file(tmp_path):
    with pytest.raises(LabelMapError, match=r"label_7\.nii\.gz.*\[300\]"):
        map_labels(np.array([0, 200, 300.0]), REGISTRY["CMR"], tmp_path / "label_7.nii.gz")


def test_sabs_is_registered_with_the_synapse_label_map():
    spec = get_dataset_spec("SABS")
    assert spec.modality == "CT"
    assert spec.classes[1] == "spleen" and spec.classes[6] == "liver" and spec.classes[13] == "left_adrenal"
    assert set(spec.eval_classes) == {"liver", "spleen", "left_kidney", "right_kidney"}
    assert spec.group_of("liver") == ("liver", "spleen")


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ConfigError, match="CHAOST2"):
        get_dataset_spec("NOPE")


def test_nnunet_raw_layout_is_read_without_conversion(tmp_path):
    root = write_nnunet_phantoms(tmp_path / "Dataset042_Phantom", n_cases=3)
    dataset = Dataset.from_name(str(root))
    assert dataset.spec.modality == "CT"
    assert dataset.spec.classes == {1: "organ", 2: "tumour"}
    assert dataset.case_ids == ["case_000", "case_001", "case_002"]
    volume = dataset.load("case_001")
    assert volume.image.shape == (32, 32, 8)
    assert set(np.unique(volume.label)) == {0, 1, 2}
