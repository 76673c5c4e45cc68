"""``medfss benchmark --config configs/mper_*.yaml``: speed and memory of a semi-supervised preset.

Per model of the mode: milliseconds per training iteration (the median of
timed steps after a warm-up, on random batches of the preset's sizes: values
do not change the cost) of each stage, and the seconds and peak memory of
predicting one volume of typical size (ACDC: 10 slices of 256 x 256; LA: 180 x
140 x 88 by sliding windows). Each measurement runs in a fresh process so its
peak memory (resident set on CPU, allocated on a GPU) is its own.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from medfss.config import config_from_dict, config_to_dict
from medfss.evaluation.benchmark import _in_fresh_process, _peak_memory_mib, _sync
from medfss.semisup.config import MODEL_NAMES, SemiSupConfig
from medfss.semisup.data import get_layout
from medfss.semisup.evaluate import predict_volume
from medfss.semisup.networks import build_network
from medfss.semisup.prototypes import MultiPrototypeClassifier
from medfss.semisup.train import self_training_loss, supervised_loss
from medfss.semisup.mean_teacher import ema_update, make_teacher
from medfss.training.schedule import build_optimizer

TYPICAL_VOLUME = {"ACDC": (10, 256, 256), "LA": (180, 140, 88)}


def random_batch(config: SemiSupConfig, device: torch.device) -> dict[str, torch.Tensor]:
    data, classes = config.data, get_layout(config.data.dataset).num_classes
    shape = (data.labeled_batch, *data.patch_size)
    mask = torch.ones(data.patch_size)
    mask[tuple(slice(0, c) for c in data.crop_size)] = 0
    return {"labeled": torch.randn(shape[0], 1, *shape[1:], device=device),
            "label": torch.randint(0, classes, shape, device=device),
            "unlabeled": torch.randn(shape[0], 1, *shape[1:], device=device), "mask": mask.to(device)}


def _net(config: SemiSupConfig, device: torch.device):
    return build_network(config.data.spatial_dims, channels=config.model.channels,
                         num_classes=get_layout(config.data.dataset).num_classes).to(device)


def _time_steps(step, steps: int, device: torch.device) -> float:
    times = []
    for i in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _measure_training(config_dict: dict, stage: str, steps: int, device: str) -> dict:
    config, device = config_from_dict(config_dict, SemiSupConfig), torch.device(device)
    student = _net(config, device).train()
    optimizer, _ = build_optimizer(student.parameters(), config.optim)
    batch = random_batch(config, device)
    if stage == "selftrain":
        teacher = make_teacher(student)
        prototypes = None
        if config.model.name == "multi-prototype":
            prototypes = MultiPrototypeClassifier(student.num_classes, config.model.prototypes_per_class,
                                                  student.backbone.embedding_dim).to(device)

        def step():
            optimizer.zero_grad()
            loss, _, update = self_training_loss(student, teacher, prototypes, batch, config, 0)
            loss.backward()
            optimizer.step()
            if update is not None:
                prototypes.momentum_update(*update)
            ema_update(teacher, student, 100, config.model.ema_decay)
    else:
        def step():
            optimizer.zero_grad()
            supervised_loss(student, batch, copy_paste=stage == "pretrain").backward()
            optimizer.step()
    ms = _time_steps(step, steps, device)
    return {"train_ms_per_iteration": ms, "train_peak_memory_mib": _peak_memory_mib(device),
            "parameters": sum(p.numel() for p in student.parameters())}


def _measure_inference(config_dict: dict, device: str) -> dict:
    config = config_from_dict(config_dict, SemiSupConfig)
    net = _net(config, torch.device(device)).eval()
    volume = np.random.default_rng(0).normal(size=TYPICAL_VOLUME[config.data.dataset]).astype(np.float32)
    predict_volume(net, config, volume[:2] if config.data.spatial_dims == 2 else volume, device)  # warm-up
    start = time.perf_counter()
    predict_volume(net, config, volume, device)
    return {"inference_s_per_volume": time.perf_counter() - start, "volume": list(volume.shape),
            "inference_peak_memory_mib": _peak_memory_mib(torch.device(device))}


def benchmark_semisup(config: SemiSupConfig, *, steps: int = 5, device: str = "cpu") -> list[dict]:
    """One row per (model, stage) of the preset: ms per iteration and peak memory; inference per volume."""
    inference = _in_fresh_process(_measure_inference, config_to_dict(config), device)
    rows = []
    for name in MODEL_NAMES:
        variant = replace(config, model=replace(config.model, name=name))
        stages = ("supervised",) if name == "supervised-only" else ("pretrain", "selftrain")
        for stage in stages:
            if stage == "pretrain" and name == "multi-prototype":
                continue  # the same pre-training as mean-teacher-copy-paste
            rows.append({"model": name, "stage": stage, "dataset": config.data.dataset,
                         "patch_size": list(config.data.patch_size), "batch": config.data.labeled_batch,
                         "torch_threads": torch.get_num_threads(),
                         **_in_fresh_process(_measure_training, config_to_dict(variant), stage, steps, device),
                         **inference})
    return rows


def format_benchmark(rows: list[dict]) -> str:
    """A markdown table of :func:`benchmark_semisup` rows."""
    lines = ["| preset | model | stage | params | patch | batch (labelled + unlabelled) | train ms/iteration | "
             "train peak MiB | infer s/volume | volume | infer peak MiB |", "|---" * 11 + "|"]
    for r in rows:
        batch = f"{r['batch']}" if r["stage"] != "selftrain" else f"{r['batch']} + {r['batch']}"
        lines.append(f"| {r.get('preset', '?')} | {r['model']} | {r['stage']} | {r['parameters'] / 1e6:.2f} M | "
                     f"{'x'.join(map(str, r['patch_size']))} | {batch} | {r['train_ms_per_iteration']:.0f} | "
                     f"{r['train_peak_memory_mib']:.0f} | {r['inference_s_per_volume']:.2f} | "
                     f"{'x'.join(map(str, r['volume']))} | {r['inference_peak_memory_mib']:.0f} |")
    return "\n".join(lines)
