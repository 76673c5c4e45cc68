"""``medfss.segment`` / ``medfss segment`` and the estimated-extent protocol, on synthetic NIfTIs.

Known answers come from a threshold stub predictor (exact on clean two-level
images), so orientation, slicing, extent estimation and the cleanup are
checked voxel by voxel; the CLI runs end to end with an untrained tiny ALPNet.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import medfss
from medfss.cli import build_parser, main
from medfss.data.datasets import DatasetSpec, Volume
from medfss.data.io import write_nifti_atomic
from medfss.data.preprocess import Reorientation, check_axcodes, through_plane_axis, volumes_orientation
from medfss.errors import ConfigError, LabelMapError
from medfss.evaluation.protocol import ProtocolConfig, evaluate

from conftest import make_phantom


# --- synthetic scans --------------------------------------------------------------------------------

SPACING = (1.5, 1.5, 5.0)  # canonical: axis 2 (S) is the through-plane axis
BOX = (slice(4, 10), slice(3, 15))  # an off-centre organ: a flip or a transpose moves it


def scene(depth: int, organ: tuple[int, int], blobs: bool = False):
    """Canonical (image, label): organ on slices organ[0]..organ[1]; image = 10 + 100 * bright in a body.

    The body (everything but a one-voxel frame of air at 0) holds the organ
    and the bait, so the body mask keeps them all.

    ``blobs`` adds two bright false-positive bait that are not in the label: a
    small one inside the organ's slices but apart from it (the largest-component
    cleanup removes it) and one on the last slice (outside the extent).
    """
    label = np.zeros((24, 20, depth), dtype=np.uint8)
    label[BOX[0], BOX[1], organ[0]:organ[1] + 1] = 1
    bright = label.astype(bool).copy()
    if blobs:
        bright[18:20, 16:18, (organ[0] + organ[1]) // 2] = True
        bright[18:22, 2:6, depth - 1] = True
    image = 10.0 + 100.0 * bright
    image[[0, -1]] = image[:, [0, -1]] = 0.0  # air around the body
    return image.astype(np.float32), label


def reorient(array: np.ndarray, ornt, canonical_affine=np.diag([*SPACING, 1.0])) -> tuple[np.ndarray, np.ndarray]:
    """A canonical scan stored in another voxel order (row i of ``ornt``: where axis i goes): (array, affine)."""
    ornt = np.asarray(ornt, dtype=float)
    return (np.ascontiguousarray(nib.orientations.apply_orientation(array, ornt)),
            canonical_affine @ nib.orientations.inv_ornt_aff(ornt, array.shape))


IDENTITY = [[0, 1], [1, 1], [2, 1]]
FLIPPED = [[0, -1], [1, -1], [2, -1]]  # LPI
PERMUTED = [[1, -1], [2, 1], [0, -1]]  # the slice axis (S) first and reversed: I, L, A


def save(tmp_path: Path, name: str, array: np.ndarray, affine: np.ndarray) -> Path:
    return write_nifti_atomic(array, affine, tmp_path / f"{name}.nii.gz")


class Threshold:
    """Foreground = brighter than halfway between the support's foreground and background means."""

    def __init__(self):
        self.calls: list[tuple[int, ...]] = []

    def predict(self, support_images, support_masks, query_images):
        self.calls.append(tuple(query_images.shape))
        fg = support_images[support_masks > 0.5].mean()
        bg = support_images[support_masks < 0.5].mean()
        return (query_images > (fg + bg) / 2).float()


def known_answer_case(tmp_path, query_ornt, support_ornt, blobs=True):
    """Support organ on slices 4..9 of 20, query organ on 6..14 of 30: both at [0.2, 0.5) of the scan."""
    s_img, s_lab = scene(20, (4, 9))
    q_img, q_lab = scene(30, (6, 14), blobs=blobs)
    s_img, s_aff = reorient(s_img, support_ornt)
    s_lab, _ = reorient(s_lab, support_ornt)
    q_img, q_aff = reorient(q_img, query_ornt)
    q_lab, _ = reorient(q_lab, query_ornt)
    paths = {"query": save(tmp_path, "query", q_img, q_aff), "image": save(tmp_path, "s_img", s_img, s_aff),
             "mask": save(tmp_path, "s_mask", s_lab, s_aff)}
    return paths, q_lab, q_aff


