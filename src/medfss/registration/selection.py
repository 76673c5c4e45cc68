"""Choosing the guided fusion without the scored fold: nested cross-validation over the test folds.

The fusion of :mod:`medfss.registration.guided` has free choices (the
network's weight w, the prior's softening sigma, which support slices the
network sees). A *sweep* runs the protocol once, computes for every class of
every query the evidence (the checked registrations' prior and the network's
probability, :meth:`~medfss.registration.guided.GuidedPredictor.evidence`)
and scores every fusion of a :class:`FusionGrid` on it, post-processed as
``medfss segment`` does (body mask, largest component; no query label).
Only the Dice is computed: it is what the choice is made on.

A *nested selection* then chooses, for each test fold f, the grid point with
the best mean Dice over the other folds (each scored with its own fold's
model): fold f's labels never enter its own choice, and fold f's score under
that choice is an honest estimate. The learned fusion
(:mod:`medfss.registration.fusion`) is nested the same way: the sweep draws
training voxels from every query, and fold f's coefficients are fitted on
the other folds' voxels alone (:func:`nested_learned_fusion`).
``medfss evaluate --guidance-selection`` re-runs the full protocol (every
metric, both extents) with each fold's choice. The grid point best over all
folds, or the fit on all of them, is what a new data set (or a single
scan) would use.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medfss.data.datasets import Dataset
from medfss.errors import ConfigError
from medfss.evaluation.metrics import SegmentationScores
from medfss.evaluation.protocol import EvaluationResult, ProtocolConfig, QueryResult, RunResult, support_case_ids
from medfss.inference import Predictor, SupportScan, foreground
from medfss.inference.body import body_mask
from medfss.registration.fusion import (FEATURES, NETWORK_RULES, fit_coefficients, logistic, training_voxels,
                                        volume_features)
from medfss.registration.guided import SUPPORT_SLICE_RULES, GuidanceConfig, GuidanceEvidence, GuidedPredictor, fuse
from medfss.registration.predictor import RegistrationPredictor
from medfss.validation import require


@dataclass(frozen=True)
class FusionGrid:
    """The fusions a sweep scores: every combination of the three lists."""

    support_slices: tuple[str, ...] = SUPPORT_SLICE_RULES
    network_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    prior_sigmas_mm: tuple[float, ...] = (0.0, 2.5, 5.0, 10.0)

    def __post_init__(self):
        for name in ("support_slices", "network_weights", "prior_sigmas_mm"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            require(len(getattr(self, name)) > 0, name, "must hold at least one value")

    def configs(self, base: GuidanceConfig = GuidanceConfig()) -> list[GuidanceConfig]:
        """``base`` with each grid point's three fields (checked by GuidanceConfig), averaged, in grid order."""
        return [replace(base, support_slices=s, network_weight=w, prior_sigma_mm=m, fusion="average", coefficients=None)
                for s in self.support_slices for w in self.network_weights for m in self.prior_sigmas_mm]


def overlap_scores(prediction: np.ndarray, truth: np.ndarray) -> SegmentationScores:
    """Dice and Jaccard (0-100) of two boolean volumes; the surface distances are left NaN (not needed here)."""
    intersection = float(np.logical_and(prediction, truth).sum())
    total = float(prediction.sum() + truth.sum())
    if total == 0:
        return SegmentationScores(dice=100.0, jaccard=100.0, hd95=float("nan"), asd=float("nan"))
    return SegmentationScores(dice=200.0 * intersection / total, jaccard=100.0 * intersection / (total - intersection),
                              hd95=float("nan"), asd=float("nan"))


Pairs = list[tuple[np.ndarray, np.ndarray]]  # (features [n, F], labels [n]) per query
Samples = dict[int, dict[str, Pairs]]  # fold -> class -> the learned fusion's training voxels


@dataclass
class SweepResult:
    """What a sweep found: each average fusion's Dice, and the learned fusion's training voxels per fold and class."""

    results: dict[GuidanceConfig, EvaluationResult]
    samples: Samples


