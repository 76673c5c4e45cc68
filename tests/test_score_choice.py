"""scripts/score_choice.py: each test fold scored by the candidate it chose, with evaluate's aggregation."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO_ROOT


@pytest.fixture
def load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))  # as when the script runs: it imports choose_on_inner
    return _load


def _load():
    spec = importlib.util.spec_from_file_location("score_choice", REPO_ROOT / "scripts" / "score_choice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluation(folder, dice_by_fold: dict[int, float], wall_time_s: float = 100.0, extent: str = "estimated"):
    """A results.json of one class whose two queries of every run on fold f score ``dice_by_fold[f]``."""
    query = lambda case, dice: {"case_id": case, "dice": dice, "jaccard": dice / 2, "hd95": 10.0, "asd": 1.0}
    runs = [{"fold": f, "support_index": s, "support_cases": [f"{f}{s}"],
             "queries": [query("a", d - 5), query("b", d + 5)]} for f, d in dice_by_fold.items() for s in (0, 1)]
    folder.mkdir(parents=True)
    protocol = {"dataset": "CHAOST2", "classes": ["liver"], "folds": list(dice_by_fold), "support_indices": [0, 1],
                "shots": 1, "chunks": 3, "setting": 1, "seed": 0, "extent": extent, "threshold": 0.5}
    (folder / "results.json").write_text(json.dumps({
        "model": "m", "protocol": protocol, "classes": {"liver": {"runs": runs}}, "wall_time_s": wall_time_s}))
    return folder


def choice_file(path, choices: dict[int, str]):
    path.write_text(json.dumps({"folds": {str(f): {"choice": c} for f, c in choices.items()}}))
    return path


def test_each_fold_is_scored_by_its_choice(tmp_path, capsys, load_script):
    a = evaluation(tmp_path / "a", {0: 40.0, 1: 60.0, 2: 80.0}, wall_time_s=300.0)
    b = evaluation(tmp_path / "b", {0: 50.0, 1: 10.0, 2: 70.0}, wall_time_s=600.0)
    choice = choice_file(tmp_path / "choice.json", {0: "two", 1: "one", 2: "one"})
    out = tmp_path / "out"
    assert load_script().main(["score_choice.py", str(choice), str(out), "--label", "chosen",
                               f"one={a}", f"two={b}"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["label"] == "chosen" and result["folds_from"] == {"0": str(b), "1": str(a), "2": str(a)}
    assert [(r["fold"], r["dice"]) for r in result["classes"]["liver"]["runs"]] == [
        (0, 50.0), (0, 50.0), (1, 60.0), (1, 60.0), (2, 80.0), (2, 80.0)]
    assert result["mean_dice"] == pytest.approx((50 + 60 + 80) / 3)
    assert result["wall_time_s"] == pytest.approx(600 / 3 + 300 / 3 * 2)  # each fold's share of its candidate
    assert "wrote" in capsys.readouterr().out


def test_candidates_of_different_protocols_are_refused(tmp_path, capsys, load_script):
    a = evaluation(tmp_path / "a", {0: 40.0, 1: 60.0})
    b = evaluation(tmp_path / "b", {0: 50.0, 1: 10.0}, extent="gt")
    choice = choice_file(tmp_path / "choice.json", {0: "two", 1: "one"})
    assert load_script().main(["score_choice.py", str(choice), str(tmp_path / "out"), "--label", "x",
                               f"one={a}", f"two={b}"]) == 2
    assert "different protocols" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_chosen_candidate_without_a_folder_is_refused(tmp_path, capsys, load_script):
    a = evaluation(tmp_path / "a", {0: 40.0, 1: 60.0})
    choice = choice_file(tmp_path / "choice.json", {0: "two", 1: "one"})
    assert load_script().main(["score_choice.py", str(choice), str(tmp_path / "out"), "--label", "x",
                               f"one={a}"]) == 2
    assert "give NAME=FOLDER for each" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_choice_of_other_folds_than_the_results_is_refused(tmp_path, capsys, load_script):
    a = evaluation(tmp_path / "a", {0: 40.0, 1: 60.0})
    choice = choice_file(tmp_path / "choice.json", {0: "one", 1: "one", 2: "one"})
    assert load_script().main(["score_choice.py", str(choice), str(tmp_path / "out"), "--label", "x",
                               f"one={a}"]) == 2
    assert "the choice covers folds [0, 1, 2], the results folds [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
