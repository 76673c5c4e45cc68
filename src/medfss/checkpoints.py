"""Checkpoints: what they hold, how to read them safely, the light export, and the one loader of weights.

Training writes checkpoints through this module and every inference path
(``medfss segment``, ``evaluate``, ``explain``, ``demo``) reads them through
:func:`load_model` / :func:`load_predictor`: the one place where weights are
loaded. It sits below :mod:`medfss.training` and :mod:`medfss.evaluation`
and imports neither. The training record (``training.json`` beside a run's
``model.pt``) is written and read here too.

Two kinds of file hold a trained model:

* the *training checkpoint* that Lightning writes every N iterations
  (``checkpoints/last.ckpt``): weights under ``model.``, optimiser, scheduler
  and loop state, to resume from. It is written through a temporary file and
  a rename, and the one it replaces is kept as ``previous.ckpt``: when the
  newest cannot be read (a disk that filled up, a file copied in half), a
  resume falls back to the previous one (:func:`resumable_checkpoint`);
* the *exported model* (``model.pt``): ``{"state_dict", "config",
  "medfss_version", "model_name", "slice_orientation"}`` only, for inference.

Both also hold the run's config as plain data, the medfss version that
wrote them and the voxel order of the training volumes (``slice_orientation``,
e.g. "LAS": the model has only seen slices in that layout, so ``medfss
segment`` puts scans in it; absent from files of medfss 0.1.0 before it was
recorded), the torch version and thread count that computed the weights
(``torch_version``, ``torch_threads``: on a CPU the thread count changes the
order of float sums, so two runs are bit-identical only when both match),
and both are read with ``torch.load(weights_only=True)``: opening
a checkpoint never runs code from it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from packaging.version import InvalidVersion, Version

from medfss import __version__
from medfss.config import ModelConfig, TrainConfig, config_from_dict, config_to_dict
from medfss.data.io import write_atomic, write_text_atomic
from medfss.errors import ConfigError, InputFileError
from medfss.inference.predictor import EpisodicPredictor
from medfss.models.base import FewShotSegmenter
from medfss.models.registry import build_model_from_config
from medfss.provenance import provenance

METADATA_KEYS = ("config", "medfss_version", "model_name")
OPTIONAL_METADATA_KEYS = ("slice_orientation", "torch_version", "torch_threads")  # absent from older files
LIGHTNING_MARKER = "pytorch-lightning_version"  # present in training checkpoints only
LIGHTNING_PREFIX = "model."  # the wrapped model's attribute name in the LightningModule
# What torch.load raises on a damaged file: its unpickler meets broken opcodes, memo keys and storages.
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError,
               TypeError, AttributeError, struct.error, MemoryError)
PREVIOUS_CHECKPOINT = "previous.ckpt"  # beside last.ckpt: the checkpoint it replaced

log = logging.getLogger(__name__)


def checkpoint_metadata(config: TrainConfig, slice_orientation: str | None = None) -> dict[str, Any]:
    """What every checkpoint carries beside the weights (plain data only)."""
    metadata = {"config": config_to_dict(config), "medfss_version": __version__, "model_name": config.model.name,
                "torch_version": str(torch.__version__), "torch_threads": torch.get_num_threads()}
    if slice_orientation is not None:
        metadata["slice_orientation"] = slice_orientation
    return metadata


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words: torch's own message is a page long."""
    refused = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n|$)", str(exc))
    if refused is None:
        return _first_line(exc)
    if "Unsupported global" in refused.group(1):
        return (f"it holds Python objects beyond tensors and plain data ({refused.group(1).strip()}); loading "
                "them could run code, so it is refused: use a checkpoint written by medfss")
    return f"damaged, or not written by torch.save: {refused.group(1).strip()}"


