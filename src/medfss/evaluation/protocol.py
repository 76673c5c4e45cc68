"""The standard few-shot evaluation protocol of medical image segmentation.

Roy et al. (2020), adopted by SSL-ALPNet (Ouyang et al., sec. 4) and every
method since: for each test class, the slices from the top to the bottom of
the class in a volume are split into C equal chunks (C = 3). The middle
slice of each chunk of the *support* volume is the support of every slice in
the same chunk of a *query* volume (a different patient). The 2D predictions
are stacked into a volume, slices outside the class extent are background,
and the volume is scored in 3D (:mod:`medfss.evaluation.metrics`).

Folds: the test volumes of fold f are ``dataset.fold_case_ids(f)``; the
support is the test volume at ``support_index`` (k-shot: the k consecutive
test volumes from there, wrapping) and the queries are the other test
volumes. The class extent comes from the ground truth (``extent="gt"``), as
in the literature: this tells the model *which* slices hold the organ, which
is why these scores are higher than those of a fully automatic method.
``extent="estimated"`` uses no query label: the support organ's relative
position in its scan is mapped onto the query scan
(:func:`medfss.inference.estimate_query_extent`), slices outside it are
background, no label is kept outside the query's body mask
(:mod:`medfss.inference.body`) and only the largest 3D component is kept:
exactly what ``medfss segment`` outputs. ``extent="gt"`` applies neither
post-processing step, so that its scores stay those of the literature's
protocol, which thresholds the raw prediction. Either way the whole query volume is scored.
The support slices and the prediction loop are those of
:mod:`medfss.inference`, shared with ``medfss segment``.

Aggregation: each (fold, support) run averages its query volumes; the tables
report the mean and standard deviation over runs (folds x support choices).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from medfss.data.datasets import Dataset, DatasetSpec, Volume
from medfss.errors import ConfigError
from medfss.evaluation.metrics import METRIC_NAMES, SegmentationScores, segmentation_scores
from medfss.inference import (Predictor, SupportScan, VolumePredictor, body_mask, estimated_extent, foreground,
                              full_volume, predict_class)


EXTENTS = ("gt", "estimated")


@dataclass(frozen=True)
class ProtocolConfig:
    """Every choice of one evaluation, saved beside its results.

    ``classes`` empty means the data set's ``eval_classes``; :func:`evaluate`
    records the resolved list. ``setting`` (1 or 2, SSL-ALPNet sec. 4) and
    ``seed`` only matter for how the evaluated model was trained: the
    protocol records them so a result names the model run it belongs to, and
    is itself deterministic. ``threshold`` turns the foreground probability
    into a mask (0.5 equals the argmax of a two-class softmax). ``extent``
    says which query slices are predicted: ``"gt"`` those of the class in the
    query's ground truth, ``"estimated"`` those of
    :func:`medfss.inference.estimate_query_extent`, post-processed as ``medfss segment`` does.
    """

    dataset: str
    classes: tuple[str, ...] = ()
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    support_indices: tuple[int, ...] = (0,)
    shots: int = 1
    chunks: int = 3
    setting: int = 1
    seed: int = 0
    extent: str = "gt"
    threshold: float = 0.5

    def __post_init__(self):
        for name in ("classes", "folds", "support_indices"):  # lists from YAML/JSON -> tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.folds:
            raise ValueError("folds is empty: give at least one fold, e.g. folds=(0, 1, 2, 3, 4)")
        if not self.support_indices:
            raise ValueError("support_indices is empty: give at least one, e.g. support_indices=(0,)")
        if len(set(self.folds)) != len(self.folds) or len(set(self.support_indices)) != len(
                self.support_indices):
            raise ValueError(f"folds {self.folds} and support_indices {self.support_indices} must not "
                             "repeat a value (a repeat would count one run twice)")
        if self.shots < 1:
            raise ValueError(f"shots must be at least 1 (1-shot is the standard), got {self.shots}")
        if self.chunks < 1:
            raise ValueError(f"chunks must be at least 1 (3 is the standard), got {self.chunks}")
        if self.setting not in (1, 2):
            raise ValueError(f"setting must be 1 or 2 (SSL-ALPNet sec. 4), got {self.setting}")
        if self.extent not in EXTENTS:
            raise ValueError(f"extent must be 'gt' (class extent from the query's ground truth, the "
                             f"protocol of the literature) or 'estimated' (from the support's relative "
                             f"extent, no query label), got {self.extent!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold is a probability in (0, 1) (0.5 is the argmax), got {self.threshold}")

    def resolved(self, spec: DatasetSpec) -> "ProtocolConfig":
        """This config with the data set's evaluated classes filled in; unknown classes fail."""
        if spec.name != self.dataset:
            raise ConfigError(f"the protocol is for data set {self.dataset!r} but {spec.name!r} was given")
        classes = self.classes or spec.eval_classes
        for name in classes:
            spec.class_index(name)  # raises ConfigError listing the valid names
        return replace(self, classes=tuple(classes))

    @property
    def largest_component(self) -> bool:
        """Whether predictions keep only their largest 3D component: as ``medfss segment``, without query labels."""
        return self.extent == "estimated"

    @property
    def body_mask(self) -> bool:
        """Whether predictions are cut to the query's body mask: as ``medfss segment``, without query labels."""
        return self.extent == "estimated"

    def to_dict(self) -> dict:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {**values, "largest_component": self.largest_component, "body_mask": self.body_mask}


