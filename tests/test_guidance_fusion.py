"""The learned fusion of registration guidance (medfss.registration.fusion): its features, eq. 1-2, its nested fit."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from medfss.errors import ConfigError
from medfss.registration.fusion import (FEATURES, AppearanceModel, fit_coefficients, logistic, signed_distance_cm,
                                        slice_features)
from medfss.registration.guided import GuidanceConfig


def coefficients(intercept: float = 0.0, **weights: float) -> tuple[float, ...]:
    """Eq. 1's coefficients with the named features' weights, 0 for the others."""
    return (intercept, *(weights.get(name.replace(".", "_"), 0.0) for name in FEATURES))


def disc(shape=(41, 41), radius=10.0, centre=(20, 20)) -> np.ndarray:
    y, x = np.ogrid[:shape[0], :shape[1]]
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius ** 2


def test_the_appearance_log_ratio_favours_the_intensity_inside_the_warped_mask():
    image = np.zeros((41, 41, 3), np.float32)
    mask = np.repeat(disc()[..., None], 3, axis=2)
    image[mask] = 2.0  # a bright organ on a dark ring
    model = AppearanceModel.fit(image, mask, np.ones_like(mask), (1.0, 1.0, 5.0))
    assert model(np.float32(2.0)) > 3 and model(np.float32(0.0)) < -3  # eq. 2: log h_in - log h_ring
    assert model(np.float32(-1.5)) == pytest.approx(0.0, abs=1e-6)  # seen on neither side: both floors, ratio 1
    assert not AppearanceModel.fit(image, np.zeros_like(mask), mask, (1.0, 1.0, 5.0)).log_ratio.any()


def test_the_ring_of_the_appearance_model_stays_in_the_body():
    image = np.zeros((41, 41, 1), np.float32)
    mask = disc()[..., None]
    image[mask] = 2.0
    image[~mask] = -1.0  # outside the body (air) everything is -1 ...
    body = np.zeros_like(mask)  # ... and the body is the organ alone, so no ring voxel is counted
    body[mask] = True
    model = AppearanceModel.fit(image, mask, body, (1.0, 1.0, 1.0))
    assert model(np.float32(-1.0)) == pytest.approx(0.0, abs=1e-6)


def test_signed_distance_is_the_in_plane_distance_to_the_boundary_in_cm_clipped():
    mask = disc(shape=(101, 101), radius=10.0, centre=(50, 50))
    distance = signed_distance_cm(mask, (2.0, 2.0, 5.0))  # 2 mm pixels: the disc's radius is 20 mm
    assert distance[50, 50] == pytest.approx(2.0, abs=0.25)  # the centre, 20 mm in
    assert distance[50, 65] == pytest.approx(-1.0, abs=0.25)  # 15 px from the centre: 5 px = 10 mm out
    assert distance.min() == pytest.approx(-3.0)  # clipped at 30 mm
    assert (signed_distance_cm(np.zeros((5, 5), bool), (1.0, 1.0)) == -3.0).all()


def test_the_logistic_fusion_is_eq_1():
    rng = np.random.default_rng(0)
    features = rng.random((4, 5, len(FEATURES))).astype(np.float32)
    c = rng.standard_normal(len(FEATURES) + 1)
    expected = 1 / (1 + np.exp(-(c[0] + features @ c[1:])))
    np.testing.assert_allclose(logistic(features, c), expected, rtol=1e-5)
    np.testing.assert_allclose(logistic(features, coefficients(1.5)), 1 / (1 + np.exp(-1.5)), rtol=1e-6)
    with pytest.raises(ValueError, match="coefficients"):
        logistic(features, c[:-1])


def test_slice_features_come_in_the_order_of_FEATURES():
    prior = disc().astype(np.float32)
    image = 2.0 * prior
    networks = {"registered": np.full(prior.shape, 0.25, np.float32), "chunks": np.full(prior.shape, 0.75, np.float32)}
    appearance = AppearanceModel.fit(image[..., None], prior[..., None] > 0, np.ones((41, 41, 1), bool), (1, 1, 1))
    features = slice_features(networks, prior, image, appearance, (1.0, 1.0))
    assert features.shape == (41, 41, len(FEATURES)) and features.dtype == np.float32
    named = dict(zip(FEATURES, np.moveaxis(features, -1, 0)))
    assert (named["network_registered"] == 0.25).all() and (named["network_chunks"] == 0.75).all()
    np.testing.assert_array_equal(named["prior_0mm"], prior)
    assert named["prior_10mm"][20, 20] < 1 and named["prior_10mm"][0, 0] > 0  # softened
    np.testing.assert_allclose(named["network_x_prior"], 0.25 * named["prior_5mm"], rtol=1e-6)
    assert named["appearance_log_ratio"][20, 20] > 0 > named["appearance_log_ratio"][0, 0]


def test_fitted_coefficients_separate_what_the_features_separate():
    rng = np.random.default_rng(1)
    features = rng.random((2000, len(FEATURES)))
    labels = features[:, FEATURES.index("appearance_log_ratio")] > 0.5
    c = fit_coefficients([(features[:1000], labels[:1000]), (features[1000:], labels[1000:])], regularisation=100)
    assert len(c) == len(FEATURES) + 1
    accuracy = ((logistic(features, c) > 0.5) == labels).mean()
    assert accuracy > 0.95
    assert np.argmax(np.abs(c[1:])) == FEATURES.index("appearance_log_ratio")
    with pytest.raises(ValueError, match="both classes"):
        fit_coefficients([(features, np.ones(2000, bool))])


def test_the_learned_fusion_needs_its_coefficients_and_keeps_them_hashable():
    with pytest.raises(ConfigError, match="coefficients"):
        GuidanceConfig(fusion="learned", coefficients=None)
    with pytest.raises(ConfigError, match="coefficients"):
        GuidanceConfig(fusion="learned", coefficients=(1.0, 2.0))
    with pytest.raises(ConfigError, match="fusion"):
        GuidanceConfig(fusion="median")
    config = GuidanceConfig(fusion="learned", coefficients=list(coefficients(-1.0, prior_0mm=2.0)))
    assert isinstance(config.coefficients, tuple) and hash(config)
    assert GuidanceConfig(**json.loads(json.dumps(asdict(config)))) == config  # a selection file's round trip
    default = GuidanceConfig()  # the bundled model's fit (results/default_model/guidance-learned/selection.json)
    assert default.fusion == "learned" and len(default.coefficients) == len(FEATURES) + 1


def test_nested_learned_fusion_fits_each_fold_on_the_other_folds_only():
    from medfss.registration.selection import nested_learned_fusion

    def sample(fold):  # a fold's voxels carry its number, so a fit can say which folds it saw
        return np.full((3, len(FEATURES)), float(fold)), np.array([True, False, True])

    samples = {f: {"liver": [sample(f)]} for f in (0, 1, 2)}
    seen = []

    def fit(pairs, features):
        folds = sorted({int(x[0, 0]) for x, _ in pairs})
        seen.append(folds)
        return coefficients(float(sum(folds)))

    selection = nested_learned_fusion(samples, GuidanceConfig(), fit=fit)
    assert seen == [[1, 2], [0, 2], [0, 1], [0, 1, 2]]
    assert {f: s["config"]["coefficients"][0] for f, s in selection["folds"].items()} == {"0": 3, "1": 2, "2": 1}
    assert selection["folds"]["0"]["fitted_on_folds"] == [1, 2] and selection["folds"]["0"]["voxels"] == 6
    assert selection["best_overall"]["config"]["fusion"] == "learned"
    assert selection["features"] == list(FEATURES) and not selection["per_class"]
    assert "classes" not in selection["folds"]["0"]


def class_samples(rng, rules):
    """A fold's voxels per class; class c's labels follow its own feature (rules[c]), as organs of unlike shape."""
    samples = {}
    for class_name, feature in rules.items():
        features = rng.random((400, len(FEATURES)))
        samples[class_name] = [(features, features[:, FEATURES.index(feature)] > 0.5)]
    return samples


def test_a_class_keeps_its_own_fit_only_where_held_out_folds_prefer_it():
    from medfss.registration.selection import nested_learned_fusion

    rng = np.random.default_rng(0)
    unlike = {"LV-BP": "prior_0mm", "LV-MYO": "signed_distance_cm"}
    samples = {f: class_samples(rng, unlike) for f in range(3)}
    selection = nested_learned_fusion(samples, GuidanceConfig(), per_class=True)
    for fit in (*selection["folds"].values(), selection["best_overall"]):
        for name, feature in unlike.items():
            entry = fit["classes"][name]
            assert entry["form"] == "class" and entry["inner_log_loss"]["class"] < entry["inner_log_loss"]["shared"]
            weights = dict(zip(FEATURES, entry["config"]["coefficients"][1:]))
            assert max(weights, key=lambda n: abs(weights[n])) == feature  # the class's own rule
    alike = {f: class_samples(rng, {"liver": "prior_0mm", "spleen": "prior_0mm"}) for f in range(3)}
    selection = nested_learned_fusion(alike, GuidanceConfig(), per_class=True,
                                      fit=lambda pairs, features: coefficients(0.0, prior_0mm=8.0))
    assert {e["form"] for e in selection["folds"]["0"]["classes"].values()} == {"shared"}  # ties keep the shared


def test_the_per_class_choice_of_a_test_fold_never_sees_that_fold():
    from medfss.registration.selection import nested_learned_fusion

    rng = np.random.default_rng(1)
    samples = {f: class_samples(rng, {"RV": "prior_0mm", "LV-MYO": "prior_5mm"}) for f in range(4)}
    for f, pairs in samples.items():  # every voxel carries its fold in a feature no class's rule reads
        for x, _ in (pair for class_pairs in pairs.values() for pair in class_pairs):
            x[:, FEATURES.index("appearance_log_ratio")] = f
    seen = []

    def fit(pairs, features):
        seen.append({int(x[0, FEATURES.index("appearance_log_ratio")]) for x, _ in pairs})
        return fit_coefficients(pairs, features)

    nested_learned_fusion({f: samples[f] for f in (1, 2, 3)}, GuidanceConfig(), fit=fit, per_class=True)
    assert seen and all(0 not in folds for folds in seen)


def test_an_ablation_fits_the_named_features_and_leaves_the_others_at_zero():
    rng = np.random.default_rng(2)
    features = rng.random((500, len(FEATURES)))
    labels = features[:, FEATURES.index("prior_0mm")] > 0.5
    kept = ("prior_0mm", "signed_distance_cm")
    c = fit_coefficients([(features, labels)], features=kept)
    assert [name for name, value in zip(FEATURES, c[1:]) if value != 0] == list(kept)
    with pytest.raises(ValueError, match="unknown"):
        fit_coefficients([(features, labels)], features=("prior_0mm", "colour"))


def test_select_guidance_refuses_an_unknown_feature_in_one_line(tmp_path, capsys, data_root):
    from medfss.cli import main

    code = main(["select-guidance", "--model", "alpnet", "--checkpoint", str(tmp_path / "m.pt"), "--dataset", "CHAOST2",
                 "--data-root", str(data_root), "--fusion-features", "prior_0mm,colour", "--out", str(tmp_path / "o")])
    assert code == 2 and "unknown colour" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    code = main(["select-guidance", "--model", "alpnet", "--checkpoint", str(tmp_path / "m.pt"), "--dataset", "CHAOST2",
                 "--data-root", str(data_root), "--samples-per-query", "0", "--out", str(tmp_path / "o")])
    assert code == 2 and "--samples-per-query must be at least 1" in capsys.readouterr().err
    for extra, message in ((["--class-thresholds", "0.5,1"], "strictly between 0 and 1"),
                           (["--per-class", "--fusion", "average"], "need --fusion learned")):
        code = main(["select-guidance", "--model", "alpnet", "--checkpoint", str(tmp_path / "m.pt"), "--dataset",
                     "CHAOST2", "--data-root", str(data_root), *extra, "--out", str(tmp_path / "o")])
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_select_guidance_prints_each_folds_fit_and_the_coefficients_of_the_fit_on_all():
    from medfss.cli import _learned_summary
    from medfss.registration.selection import nested_learned_fusion

    samples = {f: {"liver": [(np.full((2, len(FEATURES)), float(f)), np.array([True, False]))]} for f in (0, 1)}
    selection = nested_learned_fusion(samples, GuidanceConfig(), fit=lambda pairs, features: coefficients(0.5),
                                      per_class=True)
    lines = _learned_summary(selection).splitlines()
    assert lines[0] == "fold 0: learned fusion fitted on folds [1] (2 voxels)"
    assert lines[1] == ("  liver: shared coefficients, threshold 0.5 (inner log-loss: shared nan, class nan; "
                        "inner sampled Dice by threshold: 0.5 nan)")  # one fold each: nothing to hold out
    assert lines[-1].startswith("fitted on every fold: intercept +0.500, network_registered +0.000")


def test_a_threshold_folded_into_the_intercept_moves_the_half_point_to_it():
    from medfss.registration.selection import with_threshold

    c = coefficients(0.3, prior_0mm=2.0)
    features = np.linspace(-2, 2, 401)[:, None] * np.eye(len(FEATURES))[FEATURES.index("prior_0mm")]  # [401, F]
    for t in (0.2, 0.5, 0.7):
        assert np.array_equal(logistic(features, with_threshold(c, t)) > 0.5, logistic(features, c) > t)
    assert with_threshold(c, 0.5) == c


def test_the_sampled_dice_is_each_querys_dice_on_its_voxels_averaged():
    from medfss.registration.selection import sampled_dice

    labels = np.array([True, True, False, False])
    first = (np.array([0.9, 0.4, 0.6, 0.1]), labels)  # at 0.5: TP 1, FP 1, FN 1 -> 50; at 0.3: TP 2, FP 1 -> 80
    empty = (np.zeros(3), np.zeros(3, bool))  # neither label nor prediction: left out
    assert sampled_dice([first, empty], 0.5) == pytest.approx(50.0)
    assert sampled_dice([first, empty], 0.3) == pytest.approx(80.0)
    assert np.isnan(sampled_dice([empty], 0.5))


def test_a_class_takes_the_threshold_that_gave_the_best_held_out_dice():
    from medfss.registration.selection import nested_learned_fusion

    rng = np.random.default_rng(3)

    def fold_samples():  # a thin organ: labels where prior_0mm > 0.8, the fit below puts 1/2 at prior_0mm = 0.5
        features = rng.random((2000, len(FEATURES)))
        return {"LV-MYO": [(features, features[:, FEATURES.index("prior_0mm")] > 0.8)]}

    samples = {f: fold_samples() for f in range(3)}
    selection = nested_learned_fusion(samples, GuidanceConfig(), thresholds=(0.3, 0.5, 0.9),
                                      fit=lambda pairs, features: coefficients(-10.0, prior_0mm=20.0))
    entry = selection["folds"]["0"]["classes"]["LV-MYO"]
    assert entry["form"] == "shared" and entry["threshold"] == 0.9  # p > 0.9 <=> prior_0mm > 0.61: nearest 0.8
    assert entry["inner_sampled_dice"]["0.9"] > entry["inner_sampled_dice"]["0.5"]
    assert entry["config"]["coefficients"][0] == pytest.approx(-10.0 - np.log(9.0))
    assert selection["thresholds"] == [0.3, 0.5, 0.9] and not selection["per_class"]


def test_the_log_loss_of_held_out_predictions_is_their_summed_negative_log_likelihood():
    from medfss.registration.selection import log_loss

    predictions = [(np.array([0.5, 0.5], np.float32), np.array([True, False])),
                   (np.array([0.8], np.float32), np.array([False]))]
    loss, count = log_loss(predictions)
    assert count == 3 and loss == pytest.approx(2 * np.log(2) - np.log(0.2), rel=1e-6)
    assert log_loss([]) == (0.0, 0)
