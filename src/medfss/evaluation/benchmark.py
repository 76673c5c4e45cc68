"""Speed and memory of a model preset: training ms per episode, inference per slice and per volume.

Timings use random episodes of the preset's size, because the cost of a step
does not depend on the pixel values; they measure the model, not the data
pipeline (episode sampling runs in a worker beside training). Each part runs
in a fresh process so its peak memory is its own: peak resident memory on
CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from medfss.config import TrainConfig, config_from_dict, config_to_dict
from medfss.data.episodes import Episode
from medfss.validation import check_positive_int


@dataclass(frozen=True)
class BenchmarkConfig:
    """How long to measure; the defaults take about a minute per CPU preset."""

    train_steps: int = 5  # timed optimisation steps, after one warm-up step
    query_slices: int = 32  # slices of the timed query volume (CHAOST2 volumes hold 26-50)
    native_size: int = 256  # in-plane size of the query volume before resizing to the model's
    device: str = "cpu"

    def __post_init__(self):
        check_positive_int(self, "train_steps", "query_slices", "native_size")


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_episode(batch: int, shots: int, size: int, device: torch.device) -> Episode:
    """An episode of the right shapes with a square foreground (values do not change the cost)."""
    masks = torch.zeros(batch, shots, size, size)
    masks[..., size // 4: size // 2, size // 4: size // 2] = 1
    query = torch.zeros(batch, size, size, dtype=torch.long)
    query[:, size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 1
    return Episode(torch.randn(batch, shots, 1, size, size), masks, torch.randn(batch, 1, size, size),
                   query).to(device)


def _measure_training(config_dict: dict, settings: dict) -> dict:
    from medfss.models.registry import build_model_from_config
    from medfss.training.schedule import build_optimizer

    config, bench = config_from_dict(config_dict), BenchmarkConfig(**settings)
    device = torch.device(bench.device)
    model = build_model_from_config(config.model).to(device).train()
    optimizer, _ = build_optimizer(model.parameters(), config.optim)
    episode = random_episode(config.optim.batch_size, config.data.shots, config.data.image_size, device)
    times = []
    for step in range(bench.train_steps + 1):
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        model.loss(episode)["loss"].backward()
        optimizer.step()
        _sync(device)
        if step:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {"train_ms_per_step": 1000 * step_s,
            "train_ms_per_episode": 1000 * step_s / config.optim.batch_size,
            "train_peak_memory_mib": _peak_memory_mib(device),
            "parameters": sum(p.numel() for p in model.parameters())}


def _measure_inference(config_dict: dict, settings: dict) -> dict:
    from medfss.inference.predictor import EpisodicPredictor
    from medfss.models.registry import build_model_from_config

    config, bench = config_from_dict(config_dict), BenchmarkConfig(**settings)
    model = build_model_from_config(config.model)
    predictor = EpisodicPredictor(model, image_size=config.data.image_size, device=bench.device)
    n, size = bench.query_slices, bench.native_size
    support = torch.randn(1, size, size)
    mask = torch.zeros(1, size, size)
    mask[:, size // 4: size // 2, size // 4: size // 2] = 1
    predictor.predict(support, mask, torch.randn(2, size, size))  # warm-up
    device = torch.device(bench.device)
    _sync(device)
    start = time.perf_counter()
    predictor.predict(support, mask, torch.randn(n, size, size))
    _sync(device)
    volume_s = time.perf_counter() - start
    return {"inference_ms_per_slice": 1000 * volume_s / n, "inference_s_per_volume": volume_s,
            "inference_peak_memory_mib": _peak_memory_mib(device)}


def _in_fresh_process(function, *args) -> dict:
    """Run ``function(*args)`` in a spawned process (its own peak memory) and return its result."""
    context = mp.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def benchmark(config: TrainConfig, settings: BenchmarkConfig = BenchmarkConfig()) -> dict:
    """Training and inference speed and peak memory of the model and sizes of ``config``."""
    plain, bench = config_to_dict(config), asdict(settings)
    return {"model": config.model.name, "model_options": dict(config.model.options),
            "image_size": config.data.image_size, "batch_size": config.optim.batch_size,
            "settings": bench, "torch_threads": torch.get_num_threads(),
            **_in_fresh_process(_measure_training, plain, bench),
            **_in_fresh_process(_measure_inference, plain, bench)}


def format_benchmark(rows: list[dict]) -> str:
    """A markdown table of :func:`benchmark` results."""
    lines = ["| preset | model | params | size | batch | train ms/episode | train peak MiB | "
             "infer ms/slice | infer s/volume | infer peak MiB |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r.get('preset', '?')} | {r['model']} {r['model_options'].get('backbone', '')} | "
                     f"{r['parameters'] / 1e6:.2f} M | {r['image_size']} | {r['batch_size']} | "
                     f"{r['train_ms_per_episode']:.0f} | {r['train_peak_memory_mib']:.0f} | "
                     f"{r['inference_ms_per_slice']:.1f} | {r['inference_s_per_volume']:.2f} | "
                     f"{r['inference_peak_memory_mib']:.0f} |")
    return "\n".join(lines)

