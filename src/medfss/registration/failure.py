"""Step 1's failure thresholds chosen without the scored fold.

:func:`medfss.registration.guided.registration_failure` distrusts a
registration whose warped mask leaves [1/r, r] times the support's volume,
or whose warped image correlates with the query below c; that class of that
query then falls back to the network on the position rule's extent. Whether
a threshold helps depends on how often a rejected registration would still
have beaten the network alone, which only labelled queries can tell.

At one shot the choice needs no new network run. A (support, query, class)
either keeps the guided model's scores (its registration trusted) or takes
the position rule's (failed), and ``medfss evaluate`` has scored both without
any query label. So every candidate (r, c) is scored exactly from those two
evaluations and the registrations' measurements (:func:`registration_checks`),
and each test fold takes the candidate best on the other folds
(:func:`~medfss.registration.selection.nested_selection`, ties to the earlier
candidate). The thresholds are chosen after the fusion: the fusion's fit is
left as the guided evaluation had it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from tqdm import tqdm

from medfss.data.datasets import Dataset
from medfss.errors import ConfigError
from medfss.evaluation.protocol import EvaluationResult, ProtocolConfig, support_case_ids
from medfss.inference import SupportScan
from medfss.registration.guided import GuidanceConfig, RegistrationCheck, check_registration, registration_failure
from medfss.registration.predictor import RegistrationPredictor
from medfss.registration.selection import nested_selection
from medfss.validation import require

CheckKey = tuple[int, int, str, str]  # (fold, support index, class, query case id)


@dataclass(frozen=True)
class FailureThresholds:
    """The two thresholds of step 1 (GuidanceConfig's fields of the same names)."""

    max_volume_ratio: float
    min_correlation: float

    def __post_init__(self):
        self.config()  # GuidanceConfig checks both

    def config(self, base: GuidanceConfig = GuidanceConfig()) -> GuidanceConfig:
        return replace(base, **asdict(self))

    def failure(self, check: RegistrationCheck) -> str | None:
        return registration_failure(check, self.config())

    @classmethod
    def of(cls, config: GuidanceConfig) -> "FailureThresholds":
        return cls(config.max_volume_ratio, config.min_correlation)


def registration_checks(dataset: Dataset, registration: RegistrationPredictor, protocol: ProtocolConfig,
                        progress: bool = True) -> dict[CheckKey, RegistrationCheck]:
    """Step 1's measurements of every (support, query, class) the one-shot ``protocol`` scores.

    Each support is registered onto each query once (the registration's cache
    makes this cheap after an evaluation) and its label map warped per class.
    """
    if protocol.shots != 1:
        raise ConfigError(f"failure thresholds are chosen at one shot (with several supports a failed one is "
                          f"dropped, not the class), got {protocol.shots} shots")
    protocol = protocol.resolved(dataset.spec)
    checks: dict[CheckKey, RegistrationCheck] = {}
    fold_cases = {f: dataset.fold_case_ids(f) for f in protocol.folds}
    total = sum(len(cases) - 1 for cases in fold_cases.values()) * len(protocol.support_indices)
    with tqdm(total=total, disable=not progress, unit="pair", desc=f"registration checks {protocol.dataset}") as bar:
        for fold in protocol.folds:
            volumes = {c: dataset.load(c) for c in fold_cases[fold]}
            for support_index in protocol.support_indices:
                (support_id,) = support_case_ids(fold_cases[fold], support_index, 1)
                support = volumes[support_id]
                for query in (v for c, v in volumes.items() if c != support_id):
                    warp = registration.registration(SupportScan(support.image, support.label > 0, support.spacing),
                                                     query.image, query.spacing).warp
                    warped_image = warp(support.image, support.spacing)  # [H, W, D] on the query's grid
                    for class_name in protocol.classes:
                        index = dataset.spec.class_index(class_name)
                        if not (query.label == index).any():
                            continue  # the protocol skips it too
                        mask = support.label == index
                        warped_mask = warp(mask.astype("float32"), support.spacing,
                                           interpolator="nearestNeighbor") > 0.5
                        checks[(fold, support_index, class_name, query.case_id)] = check_registration(
                            SupportScan(support.image, mask, support.spacing),
                            SupportScan(warped_image, warped_mask, query.spacing), query.image, query.spacing)
                    bar.update()
    return checks


def thresholded(guided: EvaluationResult, fallback: EvaluationResult, checks: dict[CheckKey, RegistrationCheck],
                thresholds: FailureThresholds) -> EvaluationResult:
    """The scores under ``thresholds``: each query's guided scores where its registration passes, else the fallback's.

    ``guided`` must have trusted every registration (scored with thresholds
    that none fails, :func:`untrusted`), and ``fallback`` score the same runs
    with the position rule.
    """
    fallback_scores = {(r.fold, r.support_index, r.class_name, q.case_id): q.scores
                       for r in fallback.runs for q in r.queries}
    runs = []
    for run in guided.runs:
        queries = []
        for query in run.queries:
            key = (run.fold, run.support_index, run.class_name, query.case_id)
            if key not in checks or key not in fallback_scores:
                raise ConfigError(f"fold {key[0]}, support {key[1]}, {key[2]}, query {key[3]} has no "
                                  f"{'registration check' if key not in checks else 'fallback score'}: score "
                                  "the guided model and the position rule on the same folds and supports")
            failed = thresholds.failure(checks[key]) is not None
            queries.append(replace(query, scores=fallback_scores[key]) if failed else query)
        runs.append(replace(run, queries=tuple(queries)))
    return replace(guided, runs=tuple(runs))


def untrusted(checks: dict[CheckKey, RegistrationCheck], scored_with: dict[tuple[int, str], FailureThresholds]
              ) -> list[CheckKey]:
    """The registrations that the thresholds a guided evaluation used (per fold and class) rejected."""
    return sorted(k for k, check in checks.items() if scored_with[(k[0], k[2])].failure(check) is not None)


def nested_failure_thresholds(guided: EvaluationResult, fallback: EvaluationResult,
                              checks: dict[CheckKey, RegistrationCheck],
                              candidates: Sequence[FailureThresholds]) -> dict:
    """Per test fold, the candidate thresholds best on the other folds (module docstring).

    Returns :func:`~medfss.registration.selection.nested_selection`'s dict,
    and per candidate the number of (support, query, class) it rejects.
    """
    require(len(candidates) > 0, "candidates", "give at least one pair of thresholds")
    candidates = list(dict.fromkeys(candidates))
    selection = nested_selection({t: thresholded(guided, fallback, checks, t) for t in candidates})
    for row, t in zip(selection["table"], candidates):
        row["rejected"] = sum(t.failure(check) is not None for check in checks.values())
    return selection


def with_thresholds(selection: dict, chosen: dict) -> dict:
    """A guided selection (``medfss select-guidance``'s ``selection``) with each fold's chosen thresholds.

    ``chosen``: :func:`nested_failure_thresholds`' result. Every config of
    a fold (the shared one and each class's) takes that fold's thresholds,
    ``best_overall`` the best-overall ones.
    """
    def set_thresholds(entry: dict, thresholds: dict) -> dict:
        entry = {**entry, "config": {**entry["config"], **thresholds}}
        if "classes" in entry:
            entry["classes"] = {name: {**c, "config": {**c["config"], **thresholds}}
                                for name, c in entry["classes"].items()}
        return entry

    return {**selection,
            "folds": {fold: set_thresholds(entry, chosen["folds"][fold]["config"])
                      for fold, entry in selection["folds"].items()},
            "best_overall": set_thresholds(selection["best_overall"], chosen["best_overall"]["config"]),
            "failure_thresholds": chosen}

