"""Atlas registration (ANTsPy): the baseline and the volume-predictor path of the protocol and of segment."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from medfss.errors import ConfigError
from medfss.evaluation.protocol import ProtocolConfig, evaluate
from medfss.inference import SupportScan, VolumePredictor, predict_class
from medfss.registration.ants import JointLabelFusionConfig, RegistrationConfig

pytest.importorskip("ants")  # the registration extra


TEXTURE = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((80, 80, 40)), (4, 4, 2))


def blob_volume(shift: tuple[int, int, int] = (0, 0, 0), shape=(64, 64, 24)) -> tuple[np.ndarray, np.ndarray]:
    """A z-scored smooth random 'anatomy' with a bright ellipsoid 'organ', all moved by ``shift`` voxels.

    Returns (image, mask), both [64, 64, 24]; the image has negative values, as z-scored scans do.
    """
    sx, sy, sz = shift
    texture = TEXTURE[8 + sx:8 + sx + shape[0], 8 + sy:8 + sy + shape[1], 8 + sz:8 + sz + shape[2]]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))  # [3, H, W, D]
    centre = np.array([32 - sx, 32 - sy, 12 - sz])[:, None, None, None]
    organ = (((grid - centre) / np.array([10, 8, 5])[:, None, None, None]) ** 2).sum(0) <= 1
    image = texture / texture.std() + 2.0 * organ
    return ((image - image.mean()) / image.std()).astype(np.float32), organ


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_config_is_checked():
    with pytest.raises(ConfigError, match="transform must be one of affine, syn"):
        RegistrationConfig(transform="rigid")
    with pytest.raises(ConfigError, match="syn_iterations must be iteration counts"):
        RegistrationConfig(syn_iterations=(40, -1))
    assert RegistrationConfig(syn_iterations=[10, 5]).syn_iterations == (10, 5)


@pytest.mark.parametrize("transform", ["affine", "syn"])
def test_registration_recovers_a_moved_organ(transform):
    from medfss.registration.predictor import RegistrationPredictor

    fixed, fixed_mask = blob_volume((4, -3, 2))
    moving, moving_mask = blob_volume()
    assert dice(fixed_mask, moving_mask) < 0.6  # the organs overlap poorly before registration
    predictor = RegistrationPredictor(RegistrationConfig(transform=transform, syn_iterations=(20, 10, 0), threads=1))
    assert isinstance(predictor, VolumePredictor)
    probability = predictor.segment_volume([SupportScan(moving, moving_mask, (1.0, 1.0, 2.0))], fixed, (1.0, 1.0, 2.0))
    assert probability.shape == fixed.shape and set(np.unique(probability)) <= {0.0, 1.0}
    assert dice(probability > 0.5, fixed_mask) > 0.95


REPEAT_REGISTRATION = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_registration import blob_volume
from medfss.registration.ants import RegistrationConfig, register

fixed, _ = blob_volume((4, -3, 2))
moving, moving_mask = blob_volume()
config = RegistrationConfig(transform="syn", syn_iterations=(20, 10, 0), threads=1, seed=int(sys.argv[2]))
warps = [register(fixed, (1.0, 1.0, 2.0), moving, (1.0, 1.0, 2.0), config).warp(
    moving_mask.astype(np.float32), (1.0, 1.0, 2.0)) for _ in range(2)]  # linear: any change in the transform shows
print(float(np.abs(warps[0] - warps[1]).max()))
"""