def support_case_ids(fold_cases: Sequence[str], support_index: int, shots: int) -> tuple[str, ...]:
    """The ``shots`` consecutive test volumes from ``support_index`` (wrapping) that form the support."""
    n = len(fold_cases)
    if not 0 <= support_index < n:
        raise ConfigError(f"support index {support_index} is outside this fold's {n} test volumes; "
                          f"choose one in 0..{n - 1}")
    if shots >= n:
        raise ConfigError(f"{shots}-shot needs at least {shots + 1} test volumes per fold (one left as a "
                          f"query) but the fold has {n}; use fewer shots")
    return tuple(fold_cases[(support_index + j) % n] for j in range(shots))


@dataclass(frozen=True)
class QueryResult:
    """The scores of one class on one query volume."""

    case_id: str
    scores: SegmentationScores


@dataclass(frozen=True)
class RunResult:
    """One class evaluated with one support choice of one fold on the fold's query volumes."""

    fold: int
    support_index: int
    support_cases: tuple[str, ...]
    class_name: str
    queries: tuple[QueryResult, ...]

    def mean(self, metric: str) -> float:
        """The mean of ``metric`` over the query volumes where it is defined (NaN if nowhere)."""
        return _nanmean([getattr(q.scores, metric) for q in self.queries])

    def n_undefined(self, metric: str) -> int:
        return sum(math.isnan(getattr(q.scores, metric)) for q in self.queries)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nanstd(values: Sequence[float]) -> float:
    """Population standard deviation (ddof = 0) of the defined values, as the papers' ± columns."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.std(finite)) if finite else math.nan


def _json_safe(value):
    """Replace NaN and infinities by None (JSON ``null``) so that the output is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class EvaluationResult:
    """Every score of one evaluation, with the resolved config and the wall time."""

    model: str
    config: ProtocolConfig
    runs: tuple[RunResult, ...]
    wall_time_s: float
    run_keys: tuple[tuple[int, int], ...] = field(init=False)  # (fold, support_index), in run order

    def __post_init__(self):
        keys = dict.fromkeys((r.fold, r.support_index) for r in self.runs)
        object.__setattr__(self, "run_keys", tuple(keys))

    def class_runs(self, class_name: str) -> list[RunResult]:
        return [r for r in self.runs if r.class_name == class_name]

    def class_summary(self, class_name: str) -> dict[str, dict[str, float]]:
        """Per metric: mean and std over runs of the run means, and the count of undefined values."""
        runs = self.class_runs(class_name)
        return {m: {"mean": _nanmean([r.mean(m) for r in runs]),
                    "std": _nanstd([r.mean(m) for r in runs]),
                    "n_undefined": sum(r.n_undefined(m) for r in runs)} for m in METRIC_NAMES}

    def mean_summary(self) -> dict[str, dict[str, float]]:
        """Per metric: the class-averaged run means, then mean and std over runs."""
        by_key = {key: [r for r in self.runs if (r.fold, r.support_index) == key] for key in self.run_keys}
        summary = {}
        for m in METRIC_NAMES:
            run_means = [_nanmean([r.mean(m) for r in runs]) for runs in by_key.values()]
            summary[m] = {"mean": _nanmean(run_means), "std": _nanstd(run_means),
                          "n_undefined": sum(r.n_undefined(m) for r in self.runs)}
        return summary

    @property
    def mean_dice(self) -> float:
        return self.mean_summary()["dice"]["mean"]

    def to_json(self) -> dict:
        """A strict-JSON dict (NaN -> null): the headline, the config, per-class and raw values."""
        classes = {}
        for name in self.config.classes:
            runs = [{"fold": r.fold, "support_index": r.support_index, "support_cases": list(r.support_cases),
                     **{m: r.mean(m) for m in METRIC_NAMES},
                     "queries": [{"case_id": q.case_id, **q.scores.as_dict()} for q in r.queries]}
                    for r in self.class_runs(name)]
            classes[name] = {**self.class_summary(name), "runs": runs}
        return _json_safe({
            "model": self.model,
            "dataset": self.config.dataset,
            "setting": self.config.setting,
            "shots": self.config.shots,
            "mean_dice": self.mean_dice,
            "protocol": self.config.to_dict(),
            "classes": classes,
            "mean": self.mean_summary(),
            "wall_time_s": self.wall_time_s,
        })

    @classmethod
    def from_json(cls, record: dict) -> "EvaluationResult":
        """The result ``to_json`` wrote (a results.json), with its per-query scores (null -> NaN)."""
        protocol = {k: v for k, v in record["protocol"].items() if k not in ("largest_component", "body_mask")}
        runs = []
        for class_name, summary in record["classes"].items():
            for run in summary["runs"]:
                queries = tuple(QueryResult(q["case_id"], SegmentationScores(
                    **{m: math.nan if q[m] is None else float(q[m]) for m in METRIC_NAMES})) for q in run["queries"])
                runs.append(RunResult(run["fold"], run["support_index"], tuple(run["support_cases"]), class_name,
                                      queries))
        return cls(record["model"], ProtocolConfig(**protocol), tuple(runs), record["wall_time_s"])

    def format_table(self) -> str:
        """Per-class and mean scores laid out like the papers' tables (Dice ± std over runs)."""
        c = self.config
        lines = [f"{self.model} on {c.dataset}, setting {c.setting}, {c.shots}-shot, {c.chunks} chunks: "
                 f"{len(self.run_keys)} runs (folds {list(c.folds)} x supports {list(c.support_indices)}), "
                 f"{self.wall_time_s:.1f} s",
                 f"{'class':<16}{'Dice':>16}{'Jaccard':>10}{'HD95 mm':>10}{'ASD mm':>9}"]
        rows = [(name, self.class_summary(name)) for name in c.classes] + [("mean", self.mean_summary())]
        for i, (name, s) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("-" * 61)
            dice = f"{s['dice']['mean']:.2f} ± {s['dice']['std']:.2f}"
            lines.append(f"{name:<16}{dice:>16}{s['jaccard']['mean']:>10.2f}{s['hd95']['mean']:>10.2f}"
                         f"{s['asd']['mean']:>9.2f}")
        undefined = sum(r.n_undefined("hd95") for r in self.runs)
        if undefined:
            lines.append(f"({undefined} query volumes with an empty prediction have no surface distance "
                         "and are left out of HD95/ASD)")
        return "\n".join(lines)


