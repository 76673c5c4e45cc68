"""medfss demo: the synthetic phantom, the fallback without data, and the real run with the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfss.cli import main
from medfss.errors import ConfigError
from medfss.demo import CHAOST2_ORGANS, phantom, run_demo


def test_phantom_holds_the_four_organs_inside_the_body_and_is_seeded():
    image, label = phantom(np.random.default_rng(3))
    again, _ = phantom(np.random.default_rng(3))
    np.testing.assert_array_equal(image, again)
    assert set(np.unique(label)) == {0, *CHAOST2_ORGANS}
    assert image.min() >= 0 and np.isfinite(image).all()
    for value in CHAOST2_ORGANS:  # every organ spans several slices, brighter than its surroundings
        assert (label == value).any(axis=(0, 1)).sum() >= 3
        assert image[label == value].mean() > image[label == 0].mean()
    liver_x = np.argwhere(label == 1)[:, 0].mean()
    spleen_x = np.argwhere(label == 4)[:, 0].mean()
    assert liver_x < spleen_x  # RAS: the liver on the patient's right, at small x


def test_demo_without_data_runs_on_the_phantom(checkpoint, tmp_path, capsys):
    summary = run_demo(tmp_path / "out", data_root=tmp_path / "nothing", checkpoint=checkpoint, progress=False)
    out = capsys.readouterr().out
    assert "no CHAOST2 data set under" in out and "synthetic phantom" in out
    scores = summary["demo"]["scores"]
    assert set(scores) == set(CHAOST2_ORGANS.values())
    assert all(0 <= s["dice"] <= 100 for s in scores.values())
    prediction = nib.load(tmp_path / "out" / "prediction.nii.gz")
    query = nib.load(tmp_path / "out" / "phantom" / "query_image.nii.gz")
    assert prediction.shape == query.shape and np.allclose(prediction.affine, query.affine)
    assert (tmp_path / "out" / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["demo"]["scores"] == scores


def test_demo_cli_with_unknown_case_is_a_one_line_error(checkpoint, tmp_path, capsys):
    (tmp_path / "CHAOST2").mkdir()
    argv = ["demo", "--data-root", str(tmp_path), "--checkpoint", str(checkpoint), "--query-case", "99",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "image_99.nii.gz" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.realdata
def test_demo_on_chaost2_with_the_bundled_model_beats_the_floor(data_root, tmp_path, capsys):
    """The main job of README: one held-out CHAOST2 patient from another's labels, default model.

    No query label is used: the support is registered onto the query (the default guidance, ANTsPy
    being installed with the test extras) and the organs' slices and a prior come from it. Every
    organ must be found and the mean must beat registration alone on fold 0 (results/floors, 60.05);
    a broken orientation or grid mapping gives Dice near 0.
    """
    assert main(["demo", "--data-root", str(data_root), "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    dice = {k: v["dice"] for k, v in summary["demo"]["scores"].items()}
    assert dice["liver"] > 70 and min(dice.values()) > 30 and np.mean(list(dice.values())) > 60, dice
    out = capsys.readouterr().out
    assert "CHAOST2 patient 2" in out and "registering 1 support scan onto the query with ANTsPy (syn; about" in out
    assert "label 1 (liver): " in out and "registration guidance" in out  # what was estimated, and how
    assert summary["inputs"]["model"]["guidance"]["registration"]["transform"] == "syn"
    assert summary["demo"]["model_card_dice"] == {}  # the card's figures are for the position rule


def test_the_demo_without_registration_puts_the_model_cards_figures_beside(data_root, tmp_path, capsys):
    assert main(["demo", "--data-root", str(data_root), "--out", str(tmp_path / "demo"), "--guidance", "position",
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    out = capsys.readouterr().out
    assert "estimated from the organ's relative extent" in out and "registering" not in out
    card = summary["demo"]["model_card_dice"]
    assert set(card) == {*CHAOST2_ORGANS.values(), "mean"} and "card Dice" in out
    assert f"{card['mean']:11.2f}" in out


def test_auto_guidance_falls_back_to_the_position_rule_without_antspy(monkeypatch, capsys):
    from medfss import cli
    from medfss.registration import ants

    monkeypatch.setattr(ants, "ants_available", lambda: False)
    assert cli.resolve_guidance("auto") == "position"
    assert "needs ANTsPy" in capsys.readouterr().err
    assert cli.resolve_guidance("position") == "position"
    monkeypatch.setattr(ants, "ants_available", lambda: True)
    assert cli.resolve_guidance("auto") == "registration"


def test_bundled_model_is_small_safe_to_load_and_documented():
    from medfss.checkpoints import load_model, read_checkpoint
    from medfss.weights import DEFAULT_MODEL, MODEL_CARD
    from medfss.weights.bundle import MAX_BYTES

    assert DEFAULT_MODEL.stat().st_size <= MAX_BYTES
    data = read_checkpoint(DEFAULT_MODEL)  # weights_only
    assert data["slice_orientation"] == "LAS" and data["config"]["data"]["supervision"] == "self"
    assert data["config"]["data"]["fold"] == 0  # the demo's patients (fold 0) were held out
    model, config = load_model(DEFAULT_MODEL)
    assert config.model.name == "alpnet" and not model.training
    card = MODEL_CARD.read_text()
    for needed in ("CC BY-SA 4.0", "no manual label", "medfss evaluate", "git ", "--extent estimated"):
        assert needed in card, needed


def test_the_card_generator_writes_the_modality_line_of_the_bundled_card(checkpoint, tmp_path):
    """The bundled card was edited by hand for its modality line (the model cannot be retrained here):
    the generator must write the same line, and the demo reads the card's scores back."""
    import shutil

    from medfss.checkpoints import record_training
    from medfss.weights import MODEL_CARD
    from medfss.weights.bundle import card_scores, model_card

    shutil.copyfile(checkpoint, tmp_path / "model.pt")  # an alpnet trained on CHAOST2 (the config default)
    record_training(tmp_path, 800, 330.0, resumed=False, cpu_time_s=320.0)
    results_file = Path(__file__).parents[1] / "results/default_model/CHAOST2-setting1-extent-estimated/results.json"
    results = json.loads(results_file.read_text())
    card = model_card(tmp_path, [results], 1000)
    line = next(t for t in card.splitlines() if t.startswith("- Modality:"))
    assert line.startswith("- Modality: MR (that of its training data set, CHAOST2)")
    assert line in MODEL_CARD.read_text().splitlines()
    assert card_scores(card)["estimated"]["mean"] == round(results["mean_dice"], 2)
    assert set(card_scores(MODEL_CARD.read_text())) == {"gt", "estimated"}


def test_rescoring_the_card_keeps_its_description_and_regenerates_its_scores(tmp_path, monkeypatch):
    from medfss.weights import MODEL_CARD
    from medfss.weights import bundle

    card = tmp_path / "card.md"
    card.write_text(MODEL_CARD.read_text())
    monkeypatch.setattr(bundle, "MODEL_CARD", card)
    results_file = Path(__file__).parents[1] / "results/default_model/CHAOST2-setting1-extent-estimated/results.json"
    assert bundle.main(["--rescore", str(results_file)]) == 0
    rescored = card.read_text()
    description = MODEL_CARD.read_text().split(bundle.SCORES_HEADING)[0]
    assert rescored.startswith(description) and rescored.count("| mean |") == 1
    assert set(bundle.card_scores(rescored)) == {"estimated"}
    card.write_text("# a card without scores\n")
    with pytest.raises(ConfigError, match="no '## Scores"):
        bundle.rescore([results_file])