# --- alignment with known answers ---------------------------------------------------------------------


@pytest.mark.parametrize("query_ornt, support_ornt", [
    (IDENTITY, IDENTITY), (FLIPPED, IDENTITY), (PERMUTED, IDENTITY), (PERMUTED, FLIPPED)],
    ids=["RAS-RAS", "LPI-RAS", "ILA-RAS", "ILA-LPI"])
def test_output_is_aligned_with_a_non_canonical_query(tmp_path, query_ornt, support_ornt):
    paths, truth, affine = known_answer_case(tmp_path, query_ornt, support_ornt)
    stub = Threshold()
    result = medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=stub,
                            out=tmp_path / "pred.nii.gz", progress=False)
    written = nib.load(tmp_path / "pred.nii.gz")
    assert written.shape == truth.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, nib.load(paths["query"]).affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), truth)  # blobs gone, organ exact
    np.testing.assert_array_equal(result.labels, truth)
    assert {shape[1:] for shape in stub.calls} == {(24, 20)}  # canonical in-plane, axial slices
    assert sum(shape[0] for shape in stub.calls) == 9  # only the estimated extent, slices 6..14


def test_without_cleanup_the_bait_inside_the_extent_stays(tmp_path):
    paths, truth, _ = known_answer_case(tmp_path, PERMUTED, IDENTITY)
    result = medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=Threshold(),
                            largest_component=False, progress=False)
    extra = result.labels.astype(bool) & ~truth.astype(bool)
    assert extra.sum() == 4  # the 2 x 2 blob beside the organ; the blob off the extent is never predicted


def test_given_extent_and_range_are_file_indices(tmp_path):
    paths, truth, _ = known_answer_case(tmp_path, FLIPPED, IDENTITY, blobs=False)
    # FLIPPED: file slice k is canonical slice 29 - k; the organ is on file slices 15..23
    result = medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=Threshold(),
                            extent=(18, 30), progress=False)
    expected = truth.copy()
    expected[..., :18] = 0
    np.testing.assert_array_equal(result.labels, expected)
    assert result.per_label[0].extent == (18, 30)
    # a query range that covers the support scan's span: the organ at [0.2, 0.5) of 15:30 is 18..22
    result = medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=Threshold(),
                            query_range=(15, None), progress=False)
    assert result.per_label[0].extent == (22, 27)  # file 15:30 is canonical 0:15, where 3..7 is [0.2, 0.5)


def test_batches_bound_the_slices_per_call(tmp_path):
    paths, _, _ = known_answer_case(tmp_path, IDENTITY, IDENTITY)
    stub = Threshold()
    medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=stub, batch_size=2,
                   progress=False)
    assert max(shape[0] for shape in stub.calls) <= 2 and sum(shape[0] for shape in stub.calls) == 9


def test_several_labels_give_one_multilabel_map(tmp_path):
    image, label, affine = make_phantom(shape=(32, 32, 12))
    paths = [save(tmp_path, n, a, affine) for n, a in
             (("q", image), ("s", image), ("m", label.astype(np.uint8)))]
    result = medfss.segment(paths[0], [(paths[1], paths[2])], [2, 1], predictor=IntensityMatch(),
                            probabilities=tmp_path / "p.nii.gz", progress=False)
    assert [r.label for r in result.per_label] == [2, 1]
    for value in (1, 2):
        found, truth = result.labels == value, label == value
        assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.95
    probs = nib.load(tmp_path / "p.nii.gz")
    assert probs.shape == (32, 32, 12, 2) and probs.get_data_dtype() == np.float32


class IntensityMatch:
    """Probability exp(-d^2 / 2 sigma^2) of the distance d to the support foreground's mean intensity."""

    def predict(self, support_images, support_masks, query_images):
        fg = support_images[support_masks > 0.5].mean()
        return torch.exp(-((query_images - fg) / 0.3) ** 2 / 2)


# --- the tiny untrained ALPNet through the CLI ----------------------------------------------------------