Drawer = Callable[[Volume, np.ndarray, np.ndarray], None]  # (query, prediction, truth), both [H, W, D] bool


def score_queries(predictor: Predictor | VolumePredictor, supports: Sequence[Volume], queries: Sequence[Volume],
                  class_index: int, config: ProtocolConfig, draw: Drawer | None = None) -> Iterator[QueryResult]:
    """Predict and score ``class_index`` on each query volume that contains it.

    The prediction is :func:`medfss.inference.predict_class`, the path
    ``medfss segment`` takes: the chunk rule's plan for slice predictors, the
    whole volume for volume predictors (registration). ``extent="gt"`` cuts
    it to the class's slices in the query's ground truth (the literature's
    protocol). ``"estimated"`` uses no query label: slice predictors predict
    the extent estimated from the supports, volume predictors the whole
    volume, and the prediction is post-processed as ``medfss segment`` does
    (body mask, largest 3D component), so the score is that of the tool's
    output. A query volume without the class is skipped under either
    ``extent`` (it has no Dice; its absence shows in the run's query list).
    ``draw``, when given, sees every scored prediction with its ground truth.
    """
    support_scans = [SupportScan(s.image, s.label == class_index, s.spacing) for s in supports]
    for support, scan in zip(supports, support_scans):
        if not scan.mask.any():
            raise ConfigError(f"support volume {support.case_id} does not contain class {class_index}; "
                              "choose another support index")
    for query in queries:
        truth = query.label == class_index  # [H, W, D]
        if not truth.any():
            continue
        if config.extent == "gt":
            extent = query.class_extent(class_index)
        elif isinstance(predictor, VolumePredictor):
            extent = None
        else:
            extent = estimated_extent(support_scans, (0, query.num_slices))
        body = body_mask(query.image) if config.body_mask else None  # [H, W, D]
        top, probabilities = predict_class(predictor, support_scans, query.image, query.spacing, extent,
                                           chunks=config.chunks, body=body)  # [H, W, n]
        mask = foreground(probabilities, config.threshold, config.largest_component)
        prediction = full_volume(mask, top, query.num_slices)  # [H, W, D]
        if draw is not None:
            draw(query, prediction, truth)
        yield QueryResult(query.case_id, segmentation_scores(prediction, truth, query.spacing))


