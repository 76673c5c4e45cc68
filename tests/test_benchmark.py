"""The benchmark command's measurements and the report generator's tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfss.cli import main
from medfss.config import config_from_dict
from medfss.evaluation.benchmark import BenchmarkConfig, benchmark, format_benchmark, random_episode


def test_random_episode_has_the_contract_shapes():
    episode = random_episode(batch=3, shots=2, size=16, device="cpu")
    assert episode.support_images.shape == (3, 2, 1, 16, 16) and episode.query_masks.shape == (3, 16, 16)
    assert 0 < episode.support_masks.mean() < 1


@pytest.mark.parametrize("model", ["alpnet", "panet"])
def test_benchmark_measures_a_tiny_preset(model):
    config = config_from_dict({"model": {"name": model, "options": {"backbone": "resnet18-slim"}},
                               "data": {"image_size": 32}, "optim": {"batch_size": 2}})
    row = benchmark(config, BenchmarkConfig(train_steps=1, query_slices=3, native_size=48))
    assert row["model"] == model and row["parameters"] > 1e6
    assert row["train_ms_per_episode"] == pytest.approx(row["train_ms_per_step"] / 2)
    assert row["train_cpu_ms_per_step"] > 0
    assert row["inference_s_per_volume"] == pytest.approx(3 * row["inference_ms_per_slice"] / 1000)
    assert row["train_peak_memory_mib"] > 50 and row["inference_peak_memory_mib"] > 50  # torch alone
    assert f"{model} resnet18-slim" in format_benchmark([row])


def test_report_collects_results_and_benchmarks(tmp_path):
    results = {"model": "m", "label": "my model", "dataset": "CMR", "setting": 1, "shots": 1,
               "protocol": {"classes": ["LV-BP", "LV-MYO", "RV"], "folds": [0], "support_indices": [0, 1]},
               "classes": {"LV-BP": {"dice": {"mean": 70.0, "std": 2.0}},
                           "LV-MYO": {"dice": {"mean": 50.0, "std": 0.0}},
                           "RV": {"dice": {"mean": None, "std": None}}},
               "mean": {"dice": {"mean": 60.0, "std": 1.5}}, "wall_time_s": 12.0,
               "provenance": {"date": "2026-11-22", "git_revision": "abc", "command": "medfss evaluate x",
                              "machine": {"cpu_count": 2}}}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "results.json").write_text(json.dumps(results))
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "cpu.json").write_text(json.dumps({
        "rows": [{"torch_threads": 2}], "table": "| a table |",
        "provenance": {"machine": {"processor": "x86_64", "cpu_count": 2}}}))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "| my model | none | 0 | 0,1 | 70.00 ± 2.00 | 50.00 | – | **60.00 ± 1.50** |" in text
    assert "SSL-ALPNet (*published*, Ouyang et al. 2020 (SSL-ALPNet), Table 3) | paper preset | 5 | – | " \
           "83.99 | 66.74 | 79.96 | 76.90 |" in text
    assert "## Speed and memory: cpu" in text and "| a table |" in text
    assert "Experiments on" not in text


def test_report_puts_tagged_runs_in_an_experiments_table(tmp_path):
    def result(label, mean):
        return {"model": "m", "label": label, "dataset": "CMR", "setting": 1, "shots": 1,
                "protocol": {"classes": ["RV"], "folds": [0], "support_indices": [0]},
                "classes": {"RV": {"dice": {"mean": mean, "std": 0.0}}}, "mean": {"dice": {"mean": mean, "std": 0.0}},
                "training": {"summary": "8 it"}, "wall_time_s": 1.0,
                "provenance": {"date": "d", "git_revision": "r", "command": "c", "machine": {}}}

    for folder, label, mean in (("m_cpu", "preset row", 50.0), ("m_cpu-lr2", "tagged row", 55.0)):
        (tmp_path / folder / "CMR-setting1").mkdir(parents=True)
        (tmp_path / folder / "CMR-setting1" / "results.json").write_text(json.dumps(result(label, mean)))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    main_table, experiments = (tmp_path / "README.md").read_text().split("Experiments on CMR, setting 1, 1-shot:")
    assert "| preset row |" in main_table and "| tagged row |" not in main_table
    assert "| tagged row | 8 it | 0 | 0 | 55.00 | **55.00** |" in experiments


def test_report_groups_the_training_seeds_of_a_variant(tmp_path):
    def result(label, mean, folds=(0,)):
        return {"model": "m", "label": label, "dataset": "CMR", "setting": 1, "shots": 1,
                "protocol": {"classes": ["RV"], "folds": list(folds), "support_indices": [0]},
                "classes": {"RV": {"dice": {"mean": mean, "std": 0.0}}}, "mean": {"dice": {"mean": mean, "std": 0.0}},
                "training": {"summary": "8 it"}, "wall_time_s": 1.0}

    for folder, data in {"m_cpu": result("preset", 40.0), "m_cpu-a": result("variant a", 50.0),
                         "m_cpu-a-seed2": result("a, seed 2", 52.0), "m_cpu-a-seed1": result("a, seed 1", 54.0),
                         "m_cpu-a-seed3": result("a, seed 3, other folds", 90.0, folds=(0, 1)),
                         "m_cpu-b-seed1": result("b without its seed-0 run", 70.0)}.items():
        (tmp_path / folder / "CMR-setting1").mkdir(parents=True)
        (tmp_path / folder / "CMR-setting1" / "results.json").write_text(json.dumps(data))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    seeds = (tmp_path / "README.md").read_text().split("Training seeds on CMR, setting 1, 1-shot")[1]
    rows = [line for line in seeds.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["| variant a | 0, 1, 2 | 50.00, 54.00, 52.00 | **52.00 ± 1.63** |"]


def test_report_restricts_wider_results_to_the_folds_of_narrower_ones(tmp_path):
    def result(folds, runs):
        return {"model": "m", "dataset": "CMR", "setting": 1, "shots": 1,
                "protocol": {"classes": ["RV"], "folds": folds, "support_indices": [0]},
                "classes": {"RV": {"dice": {"mean": 0.0, "std": 0.0},
                                   "runs": [{"fold": f, "support_index": 0, "dice": d} for f, d in runs]}},
                "mean": {"dice": {"mean": 0.0, "std": 0.0}}, "wall_time_s": 1.0}
    for name, data in {"wide": result([0, 1], [(0, 40.0), (1, 80.0)]), "narrow": result([0], [(0, 50.0)])}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**data, "label": name}))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "| wide (only folds 0) | none | 0 | 0 | 40.00 | **40.00** |" in text
    assert "narrow (only folds" not in text


def test_report_summary_has_one_row_per_preset_across_tables(tmp_path):
    def result(label, dataset, setting, mean, folds=(0, 1), extent="gt", training=True, supports=(0,)):
        classes = ["liver"] if dataset == "CHAOST2" else ["RV"]
        return {"model": "m", "label": label, "dataset": dataset, "setting": setting, "shots": 1,
                "protocol": {"classes": classes, "folds": list(folds), "support_indices": list(supports),
                             "extent": extent},
                "classes": {classes[0]: {"dice": {"mean": mean, "std": 0.0}}},
                "mean": {"dice": {"mean": mean, "std": 1.0}}, "wall_time_s": 1.0,
                **({"training": {"summary": "8 it"}} if training else {})}

    for folder, data in {"m_cpu/CHAOST2-setting1": result("model m", "CHAOST2", 1, 60.0),
                         "m_cpu/CMR-setting1": result("model m", "CMR", 1, 50.0),
                         "m_cpu/CMR-setting1-estimated": result("model m", "CMR", 1, 10.0, extent="estimated"),
                         "m_cpu-tag/CMR-setting1": result("tagged", "CMR", 1, 99.0),
                         "one-fold/CMR-setting1": result("one fold only", "CMR", 1, 70.0, folds=(0,)),
                         "floor/CHAOST2-setting1": result("a floor", "CHAOST2", 1, 30.0, training=False,
                                                          supports=(0, 1)),
                         # the same floor on fewer supports (beside a guided table): the summary keeps the wider
                         "zfloor/CHAOST2-setting1": result("a floor", "CHAOST2", 1, 35.0, training=False)}.items():
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "results.json").write_text(json.dumps(data))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    summary = (tmp_path / "README.md").read_text().split("## Summary")[1].split("\n## ")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[:3] == ["| method | CHAOST2 setting 1 | CMR setting 1 |",
                        "| model m | 60.00 ± 1.00 | 50.00 ± 1.00 |",
                        "| a floor | 30.00 ± 1.00 | – |"]
    assert rows[3].startswith("| SSL-ALPNet (*published*, Ouyang et al. 2020 (SSL-ALPNet)) | 78.84 | 76.90 |")
    assert "tagged" not in summary and "one fold only" not in summary


def test_report_keeps_the_estimated_marker_on_restricted_floors_and_the_readme_command(tmp_path):
    def result(extent, dice):
        return {"model": "copy-support", "dataset": "CHAOST2", "setting": 1, "shots": 1,
                "protocol": {"classes": ["liver"], "folds": [0, 1], "support_indices": [0], "extent": extent},
                "classes": {"liver": {"dice": {"mean": 0.0, "std": 0.0},
                                      "runs": [{"fold": 0, "support_index": 0, "dice": dice},
                                               {"fold": 1, "support_index": 0, "dice": 0.0}]}},
                "mean": {"dice": {"mean": 0.0, "std": 0.0}}, "wall_time_s": 1.0}

    for folder, data in {"floor/gt": result("gt", 40.0), "floor/est": result("estimated", 20.0),
                         "m_cpu-tag/x": {**result("gt", 50.0), "model": "m",
                                         "protocol": {**result("gt", 0)["protocol"], "folds": [0]}}}.items():
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "results.json").write_text(json.dumps(data))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    text = (tmp_path / "README.md").read_text()
    experiments = text.split("Experiments on CHAOST2")[1].split("Sources:")[0]
    assert "| copy-support (only folds 0) | none | 0 | 0 | 40.00 | **40.00** |" in experiments
    assert "| copy-support [organ slices estimated] (only folds 0) | none | 0 | 0 | 20.00 | **20.00** |" \
        in experiments
    assert "Generated by `medfss report results --out results/README.md`" in text
    readme = Path(__file__).parents[1] / "README.md"
    assert "medfss report results --out results/README.md" in readme.read_text()


def test_report_lists_the_published_rows_of_an_unstated_setting_apart(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "results.json").write_text(json.dumps({
        "model": "m", "dataset": "CHAOST2", "setting": 1, "shots": 1,
        "protocol": {"classes": ["liver"], "folds": [0], "support_indices": [0]},
        "classes": {"liver": {"dice": {"mean": 50.0, "std": 0.0}}}, "mean": {"dice": {"mean": 50.0, "std": 0.0}},
        "wall_time_s": 1.0}))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    text = (tmp_path / "README.md").read_text()
    setting1, apart = text.split("## CHAOST2, published, setting not stated")
    assert "LMS-Net" not in setting1  # neither in the setting-1 table nor in the summary's setting-1 column
    assert "| LMS-Net (*published*, LMS-Net paper (ADNet protocol), Table I) | 82.85 | 89.34 | 74.97 | 83.71 | " \
           "82.72 |" in apart


def test_benchmark_sweep_gives_one_row_per_value(tmp_path, capsys):
    import yaml

    config = tmp_path / "tiny_lms.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "lmsnet", "options": {"backbone": "resnet18-slim"}},
                                      "data": {"image_size": 32}, "optim": {"batch_size": 1}}))
    out = tmp_path / "sweep.json"
    assert main(["benchmark", "--config", str(config), "--sweep", "model.options.num_blocks=1,3", "--steps", "1",
                 "--query-slices", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["preset"] for r in rows] == ["tiny_lms num_blocks=1", "tiny_lms num_blocks=3"]
    assert [r["model_options"]["num_blocks"] for r in rows] == [1, 3]
    assert rows[1]["parameters"] > rows[0]["parameters"]  # two more blocks: MUT and Mask Denoiser weights
    assert main(["benchmark", "--config", str(config), "--sweep", "num_blocks"]) == 2
    assert "--sweep takes KEY=V1,V2" in capsys.readouterr().err