@pytest.fixture
def scans(tmp_path) -> dict[str, Path]:
    """A phantom query and support (classes 1 and 2) in different voxel orders."""
    q_img, _, q_aff = make_phantom(shape=(40, 36, 16), seed=1)
    s_img, s_lab, s_aff = make_phantom(shape=(40, 36, 14), seed=2)
    q_img, q_aff = reorient(q_img, PERMUTED, q_aff)
    s_lab = s_lab.astype(np.int16)
    s_lab[..., :3] = 0  # partial labelling is fine
    return {"query": save(tmp_path, "query", q_img, q_aff), "image": save(tmp_path, "image", s_img, s_aff),
            "mask": save(tmp_path, "mask", s_lab, s_aff)}


def segment_argv(scans, checkpoint, out_dir, *extra):
    """The scan-handling tests run the position rule; the registration-guided default is tested in
    test_registration.py and test_demo.py."""
    return ["segment", "--query", str(scans["query"]), "--support-image", str(scans["image"]),
            "--support-mask", str(scans["mask"]), "--label", "1,2", "--checkpoint", str(checkpoint),
            "--out", str(out_dir / "pred.nii.gz"), "--quiet", "--guidance", "position", *extra]


def test_cli_writes_every_output_aligned_with_the_query(scans, checkpoint, tmp_path, capsys):
    before = {p: p.read_bytes() for p in scans.values()}
    out = tmp_path / "out"
    argv = segment_argv(scans, checkpoint, out, "--probabilities", str(out / "p.nii.gz"), "--overlay",
                        str(out / "o.png"), "--summary", str(out / "s.json"), "--batch-size", "3")
    assert main(argv) == 0
    assert "label 1:" in capsys.readouterr().out
    query = nib.load(scans["query"])
    pred = nib.load(out / "pred.nii.gz")
    assert pred.shape == query.shape and pred.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(pred.affine, query.affine)
    assert pred.header.get_zooms() == query.header.get_zooms()
    assert (pred.header["sform_code"], pred.header["qform_code"]) == \
        (query.header["sform_code"], query.header["qform_code"])
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
    probs = nib.load(out / "p.nii.gz")
    assert probs.shape == (*query.shape, 2) and probs.get_data_dtype() == np.float32
    assert 0 <= probs.get_fdata().min() and probs.get_fdata().max() <= 1
    assert (out / "o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "s.json").read_text())
    voxel_ml = 1.25 * 1.25 * 7.7 / 1000
    assert summary["voxel_volume_ml"] == pytest.approx(voxel_ml)
    for label in (1, 2):
        entry = summary["classes"][str(label)]
        assert entry["voxels"] == int((np.asarray(pred.dataobj) == label).sum())
        assert entry["millilitres"] == pytest.approx(entry["voxels"] * voxel_ml)
    assert summary["settings"]["axis"] == 0  # PERMUTED puts the 7.7 mm axis first
    assert summary["runtime_s"] > 0 and summary["inputs"]["model"]["name"] == "alpnet"
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"  # --device auto, the default
    assert summary["settings"]["device"] == expected_device
    assert {p: p.read_bytes() for p in scans.values()} == before  # inputs untouched
    assert sorted(p.name for p in out.iterdir()) == ["o.png", "p.nii.gz", "pred.nii.gz", "s.json"]


def test_cli_says_what_was_estimated_and_warns_about_modality_and_new_folders(scans, checkpoint, tmp_path,
                                                                              capsys):
    image = nib.load(scans["query"])
    ct = save(tmp_path, "ct", np.asarray(image.dataobj) * 10 - 1024, image.affine)  # air at -1024: HU
    out = tmp_path / "new" / "folder"
    argv = segment_argv({**scans, "query": ct}, checkpoint, out, "--label-names", "liver,spleen",
                        "--report", str(out / "r.html"), "--summary", str(out / "s.json"))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "label 1 (liver): " in printed and "estimated from the organ's relative extent in the support scans" \
        in printed and "<- support slice" in printed
    assert "query modality CT: Hounsfield units: minimum -1024 < -500 (air)" in printed
    assert f"medfss: warning: the query {ct} is CT (Hounsfield units: minimum -1024 < -500 (air)) but the model " \
           "was trained on MR" in printed
    assert f"created output folder {out} (it did not exist)" in printed
    summary = json.loads((out / "s.json").read_text())
    assert summary["settings"]["modality"] == "CT" and summary["inputs"]["model"]["modality"] == "MR"
    assert any("trained on MR" in w for w in summary["warnings"]) and summary["created_folders"] == [str(out)]
    assert [c["name"] for c in summary["classes"].values()] == ["liver", "spleen"]
    report = (out / "r.html").read_text()
    assert "liver" in report and "spleen" in report and "data:image/png;base64," in report \
        and "trained on MR" in report


def test_guidance_none_predicts_every_slice_of_the_query_range(scans, checkpoint, tmp_path, capsys):
    argv = segment_argv(scans, checkpoint, tmp_path, "--summary", str(tmp_path / "s.json"))
    argv[argv.index("position")] = "none"
    assert main(argv) == 0
    assert "every slice of the query range (no guidance)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    depth = nib.load(scans["query"]).shape[summary["settings"]["axis"]]
    assert summary["settings"]["extent"] == "all slices"
    assert all(c["extent"] == [0, depth] for c in summary["classes"].values())


def test_segment_help_tells_the_truth(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "required for now" not in text and "default: the bundled model (CHAOST2 abdominal MRI" in text
    assert "--label-names" in text and "--reference" in text and "--report" in text


class Everywhere:
    """Every pixel foreground: only the body mask can keep a label off the air."""

    def predict(self, support_images, support_masks, query_images):
        return torch.ones_like(query_images)


def test_no_label_outside_the_body_and_none_on_an_empty_slice(tmp_path):
    from medfss.inference import body_mask

    paths, _, affine = known_answer_case(tmp_path, IDENTITY, IDENTITY, blobs=False)
    query = np.asarray(nib.load(paths["query"]).dataobj).copy()
    query[..., 10] = 0.0  # an all-zero slice inside the organ's estimated slices (6..14)
    path = save(tmp_path, "holed", query, affine)
    result = medfss.segment(path, [(paths["image"], paths["mask"])], [1], predictor=Everywhere(),
                            largest_component=False, progress=False)
    body = body_mask(query)  # RAS, slicing axis last: the model's working order
    assert result.labels.any() and not (result.labels.astype(bool) & ~body).any()
    assert not result.labels[..., 10].any()
    # the prediction fills the body on the estimated slices: far more than the support's organ
    assert any("times the support's" in w for w in result.summary["warnings"])


def test_the_overlay_does_not_depend_on_the_models_voxel_order(tmp_path):
    from matplotlib.image import imread

    paths, truth, affine = known_answer_case(tmp_path, PERMUTED, IDENTITY)
    reference = save(tmp_path, "truth", truth, affine)
    drawn = []
    for order in ("RAS", "LAS", "LPS"):
        png = tmp_path / f"{order}.png"
        result = medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=Threshold(),
                                orientation=order, label_names=["organ"], reference=reference, overlay=png,
                                progress=False)
        np.testing.assert_array_equal(result.labels, truth)
        drawn.append(imread(png))
    np.testing.assert_array_equal(drawn[0], drawn[1])
    np.testing.assert_array_equal(drawn[0], drawn[2])


def test_evaluate_accepts_the_extent_option():
    args = build_parser().parse_args(["evaluate", "--model", "copy-support", "--dataset", "CHAOST2",
                                      "--out", "x", "--extent", "estimated"])
    assert args.extent == "estimated"


# --- bad input: one line, exit 2, nothing written --------------------------------------------------------


def corrupt(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:200])  # a truncated gzip stream
    return path


