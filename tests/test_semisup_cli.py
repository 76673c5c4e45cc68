"""``medfss train | evaluate | segment | report`` with semi-supervised configs, end to end on tiny HDF5 data sets."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from medfss.cli import main
from medfss.evaluation.report import format_report
from medfss.semisup.checkpoint import is_semisup_checkpoint, load_model
from tests.test_semisup_data import write_h5


def phantom_slice(rng, shape=(24, 20)):
    """A [0, 1] image with three nested boxes of classes 1..3 at a random offset."""
    image, label = rng.uniform(0, 0.1, shape), np.zeros(shape, dtype=np.uint8)
    y, x = rng.integers(2, 6, size=2)
    for c, m in ((1, 0), (2, 3), (3, 6)):
        label[y + m:y + 16 - m, x + m:x + 12 - m] = c
        image[label == c] = 0.3 * c
    return image, label


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """ACDC (4 patients x 3 slices, 1 validation volume) and LA (3 + 1 volumes) in the literature's layout."""
    root = tmp_path_factory.mktemp("semisup_data")
    rng = np.random.default_rng(0)
    names = [f"patient{p:03d}_frame01_slice_{k}" for p in (7, 2, 5, 9) for k in range(3)]
    for name in names:
        write_h5(root / "ACDC" / "data" / "slices" / f"{name}.h5", *phantom_slice(rng))
    (root / "ACDC" / "train_slices.list").write_text("\n".join(names) + "\n")
    slices = [phantom_slice(rng) for _ in range(3)]
    write_h5(root / "ACDC" / "data" / "patient100_frame01.h5", np.stack([s[0] for s in slices]),
             np.stack([s[1] for s in slices]))
    (root / "ACDC" / "val.list").write_text("patient100_frame01\n")
    for i, name in enumerate(["A1", "B2", "C3", "T1"]):
        image, label = rng.normal(0, 1, (20, 18, 17)), np.zeros((20, 18, 17), dtype=np.uint8)
        label[5:14, 4:12, 3:13] = 1
        image[label == 1] += 3
        write_h5(root / "LA" / "2018LA_Seg_Training Set" / name / "mri_norm2.h5", image, label)
    (root / "LA" / "train.list").write_text("A1\nB2\nC3\n")
    (root / "LA" / "test.list").write_text("T1\n")
    return root


def write_config(path, dataset, model):
    two_d = dataset == "ACDC"
    config = {"task": "semi-supervised",
              "model": {"name": model, "channels": [4, 8] if two_d else [2], "kmeans_voxels": 50},
              "data": {"dataset": dataset, "labeled_fraction": 0.5, "patch_size": [16, 16] if two_d else [16] * 3,
                       "crop_size": [8, 8] if two_d else [8] * 3, "labeled_batch": 2, "unlabeled_batch": 2},
              "schedule": {"pretrain_iterations": 2, "selftrain_iterations": 3},
              "inference": {"stride": [8, 8, 8]}, "runtime": {"accelerator": "cpu", "log_every": 1}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("dataset,model", [("ACDC", "multi-prototype"), ("ACDC", "supervised-only"),
                                           ("LA", "multi-prototype")])
def test_train_then_evaluate_writes_a_model_and_results(tiny_root, tmp_path, dataset, model, capsys):
    config = write_config(tmp_path / "c.yaml", dataset, model)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data-root", str(tiny_root), "--run-dir", str(run)]) == 0
    assert is_semisup_checkpoint(run / "model.pt")
    net, loaded, data = load_model(run / "model.pt")
    assert data["model_name"] == model and data["labeled_fraction"] == 0.5 and data["torch_threads"] >= 1
    assert ("prototypes" in data) == (model == "multi-prototype")
    training = json.loads((run / "training.json").read_text())
    assert training["iterations"] == 5 and training["machine"]["torch_threads"] >= 1
    listname = "val.list" if dataset == "ACDC" else "test.list"
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--dataset", dataset, "--data-root",
                 str(tiny_root), "--list", listname, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    classes = ["RV", "MYO", "LV"] if dataset == "ACDC" else ["LA"]
    assert result["model"] == model and result["labeled_fraction"] == 0.5 and result["list"] == listname
    assert list(result["classes"]) == classes and result["volumes"] == 1
    assert set(result["mean"]) == {"dice", "jaccard", "hd95", "asd"}
    assert 0 <= result["mean_dice"] <= 100
    assert result["provenance"]["machine"]["torch_threads"] >= 1 and result["training"]["stages"]
    report = format_report(tmp_path)
    assert f"## Semi-supervised segmentation (MPER): {dataset}" in report and "| 50% |" in report
    assert ("U-Net (*published*, MPER paper Table II) | 100%" in report) == (dataset == "ACDC")


def test_segment_writes_fixed_class_labels_aligned_with_the_scan(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "--config", str(write_config(tmp_path / "c.yaml", "ACDC", "mean-teacher-copy-paste")),
          "--data-root", str(tiny_root), "--run-dir", str(run)])
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[:3, 3] = [10, -20, 5]
    nib.save(nib.Nifti1Image(np.random.rand(20, 24, 3).astype(np.float32) * 300, affine), tmp_path / "scan.nii.gz")
    assert main(["segment", "--checkpoint", str(run / "model.pt"), "--query", str(tmp_path / "scan.nii.gz"),
                 "--out", str(tmp_path / "labels.nii.gz")]) == 0
    out = nib.load(tmp_path / "labels.nii.gz")
    assert out.shape == (20, 24, 3) and np.allclose(out.affine, affine)
    assert out.get_data_dtype() == np.uint8 and set(np.unique(out.get_fdata())) <= {0, 1, 2, 3}


def test_semisup_user_mistakes_exit_2_with_one_line(tiny_root, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", "ACDC", "multi-prototype")
    assert main(["train", "--config", str(config), "--set", "model.name=unet", "--run-dir", str(tmp_path)]) == 2
    assert "model.name" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--set", "data.labeled_batch=3", "--run-dir",
                 str(tmp_path)]) == 2
    assert "even" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "ACDC", "--list", "val.list", "--out", str(tmp_path)]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path), "--resume", "auto"]) == 2
    assert "cannot be resumed" in capsys.readouterr().err
    assert main(["segment", "--query", str(tmp_path / "x.nii.gz"), "--out", str(tmp_path / "y.nii.gz")]) == 2
    assert "--support-image" in capsys.readouterr().err


def test_a_held_out_split_is_left_out_of_training_and_scored_from_its_slices(tiny_root, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", "ACDC", "mean-teacher-copy-paste")
    inner = tmp_path / "inner.list"
    inner.write_text("patient009_frame01\n")  # the last patient: unlabelled at 50 %
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data-root", str(tiny_root), "--set",
                 f"data.holdout_list={inner}", "--run-dir", str(run)]) == 0
    assert f"6 labelled and 3 unlabelled training images (labelled fraction 0.5, patients of {inner} held out)" \
        in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--dataset", "ACDC", "--data-root",
                 str(tiny_root), "--list", str(inner), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["volumes"] == 1 and result["config"]["data"]["holdout_list"] == str(inner)
    assert "ACDC, inner validation split" in format_report(tmp_path)
    inner.write_text("patient002_frame01\n")  # labelled: the literature's labelled patients are not ours to move
    assert main(["train", "--config", str(config), "--data-root", str(tiny_root), "--set",
                 f"data.holdout_list={inner}", "--run-dir", str(tmp_path / "run2")]) == 2
    assert "holds labelled patients" in capsys.readouterr().err