def evaluate(dataset: Dataset, predictor_for: Callable[[int, str], Predictor], config: ProtocolConfig,
             progress: bool = True, *, model_name: str = "unnamed",
             draw: Callable[[int, int, str], Drawer] | None = None) -> EvaluationResult:
    """Run the protocol of ``config`` on ``dataset``.

    predictor_for(fold, class_name) returns the predictor for that fold's test
    volumes and class: trained models have one checkpoint per fold (and in
    setting 2 one per test group, trained without its slices); the baselines
    ignore both. Each fold's test volumes are loaded once and shared by its
    support choices and classes. ``draw(fold, support_index, class_name)``,
    when given, returns the :data:`Drawer` of that run (``medfss evaluate --overlays``).
    """
    config = config.resolved(dataset.spec)
    fold_cases = {f: dataset.fold_case_ids(f) for f in config.folds}
    supports_of = {(f, i): support_case_ids(fold_cases[f], i, config.shots)
                   for f in config.folds for i in config.support_indices}  # fails before any work
    total = sum(len(cases) - config.shots for cases in fold_cases.values()) * \
        len(config.support_indices) * len(config.classes)
    start = time.perf_counter()
    runs = []
    with tqdm(total=total, disable=not progress, unit="query",
              desc=f"{model_name} {config.dataset} {config.shots}-shot") as bar:
        for fold in config.folds:
            volumes = {c: dataset.load(c) for c in fold_cases[fold]}
            for support_index in config.support_indices:
                support_ids = supports_of[fold, support_index]
                supports = [volumes[c] for c in support_ids]
                queries = [v for c, v in volumes.items() if c not in support_ids]
                for class_name in config.classes:
                    predictor = predictor_for(fold, class_name)
                    if not isinstance(predictor, (Predictor, VolumePredictor)):
                        raise TypeError(f"predictor_for({fold}, {class_name!r}) returned "
                                        f"{type(predictor).__name__}, which has neither "
                                        "predict(support_images, support_masks, query_images) nor "
                                        "segment_volume(supports, query, query_spacing)")
                    results = []
                    drawer = draw(fold, support_index, class_name) if draw is not None else None
                    for result in score_queries(predictor, supports, queries,
                                                dataset.spec.class_index(class_name), config, drawer):
                        results.append(result)
                        bar.update()
                    runs.append(RunResult(fold, support_index, support_ids, class_name, tuple(results)))
    return EvaluationResult(model_name, config, tuple(runs), time.perf_counter() - start)