def _check_version(stored: Any, path: Path) -> None:
    """A file from a newer medfss may hold what this one cannot read: refuse it by name."""
    try:
        newer = Version(str(stored)) > Version(__version__)
    except InvalidVersion:
        raise InputFileError(f"{path}: invalid medfss_version {stored!r}") from None
    if newer:
        raise InputFileError(f"{path}: written by medfss {stored}, newer than the installed {__version__}; "
                             "upgrade medfss to read it")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint or an exported model, loaded with ``weights_only=True`` and checked.

    Raises :class:`InputFileError` for a missing, corrupt, foreign or too new
    file, and for non-finite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as exc:
        raise InputFileError(f"{path}: not a readable checkpoint ({_load_failure(exc)})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: not a medfss checkpoint (holds a {type(data).__name__}, not a dict)")
    missing = [k for k in ("state_dict", *METADATA_KEYS) if k not in data]
    if missing:
        raise InputFileError(f"{path}: not a medfss checkpoint (missing {', '.join(missing)})")
    _check_version(data["medfss_version"], path)
    state = data["state_dict"]
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise InputFileError(f"{path}: state_dict must map parameter names to tensors")
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise InputFileError(f"{path}: {len(broken)} weight tensors hold NaN or Inf (first: {broken[0]}): the "
                             "training diverged; use an earlier checkpoint")
    return data


