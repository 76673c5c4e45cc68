"""``medfss demo``: the segmentation tool end to end, on real data when present.

With the CHAOST2 data set under the data root, one patient's scan is
segmented (liver, right kidney, left kidney, spleen) from another patient's
labels by :func:`medfss.segment` with the bundled default model, exactly as a
user would run it on their own files: no query label is used, the organs'
slices are estimated from the support. The query's ground truth is read only
afterwards, to print per-organ Dice and HD95 and to draw it under the
prediction in the overlay. The default patients (support 1, query 2) are in
fold 0, whose images the default model never saw. The printout says what was
estimated (each organ's slices and which support slice served which query
slices) and, with the bundled model, puts the model card's figures for the
same protocol (fold 0, organ slices estimated, mean over four supports)
beside the ones just measured on one pair.

Without the data set, the same runs on a synthetic abdominal phantom generated
here (two "patients" with ellipsoid organs of different sizes, positions and
contrasts), so a newcomer sees the tool work on any machine; the model was not
trained on phantoms, so its scores there say little about real scans.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfss.errors import ConfigError

CHAOST2_ORGANS = {1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}  # raw label values
PHANTOM_SPACING = (1.25, 1.25, 7.7)  # mm, like CHAOST2
PHANTOM_SHAPE = (128, 128, 32)


@dataclass(frozen=True)
class DemoCase:
    """The files of one demo run: a query scan with its truth, and one labelled support scan."""

    query: Path
    query_truth: Path
    support_image: Path
    support_mask: Path
    source: str  # what the files are, for the printout


def chaost2_case(data_root: Path, query_case: str, support_case: str) -> DemoCase | None:
    """The CHAOST2 files of the two patients, or None when the data set is absent."""
    folder = data_root / "CHAOST2"
    paths = [folder / f"{kind}_{case}.nii.gz" for case in (query_case, support_case) for kind in ("image", "label")]
    if not folder.is_dir():
        return None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"CHAOST2 case files not found: {', '.join(missing)}; choose --query-case and "
                          "--support-case among the case ids of the folder")
    return DemoCase(paths[0], paths[1], paths[2], paths[3],
                    f"CHAOST2 patient {query_case} segmented from patient {support_case}'s labels")


def ellipsoid(shape: tuple[int, int, int], centre: tuple[float, float, float],
              radii: tuple[float, float, float]) -> np.ndarray:
    """Boolean [X, Y, Z] ellipsoid; centre and radii in voxels."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def phantom(rng: np.random.Generator, shape: tuple[int, int, int] = PHANTOM_SHAPE
            ) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic T2-like abdomen: (image [X, Y, Z] float32, label [X, Y, Z] uint8 with CHAOST2 values).

    A bright body ellipse on dark air; liver (1), right kidney (2), left kidney
    (3) and spleen (4) as ellipsoids with their own intensity, jittered in
    position, size and contrast by ``rng``; Gaussian noise on top. Axis 0 runs
    to the patient's left (RAS), so the liver lies at small x.
    """
    x, y, z = shape

    def jitter(scale: float) -> float:
        return rng.uniform(1 - scale, 1 + scale)

    organs = {  # label: (centre as a fraction of the shape, radii as a fraction, mean intensity)
        1: ((0.33, 0.55, 0.62), (0.20, 0.22, 0.30), 0.9),
        4: ((0.70, 0.40, 0.65), (0.09, 0.10, 0.18), 1.5),
        2: ((0.36, 0.32, 0.35), (0.06, 0.07, 0.16), 2.0),
        3: ((0.64, 0.32, 0.38), (0.06, 0.07, 0.16), 2.0),
    }
    body = ellipsoid(shape, (x / 2, y / 2, z / 2), (0.42 * x, 0.36 * y, 10.0 * z))
    image = np.where(body, 0.6, 0.05).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    for value, (centre, radii, intensity) in organs.items():
        c = tuple(f * n * jitter(0.05) for f, n in zip(centre, shape))
        r = tuple(f * n * jitter(0.15) for f, n in zip(radii, shape))
        organ = ellipsoid(shape, c, r) & body & (label == 0)
        image[organ] = intensity * jitter(0.1)
        label[organ] = value
    image += rng.normal(0.0, 0.08, shape).astype(np.float32)
    return np.clip(image, 0, None) * 500, label  # MR-like non-negative values


def phantom_case(out_dir: Path, seed: int = 0) -> DemoCase:
    """Write a query and a support phantom (with their labels) under ``out_dir/phantom``."""
    from medfss.data.io import write_nifti_atomic

    rng = np.random.default_rng(seed)
    affine = np.diag([*PHANTOM_SPACING, 1.0])
    folder = out_dir / "phantom"
    files = {}
    for name in ("query", "support"):
        image, label = phantom(rng)
        files[name] = write_nifti_atomic(image, affine, folder / f"{name}_image.nii.gz")
        files[f"{name}_label"] = write_nifti_atomic(label, affine, folder / f"{name}_label.nii.gz")
    return DemoCase(files["query"], files["query_label"], files["support"], files["support_label"],
                    "synthetic phantom (query and support generated in code)")


def run_demo(out_dir: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
             checkpoint: str | os.PathLike | None = None, query_case: str = "2", support_case: str = "1",
             device: str = "auto", guidance: str = "registration", progress: bool = True) -> dict:
    """Segment the four abdominal organs of the demo case; returns the JSON summary with Dice and HD95.

    ``guidance``: ``"registration"`` (the network guided by ANTsPy registration, the tool's default)
    or ``"position"`` (the organ's slices estimated from its relative position in the support).
    """
    from medfss.data.datasets import resolve_data_root
    from medfss.data.io import read_nifti, write_text_atomic
    from medfss.evaluation.metrics import segmentation_scores
    from medfss.scan_segmentation import describe, segment

    out_dir = Path(out_dir)
    root = resolve_data_root(data_root)
    case = chaost2_case(root, query_case, support_case)
    if case is None:
        print(f"medfss demo: no CHAOST2 data set under {root}; running on a synthetic phantom instead "
              "(give --data-root or set MEDFSS_DATA_ROOT for the real data)")
        case = phantom_case(out_dir)
    print(f"medfss demo: {case.source}")
    if not out_dir.exists():
        print(f"medfss demo: creating output folder {out_dir} (it did not exist)")
        out_dir.mkdir(parents=True)
    guide = None
    if guidance == "registration":
        from medfss.registration.ants import registration_notice
        from medfss.registration.guided import Guide
        from medfss.registration.predictor import RegistrationPredictor

        guide = Guide(RegistrationPredictor())
        print(f"medfss demo: {registration_notice(case.query, 1, guide.registration.config)}")
    result = segment(case.query, [(case.support_image, case.support_mask)], list(CHAOST2_ORGANS),
                     checkpoint=checkpoint, device=device, guide=guide, label_names=list(CHAOST2_ORGANS.values()),
                     reference=case.query_truth, out=out_dir / "prediction.nii.gz",
                     overlay=out_dir / "overlay.png", progress=progress)
    truth = read_nifti(case.query_truth)
    scores = {name: segmentation_scores(result.labels == value, np.round(truth.array) == value, truth.spacing)
              for value, name in CHAOST2_ORGANS.items()}
    card = card_figures() if checkpoint is None and case.source.startswith("CHAOST2") and guide is None else {}
    summary = {**result.summary, "demo": {"source": case.source, "query_truth": str(case.query_truth),
                                          "scores": {k: v.as_dict() for k, v in scores.items()},
                                          "model_card_dice": card}}
    print("\n".join(describe(result)))
    print(format_scores(scores, card, guided=guide is not None))
    write_text_atomic(json.dumps(summary, indent=2) + "\n", out_dir / "summary.json")
    print(f"wrote {out_dir / 'prediction.nii.gz'}, {out_dir / 'overlay.png'} (ground truth drawn under the "
          f"prediction) and {out_dir / 'summary.json'}")
    return summary


def card_figures() -> dict[str, float]:
    """The bundled model card's Dice per organ and mean for the estimated extent ({} without a card)."""
    from medfss.weights import MODEL_CARD
    from medfss.weights.bundle import card_scores

    return card_scores(MODEL_CARD.read_text()).get("estimated", {}) if MODEL_CARD.is_file() else {}


def format_scores(scores: dict, card: dict[str, float], guided: bool = False) -> str:
    """The per-organ table, with the model card's Dice beside it when known, and what the numbers mean."""
    rows = [*((name, s.dice, s.hd95) for name, s in scores.items()),
            ("mean", float(np.mean([s.dice for s in scores.values()])), None)]
    lines = [f"{'organ':<14}{'Dice':>8}{'HD95 mm':>10}" + (f"{'card Dice':>11}" if card else "")]
    for name, dice, hd95 in rows:
        line = f"{name:<14}{dice:8.1f}{'' if hd95 is None else f'{hd95:.1f}':>10}"
        lines.append(line + (f"{card[name]:11.2f}" if name in card else ""))
    how = ("found by registering the support onto the query" if guided
           else "estimated from the organ's relative position in the support")
    lines.append(f"Dice of the whole query volume; each organ's slices were {how} (no query label), so these "
                 "can be lower than the literature's protocol, which reads them from the ground truth.")
    if card:
        lines.append("card Dice: the model card's figure for the same protocol (organ slices estimated), "
                     "averaged over fold 0's queries and 4 support choices; this run is one support and one "
                     "query, so single organs can differ from it widely.")
    return "\n".join(lines)
