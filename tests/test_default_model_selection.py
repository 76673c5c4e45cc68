"""The default model's recipe is chosen on the folds it trains on, never on the held-out fold."""

import json
from pathlib import Path

import pytest
import yaml

from medfss.errors import ConfigError
from medfss.evaluation.report import restricted_mean_dice
from medfss.weights import MODEL_CARD
from medfss.weights.selection import main, read_candidates, select

ROOT = Path(__file__).parents[1]


def _result(fold_dice: dict[int, tuple[float, float]]) -> dict:
    """A results.json with two classes and one support choice per fold: {fold: (liver Dice, spleen Dice)}."""
    classes = {name: {"runs": [{"fold": f, "support_index": 0, "dice": d[i]} for f, d in fold_dice.items()]}
               for i, name in enumerate(("liver", "spleen"))}
    return {"dataset": "CHAOST2", "label": "x", "protocol": {"folds": sorted(fold_dice)}, "classes": classes}


def test_restricted_mean_dice_averages_classes_per_run_then_runs():
    result = _result({0: (90.0, 70.0), 1: (60.0, 40.0), 2: (50.0, 30.0)})
    assert restricted_mean_dice(result, [1, 2]) == pytest.approx((50.0 + 40.0) / 2)
    assert restricted_mean_dice(result, [0]) == pytest.approx(80.0)
    assert restricted_mean_dice(result, [7]) is None


def _candidates(tmp_path, results: dict[str, dict]) -> Path:
    entries = []
    for name, result in results.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
        entries.append({"name": name, "results": str(tmp_path / f"{name}.json"), "config": "configs/alpnet_cpu.yaml",
                        "overrides": [f"optim.lr={len(entries) + 1}e-2"]})
    path = tmp_path / "candidates.yaml"
    path.write_text(yaml.safe_dump({"dataset": "CHAOST2", "held_out_fold": 0, "candidates": entries}))
    return path


def test_the_held_out_fold_does_not_enter_the_choice(tmp_path):
    path = _candidates(tmp_path, {
        "best-on-fold-0": _result({0: (99.0, 99.0), 1: (50.0, 50.0), 2: (50.0, 50.0)}),
        "best-elsewhere": _result({0: (10.0, 10.0), 1: (60.0, 60.0), 2: (55.0, 55.0)}),
    })
    selection = select(read_candidates(path))
    chosen = selection["chosen"]
    assert chosen["name"] == "best-elsewhere" and chosen["selection_mean_dice"] == pytest.approx(57.5)
    assert chosen["model"] == "alpnet"
    assert chosen["run_dir"] == "runs/best-elsewhere/CHAOST2-setting1/fold0"
    args = chosen["train_arguments"]
    assert args[:2] == ["--config", "configs/alpnet_cpu.yaml"] and "optim.lr=2e-2" in args and "data.fold=0" in args
    assert [r["held_out_mean_dice_not_used"] for r in selection["candidates"]] == [99.0, 10.0]


def test_ties_go_to_the_earlier_candidate(tmp_path):
    same = _result({0: (1.0, 1.0), 1: (50.0, 50.0)})
    path = _candidates(tmp_path, {"first": same, "second": same})
    assert select(read_candidates(path))["chosen"]["name"] == "first"


def test_bad_candidate_lists_are_one_line_errors(tmp_path, capsys):
    path = _candidates(tmp_path, {"one-fold": _result({1: (50.0, 50.0)})})
    with pytest.raises(ConfigError, match="with fold 0 and others"):
        select(read_candidates(path))
    (tmp_path / "broken.yaml").write_text("dataset: CHAOST2\ncandidates: []\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2 and "not a candidate list" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_the_selection_file_records_its_command(tmp_path, capsys):
    path = _candidates(tmp_path, {"a": _result({0: (1.0, 1.0), 1: (50.0, 50.0)})})
    assert main([str(path), "--out", str(tmp_path / "selection.json")]) == 0
    record = json.loads((tmp_path / "selection.json").read_text())
    assert record["provenance"]["command"].startswith("python -m medfss.weights.selection ")
    assert "Recipe `a` chosen among 1 candidate recipes" in capsys.readouterr().out


def test_the_bundled_model_is_the_recipe_its_card_says_was_chosen_on_folds_1_to_4(monkeypatch):
    monkeypatch.chdir(ROOT)
    selection = select(read_candidates(ROOT / "configs/default_model/candidates.yaml"))
    assert {0} & set(selection["candidates"][0]["selection_folds"]) == set()
    card = MODEL_CARD.read_text()
    assert f"Recipe `{selection['chosen']['name']}` chosen among {len(selection['candidates'])}" in card
    assert " ".join(selection["chosen"]["train_arguments"][:4]) in card.replace("'", "")