def checkpoint_config(data: dict[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The config stored in a checkpoint read by :func:`read_checkpoint`."""
    try:
        return config_from_dict(data["config"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: stored config is invalid for this medfss ({exc})") from None


def model_state_dict(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own weights, without the LightningModule's ``model.`` prefix."""
    state = data["state_dict"]
    if LIGHTNING_MARKER not in data:
        return state
    return {k.removeprefix(LIGHTNING_PREFIX): v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename: never a half-written checkpoint."""
    return write_atomic(path, lambda tmp: torch.save(obj, tmp), suffix=Path(path).suffix)


def save_keeping_previous(obj: Any, path: str | os.PathLike) -> Path:
    """:func:`save_atomic`, keeping the file it replaces as ``previous.ckpt`` in the same folder.

    ``path`` exists at every moment (a hard link makes the copy; where links
    are not supported the old file is renamed instead), so a kill at any
    point leaves a readable newest or previous checkpoint.
    """
    path = Path(path)
    if path.is_file():
        previous = path.with_name(PREVIOUS_CHECKPOINT)
        link = previous.with_name(f".tmp-{PREVIOUS_CHECKPOINT}")
        try:
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, previous)
        except OSError:
            os.replace(path, previous)
    return save_atomic(obj, path)


def auto_resume(run_dir: str | os.PathLike) -> Path | None:
    """What ``--resume auto`` resumes from: ``run_dir/checkpoints/last.ckpt`` when a checkpoint was saved.

    None when the run saved none (it starts afresh). :func:`resumable_checkpoint`
    later falls back to previous.ckpt when last.ckpt is unreadable or missing.
    """
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return last if last.is_file() or last.with_name(PREVIOUS_CHECKPOINT).is_file() else None


def resumable_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` if it is a readable checkpoint, else the ``previous.ckpt`` beside it (with a warning).

    Raises :class:`InputFileError` naming both files when neither can be read.
    """
    path = Path(path)
    try:
        read_checkpoint(path)
        return path
    except InputFileError as exc:
        newest = exc
    previous = path.with_name(PREVIOUS_CHECKPOINT)
    if previous == path or not previous.is_file():
        raise newest
    try:
        read_checkpoint(previous)
    except InputFileError as older:
        raise InputFileError(f"cannot resume: {newest}; and {older}") from None
    log.warning("%s; resuming from the previous checkpoint %s instead", newest, previous)
    return previous


def export_model(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write the light inference file ``{"state_dict", "config", "medfss_version", "model_name"}``.

    Accepts a training checkpoint or an already exported model.
    """
    data = read_checkpoint(checkpoint_path)
    light = {"state_dict": model_state_dict(data),
             **{k: data[k] for k in (*METADATA_KEYS, *OPTIONAL_METADATA_KEYS) if k in data}}
    return save_atomic(light, out_path)


def load_model(path: str | os.PathLike,
               build: Callable[[ModelConfig], FewShotSegmenter] = build_model_from_config,
               ) -> tuple[FewShotSegmenter, TrainConfig]:
    """The trained model (in eval mode, on CPU) and its run's config, from either kind of file.

    ``build`` turns the stored model config into an untrained model (default:
    the model registry). Raises :class:`InputFileError` when the file is
    unreadable or its weights do not fit the model its config describes, and
    :class:`ConfigError` when its config is not valid for this medfss.
    """
    data = read_checkpoint(path)
    return model_from_checkpoint(data, path, build)


def model_from_checkpoint(data: dict[str, Any], path: str | os.PathLike,
                          build: Callable[[ModelConfig], FewShotSegmenter] = build_model_from_config,
                          ) -> tuple[FewShotSegmenter, TrainConfig]:
    """:func:`load_model` on the contents of a file already read with :func:`read_checkpoint`."""
    config = checkpoint_config(data, path)
    model = build(config.model)
    try:
        model.load_state_dict(model_state_dict(data))
    except RuntimeError as exc:
        raise InputFileError(f"{path}: weights do not fit the {config.model.name!r} model of its config "
                             f"({_first_line(exc)})") from None
    return model.eval(), config


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (a CUDA GPU when one is available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {device!r} ({exc}); use cpu or cuda") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but no CUDA GPU is available; use --device cpu")
    return torch_device


def load_predictor(path: str | os.PathLike, *, device: str | torch.device = "auto", batch_size: int = 8,
                   model_name: str | None = None) -> tuple[EpisodicPredictor, dict[str, Any]]:
    """The model of ``path`` as a Predictor at its training image size, and a description of it.

    ``model_name``: when given, the checkpoint must hold that model (a
    :class:`ConfigError` otherwise). The description holds the checkpoint,
    model name and options, image size, the training voxel order
    (``slice_orientation``), the device, and the training data set and its
    held-out ``fold`` (and ``validation_fold``, None unless an inner split).
    """
    torch_device = resolve_device(device)
    data = read_checkpoint(path)
    model, config = model_from_checkpoint(data, path)
    if model_name is not None and config.model.name != model_name:
        raise ConfigError(f"{path} holds a {config.model.name!r} model, not {model_name!r}")
    predictor = EpisodicPredictor(model, image_size=config.data.image_size, batch_size=batch_size,
                                  device=torch_device)
    return predictor, {"checkpoint": str(path), "name": config.model.name,
                       "options": dict(config.model.options), "image_size": config.data.image_size,
                       "slice_orientation": data.get("slice_orientation"), "device": str(torch_device),
                       "dataset": config.data.dataset, "fold": config.data.fold,
                       "validation_fold": config.data.validation_fold}


# --- the training record ---------------------------------------------------------------------

TRAINING_RECORD = "training.json"  # beside a run's model.pt


def record_training(run_dir: str | os.PathLike, iterations: int, elapsed_s: float, resumed: bool, *,
                    cpu_time_s: float) -> Path:
    """Write ``training.json``: iterations and wall time, summed over the resumptions of the run.

    Each session also keeps ``cpu_time_s``, the CPU time of the training
    process (all its threads, not its DataLoader workers): far below wall
    time x ``torch_threads``, the machine was busy with other work and the wall
    time measures the load, not the model.
    """
    path = Path(run_dir) / TRAINING_RECORD
    previous = json.loads(path.read_text()) if resumed and path.is_file() else {}
    sessions = [*previous.get("sessions", []), {"iterations_at_end": iterations, "wall_time_s": elapsed_s,
                                                "cpu_time_s": cpu_time_s, **provenance()}]
    record = {"iterations": iterations, "wall_time_s": sum(s["wall_time_s"] for s in sessions),
              "sessions": sessions}
    return write_text_atomic(json.dumps(record, indent=2) + "\n", path)


def read_training_record(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``training.json`` beside ``model_path`` (a run's model.pt), or None when there is none."""
    path = Path(model_path).parent / TRAINING_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: unreadable training record ({_first_line(exc)})") from None
