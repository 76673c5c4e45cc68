"""Evaluation of a semi-supervised model on the 3D volumes of a list file.

For each name of the list, ``data/{name}.h5`` (ACDC) or
``2018LA_Seg_Training Set/{name}/mri_norm2.h5`` (LA) is predicted whole
(ACDC slice by slice at the training size, LA by sliding windows) and scored
per foreground class in 3D: Dice, Jaccard, HD95 and ASD
(:mod:`medfss.evaluation.metrics`). The HDF5 files carry no voxel spacing, so
distances are in voxels, as the literature reports them (medpy without
spacing). Summaries: per class the mean and std over volumes; ``mean``
averages the classes per volume, then over volumes. The JSON follows the
few-shot ``results.json`` (model, dataset, mean_dice, classes, mean,
wall_time_s) with ``task``, ``labeled_fraction`` and ``list`` added.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from medfss.evaluation.metrics import METRIC_NAMES, segmentation_scores
from medfss.semisup.config import TASK, SemiSupConfig
from medfss.semisup.data import dataset_root, get_layout, load_volume, read_list
from medfss.semisup.networks import SegmentationNet
from medfss.semisup.sliding_window import predict_sliding, predict_slices
from medfss.errors import ConfigError


def predict_volume(net: SegmentationNet, config: SemiSupConfig, image: np.ndarray, device: str = "cpu"
                   ) -> np.ndarray:
    """Class indices of a whole volume (ACDC [D, H, W], LA [X, Y, Z]), same shape."""
    net = net.to(device).eval()
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    predict = lambda x: net(x).softmax(dim=1)  # noqa: E731  [b, 1, *S] -> [b, N, *S]
    if config.data.spatial_dims == 2:
        probs = predict_slices(predict, volume, config.data.patch_size)
    else:
        probs = predict_sliding(predict, volume, config.data.patch_size, config.inference.stride)
    return probs.argmax(dim=0).cpu().numpy().astype(np.uint8)


def _summary(values: list[float]) -> dict[str, float | int | None]:
    finite = [v for v in values if not math.isnan(v)]
    return {"mean": float(np.mean(finite)) if finite else None, "std": float(np.std(finite)) if finite else None,
            "n_undefined": len(values) - len(finite)}


def score_volumes(cases: list[tuple[str, np.ndarray, np.ndarray]], classes: tuple[str, ...]) -> dict:
    """Per class and mean summaries of (name, prediction, label) triples; classes are label values 1..N-1."""
    per_case = []
    for name, prediction, label in cases:
        scores = {c: segmentation_scores(prediction == i, label == i, (1.0,) * label.ndim).as_dict()
                  for i, c in enumerate(classes, start=1)}
        per_case.append((name, scores))
    result = {"classes": {}, "mean": {}}
    for c in classes:
        result["classes"][c] = {m: _summary([s[c][m] for _, s in per_case]) for m in METRIC_NAMES}
        result["classes"][c]["queries"] = [{"case_id": n, **{m: _json(s[c][m]) for m in METRIC_NAMES}}
                                           for n, s in per_case]
    for m in METRIC_NAMES:
        volume_means = [_nanmean([s[c][m] for c in classes]) for _, s in per_case]
        result["mean"][m] = _summary(volume_means)
    return result


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _json(value: float) -> float | None:
    return None if math.isnan(value) else value


def evaluate_list(net: SegmentationNet, config: SemiSupConfig, *, model_name: str, dataset: str,
                  data_root: str | os.PathLike | None, list_file: str | os.PathLike, device: str = "cpu",
                  progress: bool = True) -> dict:
    """Scores of ``net`` on every volume of ``list_file`` (a path, or a name inside the data set folder)."""
    if dataset != config.data.dataset:
        raise ConfigError(f"--dataset {dataset}: the model was trained on {config.data.dataset}")
    layout = get_layout(dataset)
    root = dataset_root(layout, data_root)
    list_path = Path(list_file) if Path(list_file).is_file() else root / list_file
    names = read_list(list_path)
    start = time.perf_counter()
    cases = []
    for i, name in enumerate(names):
        image, label = load_volume(layout, root, name)
        cases.append((name, predict_volume(net, config, image, device), label))
        if progress:
            print(f"  {i + 1}/{len(names)} {name}", flush=True)
    scores = score_volumes(cases, layout.classes)
    return {"task": TASK, "model": model_name, "dataset": dataset, "labeled_fraction": config.data.labeled_fraction,
            "list": str(list_file), "volumes": len(names), "mean_dice": scores["mean"]["dice"]["mean"],
            "metric_units": "Dice, Jaccard in %; HD95, ASD in voxels", **scores,
            "wall_time_s": time.perf_counter() - start}


def format_table(result: dict) -> str:
    """Per class and mean Dice / Jaccard / HD95 / ASD, as printed by ``medfss evaluate``."""
    lines = [f"{result['model']} on {result['dataset']} {result['list']} ({result['volumes']} volumes), "
             f"labelled fraction {result['labeled_fraction']}",
             f"{'class':<10}{'Dice':>16}{'Jaccard':>10}{'HD95 vx':>10}{'ASD vx':>9}"]
    for name, s in [*result["classes"].items(), ("mean", result["mean"])]:
        cell = lambda m: f"{s[m]['mean']:.2f}" if s[m]["mean"] is not None else "–"  # noqa: E731
        dice = f"{s['dice']['mean']:.2f} ± {s['dice']['std']:.2f}" if s["dice"]["mean"] is not None else "–"
        lines.append(f"{name:<10}{dice:>16}{cell('jaccard'):>10}{cell('hd95'):>10}{cell('asd'):>9}")
    return "\n".join(lines)