BAD_INPUTS = {
    "label absent": (lambda s, t: None, ["--label", "3"], "label 3 is absent from this support mask"),
    "empty mask": (lambda s, t: {"mask": save(t, "empty", np.zeros((40, 36, 14), np.uint8),
                                              nib.load(s["image"]).affine)}, [], "the support mask is empty"),
    "mask off the scan's grid": (lambda s, t: {"mask": save(t, "off", np.ones((40, 36, 14), np.uint8), np.eye(4))},
                                 [], "off.nii.gz: affine (voxel orientation, spacing or origin) differs from its "
                                     "scan image.nii.gz"),
    "shape mismatch": (lambda s, t: {"mask": save(t, "small", np.ones((40, 36, 10), np.uint8), np.eye(4))}, [],
                       "small.nii.gz: shape (40, 36, 10) differs from its scan"),
    "2D query": (lambda s, t: {"query": save(t, "flat", np.ones((40, 36), np.float32), np.eye(4))}, [],
                 "flat.nii.gz: expected a 3D volume"),
    "4D support": (lambda s, t: {"image": save(t, "four", np.ones((40, 36, 14, 2), np.float32), np.eye(4))},
                   [], "four.nii.gz: expected a 3D volume"),
    "NaN voxels": (lambda s, t: {"query": save(t, "nan", np.full((8, 8, 4), np.nan, np.float32), np.eye(4))},
                   [], "nan.nii.gz: 256 voxels are NaN or Inf"),
    "corrupt gzip": (lambda s, t: {"query": corrupt(Path(s["query"]))}, [], "query.nii.gz: cannot read NIfTI"),
    "out is an input": (lambda s, t: None, ["--out", "{image}"], "is also an input"),
    "summary is the checkpoint": (lambda s, t: None, ["--summary", "{checkpoint}"], "is also an input"),
    "corrupt checkpoint": (lambda s, t: {"checkpoint": t / "junk.pt"}, [], "junk.pt: not a readable checkpoint"),
    "incompatible checkpoint": (lambda s, t: {"checkpoint": foreign_checkpoint(t)}, [],
                                "weights do not fit the 'alpnet' model"),
    "bad orientation": (lambda s, t: None, ["--orientation", "XYZ"], "must be three axis codes"),
    "bad range": (lambda s, t: None, ["--query-range", "10:99"], "query range 10:99 must satisfy"),
    "all-zero query": (lambda s, t: {"query": save(t, "zero", np.zeros((40, 36, 16), np.float32), np.eye(4))}, [],
                       "zero.nii.gz: every voxel is 0 (an empty scan)"),
    "constant support": (lambda s, t: {"image": save(t, "flat", np.full((40, 36, 14), 3.0, np.float32),
                                                     np.diag([1.25, 1.25, 7.7, 1.0]))}, [],
                         "flat.nii.gz: every voxel equals 3 (a constant scan)"),
}
if not torch.cuda.is_available():
    BAD_INPUTS["no GPU"] = (lambda s, t: None, ["--device", "cuda"], "no CUDA GPU is available")


