"""scripts/choose_on_inner.py: each test fold's choice is the candidate best on its validation fold."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO_ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("choose_on_inner", REPO_ROOT / "scripts" / "choose_on_inner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inner_results(folder, dice_by_fold: dict[int, float]):
    """A results.json whose runs on fold f all score ``dice_by_fold[f]`` (two supports, one class)."""
    runs = [{"fold": f, "support_index": s, "dice": d} for f, d in dice_by_fold.items() for s in (0, 1)]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "protocol": {"dataset": "CHAOST2", "folds": list(dice_by_fold)}, "classes": {"liver": {"runs": runs}}}))
    return folder


def test_each_test_fold_takes_the_best_candidate_on_the_next_fold(tmp_path, capsys):
    a = inner_results(tmp_path / "a", {1: 50.0, 2: 60.0, 0: 40.0})
    b = inner_results(tmp_path / "b", {1: 55.0, 2: 60.0, 0: 30.0})
    out = tmp_path / "choice.json"
    assert load_script().main(["choose_on_inner.py", str(out), f"one={a}", f"two={b}"]) == 0
    folds = json.loads(out.read_text())["folds"]
    # CHAOST2's 5 folds: test fold 0 is validated on 1, 1 on 2 (a tie: the first named), 4 on 0
    assert {test: (f["validation_folds"], f["choice"]) for test, f in folds.items()} == {
        "0": ([1], "two"), "1": ([2], "one"), "4": ([0], "one")}
    assert folds["0"]["inner_mean_dice"] == {"one": 50.0, "two": 55.0}
    assert "test fold 0: validation folds 1: one 50.00, two 55.00 -> two" in capsys.readouterr().out


def test_with_other_folds_each_test_fold_takes_the_best_candidate_over_the_folds_but_itself(tmp_path, capsys):
    a = inner_results(tmp_path / "a", {0: 90.0, 1: 50.0, 2: 60.0})
    b = inner_results(tmp_path / "b", {0: 10.0, 1: 56.0, 2: 58.0})
    out = tmp_path / "choice.json"
    assert load_script().main(["choose_on_inner.py", "--other-folds", str(out), f"one={a}", f"two={b}"]) == 0
    folds = json.loads(out.read_text())["folds"]
    # fold 0 is chosen on folds 1-2 (57 against 55), where "two" wins although "one" is far better on fold 0
    assert {test: (f["validation_folds"], f["choice"]) for test, f in folds.items()} == {
        "0": ([1, 2], "two"), "1": ([0, 2], "one"), "2": ([0, 1], "one")}
    assert folds["0"]["inner_mean_dice"] == {"one": 55.0, "two": 57.0}
    assert "test fold 0: validation folds 1,2: one 55.00, two 57.00 -> two" in capsys.readouterr().out


def test_per_group_each_group_takes_the_best_candidate_on_its_own_classes(tmp_path, capsys):
    def results(folder, liver: float, kidney: float):
        runs = lambda dice: [{"fold": 1, "support_index": s, "dice": dice} for s in (0, 1)]
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({
            "protocol": {"dataset": "CHAOST2", "folds": [1]},
            "classes": {"liver": {"runs": runs(liver)}, "left_kidney": {"runs": runs(kidney)}}}))
        return folder

    a = results(tmp_path / "a", liver=30.0, kidney=70.0)  # mean 50
    b = results(tmp_path / "b", liver=50.0, kidney=60.0)  # mean 55
    out = tmp_path / "choice.json"
    assert load_script().main(["choose_on_inner.py", "--per-group", str(out), f"one={a}", f"two={b}"]) == 0
    fold = json.loads(out.read_text())["folds"]["0"]
    assert fold["choice"] == "two"  # over all classes, as without --per-group
    # the upper group (liver, spleen) is scored on the liver alone here, the lower on the left kidney
    assert {group: g["choice"] for group, g in fold["groups"].items()} == {"upper": "two", "lower": "one"}
    assert fold["groups"]["lower"]["inner_mean_dice"] == {"one": 70.0, "two": 60.0}
    assert "lower: validation folds 1 (left_kidney, right_kidney): one 70.00, two 60.00 -> one" in capsys.readouterr().out


def test_per_group_needs_a_data_set_with_groups(tmp_path, capsys):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "protocol": {"dataset": "CMR", "folds": [1]}, "classes": {"RV": {"runs": []}}}))
    assert load_script().main(["choose_on_inner.py", "--per-group", str(tmp_path / "c.json"), f"one={folder}"]) == 2
    assert "no setting-2 groups" in capsys.readouterr().err and not (tmp_path / "c.json").exists()


def test_candidates_scored_on_different_folds_are_refused(tmp_path, capsys):
    a = inner_results(tmp_path / "a", {1: 50.0, 0: 40.0})
    b = inner_results(tmp_path / "b", {1: 55.0})
    assert load_script().main(["choose_on_inner.py", str(tmp_path / "c.json"), f"one={a}", f"two={b}"]) == 2
    assert "scored different folds" in capsys.readouterr().err and not (tmp_path / "c.json").exists()


def test_a_candidate_without_a_folder_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script().main(["choose_on_inner.py", str(tmp_path / "c.json"), "one"])
    assert exit_.value.code == 2 and "expected NAME=FOLDER" in capsys.readouterr().err