def test_a_registration_at_one_thread_repeats_bit_for_bit():
    import subprocess
    import sys
    from pathlib import Path

    # a fresh process: ITK fixes its thread count at its first use in a process, as a command-line run does
    def largest_change(seed: int) -> float:
        run = subprocess.run([sys.executable, "-c", REPEAT_REGISTRATION, str(Path(__file__).parent), str(seed)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"})  # whatever the user's
        return float(run.stdout.split()[-1])

    assert RegistrationConfig().seed != 0  # ANTs' clock seed: another transform on every run
    assert largest_change(RegistrationConfig().seed) == 0.0


def test_a_large_volume_is_registered_on_a_coarser_copy_and_warped_onto_its_full_grid():
    from medfss.registration.ants import coarsening_factor, register

    assert coarsening_factor((64, 64, 24), 64 * 64 * 24) == 1.0
    assert coarsening_factor((64, 64, 24), 64 * 64 * 24 // 8) == pytest.approx(2.0)
    fixed, fixed_mask = blob_volume((4, -3, 2))
    moving, moving_mask = blob_volume()
    # mean squares: on this tiny same-contrast pair, mutual information's random sampling lands in a wrong
    # optimum about once in ten runs (Dice 0.07 in CI), whatever its seed; this test is about the coarse grid
    registration = register(fixed, (1.0, 1.0, 2.0), moving, (1.0, 1.0, 2.0),
                            RegistrationConfig(transform="affine", metric="meansquares", threads=1,
                                               max_voxels=64 * 64 * 24 // 3))
    assert registration.fixed_shape == fixed.shape  # the reference grid is the full query grid
    warped = registration.warp(moving_mask.astype(np.float32), (1.0, 1.0, 2.0), interpolator="nearestNeighbor")
    assert warped.shape == fixed.shape and warped.dtype == np.float32
    assert dice(warped > 0.5, fixed_mask) > 0.9


@pytest.mark.parametrize("transform", ["affine", "syn"])
def test_a_warp_slab_by_slab_gives_the_warp_of_the_whole_grid(transform):
    """Large CTs are warped a slab at a time (bounded memory): the values of one warp of the whole grid, to rounding."""
    from dataclasses import replace

    from medfss.registration.ants import register

    fixed, _ = blob_volume((4, -3, 2))
    moving, moving_mask = blob_volume()
    whole = register(fixed, (1.0, 1.0, 2.0), moving, (1.0, 1.0, 2.0),
                     RegistrationConfig(transform=transform, syn_iterations=(10, 0), threads=1))
    assert whole.config.max_voxels >= fixed.size  # one slab
    slabs = replace(whole, config=replace(whole.config, max_voxels=5 * 64 * 24))  # 13 slabs of 5 rows, the last of 4
    np.testing.assert_allclose(slabs.warp(moving, (1.0, 1.0, 2.0)), whole.warp(moving, (1.0, 1.0, 2.0)), atol=1e-4)
    mask = moving_mask.astype(np.float32)
    np.testing.assert_array_equal(slabs.warp(mask, (1.0, 1.0, 2.0), interpolator="nearestNeighbor"),
                                  whole.warp(mask, (1.0, 1.0, 2.0), interpolator="nearestNeighbor"))


def test_max_voxels_enters_the_cache_key_only_where_it_coarsens(tmp_path):
    from medfss.registration.predictor import RegistrationPredictor

    small, large = RegistrationPredictor(cache_dir=tmp_path), \
        RegistrationPredictor(RegistrationConfig(max_voxels=2 ** 23), cache_dir=tmp_path)
    key = ("a", "b")
    assert small._folder(key, [(64, 64, 24)]) == large._folder(key, [(64, 64, 24)])
    assert small._folder(key, [(512, 512, 600)]) != large._folder(key, [(512, 512, 600)])


def test_registrations_are_cached_per_image_pair_and_votes_are_fractions(monkeypatch):
    from medfss.registration import predictor as module

    calls = []

    class Identity:
        def warp(self, array, spacing, interpolator="linear"):
            return array.astype(np.float32)

    def fake_register(fixed, fixed_spacing, moving, moving_spacing, config):
        calls.append(1)
        return Identity()

    monkeypatch.setattr(module, "register", fake_register)
    image, mask = blob_volume()
    other = mask.copy()
    other[:, :, :8] = False
    predictor = module.RegistrationPredictor()
    supports = [SupportScan(image, mask), SupportScan(image + 1, other)]
    votes = predictor.segment_volume(supports, image, (1.0, 1.0, 1.0))
    assert sorted(np.unique(votes)) == [0.0, 0.5, 1.0]
    np.testing.assert_array_equal(votes == 1.0, mask & other)
    predictor.segment_volume(supports, image, (1.0, 1.0, 1.0))  # another class of the same pairs
    assert len(calls) == 2


class WarpedTruth:
    """A volume predictor with an identity registration: the support's mask, plus a speck far from it."""

    def segment_volume(self, supports, query, query_spacing):
        out = supports[0].mask.astype(np.float32)
        out[0, 0, :] = 1.0
        return out


def test_protocol_runs_volume_predictors_on_the_whole_volume_or_the_gt_extent(pair_dataset):
    image, mask = blob_volume()
    data = pair_dataset(image, mask.astype(np.int64), (1.0, 1.0, 2.0))

    def score(extent):
        result = evaluate(data, lambda f, c: WarpedTruth(), ProtocolConfig(dataset="TOY", folds=(0,), extent=extent),
                          progress=False)
        return result.runs[0].queries[0].scores.dice

    assert score("gt") < 100  # the specks on the organ's slices are kept
    assert score("estimated") == pytest.approx(100)  # the whole volume, then its largest component


def test_predict_class_cuts_a_volume_prediction_to_a_given_extent():
    image, mask = blob_volume()
    top, slab = predict_class(WarpedTruth(), [SupportScan(image, mask)], image, (1.0, 1.0, 1.0), (5, 9))
    assert top == 5 and slab.shape == (64, 64, 5)
    top, slab = predict_class(WarpedTruth(), [SupportScan(image, mask)], image, (1.0, 1.0, 1.0), None)
    assert top == 0 and slab.shape == image.shape


def test_segment_by_registration_writes_the_label_on_the_query_grid(tmp_path):
    from medfss.cli import main

    fixed, fixed_mask = blob_volume((4, -3, 2))
    moving, moving_mask = blob_volume()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(fixed * 100, affine), tmp_path / "q.nii.gz")
    nib.save(nib.Nifti1Image(moving * 100, affine), tmp_path / "s.nii.gz")
    nib.save(nib.Nifti1Image(moving_mask.astype(np.uint8) * 3, affine), tmp_path / "m.nii.gz")
    code = main(["segment", "--method", "registration", "--registration-transform", "affine",
                 "--query", str(tmp_path / "q.nii.gz"), "--support-image", str(tmp_path / "s.nii.gz"),
                 "--support-mask", str(tmp_path / "m.nii.gz"), "--label", "3", "--out", str(tmp_path / "p.nii.gz"),
                 "--quiet"])
    assert code == 0
    out = nib.load(tmp_path / "p.nii.gz")
    assert out.shape == fixed.shape and np.allclose(out.affine, affine)
    assert dice(np.asarray(out.dataobj) == 3, fixed_mask) > 0.95


def test_the_cache_key_of_an_unset_syn_metric_is_the_key_from_before_the_option(tmp_path):
    import hashlib
    import json

    from medfss.registration.predictor import RegistrationPredictor

    config = RegistrationConfig()
    before = {k: v for k, v in asdict(config).items() if k not in ("threads", "max_voxels", "syn_metric")}
    name = hashlib.blake2b(f"ab{json.dumps(before, sort_keys=True)}".encode(), digest_size=16).hexdigest()
    shapes = [(64, 64, 24)]
    assert RegistrationPredictor(config, cache_dir=tmp_path)._folder(("a", "b"), shapes).name == name
    cc = RegistrationPredictor(RegistrationConfig(syn_metric="CC"), cache_dir=tmp_path)._folder(("a", "b"), shapes)
    assert cc.name != name
    with pytest.raises(ConfigError, match="syn_metric must be one of"):
        RegistrationConfig(syn_metric="NCC")


def test_segment_by_registration_refuses_a_checkpoint(tmp_path, capsys):
    from medfss.cli import main

    code = main(["segment", "--method", "registration", "--checkpoint", "x.pt", "--query", "q.nii.gz",
                 "--support-image", "s.nii.gz", "--support-mask", "m.nii.gz", "--label", "1", "--out",
                 str(tmp_path / "p.nii.gz")])
    assert code == 2 and "uses no network" in capsys.readouterr().err


def test_a_disk_cache_serves_a_second_predictor_without_registering(tmp_path, monkeypatch):
    from medfss.registration import predictor as module

    fixed, fixed_mask = blob_volume((4, -3, 2))
    moving, moving_mask = blob_volume()
    config = RegistrationConfig(transform="affine", threads=1)
    support = SupportScan(moving, moving_mask)
    previous = os.umask(0o022)  # a shared machine's
    try:
        first = module.RegistrationPredictor(config, cache_dir=tmp_path).segment_volume([support], fixed,
                                                                                         (1.0, 1.0, 1.0))
    finally:
        os.umask(previous)
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert folder.stat().st_mode & 0o777 == 0o755  # other users read the cache, as they read any output

    def fail(*args, **kwargs):
        raise AssertionError("registered again despite the cache")

    monkeypatch.setattr(module, "register", fail)
    second = module.RegistrationPredictor(config, cache_dir=tmp_path).segment_volume([support], fixed, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(first, second)


class IdentityRegistration:
    def warp(self, array, spacing, interpolator="linear"):
        return np.asarray(array, dtype=np.float32)


def identity_registrations(label_fusion: str = "vote", cache_dir=None, **options):
    """A RegistrationPredictor for supports already on the query's grid: every registration is the identity."""
    from medfss.registration.predictor import RegistrationPredictor

    class IdentityRegistrations(RegistrationPredictor):
        def registration(self, support, query, query_spacing):
            return IdentityRegistration()

    return IdentityRegistrations(RegistrationConfig(threads=1), cache_dir=cache_dir, label_fusion=label_fusion,
                                 **options)


class ConstantNetwork:
    def __init__(self, value: float):
        self.value = value
        self.slices = []

    def predict(self, support_images, support_masks, query_images):
        self.slices.append(query_images.shape[0])
        return torch.full_like(query_images, self.value)


def test_guided_prediction_fuses_the_network_with_the_soft_registered_prior_on_the_registered_extent():
    from medfss.registration.guided import GuidanceConfig, GuidedPredictor

    image, mask = blob_volume()  # the organ spans slices 7..17
    network = ConstantNetwork(0.8)
    guided = GuidedPredictor(network, identity_registrations(),
                             GuidanceConfig(network_weight=0.25, prior_sigma_mm=0.0, margin_slices=1, fusion="average"))
    probability = guided.segment_volume([SupportScan(image, mask)], image, (1.0, 1.0, 1.0))
    covered = np.flatnonzero(mask.any(axis=(0, 1)))
    extent = slice(covered[0] - 1, covered[-1] + 2)
    assert sum(network.slices) == extent.stop - extent.start  # the network ran on the registered extent only
    np.testing.assert_allclose(probability[..., extent], 0.25 * 0.8 + 0.75 * mask[..., extent], rtol=1e-6)
    assert not probability[..., :extent.start].any() and not probability[..., extent.stop:].any()
    assert guided.last_guidance == {"registered_supports": 1, "supports": 1, "failures": [],
                                    "network_slices": [extent.start, extent.stop - 1]}


def test_the_learned_fusion_reads_both_networks_and_is_zero_outside_the_registered_extent():
    from medfss.registration.fusion import FEATURES
    from medfss.registration.guided import GuidanceConfig, GuidedPredictor

    image, mask = blob_volume()
    network = ConstantNetwork(0.8)
    c = np.zeros(len(FEATURES) + 1)
    c[0], c[1 + FEATURES.index("prior_0mm")] = -5.0, 10.0  # trust the warped mask alone: sigmoid(+-5)
    config = GuidanceConfig(fusion="learned", coefficients=tuple(c), margin_slices=1)
    guided = GuidedPredictor(network, identity_registrations(), config)
    probability = guided.segment_volume([SupportScan(image, mask)], image, (1.0, 1.0, 1.0))
    covered = np.flatnonzero(mask.any(axis=(0, 1)))
    extent = slice(covered[0] - 1, covered[-1] + 2)
    assert sum(network.slices) == 2 * (extent.stop - extent.start)  # the registered and the chunk rule
    np.testing.assert_allclose(probability[..., extent], np.where(mask, 1 / (1 + np.exp(-5)), 1 / (1 + np.exp(5)))
                               [..., extent], rtol=1e-5)
    assert not probability[..., :extent.start].any() and not probability[..., extent.stop:].any()


def test_the_learned_fusion_reads_k_supports_as_the_fraction_of_warped_masks():
    from medfss.registration.fusion import FEATURES
    from medfss.registration.guided import GuidanceConfig, GuidedPredictor

    image, mask = blob_volume()
    half = mask.copy()
    half[:32] = False  # the second shot labels half of the organ
    c = np.zeros(len(FEATURES) + 1)
    c[1 + FEATURES.index("prior_0mm")] = 1.0  # p = sigmoid(prior): 0.5, 0.62 and 0.73 for 0, 1/2 and 1
    guided = GuidedPredictor(ConstantNetwork(0.3), identity_registrations(),
                             GuidanceConfig(fusion="learned", coefficients=tuple(c), margin_slices=0))
    probability = guided.segment_volume([SupportScan(image, mask), SupportScan(image, half)], image, (1.0, 1.0, 1.0))
    expected = 1 / (1 + np.exp(-(mask.astype(float) + half) / 2))
    covered = np.flatnonzero(mask.any(axis=(0, 1)))
    np.testing.assert_allclose(probability[..., covered], expected[..., covered], rtol=1e-5)
    assert guided.last_guidance["registered_supports"] == 2


def test_a_failed_registration_falls_back_to_the_network_on_the_position_extent():
    from medfss.registration.guided import GuidanceConfig, GuidedPredictor

    image, mask = blob_volume()
    shrunk = mask.copy()
    shrunk[:, :, :12] = False  # the warped organ is far smaller than the support's: a failure

    class Warp:
        def warp(self, array, spacing, interpolator="linear"):
            return shrunk.astype(np.float32) if interpolator == "nearestNeighbor" else array

    shrinking = identity_registrations()
    shrinking.registration = lambda support, query, query_spacing: Warp()
    network = ConstantNetwork(0.9)
    guided = GuidedPredictor(network, shrinking, GuidanceConfig(max_volume_ratio=1.5))
    probability = guided.segment_volume([SupportScan(image, mask)], image, (1.0, 1.0, 1.0))
    assert guided.last_guidance["fallback"] == "position" and "mL" in guided.last_guidance["failures"][0]
    assert set(np.unique(probability)) == {0.0, np.float32(0.9)}  # the network alone


def test_registered_plan_serves_each_slice_with_the_warped_supports_same_slice():
    from medfss.inference import registered_plan

    image = np.broadcast_to(np.arange(10, dtype=np.float32), (8, 8, 10)).copy()
    mask = np.zeros((8, 8, 10), bool)
    mask[2:5, 2:5, 3:6] = True
    plan = registered_plan([SupportScan(image, mask)], (1, 7))
    served = {int(g.query_slices[0]): float(g.support_images[0, 0, 0]) for g in plan.groups}
    assert served == {1: 3, 2: 3, 3: 3, 4: 4, 5: 5, 6: 5, 7: 5}  # outside the mask: its nearest labelled slice
    assert all(g.support_masks.sum() > 0 for g in plan.groups)


def test_segment_with_registration_guidance_reports_what_it_used(tmp_path, checkpoint):
    import json

    from medfss.cli import main

    fixed, _ = blob_volume((4, -3, 2))
    moving, moving_mask = blob_volume()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(fixed * 100, affine), tmp_path / "q.nii.gz")
    nib.save(nib.Nifti1Image(moving * 100, affine), tmp_path / "s.nii.gz")
    nib.save(nib.Nifti1Image(moving_mask.astype(np.uint8), affine), tmp_path / "m.nii.gz")
    # the test checkpoint is barely trained: a network weight below 0.5 lets the registered prior draw the label
    code = main(["segment", "--guidance", "registration", "--registration-transform", "affine",
                 "--guidance-weight", "0.25", "--checkpoint", str(checkpoint), "--query", str(tmp_path / "q.nii.gz"),
                 "--support-image", str(tmp_path / "s.nii.gz"), "--support-mask", str(tmp_path / "m.nii.gz"),
                 "--label", "1", "--out", str(tmp_path / "p.nii.gz"), "--summary", str(tmp_path / "s.json"),
                 "--quiet"])
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["inputs"]["model"]["guidance"]["registration"]["transform"] == "affine"
    assert summary["classes"]["1"]["guidance"]["registered_supports"] == 1
    start, stop = summary["classes"]["1"]["extent"]  # the slices the network predicted, not the whole scan
    assert summary["settings"]["axis"] == 2 and 0 < start < stop < fixed.shape[2]
    labelled = np.flatnonzero(np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj).any(axis=(0, 1)))
    assert labelled.size and start <= labelled[0] and labelled[-1] < stop


def _run(fold: int, dice: float):
    from medfss.evaluation.metrics import SegmentationScores
    from medfss.evaluation.protocol import QueryResult, RunResult

    scores = SegmentationScores(dice=dice, jaccard=0.0, hd95=0.0, asd=0.0)
    return RunResult(fold, 0, ("s",), "liver", (QueryResult("q", scores),))


def test_nested_selection_chooses_each_fold_on_the_other_folds_only():
    from medfss.evaluation.protocol import EvaluationResult
    from medfss.registration.guided import GuidanceConfig
    from medfss.registration.selection import nested_selection

    protocol = ProtocolConfig(dataset="TOY", classes=("liver",), folds=(0, 1, 2), extent="estimated")
    dice = {GuidanceConfig(network_weight=0.0): (90, 10, 10),  # best on fold 0 only
            GuidanceConfig(network_weight=0.5): (0, 60, 60),  # best on folds 1 and 2
            GuidanceConfig(network_weight=1.0): (55, 55, 55)}
    results = {c: EvaluationResult("x", protocol, tuple(_run(f, d) for f, d in enumerate(v)), 0.0)
               for c, v in dice.items()}
    selection = nested_selection(results)
    chosen = {f: c["config"]["network_weight"] for f, c in selection["folds"].items()}
    assert chosen == {"0": 0.5, "1": 1.0, "2": 1.0}  # fold 0's own 90 never counts for fold 0
    assert [selection["folds"][f]["test_mean_dice"] for f in "012"] == [0, 55, 55]
    assert selection["folds"]["0"]["inner_mean_dice"] == 60
    assert selection["nested_mean_dice"] == pytest.approx(110 / 3)
    assert selection["best_overall"] == {"config": asdict(GuidanceConfig(network_weight=1.0)), "mean_dice": 55}


def test_a_sweep_scores_each_fusion_as_the_evaluation_of_that_guided_predictor(pair_dataset):
    from medfss.registration.guided import GuidanceConfig, GuidedPredictor
    from medfss.registration.selection import FusionGrid, sweep

    image, mask = blob_volume()
    data = pair_dataset(image, mask.astype(np.int64), (1.0, 1.0, 2.0))
    protocol = ProtocolConfig(dataset="TOY", folds=(0,), extent="estimated")
    configs = FusionGrid(network_weights=(0.0, 0.5, 1.0), prior_sigmas_mm=(0.0, 3.0)).configs()
    results = sweep(data, lambda f, c: ConstantNetwork(0.7), identity_registrations(), protocol, configs,
                    progress=False).results
    assert list(results) == configs
    for config in configs:
        evaluated = evaluate(data, lambda f, c: GuidedPredictor(ConstantNetwork(0.7), identity_registrations(), config),
                             protocol, progress=False)
        assert results[config].mean_dice == pytest.approx(evaluated.mean_dice, abs=1e-4), config
    average = {"fusion": "average", "coefficients": None}
    assert results[GuidanceConfig(network_weight=0.0, prior_sigma_mm=0.0, **average)].mean_dice == pytest.approx(100)
    assert results[GuidanceConfig(network_weight=1.0, prior_sigma_mm=0.0, **average)].mean_dice < 90


def test_a_sweep_draws_the_learned_fusions_voxels_and_a_fit_on_them_segments_the_organ(pair_dataset):
    from medfss.registration.fusion import FEATURES, fit_coefficients
    from medfss.registration.guided import GuidanceConfig, GuidedPredictor
    from medfss.registration.selection import sweep

    image, mask = blob_volume()
    data = pair_dataset(image, mask.astype(np.int64), (1.0, 1.0, 2.0))
    protocol = ProtocolConfig(dataset="TOY", folds=(0,), extent="estimated")
    swept = sweep(data, lambda f, c: ConstantNetwork(0.7), identity_registrations(), protocol, [],
                  samples_per_query=500, progress=False)
    assert swept.results == {}
    (class_name, ((features, labels),)), = swept.samples[0].items()
    assert class_name == data.spec.eval_classes[0]
    assert features.shape == (500, len(FEATURES)) and labels.dtype == bool and 0 < labels.mean() < 1
    config = GuidanceConfig(fusion="learned", coefficients=fit_coefficients(swept.samples[0][class_name]))
    result = evaluate(data, lambda f, c: GuidedPredictor(ConstantNetwork(0.7), identity_registrations(), config),
                      protocol, progress=False)
    assert result.mean_dice > 85  # the constant network says nothing: the fit leans on the prior and eq. 2


def test_a_sweep_refuses_the_gt_extent(pair_dataset):
    from medfss.registration.selection import FusionGrid, sweep

    image, mask = blob_volume()
    data = pair_dataset(image, mask.astype(np.int64), (1.0, 1.0, 2.0))
    with pytest.raises(ConfigError, match="estimated"):
        sweep(data, lambda f, c: ConstantNetwork(0.7), identity_registrations(),
              ProtocolConfig(dataset="TOY", folds=(0,)), FusionGrid().configs(), progress=False)


def test_a_guidance_selection_file_gives_each_fold_its_choice_and_other_data_the_best_overall(tmp_path):
    import json

    from medfss.registration.guided import GuidanceConfig
    from medfss.registration.selection import read_fold_configs

    path = tmp_path / "selection.json"
    fold3 = GuidanceConfig(network_weight=0.25, prior_sigma_mm=2.5, support_slices="registered")
    best = GuidanceConfig(network_weight=0.75)
    path.write_text(json.dumps({"protocol": {"dataset": "CHAOST2"}, "selection": {
        "folds": {"3": {"config": asdict(fold3)}}, "best_overall": {"config": asdict(best)}}}))
    assert read_fold_configs(path, "CHAOST2", [3]) == ({3: fold3}, {})
    assert read_fold_configs(path, "CMR", [0, 1]) == ({0: best, 1: best}, {})
    spleen = GuidanceConfig(network_weight=0.0)
    path.write_text(json.dumps({"protocol": {"dataset": "CHAOST2"}, "selection": {
        "folds": {"3": {"config": asdict(fold3), "classes": {"spleen": {"config": asdict(spleen)}}}},
        "best_overall": {"config": asdict(best)}}}))
    assert read_fold_configs(path, "CHAOST2", [3]) == ({3: fold3}, {3: {"spleen": spleen}})
    assert read_fold_configs(path, "CMR", [3]) == ({3: best}, {})  # another data set's classes are not ours
    with pytest.raises(ConfigError, match=r"no guidance for folds \[1\]"):
        read_fold_configs(path, "CHAOST2", [1, 3])
    with pytest.raises(ConfigError, match="does not exist"):
        read_fold_configs(tmp_path / "missing.json", "CHAOST2", [3])
    path.write_text(json.dumps({"protocol": {"dataset": "CHAOST2"},
                                "selection": {"folds": {"3": {"config": {"network_weight": 2.0}}}}}))
    with pytest.raises(ConfigError, match="not a selection file"):
        read_fold_configs(path, "CHAOST2", [3])
    before_learned = {"network_weight": 0.25, "prior_sigma_mm": 2.5, "margin_slices": 1, "support_slices": "chunks",
                      "max_volume_ratio": 3.0, "min_correlation": 0.2}  # a file written before the learned fusion
    path.write_text(json.dumps({"protocol": {"dataset": "CHAOST2"},
                                "selection": {"folds": {"3": {"config": before_learned}}}}))
    assert read_fold_configs(path, "CHAOST2", [3])[0][3].fusion == "average"


def test_a_guidance_selection_without_registration_guidance_is_a_one_line_error(tmp_path, capsys, data_root):
    from medfss.cli import main

    code = main(["evaluate", "--model", "alpnet", "--checkpoint", str(tmp_path / "m.pt"), "--dataset", "CHAOST2",
                 "--data-root", str(data_root), "--guidance-selection", str(tmp_path / "s.json"),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "add --guidance registration" in capsys.readouterr().err



def test_the_time_estimate_scales_with_voxels_threads_and_the_coarsening_cap(monkeypatch):
    from medfss.registration.ants import ITK_THREADS, SECONDS_PER_MILLION_VOXELS, expected_seconds, time_estimate

    monkeypatch.delenv(ITK_THREADS, raising=False)  # ITK's count not fixed yet: the config's counts
    one_thread = RegistrationConfig(transform="affine", threads=1)
    assert expected_seconds((100, 100, 100), one_thread) == SECONDS_PER_MILLION_VOXELS["affine"]
    assert expected_seconds((100, 100, 100), RegistrationConfig(transform="affine", threads=4)) == \
        pytest.approx(tuple(s / 2 for s in SECONDS_PER_MILLION_VOXELS["affine"]))
    syn = RegistrationConfig(threads=1, max_voxels=2 ** 20)
    assert expected_seconds((512, 512, 600), syn) == expected_seconds((1024, 1024, 1), syn)  # registered coarse
    low, high = SECONDS_PER_MILLION_VOXELS["syn"]
    assert time_estimate((100, 100, 100), 3, RegistrationConfig(threads=1)) == \
        f"about {3 * low:.0f}-{3 * high:.0f} s with 1 thread"


def test_itk_threads_are_fixed_once_per_process_and_a_later_other_count_is_warned(monkeypatch):
    from medfss.registration.ants import ITK_THREADS, itk_threads, time_estimate

    monkeypatch.delenv(ITK_THREADS, raising=False)
    assert itk_threads(3) == 3
    assert time_estimate((100, 100, 100), 1, RegistrationConfig(threads=1)).endswith("with 3 threads")
    with pytest.warns(UserWarning, match="ITK runs at 3 threads in this process .* not the 2 asked for"):
        assert itk_threads(2) == 3
    assert itk_threads() == 3  # asking for no count of its own: no warning
    monkeypatch.setenv(ITK_THREADS, "5")  # the user's count stands
    assert itk_threads() == 5


def test_every_use_of_ants_fixes_itks_thread_count_first_a_warp_from_the_cache_too(monkeypatch):
    from medfss.registration.ants import ITK_THREADS, Registration, register

    monkeypatch.delenv(ITK_THREADS, raising=False)
    fixed, _ = blob_volume()
    warp_only = Registration(fixed.shape, (1.0, 1.0, 1.0), [], RegistrationConfig(threads=3))
    warp_only.warp(fixed, (1.0, 1.0, 1.0))  # no transform: the identity
    assert os.environ[ITK_THREADS] == "3"
    with pytest.warns(UserWarning, match="ITK runs at 3 threads"):
        register(fixed, (1.0, 1.0, 1.0), fixed, (1.0, 1.0, 1.0),
                 RegistrationConfig(transform="affine", aff_iterations=(1, 1, 1, 1), threads=1))


def test_the_registration_notice_reads_the_query_header_and_survives_a_bad_file(tmp_path, monkeypatch):
    from medfss.registration.ants import ITK_THREADS, registration_notice

    monkeypatch.delenv(ITK_THREADS, raising=False)  # ITK's count not fixed yet: the config's

    path = tmp_path / "query.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((100, 100, 100), np.float32), np.eye(4)), path)
    config = RegistrationConfig(threads=1)
    assert registration_notice(path, 2, config).startswith("registering 2 support scans onto the query with "
                                                           "ANTsPy (syn; about 40-80 s with 1 thread")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    assert registration_notice(tmp_path / "broken.nii.gz", 1, config) == \
        "registering 1 support scan onto the query with ANTsPy (syn)"


def test_a_guide_gives_a_class_of_a_fold_its_own_config_and_every_other_the_folds_or_its_default():
    from medfss.registration.guided import GuidanceConfig, Guide
    from medfss.registration.predictor import RegistrationPredictor

    fold0, myocardium = GuidanceConfig(network_weight=0.25), GuidanceConfig(network_weight=0.0)
    guide = Guide(RegistrationPredictor(), GuidanceConfig(), {0: fold0}, {0: {"LV-MYO": myocardium}})
    assert guide.config_for(0, "LV-MYO") == myocardium
    assert guide.config_for(0, "RV") == guide.config_for(0) == fold0
    assert guide.config_for(1, "LV-MYO") == guide.config_for(None) == GuidanceConfig()
    assert guide(ConstantNetwork(0.5), 0, "LV-MYO").config == myocardium
    record = guide.record()
    assert record["fold_configs"]["0"]["network_weight"] == 0.25
    assert record["class_configs"] == {"0": {"LV-MYO": asdict(myocardium)}}


def test_a_registration_check_measures_the_volume_ratio_and_the_correlation_and_names_the_failure():
    from medfss.registration.guided import GuidanceConfig, check_registration, registration_failure

    image, mask = blob_volume()
    warped_mask = mask.copy()
    warped_mask[:, :, :12] = False
    check = check_registration(SupportScan(image, mask, (1.0, 1.0, 2.0)), SupportScan(image, warped_mask),
                               image, (1.0, 1.0, 4.0))  # the query's voxels are twice as deep
    assert check.support_ml == pytest.approx(mask.sum() * 2 / 1000)
    assert check.volume_ratio == pytest.approx(2 * warped_mask.sum() / mask.sum())
    assert check.correlation == pytest.approx(1.0)
    assert registration_failure(check, GuidanceConfig()) is None
    assert "mL" in registration_failure(check, GuidanceConfig(max_volume_ratio=1.01))
    flipped = check_registration(SupportScan(image, mask), SupportScan(-image, mask), image, (1.0, 1.0, 1.0))
    assert flipped.correlation == pytest.approx(-1.0) and "r = -1.00" in registration_failure(flipped, GuidanceConfig())
    empty = check_registration(SupportScan(image, np.zeros_like(mask)), SupportScan(image, mask), image, (1, 1, 1))
    assert np.isnan(empty.volume_ratio) and registration_failure(empty, GuidanceConfig(max_volume_ratio=100))


def test_a_results_file_reads_back_into_the_evaluation_it_was_written_from(pair_dataset):
    from medfss.evaluation.protocol import EvaluationResult
    from medfss.registration.guided import GuidedPredictor

    image, mask = blob_volume()
    data = pair_dataset(image, mask.astype(np.int64), (1.0, 1.0, 2.0))
    result = evaluate(data, lambda f, c: GuidedPredictor(ConstantNetwork(0.7), identity_registrations()),
                      ProtocolConfig(dataset="TOY", folds=(0,), extent="estimated"), progress=False)
    again = EvaluationResult.from_json(result.to_json())
    assert again.config == result.config and again.mean_dice == result.mean_dice
    assert again.to_json() == result.to_json()


def _thresholds_case():
    """Three folds, one class, two queries a fold: registration B of each fold is bad (ratio 2.5, guided Dice 10).

    The position rule scores 50 everywhere; fold 2's good registration has ratio 1.8 and guided Dice 90.
    """
    from medfss.evaluation.metrics import SegmentationScores
    from medfss.evaluation.protocol import EvaluationResult, QueryResult, RunResult
    from medfss.registration.guided import RegistrationCheck

    def result(dice: dict) -> EvaluationResult:
        protocol = ProtocolConfig(dataset="TOY", classes=("liver",), folds=(0, 1, 2), extent="estimated")
        runs = tuple(RunResult(f, 0, ("s",), "liver", tuple(
            QueryResult(q, SegmentationScores(dice=dice[(f, q)], jaccard=0.0, hd95=0.0, asd=0.0)) for q in "AB")
        ) for f in (0, 1, 2))
        return EvaluationResult("x", protocol, runs, 0.0)

    guided = result({(f, q): 10.0 if q == "B" else 90.0 for f in (0, 1, 2) for q in "AB"})
    fallback = result({(f, q): 50.0 for f in (0, 1, 2) for q in "AB"})
    ratio = {"A": 1.1, "B": 2.5}
    checks = {(f, 0, "liver", q): RegistrationCheck(1.0, 1.8 if (f, q) == (2, "A") else ratio[q], 0.8)
              for f in (0, 1, 2) for q in "AB"}
    return guided, fallback, checks


def test_thresholded_scores_take_the_fallback_exactly_where_the_registration_is_rejected():
    from medfss.registration.failure import FailureThresholds, thresholded

    guided, fallback, checks = _thresholds_case()
    scores = {(r.fold, q.case_id): q.scores.dice for r in thresholded(guided, fallback, checks,
                                                                       FailureThresholds(2.0, 0.2)).runs
              for q in r.queries}
    assert scores == {(0, "A"): 90, (0, "B"): 50, (1, "A"): 90, (1, "B"): 50, (2, "A"): 90, (2, "B"): 50}
    del checks[(1, 0, "liver", "A")]
    with pytest.raises(ConfigError, match="no registration check"):
        thresholded(guided, fallback, checks, FailureThresholds(2.0, 0.2))


def test_failure_thresholds_are_chosen_per_fold_on_the_other_folds_and_ties_keep_the_first():
    from medfss.registration.failure import FailureThresholds, nested_failure_thresholds, untrusted

    guided, fallback, checks = _thresholds_case()
    candidates = [FailureThresholds(3.0, 0.2), FailureThresholds(5.0, 0.0), FailureThresholds(2.0, 0.2),
                  FailureThresholds(1.5, 0.2)]
    chosen = nested_failure_thresholds(guided, fallback, checks, candidates)
    ratios = {f: c["config"]["max_volume_ratio"] for f, c in chosen["folds"].items()}
    # 3 and 5 trust everything (50 a fold) and tie: 3 comes first; 2 rejects the B's (70); 1.5 also fold 2's A
    assert [row["rejected"] for row in chosen["table"]] == [0, 0, 3, 4]
    assert ratios == {"0": 2.0, "1": 2.0, "2": 2.0}  # for fold 2, folds 0-1 prefer 2 over 1.5 (70 = 70: first)
    assert chosen["nested_mean_dice"] == pytest.approx(70.0)
    assert untrusted(checks, {(f, "liver"): FailureThresholds(3.0, 0.2) for f in (0, 1, 2)}) == []
    assert len(untrusted(checks, {(f, "liver"): FailureThresholds(2.0, 0.2) for f in (0, 1, 2)})) == 3


def test_a_guided_selection_takes_each_folds_failure_thresholds_in_every_config():
    from medfss.registration.failure import with_thresholds
    from medfss.registration.guided import GuidanceConfig

    shared = asdict(GuidanceConfig())
    selection = {"folds": {"0": {"config": shared, "classes": {"liver": {"config": shared, "form": "class"}}},
                           "1": {"config": shared}},
                 "best_overall": {"config": shared}}
    chosen = {"folds": {"0": {"config": {"max_volume_ratio": 2.0, "min_correlation": 0.5}},
                        "1": {"config": {"max_volume_ratio": 5.0, "min_correlation": 0.0}}},
              "best_overall": {"config": {"max_volume_ratio": 1.5, "min_correlation": 0.4}}}
    updated = with_thresholds(selection, chosen)
    assert updated["folds"]["0"]["classes"]["liver"]["config"]["max_volume_ratio"] == 2.0
    assert updated["folds"]["0"]["classes"]["liver"]["form"] == "class"
    assert updated["folds"]["1"]["config"]["min_correlation"] == 0.0
    assert updated["best_overall"]["config"]["max_volume_ratio"] == 1.5
    assert updated["folds"]["0"]["config"]["coefficients"] == shared["coefficients"]
    assert selection["folds"]["0"]["config"]["max_volume_ratio"] == 3.0  # the input is left as it was
    assert updated["failure_thresholds"] is chosen


def test_registration_checks_measure_every_support_query_and_class_of_the_protocol(pair_dataset):
    from medfss.registration.failure import registration_checks

    image, mask = blob_volume()
    data = pair_dataset(image, mask.astype(np.int64), (1.0, 1.0, 2.0))
    checks = registration_checks(data, identity_registrations(), ProtocolConfig(dataset="TOY", folds=(0,)),
                                 progress=False)
    assert list(checks) == [(0, 0, "organ", "q")]
    assert checks[(0, 0, "organ", "q")].volume_ratio == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="one shot"):
        registration_checks(data, identity_registrations(), ProtocolConfig(dataset="TOY", folds=(0,), shots=2))


def test_select_failure_thresholds_refuses_a_gt_extent_evaluation_in_one_line(tmp_path, capsys, pair_dataset):
    from medfss.cli import main
    from medfss.registration.guided import GuidedPredictor

    image, mask = blob_volume()
    data = pair_dataset(image, mask.astype(np.int64), (1.0, 1.0, 2.0))
    result = evaluate(data, lambda f, c: GuidedPredictor(ConstantNetwork(0.7), identity_registrations()),
                      ProtocolConfig(dataset="TOY", folds=(0,)), progress=False).to_json()
    (tmp_path / "guided.json").write_text(json.dumps({**result, "guidance": {}}))
    code = main(["select-failure-thresholds", "--guided", str(tmp_path / "guided.json"), "--fallback",
                 str(tmp_path / "guided.json"), "--selection", str(tmp_path / "s.json"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--extent estimated" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code = main(["select-failure-thresholds", "--guided", str(tmp_path / "missing.json"), "--fallback",
                 str(tmp_path / "guided.json"), "--selection", str(tmp_path / "s.json"), "--out", str(tmp_path / "o")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_joint_label_fusion_trusts_the_atlas_whose_image_matches_the_query_where_voting_needs_both():
    from medfss.registration.predictor import RegistrationPredictor

    query, truth = blob_volume()
    shifted, shifted_mask = blob_volume((4, -3, 2))  # an atlas that registration left misaligned
    supports = [SupportScan(query, truth), SupportScan(shifted, shifted_mask)]
    vote = identity_registrations().segment_volume(supports, query, (1.0, 1.0, 1.0))
    jlf = identity_registrations("jlf").segment_volume(supports, query, (1.0, 1.0, 1.0))
    assert jlf.shape == query.shape and jlf.dtype == np.float32 and 0 <= jlf.min() and jlf.max() <= 1
    assert dice(vote > 0.5, truth) < 0.8  # a strict majority of two atlases: their overlap
    assert dice(jlf > 0.5, truth) > 0.95
    # one atlas two voxels off: the patch search (radius 3) takes each label from where the images match
    near, near_mask = blob_volume((2, 0, 0))
    one = identity_registrations("jlf").segment_volume(
        [SupportScan(near, near_mask)], query, (1.0, 1.0, 1.0))
    assert dice(one > 0.5, truth) > dice(near_mask, truth) + 0.05
    with pytest.raises(ConfigError, match="label_fusion must be one of vote, jlf"):
        RegistrationPredictor(label_fusion="staple")


def test_joint_label_fusion_searches_each_axis_within_its_own_radius():
    from medfss.registration.predictor import RegistrationPredictor

    query, truth = blob_volume()
    off, off_mask = blob_volume((0, 0, 2))  # an atlas two voxels off along the slice axis D
    supports = [SupportScan(off, off_mask)]

    def fused(search_radius):
        jlf = JointLabelFusionConfig(patch_radius=(2, 2, 1), search_radius=search_radius)
        return identity_registrations("jlf", jlf=jlf).segment_volume(supports, query, (1.0, 1.0, 1.0)) > 0.5

    assert dice(fused((0, 0, 3)), truth) > 0.99  # searched along D only: every label from where the images match
    assert dice(fused((3, 3, 0)), truth) < 0.9  # searched in-plane only: the offset along D stays
    np.testing.assert_array_equal(fused((0, 0, 0)), off_mask)  # no search: the atlas's own labels
    record = RegistrationPredictor(label_fusion="jlf", jlf=JointLabelFusionConfig(search_radius=(3, 3, 1))).record()
    assert RegistrationPredictor.from_record(json.loads(json.dumps(record))).jlf.search_radius == (3, 3, 1)
    with pytest.raises(ConfigError, match="search_radius must be an integer >= 0 or three"):
        JointLabelFusionConfig(search_radius=(3, 3))


def test_joint_label_fusion_is_computed_once_per_supports_and_query_and_kept_on_disk(tmp_path, monkeypatch):
    from medfss.registration import predictor as module

    calls = []

    def fake_fusion(query, query_spacing, warped_images, warped_masks, config, fusion):
        calls.append(len(warped_images))
        return np.where(warped_masks[0], 0.9, 0.1).astype(np.float32)

    monkeypatch.setattr(module, "joint_label_fusion", fake_fusion)
    query, truth = blob_volume()
    near, near_mask = blob_volume((2, 0, 0))
    supports = [SupportScan(near, near_mask)]
    first = identity_registrations("jlf", tmp_path).segment_volume(supports, query, (1.0, 1.0, 1.0))
    again = identity_registrations("jlf", tmp_path).segment_volume(supports, query, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(first, again)
    assert calls == [1]  # the second predictor read the first's file
    assert [f.name for f in (tmp_path / "jlf").iterdir() if f.name.startswith(".")] == []  # no partial file left
    other_class = [SupportScan(near, ~near_mask)]  # same images, another mask: another fusion
    identity_registrations("jlf", tmp_path).segment_volume(other_class, query, (1.0, 1.0, 1.0))
    assert calls == [1, 1]
    wider = identity_registrations("jlf", tmp_path, jlf=JointLabelFusionConfig(search_radius=5))
    wider.segment_volume(supports, query, (1.0, 1.0, 1.0))  # other fusion settings: not the cached file
    assert calls == [1, 1, 1]


def test_the_guided_prior_is_the_registrations_joint_label_fusion_when_it_fuses_labels_so(monkeypatch):
    from medfss.registration import predictor as module
    from medfss.registration.guided import GuidanceConfig, GuidedPredictor

    fusion = module.joint_label_fusion
    query, truth = blob_volume()
    near, near_mask = blob_volume((2, 0, 0))  # one atlas two voxels off
    supports = [SupportScan(near, near_mask)]
    config = GuidanceConfig(fusion="average", network_weight=0.0, prior_sigma_mm=0.0, margin_slices=0)
    fused = []  # ANTs' fusions, each computed once: at several threads two runs differ in the last digits

    def recorded_fusion(*args, **kwargs):
        fused.append(fusion(*args, **kwargs))
        return fused[-1]

    monkeypatch.setattr(module, "joint_label_fusion", recorded_fusion)
    priors = {}
    for label_fusion in ("vote", "jlf"):
        registration = identity_registrations(label_fusion)
        guided = GuidedPredictor(ConstantNetwork(0.5), registration, config)
        evidence = guided.evidence(supports, query, (1.0, 1.0, 1.0))
        if label_fusion == "jlf":
            assert len(fused) == 1
            np.testing.assert_array_equal(evidence.prior, fused[0])
        else:
            np.testing.assert_array_equal(evidence.prior, registration.segment_volume(supports, query, (1.0, 1.0, 1.0)))
        covered = np.flatnonzero(near_mask.any(axis=(0, 1)))
        assert evidence.extent == (covered[0], covered[-1])  # step 2 reads the warped masks, whatever the fusion
        priors[label_fusion] = evidence.prior
    assert dice(priors["jlf"] > 0.5, truth) > dice(priors["vote"] > 0.5, truth) + 0.05


def test_a_registration_record_reads_back_into_the_same_predictor_and_an_older_one_votes():
    from medfss.registration.predictor import RegistrationPredictor

    predictor = RegistrationPredictor(RegistrationConfig(syn_iterations=(40, 20, 10)), label_fusion="jlf",
                                      jlf=JointLabelFusionConfig(patch_radius=1))
    again = RegistrationPredictor.from_record(json.loads(json.dumps(predictor.record())))
    assert again.config == predictor.config and again.label_fusion == "jlf" and again.jlf == predictor.jlf
    older = asdict(RegistrationConfig())  # results.json before label fusion was recorded
    assert RegistrationPredictor.from_record(older).label_fusion == "vote"
    older_jlf = {**older, "label_fusion": "jlf"}  # before the fusion's settings were: ANTs' defaults
    assert RegistrationPredictor.from_record(older_jlf).jlf == JointLabelFusionConfig()
    assert "jlf" not in RegistrationPredictor().record()  # voting has no fusion settings
    with pytest.raises(ConfigError, match="search_radius must be an integer >= 0"):
        JointLabelFusionConfig(search_radius=-1)


def test_the_registration_options_of_the_command_line_reach_the_config():
    from medfss.cli import _registration_predictor, build_parser

    def config(*options):
        args = build_parser().parse_args(["evaluate", "--model", "registration", "--dataset", "CHAOST2", "--out", "o",
                                          *options])
        return _registration_predictor(args).config

    assert config() == RegistrationConfig()  # unset options keep the config's defaults
    assert config("--registration-seed", "0", "--registration-iterations", "40,20,10") == RegistrationConfig(
        seed=0, syn_iterations=(40, 20, 10))