def foreign_checkpoint(tmp_path: Path) -> Path:
    from medfss.config import ModelConfig, TrainConfig
    from medfss.checkpoints import checkpoint_metadata, save_atomic

    config = TrainConfig(model=ModelConfig("alpnet", {"backbone": "resnet18-slim"}))
    return save_atomic({"state_dict": {"head.weight": torch.zeros(2, 3)}, **checkpoint_metadata(config)},
                       tmp_path / "foreign.pt")


def test_missing_bundled_model_is_a_clear_error(scans, tmp_path, monkeypatch, capsys):
    import medfss.weights

    monkeypatch.setattr(medfss.weights, "DEFAULT_MODEL", tmp_path / "gone.pt")
    argv = segment_argv(scans, None, tmp_path / "out")
    i = argv.index("--checkpoint")
    del argv[i:i + 2]
    assert main(argv) == 2
    assert "gone.pt is missing from this installation; pass --checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, scans, checkpoint, tmp_path, capsys):
    change, extra, message = BAD_INPUTS[case]
    (tmp_path / "junk.pt").write_bytes(b"not a torch file" * 10)
    files = {**scans, "checkpoint": checkpoint, **(change(scans, tmp_path) or {})}
    argv = segment_argv(files, files["checkpoint"], tmp_path / "out", *[a.format(**files) for a in extra])
    if files["checkpoint"] is None:
        i = argv.index("--checkpoint")
        del argv[i:i + 2]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_api_errors_are_medfss_errors(tmp_path):
    paths, _, _ = known_answer_case(tmp_path, IDENTITY, IDENTITY)
    with pytest.raises(LabelMapError, match="label 2 is absent"):
        medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1, 2], predictor=Threshold(),
                       progress=False)
    with pytest.raises(ConfigError, match="labels must be in 1..255"):
        medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [300], predictor=Threshold())
    with pytest.raises(ConfigError, match="no support given"):
        medfss.segment(paths["query"], [], [1], predictor=Threshold())


