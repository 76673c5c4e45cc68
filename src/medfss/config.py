"""The settings of a training run: typed frozen dataclasses, YAML and CLI overrides.

A run is described by one :class:`TrainConfig`, built once and never changed:
the defaults live here (one place per default), a preset YAML in ``configs/``
replaces some of them, dotted ``--set`` overrides replace more, and the result
is saved beside the run's outputs so every run folder holds the exact config
it used. Every value is checked against its field's type on the way in, so a
typo fails at once with a one-line :class:`~medfss.errors.ConfigError` rather
than hours into training.

    config = load_config("configs/alpnet_cpu.yaml", ["optim.lr=0.01", "data.fold=2"])
    save_config(config, run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medfss.data.io import write_text_atomic
from medfss.errors import ConfigError, InputFileError
from medfss.validation import require


@dataclass(frozen=True)
class ModelConfig:
    """Which model to build: ``medfss.models.registry.build_model(name, **options)``."""

    name: str = "alpnet"
    options: dict[str, Any] = field(default_factory=dict)  # passed as keyword arguments to the builder


@dataclass(frozen=True)
class DataConfig:
    """Where training episodes come from.

    ``test_classes`` names the classes the trained model will be tested on. In
    setting 2 every training slice that shows one of them, or another class of
    its organ group, is dropped (SSL-ALPNet sec. 4); with supervised training
    they are never used as a training foreground in either setting.
    ``augment``: None keeps each sampler's own default (SSL-ALPNet's query
    transforms when self-supervised, none when supervised); a mapping (even
    empty) turns them on, with those fields changed.
    """

    dataset: str = "CHAOST2"  # a registered data set or the folder of an nnU-Net raw data set
    data_root: str | None = None  # None: $MEDFSS_DATA_ROOT, else ../shared/data
    fold: int = 0  # its volumes are held out of training
    # an inner validation split: this fold's volumes leave training too, so that settings are chosen by
    # scoring them, never the test fold (scripts/cpu_tables.sh INNER=1)
    validation_fold: int | None = None
    setting: Literal[1, 2] = 1
    test_classes: tuple[str, ...] = ()
    image_size: int = 256  # episodes are resized to image_size x image_size
    shots: int = 1
    # self: 2D superpixels (SSL-ALPNet); supervoxels: 3D supervoxels (ADNet); supervised: manual labels
    supervision: Literal["self", "supervoxels", "supervised"] = "self"
    superpixels: dict[str, Any] = field(default_factory=dict)  # SuperpixelConfig (SupervoxelConfig) fields
    # pseudolabels at several sizes: one map per factor (SuperpixelConfig.scaled), each episode's drawn uniformly
    pseudolabel_scales: tuple[float, ...] = (1.0,)
    augment: dict[str, Any] | None = None  # AugmentConfig fields to change; None: the sampler's default
    cache_dir: str | None = None  # superpixel cache; None: <run_dir>/superpixels

    def __post_init__(self):
        require(self.fold >= 0, "data.fold", f"must be >= 0, got {self.fold}")
        require(self.validation_fold is None or (self.validation_fold >= 0 and self.validation_fold != self.fold),
                "data.validation_fold", f"must be >= 0 and not the test fold {self.fold}, got {self.validation_fold}")
        require(len(self.pseudolabel_scales) >= 1 and all(s > 0 for s in self.pseudolabel_scales),
                "data.pseudolabel_scales", f"must be one or more factors > 0, got {list(self.pseudolabel_scales)}")
        require(self.image_size >= 8, "data.image_size", f"must be >= 8 px, got {self.image_size}")
        require(self.shots >= 1, "data.shots", f"must be >= 1, got {self.shots}")
        require(self.setting == 1 or self.test_classes, "data.test_classes",
                 "must name the test classes in setting 2 (their slices leave training), "
                 "e.g. 'data.test_classes=[liver, spleen]'")


@dataclass(frozen=True)
class OptimConfig:
    """SGD with a step decay: ``lr_t = lr * lr_gamma ** floor(t / lr_step)`` at iteration t.

    ``grad_clip``: the largest global 2-norm of the gradient; a step whose
    gradient is longer is scaled down to it. None (the papers' recipe) never clips.
    """

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_gamma: float = 0.98
    lr_step: int = 1000  # iterations between two decays
    iterations: int = 100_000
    batch_size: int = 1  # episodes per optimisation step
    grad_clip: float | None = None

    def __post_init__(self):
        require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        require(0 <= self.momentum < 1, "optim.momentum", f"must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 < self.lr_gamma <= 1, "optim.lr_gamma", f"must be in (0, 1], got {self.lr_gamma}")
        require(self.lr_step >= 1, "optim.lr_step", f"must be >= 1, got {self.lr_step}")
        require(self.iterations >= 1, "optim.iterations", f"must be >= 1, got {self.iterations}")
        require(self.batch_size >= 1, "optim.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip",
                 f"must be > 0, or null for no clipping, got {self.grad_clip}")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the loop runs; none of it changes what a step computes (but ``seed``)."""

    seed: int = 0
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = 1  # per node
    num_nodes: int = 1
    strategy: Literal["auto", "ddp"] = "auto"
    num_workers: int = 0  # episode-sampling processes per device
    checkpoint_every: int = 1000  # iterations
    log_every: int = 50  # iterations
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"

    def __post_init__(self):
        require(self.seed >= 0, "runtime.seed", f"must be >= 0, got {self.seed}")
        require(self.devices >= 1, "runtime.devices", f"must be >= 1, got {self.devices}")
        require(self.num_nodes >= 1, "runtime.num_nodes", f"must be >= 1, got {self.num_nodes}")
        require(self.num_workers >= 0, "runtime.num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.checkpoint_every >= 1, "runtime.checkpoint_every",
                 f"must be >= 1, got {self.checkpoint_every}")
        require(self.log_every >= 1, "runtime.log_every", f"must be >= 1, got {self.log_every}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# --- typed conversion between plain data and the dataclasses -------------------------


def _describe(hint: Any) -> str:
    """A type hint in words, for error messages."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict:
        return "a mapping"
    if hint is type(None):
        return "null"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` (and converted where lossless).

    Conversions: int -> float; list -> tuple; a numeric string -> float, because
    PyYAML reads ``1e-3`` (no dot) as a string.
    """
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping of {sorted(_field_types(hint))}, got {value!r}")
        return _from_mapping(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return _coerce(value, arm, key)
            except ConfigError:
                continue
    elif origin is Literal:
        if any(value == a and type(value) is type(a) for a in typing.get_args(hint)):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, typing.get_args(hint)[0], f"{key}[{i}]") for i, v in enumerate(value))
    elif origin is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif hint is Any:
        return value
    elif hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")


def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unknown_key(key: str, valid: Iterable[str]) -> ConfigError:
    section = key.rpartition(".")[0]
    where = f"in {section}" if section else "at the top level"
    return ConfigError(f"unknown config key {key!r}; valid keys {where}: {', '.join(sorted(valid))}")


def _from_mapping(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    fields = _field_types(cls)
    for name in values:
        if name not in fields:
            raise _unknown_key(_join(prefix, name), fields)
    return cls(**{name: _coerce(v, fields[name], _join(prefix, name)) for name, v in values.items()})


def config_from_dict(values: Mapping[str, Any], cls: type = TrainConfig) -> Any:
    """A ``cls`` (default :class:`TrainConfig`) from nested plain data; missing keys keep their defaults.

    A training config's free-form mappings are checked too (:func:`check_free_form`),
    so a misspelt model option fails here, not when the model is built.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"a config must be a mapping of {sorted(_field_types(cls))}, "
                          f"got {type(values).__name__}")
    config = _from_mapping(cls, values, "")
    if cls is TrainConfig:
        check_free_form(config)
    return config


def check_free_form(config: TrainConfig) -> None:
    """Check the mappings whose schema lives with their owner: model options, superpixels, augmentation.

    ``model.options`` against the named model's settings dataclass and encoder
    options (:func:`medfss.models.registry.check_model_options`), when the
    name is a registered model (a custom model passed to the trainer by hand
    checks its own);
    ``data.superpixels`` and ``data.augment`` against
    :class:`~medfss.data.superpixels.SuperpixelConfig` (or
    :class:`~medfss.data.supervoxels.SupervoxelConfig`) and
    :class:`~medfss.data.transforms.AugmentConfig`. Imported here, not at the
    top, because they pull in torch and the models.
    """
    from medfss.data.superpixels import SuperpixelConfig
    from medfss.data.supervoxels import SupervoxelConfig
    from medfss.data.transforms import AugmentConfig
    from medfss.models.registry import MODELS, check_model_options

    if config.model.name in MODELS:
        check_model_options(config.model.name, config.model.options)
    pseudolabels = SupervoxelConfig if config.data.supervision == "supervoxels" else SuperpixelConfig
    sub_config(pseudolabels, config.data.superpixels, "data.superpixels")
    if config.data.augment is not None:
        sub_config(AugmentConfig, config.data.augment, "data.augment")


def sub_config(cls: type, values: Mapping[str, Any], key: str) -> Any:
    """``cls(**values)`` for a free-form mapping at ``key``: unknown fields and bad values name ``key``."""
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"{key}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(valid))}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain data (dicts, lists, str, numbers, None): YAML- and ``weights_only``-safe."""
    return _plain(dataclasses.asdict(config))


# --- overrides, files -----------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.01"`` -> ``(["optim", "lr"], 0.01)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=0.01")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    return key.strip().split("."), value


def _set_dotted(tree: dict[str, Any], cls: type, keys: list[str], value: Any, done: str = "") -> None:
    """Set ``tree[k0][k1]... = value``, checking each key against the dataclass ``cls``.

    Below a ``dict`` field (model options, superpixel settings) any key is accepted:
    the model builder and the superpixel settings check those themselves.
    """
    head, rest = keys[0], keys[1:]
    path = _join(done, head)
    if cls is not None:
        fields = _field_types(cls)
        if head not in fields:
            raise _unknown_key(path, fields)
        hint = fields[head]
        child_cls = hint if dataclasses.is_dataclass(hint) else None
        if rest and child_cls is None and typing.get_origin(hint) is not dict:
            raise ConfigError(f"{path} is {_describe(hint)}, it has no key {rest[0]!r}")
    else:
        child_cls = None
    if not rest:
        tree[head] = value
        return
    child = tree.get(head)
    tree[head] = child = dict(child) if isinstance(child, Mapping) else {}
    _set_dotted(child, child_cls, rest, value, path)


def apply_overrides(config: Any, overrides: Iterable[str]) -> Any:
    """A new config of the same class with ``section.key=value`` overrides applied, in order, and re-checked."""
    tree = config_to_dict(config)
    for text in overrides:
        keys, value = parse_override(text)
        _set_dotted(tree, type(config), keys, value)
    return config_from_dict(tree, type(config))


def read_yaml(path: str | Path | None) -> Any:
    """The plain data of a config YAML file (``{}`` for None or an empty file)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputFileError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), cls: type = TrainConfig) -> Any:
    """The ``cls`` config of a YAML file (defaults for what it leaves out; none: all defaults) + overrides."""
    values = read_yaml(path)
    try:
        config = config_from_dict(values, cls)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return apply_overrides(config, overrides)


def save_config(config: Any, path: str | Path) -> Path:
    """Write ``config`` as YAML (a complete config: every field, defaults included)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    return write_text_atomic(text, path)
