"""The command line: output on good input, one-line errors and exit 2 on bad input."""

from __future__ import annotations

import json

import pytest

from medfss.cli import main


@pytest.mark.realdata
def test_data_summary_lists_every_volume_with_class_ranges(data_root, capsys):
    assert main(["data", "summary", "CMR", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "CMR (MR)" in out and "35 volumes" in out
    assert "LV-MYO [1-11], LV-BP [1-11], RV [4-11]" in out  # case 1, checked by hand


@pytest.mark.parametrize("argv, message", [
    (["data", "summary", "NOPE"], "unknown data set 'NOPE'"),
    (["data", "summary", "CHAOST2", "--data-root", "/nonexistent"], "data set folder not found"),
    (["data", "summary", "/nonexistent/Dataset042_Liver"], "/nonexistent/Dataset042_Liver: folder not found"),
    (["evaluate", "--model", "copy-support", "--dataset", "./Dataset042_Liver", "--out", "x"],
     "./Dataset042_Liver: folder not found"),
])
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_folder_without_dataset_json_is_named_as_such(tmp_path, capsys):
    assert main(["data", "summary", str(tmp_path)]) == 2
    assert f"{tmp_path}: no dataset.json in this folder (not an nnU-Net raw data set)" in capsys.readouterr().err


def test_the_training_fold_warning_is_exact():
    from medfss.data.datasets import CHAOST2
    from medfss.evaluation.predictors import training_fold_warning

    info = {"dataset": "CHAOST2", "fold": 0}
    assert training_fold_warning("model.pt", info, CHAOST2, 0) is None  # fold 0 was held out: never seen
    assert training_fold_warning("model.pt", {"dataset": "SABS", "fold": 0}, CHAOST2, 3) is None  # other data
    inner = {"dataset": "CHAOST2", "fold": 0, "validation_fold": 1}  # an inner split: folds 0 and 1 held out
    assert training_fold_warning("model.pt", inner, CHAOST2, 1) is None
    assert training_fold_warning("model.pt", inner, CHAOST2, 2) is not None
    assert training_fold_warning("model.pt", info, CHAOST2, 2) == (
        "checkpoint model.pt was trained on CHAOST2 with fold 0 held out: on fold 2 it is tested on its own "
        "training volumes (use one checkpoint per fold: '{fold}' in the path)")


@pytest.mark.realdata
def test_evaluate_writes_results_and_report(data_root, tmp_path, capsys):
    out = tmp_path / "copy"
    argv = ["evaluate", "--model", "copy-support", "--dataset", "CHAOST2", "--data-root", str(data_root),
            "--folds", "0", "--classes", "liver", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "liver" in table and "mean" in table
    assert f"medfss: creating output folder {out} (it did not exist)" in table
    data = json.loads((out / "results.json").read_text())
    assert {"model", "dataset", "setting", "shots", "mean_dice", "protocol", "provenance"} <= set(data)
    assert data["protocol"]["folds"] == [0] and data["dataset"] == "CHAOST2"
    assert 20 < data["mean_dice"] < 90  # copying the support liver mask overlaps the query liver, not fully
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    report = (tmp_path / "README.md").read_text()
    assert "## CHAOST2, setting 1, 1-shot" in report and "copy-support" in report and "published" in report


@pytest.mark.realdata
def test_evaluate_rejects_a_bad_class(data_root, tmp_path, capsys):
    assert main(["evaluate", "--model", "copy-support", "--dataset", "CHAOST2", "--classes", "heart",
                 "--data-root", str(data_root), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "unknown class 'heart'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


@pytest.mark.realdata
def test_explain_draws_every_stage_of_an_lmsnet(data_root, tmp_path, capsys):
    import torch

    from medfss.config import DataConfig, ModelConfig, TrainConfig
    from medfss.models.registry import build_model
    from medfss.checkpoints import checkpoint_metadata, save_atomic

    torch.manual_seed(0)
    options = {"backbone": "resnet18-slim", "num_blocks": 2}
    model = build_model("lmsnet", **options)
    config = TrainConfig(model=ModelConfig("lmsnet", options), data=DataConfig(image_size=64))
    checkpoint = tmp_path / "model.pt"
    save_atomic({"state_dict": model.state_dict(), **checkpoint_metadata(config)}, checkpoint)
    out = tmp_path / "fig7.png"
    argv = ["explain", "--checkpoint", str(checkpoint), "--dataset", "CHAOST2", "--data-root", str(data_root),
            "--class", "liver", "--support-case", "1", "--query-case", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "3 stages of lmsnet" in capsys.readouterr().out and out.stat().st_size > 1000
    assert main([*argv[:-1], str(tmp_path / "x.png"), "--query-slice", "999"]) == 2
    assert "outside case 2" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