# --- preprocessing -----------------------------------------------------------------------------------


def test_reorientation_round_trip_matches_nibabel_canonical():
    rng = np.random.default_rng(0)
    array = rng.random((3, 4, 5))
    for perm, flips in itertools.product(itertools.permutations(range(3)), itertools.product((1, -1), repeat=3)):
        ornt = [[p, f] for p, f in zip(perm, flips)]
        stored, affine = reorient(array, ornt)
        r = Reorientation.of(affine, stored.shape)
        canonical = r.to_canonical(stored)
        np.testing.assert_array_equal(canonical, np.asarray(nib.as_closest_canonical(
            nib.Nifti1Image(stored, affine)).dataobj))
        np.testing.assert_array_equal(canonical, array)
        np.testing.assert_array_equal(r.to_scan(canonical), stored)


def test_reorientation_to_a_working_order_other_than_ras():
    rng = np.random.default_rng(0)
    array = rng.random((3, 4, 5))  # RAS
    las = Reorientation.of(np.diag([1.0, 1.0, 1.0, 1.0]), array.shape, "LAS")
    np.testing.assert_array_equal(las.to_canonical(array), array[::-1])  # only the first axis turns
    stored, affine = reorient(array, PERMUTED)
    r = Reorientation.of(affine, stored.shape, "PSR")
    np.testing.assert_array_equal(r.to_canonical(stored), array[:, ::-1].transpose(1, 2, 0))
    np.testing.assert_array_equal(r.to_scan(r.to_canonical(stored)), stored)
    assert r.direction(2) == "left-right (sagittal slices)" and r.direction(1).startswith("inferior")
    assert check_axcodes("LPI") == "LPI"
    for bad in ("RAR", "RA", "XYZ", "RASS"):
        with pytest.raises(ValueError, match="three axis codes"):
            check_axcodes(bad)


def test_volumes_orientation_is_shared_order_or_none():
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    assert volumes_orientation([las, las]) == "LAS"
    assert volumes_orientation([las, np.eye(4)]) is None


def test_segment_shows_the_model_slices_in_its_working_order(tmp_path):
    """A model trained on LAS volumes must get, from an RAS query, the LAS slices (x mirrored)."""
    paths, truth, _ = known_answer_case(tmp_path, IDENTITY, IDENTITY)

    class Recorder(Threshold):
        def predict(self, support_images, support_masks, query_images):
            self.seen = query_images.clone()
            return super().predict(support_images, support_masks, query_images)

    ras, las = Recorder(), Recorder()
    a = medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=ras, progress=False)
    b = medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=las,
                       orientation="LAS", progress=False)
    torch.testing.assert_close(las.seen, ras.seen.flip(1))  # [Q, X, Y]: x runs right-to-left
    np.testing.assert_array_equal(a.labels, b.labels)  # mapped back onto the same grid
    assert b.summary["settings"]["orientation"] == "LAS"
    with pytest.raises(ConfigError, match="three axis codes"):
        medfss.segment(paths["query"], [(paths["image"], paths["mask"])], [1], predictor=las,
                       orientation="up", progress=False)


def test_through_plane_axis():
    assert through_plane_axis((1.25, 7.7, 1.25)) == 1
    assert through_plane_axis((1.0, 1.0, 1.0)) == 2  # isotropic: axial


# --- the estimated extent, as the protocol scores it -------------------------------------------------


TOY = DatasetSpec(name="TOY", folder="TOY", modality="MR", classes={1: "organ"}, eval_classes=("organ",))


