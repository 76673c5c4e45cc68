"""The evaluation protocol on synthetic volumes with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfss.data.datasets import DatasetSpec, Volume
from medfss.errors import ConfigError
from medfss.evaluation.protocol import ProtocolConfig, evaluate, support_case_ids

SPEC = DatasetSpec(name="TOY", folder="TOY", modality="MR", classes={1: "organ"}, eval_classes=("organ",))
SIZE, DEPTH = 32, 14
BOX = (slice(8, 18), slice(8, 18))  # a 10 x 10 organ


def toy_volume(case_id: str, extent: tuple[int, int]) -> Volume:
    """A box organ on slices extent[0]..extent[1]; pixel (0, 0) of slice z holds z (an index tag).

    Elsewhere the image equals the label, so ``image > 0.5`` is the ground truth.
    """
    label = np.zeros((SIZE, SIZE, DEPTH), dtype=np.int64)
    label[BOX[0], BOX[1], extent[0]:extent[1] + 1] = 1
    image = label.astype(np.float32)
    image[0, 0, :] = np.arange(DEPTH)
    return Volume(case_id, image, label, (1.0, 1.0, 5.0), np.eye(4), Path(f"img_{case_id}"),
                  Path(f"lab_{case_id}"))


class ToyDataset:
    """The part of :class:`~medfss.data.datasets.Dataset` the protocol uses, in memory."""

    spec = SPEC

    def __init__(self, folds: dict[int, dict[str, tuple[int, int]]]):
        self.folds = folds

    def fold_case_ids(self, fold: int) -> list[str]:
        return list(self.folds[fold])

    def load(self, case_id: str) -> Volume:
        extent = next(f[case_id] for f in self.folds.values() if case_id in f)
        return toy_volume(case_id, extent)


def body(images: torch.Tensor) -> torch.Tensor:
    """The ground truth hidden in a toy image (the index tag at (0, 0) removed)."""
    mask = (images > 0.5).float()
    mask[:, 0, 0] = 0
    return mask


class Oracle:
    def predict(self, support_images, support_masks, query_images):
        return body(query_images)


class Shifted:
    """The truth moved ``shift`` pixels along the width axis."""

    def __init__(self, shift: int):
        self.shift = shift

    def predict(self, support_images, support_masks, query_images):
        return torch.roll(body(query_images), self.shift, dims=-1)


class Recorder:
    """Predicts nothing; records which support slice served which query slice."""

    def __init__(self):
        self.pairs: dict[int, int] = {}

    def predict(self, support_images, support_masks, query_images):
        support_z = int(support_images[0, 0, 0])
        for z in query_images[:, 0, 0].tolist():
            self.pairs[int(z)] = support_z
        return torch.zeros_like(query_images)


TWO_FOLDS = {0: {"a": (3, 11), "b": (2, 7), "c": (4, 12)},
             1: {"d": (1, 9), "e": (5, 10), "f": (0, 13)}}


def run(predictor_for, folds=(0,), **kwargs):
    config = ProtocolConfig(dataset="TOY", folds=folds, **kwargs)
    return evaluate(ToyDataset(TWO_FOLDS), predictor_for, config, progress=False, model_name="toy")


def test_each_query_slice_gets_the_support_slice_of_its_chunk():
    # support "a" holds the organ on 3..11 -> support slices 4, 7, 10; one query volume at a time
    rec = Recorder()
    config = ProtocolConfig(dataset="TOY", folds=(0,))
    evaluate(ToyDataset({0: {"a": (3, 11), "b": (2, 7)}}), lambda f, name: rec, config, progress=False)
    assert rec.pairs == {2: 4, 3: 4, 4: 7, 5: 7, 6: 10, 7: 10}
    rec = Recorder()
    evaluate(ToyDataset({0: {"a": (3, 11), "c": (4, 12)}}), lambda f, name: rec, config, progress=False)
    assert rec.pairs == {4: 4, 5: 4, 6: 4, 7: 7, 8: 7, 9: 7, 10: 10, 11: 10, 12: 10}


def test_oracle_scores_dice_100_and_zero_distances():
    result = run(lambda fold, name: Oracle(), folds=(0, 1))
    assert result.mean_dice == pytest.approx(100.0)
    summary = result.class_summary("organ")
    assert summary["hd95"]["mean"] == pytest.approx(0.0) and summary["asd"]["mean"] == pytest.approx(0.0)
    assert [len(r.queries) for r in result.runs] == [2, 2]


def test_shifted_prediction_scores_the_hand_computed_dice():
    # a 10-pixel-wide box moved 2 pixels keeps 8 of 10 columns on every slice: Dice = 2*8/(10+10)
    result = run(lambda fold, name: Shifted(2))
    assert result.mean_dice == pytest.approx(80.0)
    # Jaccard = 8 / 12 columns
    assert result.class_summary("organ")["jaccard"]["mean"] == pytest.approx(100 * 8 / 12)


def test_mean_and_std_are_over_runs():
    result = run(lambda fold, name: Shifted({0: 2, 1: 1}[fold]), folds=(0, 1))  # Dice 80 and 90
    dice = result.class_summary("organ")["dice"]
    assert dice["mean"] == pytest.approx(85.0) and dice["std"] == pytest.approx(5.0)
    assert result.mean_summary()["dice"]["std"] == pytest.approx(5.0)


def test_support_choice_and_k_shot():
    assert support_case_ids(["a", "b", "c"], 2, 2) == ("c", "a")  # wraps
    result = run(lambda fold, name: Oracle(), support_indices=(0, 1, 2))
    assert [r.support_cases for r in result.runs] == [("a",), ("b",), ("c",)]
    assert all(q.case_id not in r.support_cases for r in result.runs for q in r.queries)
    result = run(lambda fold, name: Oracle(), shots=2)
    assert result.runs[0].support_cases == ("a", "b") and [q.case_id for q in result.runs[0].queries] == ["c"]
    with pytest.raises(ConfigError, match="needs at least 4 test volumes"):
        run(lambda fold, name: Oracle(), shots=3)
    with pytest.raises(ConfigError, match="outside this fold"):
        run(lambda fold, name: Oracle(), support_indices=(3,))


def test_results_json_holds_the_interface_keys():
    data = run(lambda fold, name: Shifted(2), folds=(0, 1)).to_json()
    assert {"model", "dataset", "setting", "shots", "mean_dice", "protocol", "classes", "mean",
            "wall_time_s"} <= set(data)
    assert data["protocol"]["folds"] == [0, 1] and data["protocol"]["classes"] == ["organ"]
    assert set(data["classes"]["organ"]) >= {"dice", "jaccard", "hd95", "asd", "runs"}
    assert data["mean_dice"] == pytest.approx(80.0)


def test_empty_prediction_gives_null_distances_not_nan():
    class Nothing:
        def predict(self, support_images, support_masks, query_images):
            return torch.zeros_like(query_images)

    result = run(lambda fold, name: Nothing())
    assert result.mean_dice == 0.0
    data = result.to_json()
    assert data["classes"]["organ"]["hd95"]["mean"] is None
    assert data["classes"]["organ"]["hd95"]["n_undefined"] == 2
    assert "no surface distance" in result.format_table()


@pytest.mark.parametrize("kwargs, match", [
    ({"folds": ()}, "folds is empty"),
    ({"shots": 0}, "shots must be at least 1"),
    ({"setting": 3}, "setting must be 1 or 2"),
    ({"folds": (0, 0)}, "must not repeat"),
])
def test_bad_protocol_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProtocolConfig(dataset="TOY", **kwargs)


def test_unknown_class_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown class 'kidney'"):
        run(lambda fold, name: Oracle(), classes=("kidney",))