def query_samples(evidence: GuidanceEvidence, truth: np.ndarray, body: np.ndarray, count: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` voxels of one query for the learned fusion's fit: (features [n, F], labels [n]).

    Drawn uniformly from the body voxels of the predicted slices that lie
    near the warped mask or where the network fires
    (:func:`~medfss.registration.fusion.training_voxels`).
    """
    features, labels = [], []
    for z, slice_features in volume_features(evidence.networks, evidence.prior, evidence.query, body,
                                             evidence.spacing, evidence.extent):
        chosen = training_voxels(slice_features) & body[..., z]  # [H, W]
        features.append(slice_features[chosen])
        labels.append(truth[..., z][chosen])
    features, labels = np.concatenate(features), np.concatenate(labels)
    keep = rng.choice(len(labels), size=min(count, len(labels)), replace=False)
    return features[keep], labels[keep]


def sweep(dataset: Dataset, networks_for: Callable[[int, str], Predictor], registration: RegistrationPredictor,
          protocol: ProtocolConfig, configs: Sequence[GuidanceConfig], base: GuidanceConfig = GuidanceConfig(),
          samples_per_query: int = 0, progress: bool = True) -> SweepResult:
    """Every average fusion of ``configs`` scored (Dice) on ``protocol``'s runs, the evidence computed once per query.

    ``protocol.extent`` must be ``"estimated"``: the fusion is chosen for the
    tool's output, which uses no query label. The network runs once per
    support-slice rule that a config reads; steps 1-2 (the registration
    checks, the margin) follow ``base``. With ``samples_per_query`` > 0
    the learned fusion's training voxels are drawn from every query too
    (:func:`query_samples`, seeded by the protocol).
    """
    if protocol.extent != "estimated":
        raise ConfigError("a guidance sweep scores the tool's output: use the protocol with extent 'estimated'")
    require(all(c.fusion == "average" for c in configs), "configs", "a sweep scores average fusions; the learned "
                                                                   "one is fitted on its samples")
    protocol = protocol.resolved(dataset.spec)
    configs = list(dict.fromkeys(configs))
    rules = sorted({c.support_slices for c in configs} | (set(NETWORK_RULES) if samples_per_query else set()))
    rng = np.random.default_rng(protocol.seed)
    fold_cases = {f: dataset.fold_case_ids(f) for f in protocol.folds}
    runs: dict[GuidanceConfig, list[RunResult]] = {c: [] for c in configs}
    samples: Samples = {f: {} for f in protocol.folds}
    total = sum(len(cases) - protocol.shots for cases in fold_cases.values()) * \
        len(protocol.support_indices) * len(protocol.classes)
    with tqdm(total=total, disable=not progress, unit="query", desc=f"guidance sweep {protocol.dataset}") as bar:
        for fold in protocol.folds:
            volumes = {c: dataset.load(c) for c in fold_cases[fold]}
            bodies = {c: body_mask(v.image) for c, v in volumes.items()}  # [H, W, D] each, shared by every class
            for support_index in protocol.support_indices:
                support_ids = support_case_ids(fold_cases[fold], support_index, protocol.shots)
                queries = [v for c, v in volumes.items() if c not in support_ids]
                for class_name in protocol.classes:
                    class_index = dataset.spec.class_index(class_name)
                    supports = [SupportScan(volumes[c].image, volumes[c].label == class_index, volumes[c].spacing)
                                for c in support_ids]
                    guided = GuidedPredictor(networks_for(fold, class_name), registration, base,
                                             chunks=protocol.chunks)
                    scores: dict[GuidanceConfig, list[QueryResult]] = {c: [] for c in configs}
                    for query in queries:
                        truth = query.label == class_index  # [H, W, D]
                        if not truth.any():
                            continue
                        evidence = guided.evidence(supports, query.image, query.spacing, rules)
                        body = bodies[query.case_id]
                        for config in configs:
                            probabilities = np.where(body, fuse(evidence, config), 0.0)
                            mask = foreground(probabilities, protocol.threshold, largest_component=True)
                            scores[config].append(QueryResult(query.case_id, overlap_scores(mask, truth)))
                        if samples_per_query and evidence.prior is not None:
                            samples[fold].setdefault(class_name, []).append(
                                query_samples(evidence, truth, body, samples_per_query, rng))
                        bar.update()
                    for config in configs:
                        runs[config].append(RunResult(fold, support_index, support_ids, class_name,
                                                      tuple(scores[config])))
    return SweepResult({c: EvaluationResult("guidance sweep", protocol, tuple(runs[c]), 0.0) for c in configs},
                       samples)


def pairs_of(samples: Samples, folds: Sequence[int], class_name: str | None = None) -> Pairs:
    """The training voxels of ``folds``, of one class or (None) of every class."""
    return [pair for f in folds for c, pairs in samples[f].items() if class_name in (None, c) for pair in pairs]


Predictions = list[tuple[np.ndarray, np.ndarray]]  # (eq. 1's p [n], labels [n]) per query


def log_loss(predictions: Predictions) -> tuple[float, int]:
    """The summed negative log-likelihood of the labels under ``predictions``, and their voxel count."""
    if not predictions:
        return 0.0, 0
    p = np.clip(np.concatenate([p for p, _ in predictions]).astype(np.float64), 1e-7, 1 - 1e-7)  # [n]
    labels = np.concatenate([y for _, y in predictions])  # [n]
    return float(-np.sum(np.where(labels, np.log(p), np.log1p(-p)))), len(labels)


def sampled_dice(predictions: Predictions, threshold: float) -> float:
    """Mean over queries of the Dice of ``p > threshold`` on each query's sampled voxels [(p [n], labels [n])].

    The voxels of a query are a uniform sample of its predicted slices
    (:func:`query_samples`), so true and false positives and misses shrink
    by one factor and the ratio estimates the query's Dice (before the
    largest-component step). A query whose sample holds neither a label nor
    a prediction is left out.
    """
    scores = [overlap_scores(p > threshold, labels).dice for p, labels in predictions
              if labels.any() or (p > threshold).any()]
    return float(np.mean(scores)) if scores else math.nan


def with_threshold(coefficients: Sequence[float], threshold: float) -> tuple[float, ...]:
    """Eq. 1's coefficients shifted so that p > 1/2 of the result is p > ``threshold`` of the input.

    sigmoid(c_0 + c . phi) > t exactly when c_0 - logit(t) + c . phi > 0:
    the protocol's threshold of 1/2 then applies the class's operating point.
    """
    return (coefficients[0] - math.log(threshold / (1 - threshold)), *coefficients[1:])


def class_choice(fitted: Callable[[Sequence[int], str | None], tuple[float, ...]], samples: Samples,
                 folds: Sequence[int], class_name: str, forms: Sequence[str] = ("shared", "class"),
                 thresholds: Sequence[float] = (0.5,)) -> dict:
    """Class ``class_name``'s coefficients and operating point, chosen by cross-validation over ``folds``.

    Each fold of ``folds`` in turn is held out and every form of ``forms``
    is fitted on the others (``fitted(folds, class)``: the class's own fit,
    ``fitted(folds, None)``: the shared one). The form whose predictions
    give the held-out voxels of the class the lower mean log-loss is kept
    (the shared one on a tie); then the threshold of ``thresholds`` whose
    held-out predictions of that form give the best :func:`sampled_dice`
    (the one nearest 1/2 on a tie), folded into the intercept
    (:func:`with_threshold`). With fewer than two folds nothing can be held
    out: the first form and the threshold nearest 1/2 are kept.
    """
    predictions: dict[str, Predictions] = {form: [] for form in forms}  # held-out, every fold of ``folds``
    for held_out in folds if len(folds) >= 2 else ():
        rest = [f for f in folds if f != held_out]
        held = pairs_of(samples, [held_out], class_name)
        if not held or not pairs_of(samples, rest, class_name):
            continue
        for form in forms:
            coefficients = fitted(rest, class_name if form == "class" else None)
            predictions[form] += [(logistic(x, coefficients), y.astype(bool)) for x, y in held]
    mean_loss = {}
    for form in forms:
        loss, count = log_loss(predictions[form])
        mean_loss[form] = loss / count if count else math.nan
    scored = [f for f in forms if not math.isnan(mean_loss[f])]
    form = min(scored, key=lambda f: (mean_loss[f], forms.index(f))) if scored else forms[0]
    dice = {t: sampled_dice(predictions[form], t) for t in thresholds}
    scored = [t for t in thresholds if not math.isnan(dice[t])]
    threshold = (max(scored, key=lambda t: (dice[t], -abs(t - 0.5))) if scored
                 else min(thresholds, key=lambda t: abs(t - 0.5)))
    coefficients = fitted(folds, class_name if form == "class" else None)
    return {"form": form, "threshold": threshold, "coefficients": with_threshold(coefficients, threshold),
            "inner_log_loss": mean_loss, "inner_sampled_dice": {str(t): d for t, d in dice.items()}}


def nested_learned_fusion(samples: Samples, base: GuidanceConfig, features: Sequence[str] = FEATURES,
                          fit: Callable[..., tuple[float, ...]] = fit_coefficients, per_class: bool = False,
                          thresholds: Sequence[float] | None = None) -> dict:
    """Per test fold, the learned fusion fitted on the other folds' samples only; and one fitted on all.

    ``features``: those eq. 1 uses (the others get a coefficient of 0).
    ``per_class``: each class also gets its own config, the class's own fit
    or the shared one as :func:`class_choice` decides on the same folds;
    ``thresholds``: each class also gets the operating point of these that
    :func:`class_choice` finds best for its Dice on the same folds.

    Returns a JSON-ready dict in the layout of :func:`nested_selection`:
    ``folds`` (per fold: the config and the folds and voxels it was fitted
    on, and per class its config, form, threshold and inner scores) and
    ``best_overall`` (fitted on every fold, for new data). Their test
    scores come from ``medfss evaluate --guidance-selection``.
    """
    folds = sorted(samples)
    require(len(folds) >= 2, "folds", f"a nested fit needs at least 2 folds, got {folds}")
    require(thresholds is None or (len(thresholds) > 0 and all(0 < t < 1 for t in thresholds)), "thresholds",
            f"must be one or more probabilities in (0, 1), got {thresholds}")
    classes = list(dict.fromkeys(c for f in folds for c in samples[f]))
    forms = ("shared", "class") if per_class else ("shared",)
    fits: dict[tuple[tuple[int, ...], str | None], tuple[float, ...]] = {}  # every fit is needed several times

    def fitted(on: Sequence[int], class_name: str | None) -> tuple[float, ...]:
        key = (tuple(sorted(on)), class_name)
        if key not in fits:
            fits[key] = fit(pairs_of(samples, key[0], class_name), features)
        return fits[key]

    def learned(coefficients: tuple[float, ...]) -> dict:
        return asdict(replace(base, fusion="learned", coefficients=coefficients))

    def record(on: Sequence[int]) -> dict:
        entry = {"config": learned(fitted(on, None)), "fitted_on_folds": list(on),
                 "voxels": int(sum(len(y) for _, y in pairs_of(samples, on)))}
        if per_class or thresholds:
            entry["classes"] = {}
            for class_name in classes:
                choice = class_choice(fitted, samples, on, class_name, forms, thresholds or (0.5,))
                entry["classes"][class_name] = {"config": learned(choice.pop("coefficients")), **choice}
        return entry

    return {"fusion": "learned", "features": list(features), "per_class": per_class,
            "thresholds": list(thresholds) if thresholds else None,
            "folds": {str(f): record([o for o in folds if o != f]) for f in folds},
            "best_overall": record(folds)}


def restricted(result: EvaluationResult, folds: Sequence[int]) -> EvaluationResult:
    """``result`` with only the runs of ``folds``."""
    return replace(result, runs=tuple(r for r in result.runs if r.fold in folds))


def nested_selection(results: dict[GuidanceConfig, EvaluationResult]) -> dict:
    """Per test fold, the config best on the other folds and its score on the fold (module docstring).

    Ties go to the earlier config of the grid. Returns a JSON-ready dict:
    ``folds`` (per fold: the choice, its inner and its test Dice),
    ``nested_mean_dice`` (the protocol's mean over every fold's runs, each
    fold under its own choice), ``best_overall`` (the config best over all
    folds, for new data) and ``table`` (every config's Dice per fold).
    """
    configs = list(results)
    folds = sorted({r.fold for r in next(iter(results.values())).runs})
    require(len(folds) >= 2, "folds", f"a nested selection needs at least 2 folds, got {folds}")
    fold_dice = {c: {f: restricted(results[c], [f]).mean_dice for f in folds} for c in configs}
    choices, nested_runs = {}, []
    for fold in folds:
        others = [f for f in folds if f != fold]
        inner = {c: restricted(results[c], others).mean_dice for c in configs}
        best = max(configs, key=lambda c: (inner[c], -configs.index(c)))
        choices[str(fold)] = {"config": asdict(best), "inner_mean_dice": inner[best],
                              "test_mean_dice": fold_dice[best][fold]}
        nested_runs += [r for r in results[best].runs if r.fold == fold]
    overall = {c: results[c].mean_dice for c in configs}
    best_overall = max(configs, key=lambda c: (overall[c], -configs.index(c)))
    nested = replace(next(iter(results.values())), runs=tuple(nested_runs))
    return {
        "folds": choices,
        "nested_mean_dice": nested.mean_dice,
        "best_overall": {"config": asdict(best_overall), "mean_dice": overall[best_overall]},
        "table": [{"config": asdict(c), "mean_dice": overall[c], "fold_mean_dice": {str(f): fold_dice[c][f]
                                                                                    for f in folds}}
                  for c in configs],
    }


def _config(record: dict) -> GuidanceConfig:
    """A selection file's config; one without a ``fusion`` predates the learned fusion and is an average."""
    return GuidanceConfig(**{"fusion": "average", "coefficients": None, **record})


def read_fold_configs(path: str | os.PathLike, dataset: str, folds: Sequence[int]
                      ) -> tuple[dict[int, GuidanceConfig], dict[int, dict[str, GuidanceConfig]]]:
    """Each of ``folds``' fusion from a selection file of ``medfss select-guidance``, and its classes' own."""
    return fold_configs(read_selection(path), path, dataset, folds)


def read_selection(path: str | os.PathLike) -> dict:
    """A selection file of ``medfss select-guidance`` (or ``select-failure-thresholds``), as written."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"guidance selection {path} does not exist (write it with 'medfss select-guidance')") \
            from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"guidance selection {path} is not a selection file of 'medfss select-guidance' "
                          f"({type(error).__name__}: {error})") from None


def fold_configs(record: dict, path: str | os.PathLike, dataset: str, folds: Sequence[int]
                 ) -> tuple[dict[int, GuidanceConfig], dict[int, dict[str, GuidanceConfig]]]:
    """Each of ``folds``' fusion from the selection ``record`` (read from ``path``), and its classes' own.

    On the data set the selection was made on, each fold takes its own
    nested choice, and each class its config where the selection fitted
    classes apart (``--per-class``); on another data set every fold takes
    the selection's best-overall fusion (nothing of ``dataset`` entered it)
    and no class its own (the classes are another data set's).
    Returns (fold -> config, fold -> class -> config).
    """
    try:
        selection = record["selection"]
        if record["protocol"]["dataset"] != dataset:
            best = _config(selection["best_overall"]["config"])
            return {fold: best for fold in folds}, {}
        chosen = {int(fold): _config(choice["config"]) for fold, choice in selection["folds"].items()}
        classes = {int(fold): {name: _config(entry["config"]) for name, entry in choice.get("classes", {}).items()}
                   for fold, choice in selection["folds"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"guidance selection {path} is not a selection file of 'medfss select-guidance' "
                          f"({type(error).__name__}: {error})") from None
    missing = sorted(set(folds) - set(chosen))
    if missing:
        raise ConfigError(f"{path} chose no guidance for folds {missing} of {dataset}: it holds folds {sorted(chosen)}")
    return {fold: chosen[fold] for fold in folds}, {fold: classes[fold] for fold in folds if classes[fold]}
