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
])
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.realdata
def test_evaluate_writes_results_and_report(data_root, tmp_path, capsys):
    out = tmp_path / "copy"
    argv = ["evaluate", "--model", "copy-support", "--dataset", "CHAOST2", "--data-root", str(data_root),
            "--folds", "0", "--classes", "liver", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "liver" in table and "mean" in table
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