def toy(case_id: str, depth: int, extent: tuple[int, int]) -> Volume:
    """A 10 x 10 box organ on slices extent[0]..extent[1] of ``depth``; image = 1 + label in a body, 0 in the air."""
    label = np.zeros((16, 16, depth), dtype=np.int64)
    label[3:13, 3:13, extent[0]:extent[1] + 1] = 1
    image = np.zeros(label.shape, dtype=np.float32)
    image[1:-1, 1:-1] = 1.0 + label[1:-1, 1:-1]  # a one-voxel frame of air around the body
    return Volume(case_id, image, label, (1.0, 1.0, 5.0), np.eye(4), Path(case_id), Path(case_id))


class ToyDataset:
    spec = TOY

    def __init__(self, volumes: dict[str, Volume]):
        self.volumes = volumes

    def fold_case_ids(self, fold):
        return list(self.volumes)

    def load(self, case_id):
        return self.volumes[case_id]


class ImageOracle:
    def predict(self, support_images, support_masks, query_images):
        return (query_images > 1.5).float()


class SupportBox:
    """Predicts the support's box on every query slice: only the extent decides where it lands."""

    def predict(self, support_images, support_masks, query_images):
        return support_masks.amax(dim=0).expand_as(query_images).clone()


def dice_of(volumes, predictor, extent):
    config = ProtocolConfig(dataset="TOY", folds=(0,), extent=extent)
    result = evaluate(ToyDataset(volumes), lambda fold, name: predictor, config, progress=False)
    return [q.scores.dice for q in result.runs[0].queries]


def test_gt_and_estimated_agree_when_organs_sit_at_the_same_relative_position():
    volumes = {"s": toy("s", 20, (4, 9)), "q1": toy("q1", 30, (6, 14)), "q2": toy("q2", 10, (2, 4))}
    assert dice_of(volumes, ImageOracle(), "gt") == dice_of(volumes, ImageOracle(), "estimated") == [100, 100]
    assert dice_of(volumes, SupportBox(), "gt") == dice_of(volumes, SupportBox(), "estimated") == [100, 100]


def test_estimated_extent_is_scored_over_the_whole_volume():
    # support organ at [0.1, 0.6): on the query that is slices 3..17, the organ holds 6..14
    volumes = {"s": toy("s", 20, (2, 11)), "q": toy("q", 30, (6, 14))}
    assert dice_of(volumes, SupportBox(), "gt") == [100]
    assert dice_of(volumes, SupportBox(), "estimated") == [pytest.approx(100 * 2 * 9 / (9 + 15))]


def test_evaluate_draws_each_scored_prediction_over_its_truth(tmp_path):
    from medfss.overlay import evaluation_drawer

    volumes = {"s": toy("s", 20, (2, 11)), "q": toy("q", 30, (6, 14))}
    seen = []
    config = ProtocolConfig(dataset="TOY", folds=(0,), extent="estimated")
    evaluate(ToyDataset(volumes), lambda fold, name: SupportBox(), config, progress=False,
             draw=lambda fold, index, name: lambda query, prediction, truth: seen.append(
                 (fold, index, name, query.case_id, prediction.sum(), truth.sum())))
    assert seen == [(0, 0, "organ", "q", 15 * 100, 9 * 100)]  # the estimated slices 3..17, the truth 6..14
    evaluate(ToyDataset(volumes), lambda fold, name: SupportBox(), config, progress=False,
             draw=evaluation_drawer(tmp_path / "drawn"))
    assert [p.name for p in (tmp_path / "drawn").iterdir()] == ["fold0_support0_organ_queryq.png"]


def test_extent_must_be_gt_or_estimated():
    with pytest.raises(ValueError, match="extent must be 'gt'"):
        ProtocolConfig(dataset="TOY", extent="oracle")


@pytest.mark.slow
def test_a_512x512x600_ct_segments_within_a_few_gib(checkpoint, tmp_path):
    """Bounded memory: a large CT (600 MiB of float32 voxels) must not need more than a few GiB."""
    from medfss.evaluation.benchmark import segment_peak_memory

    measured = segment_peak_memory(tmp_path, (512, 512, 600), checkpoint=checkpoint,
                                   extra_args=["--guidance", "position"])
    assert measured["output_shape"] == [512, 512, 600]
    assert measured["peak_memory_mib"] < 4096, f"peak resident memory {measured['peak_memory_mib']:.0f} MiB"
