"""The semi-supervised section of ``medfss report``: rows, the paper's Table II/III rows, the loss ablation."""

from __future__ import annotations

import json

from medfss.evaluation.report import format_report
from medfss.semisup.report import loss_terms


def fake_result(model, fraction, dice, **model_config):
    summary = {"mean": dice, "std": 1.0, "n_undefined": 0}
    return {"task": "semi-supervised", "model": model, "dataset": "ACDC", "labeled_fraction": fraction,
            "list": "val.list", "volumes": 20, "mean_dice": dice, "label": f"{model} {fraction}",
            "classes": {c: {"dice": summary} for c in ("RV", "MYO", "LV")},
            "mean": {"dice": summary, "jaccard": summary, "hd95": summary, "asd": summary},
            "config": {"model": model_config}, "wall_time_s": 3.0, "training": {"summary": "10 it, 1 min"},
            "provenance": {"date": "today", "git_revision": "abc", "command": "medfss evaluate",
                           "machine": {"torch_threads": 1, "torch": "2.x"}}}


def test_loss_terms_follow_the_stored_config():
    assert loss_terms(fake_result("mean-teacher-copy-paste", 0.05, 1)) == (True, False, False)
    assert loss_terms(fake_result("multi-prototype", 0.05, 1, gamma=0.0)) == (True, True, False)
    assert loss_terms(fake_result("multi-prototype", 0.05, 1, gamma=0.1)) == (True, True, True)


def test_report_has_a_semisup_section_with_published_rows_and_the_ablation(tmp_path):
    for name, result in {"a": fake_result("multi-prototype", 0.05, 70.0, gamma=0.1),
                         "b": fake_result("multi-prototype", 0.05, 65.0, gamma=0.0),
                         "c": fake_result("mean-teacher-copy-paste", 0.05, 60.0),
                         "d": fake_result("supervised-only", 0.05, 40.0)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(result))
    report = format_report(tmp_path)
    section = report[report.index("## Semi-supervised segmentation (MPER): ACDC"):]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "5%" in line]
    assert [r.split(" | ")[0] for r in rows[:4]] == ["| supervised-only 0.05", "| mean-teacher-copy-paste 0.05",
                                                     "| multi-prototype 0.05", "| multi-prototype 0.05"]
    assert "| MPER (*published*, MPER paper Table II) | 5% |" in section
    assert "| U-Net (*published*, MPER paper Table II) | 100% |" in section
    assert "10%" not in section  # only the fractions we ran, and all labels
    ablation = section[section.index("Loss ablation"):]
    assert "| ✓ |  |  | mean-teacher-copy-paste 0.05 | **60.00**" in ablation
    assert "| ✓ | ✓ |  | multi-prototype 0.05 | **65.00**" in ablation
    assert "| ✓ | ✓ | ✓ | *published*, MPER paper Table III | 88.64" in ablation


def test_seeds_are_averaged_and_the_inner_split_has_its_own_table(tmp_path):
    runs = {}
    for seed, dice in enumerate((50.0, 54.0, 58.0)):
        result = fake_result("multi-prototype", 0.1, dice, gamma=0.1)
        result["config"] |= {"runtime": {"seed": seed}, "data": {"holdout_list": "inner.list"}}
        result["label"] = f"multi-prototype 0.1, seed {seed}"
        runs[f"val{seed}"] = result
        runs[f"inner{seed}"] = result | {"list": "inner.list", "mean": {**result["mean"],
                                                                        "dice": {"mean": dice + 10, "std": 1.0}}}
    runs["other"] = fake_result("multi-prototype", 0.1, 10.0, gamma=0.0)  # another config: not averaged in
    for name, result in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(result))
    report = format_report(tmp_path)
    heading = "## Semi-supervised segmentation (MPER): ACDC\n"
    inner = report[report.index("ACDC, inner validation split"):report.index(heading)]
    main = report[report.index(heading):]
    assert "| multi-prototype 0.1, **mean of seeds 0, 1, 2** | 10% | 3 runs |" in inner
    assert "**64.00 ± 4.00** (std over seeds)" in inner
    assert "**54.00 ± 4.00** (std over seeds)" in main and "inner.list" not in main.split("Sources:")[0]
    assert "Table II" in main and "Table II" not in inner
