"""Speed and memory of a model preset: training ms per episode, inference per slice and per volume.

:func:`segment_peak_memory` measures ``medfss segment`` end to end on a
large synthetic CT instead: reading, normalising, predicting and writing.

Timings use random episodes of the preset's size, because the cost of a step
does not depend on the pixel values; they measure the model, not the data
pipeline (episode sampling runs in a worker beside training). Each part runs
in a fresh process so its peak memory is its own: peak resident memory on
CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

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
    times, cpu_times = [], []
    for step in range(bench.train_steps + 1):
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        model.loss(episode)["loss"].backward()
        optimizer.step()
        _sync(device)
        if step:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    step_s = statistics.median(times)
    return {"train_ms_per_step": 1000 * step_s,
            # CPU time of all the process's threads: on a CPU far below wall time x torch_threads, other
            # processes had the cores and the wall times say more about the machine than the model
            "train_cpu_ms_per_step": 1000 * statistics.median(cpu_times),
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



def synthetic_ct(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """An int16 CT in HU (air around a soft-tissue box holding a brighter organ) and its organ mask (uint8)."""
    x, y, z = shape
    image = np.full(shape, -1000, dtype=np.int16)
    image[x // 4: 3 * x // 4, y // 4: 3 * y // 4, z // 6: 5 * z // 6] = 40
    mask = np.zeros(shape, np.uint8)
    mask[2 * x // 5: 3 * x // 5, 2 * y // 5: 3 * y // 5, z // 3: 2 * z // 3] = 1
    image[mask == 1] = 200
    return image, mask


def segment_peak_memory(workdir: str | os.PathLike, shape: tuple[int, int, int] = (512, 512, 600), *,
                        checkpoint: str | os.PathLike | None = None, extra_args: Sequence[str] = (),
                        env: dict[str, str] | None = None, timeout_s: float = 3600) -> dict:
    """Peak resident memory of ``medfss segment`` on a synthetic CT of ``shape`` with one support.

    The query (0.8 x 0.8 x 1 mm, uncompressed int16 as scanners write it)
    and a 128 x 128 x 60 support with its mask are written to ``workdir``;
    the command, with ``extra_args`` added (e.g. ``--guidance registration``),
    runs in a child process (default model unless ``checkpoint``) and its
    own peak resident set is read with ``wait4``.
    """
    import nibabel as nib

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    query, _ = synthetic_ct(shape, (0.8, 0.8, 1.0))
    nib.save(nib.Nifti1Image(query, np.diag([0.8, 0.8, 1.0, 1.0])), workdir / "ct.nii")
    del query
    support, mask = synthetic_ct((128, 128, 60), (3.2, 3.2, 10.0))
    support_affine = np.diag([3.2, 3.2, 10.0, 1.0])
    nib.save(nib.Nifti1Image(support, support_affine), workdir / "support.nii.gz")
    nib.save(nib.Nifti1Image(mask, support_affine), workdir / "support_mask.nii.gz")
    out = workdir / "prediction.nii.gz"
    command = [sys.executable, "-m", "medfss.cli", "segment", "--query", str(workdir / "ct.nii"),
               "--support-image", str(workdir / "support.nii.gz"), "--support-mask",
               str(workdir / "support_mask.nii.gz"), "--label", "1", "--out", str(out), "--device", "cpu",
               "--quiet", *(["--checkpoint", str(checkpoint)] if checkpoint is not None else []), *extra_args]
    measured = command_peak_memory(command, workdir, env=env, timeout_s=timeout_s)
    return {"query_shape": list(shape), "supports": 1, **measured, "output_shape": list(nib.load(out).shape),
            "checkpoint": str(checkpoint) if checkpoint is not None else "bundled default model"}


def command_peak_memory(command: list[str], workdir: str | os.PathLike, *, env: dict[str, str] | None = None,
                        timeout_s: float = 3600) -> dict:
    """Run ``command`` (``[python, -m, medfss.cli, ...]``) and measure its own peak resident memory.

    Returns ``{"peak_memory_mib", "wall_s", "command"}``; raises ``RuntimeError``
    with the end of its stderr when it fails.
    """
    start = time.perf_counter()
    with (Path(workdir) / "stderr.txt").open("w+") as stderr:  # a file: a full pipe would block the child
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = _wait4(proc, timeout_s)
        stderr.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {stderr.read().strip()[-2000:]}")
    return {"peak_memory_mib": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - start,
            "command": "medfss " + " ".join(command[3:])}


def _wait4(proc: subprocess.Popen, timeout_s: float):
    """``os.wait4`` on ``proc`` (its own rusage, not that of every child), killing it after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            return pid, status, usage
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.2)
