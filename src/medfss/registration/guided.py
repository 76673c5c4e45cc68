"""Registration-guided few-shot segmentation: a network and atlas registration, each where it is trusted.

For every support registered onto the query (:mod:`medfss.registration.ants`):

1. *Check.* A registration has failed when the warped mask's physical
   volume leaves [1/r, r] times the support's (``max_volume_ratio``), or the
   warped image correlates with the query below ``min_correlation`` (Pearson
   r over the volume). Failed supports are dropped; when all fail the
   network runs alone on the extent estimated from the supports' relative
   position (the rule of :func:`medfss.inference.estimated_extent`), and
   :attr:`GuidedPredictor.last_guidance` says why.
2. *Extent.* The query slices the warped masks cover, ``margin_slices``
   more on each side: the organ's extent without any query label.
3. *Network.* The few-shot network predicts that extent, with the support
   slices of the chunk rule (``"chunks"``) or of the registration rule
   (``"registered"``: slice z of the warped supports); the learned fusion
   reads both.
4. *Fusion.* Either the average (``fusion="average"``)
   p = w p_net + (1 - w) G_sigma * prior, where prior is the registration's
   own probability (:meth:`RegistrationPredictor.label_probability
   <medfss.registration.predictor.RegistrationPredictor.label_probability>`
   of the trusted supports: the fraction whose warped mask holds the voxel,
   or their joint label fusion), G_sigma an
   in-plane Gaussian of ``prior_sigma_mm`` (the registration's boundary
   error), w = ``network_weight`` and p_net the network of
   ``support_slices``; or the learned fusion (``fusion="learned"``,
   :mod:`medfss.registration.fusion`): a logistic model of both networks,
   the prior at several softenings, the distance to the warped boundary and
   the query's own appearance inside and around the warped mask, with the
   ``coefficients`` fitted on queries of other folds.

Every choice is a field of :class:`GuidanceConfig`. The defaults of step 4
are chosen (average) or fitted (learned) by :mod:`medfss.registration.selection`
on data the reported scores do not include (see results/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medfss.inference import (Predictor, SupportScan, chunk_plan, estimated_extent, full_volume, predict_volume,
                              registered_plan)
from medfss.inference.body import body_mask
from medfss.registration.fusion import FEATURES, NETWORK_RULES, logistic, soften, volume_features
from medfss.registration.predictor import RegistrationPredictor
from medfss.validation import check_choice, check_non_negative_int, check_non_negative_number, require


SUPPORT_SLICE_RULES = ("chunks", "registered")  # step 3: whose slices the network takes as support
FUSIONS = ("average", "learned")  # step 4


@dataclass(frozen=True)
class GuidanceConfig:
    """How the network and the registration are combined (module docstring, steps 1-4)."""

    # The default fusion is the learned one, its coefficients fitted with the bundled default model on CHAOST2 folds
    # 1-4, the folds it trained on (results/default_model/guidance-learned/selection.json, scripts/default_model.sh),
    # so its fold-0 figures with these defaults are not tuned on fold 0. w, sigma and the support slices are the
    # average fusion's (--guidance-weight ...), chosen the same way (results/default_model/guidance/selection.json).
    network_weight: float = 0.5  # w of step 4 (1: the network alone on the registered extent; 0: no network)
    prior_sigma_mm: float = 5.0  # in-plane softening of the registered prior
    margin_slices: int = 1  # slices added on each side of the registered extent
    support_slices: str = "chunks"  # one of SUPPORT_SLICE_RULES (step 3, the average fusion's network)
    fusion: str = "learned"  # one of FUSIONS (step 4)
    coefficients: tuple[float, ...] | None = (  # the learned fusion's c_0..c_F (fusion.py, eq. 1), in FEATURES' order
        -1.8790538311004639,
        2.0086257457733154,
        1.6816794872283936,
        -0.06741099804639816,
        0.6058601140975952,
        -0.4271971583366394,
        -1.0454615354537964,
        1.111655592918396,
        1.00700044631958,
        -1.9517899751663208)
    # Step 1's thresholds, set before any experiment; `medfss select-failure-thresholds` (registration/failure.py)
    # keeps them on every CHAOST2 fold and on 4 of 5 CMR folds (results/guided/failure-thresholds)
    max_volume_ratio: float = 3.0  # a warped mask outside [1/r, r] times the support's volume: failed
    min_correlation: float = 0.2  # a warped image correlating less with the query: failed

    def __post_init__(self):
        require(isinstance(self.network_weight, (int, float)) and 0 <= self.network_weight <= 1, "network_weight",
                f"must be in [0, 1] (0: the softened registration alone), got {self.network_weight!r}")
        check_non_negative_number(self, "prior_sigma_mm", "min_correlation")
        check_non_negative_int(self, "margin_slices")
        check_choice(self, "support_slices", SUPPORT_SLICE_RULES)
        check_choice(self, "fusion", FUSIONS)
        if self.coefficients is not None:  # lists from JSON -> a tuple, so that configs stay hashable
            object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        require(self.fusion != "learned" or (self.coefficients is not None
                                             and len(self.coefficients) == len(FEATURES) + 1),
                "coefficients", f"the learned fusion needs {len(FEATURES) + 1} coefficients (intercept and one per "
                                f"feature of {', '.join(FEATURES)}), fitted by 'medfss select-guidance'")
        require(self.max_volume_ratio >= 1, "max_volume_ratio", f"must be >= 1, got {self.max_volume_ratio}")

    @property
    def network_rules(self) -> tuple[str, ...]:
        """The support-slice rules whose network probability step 4 reads."""
        return NETWORK_RULES if self.fusion == "learned" else (self.support_slices,)


@dataclass(frozen=True)
class RegistrationCheck:
    """What step 1 measures of one registration: the quantities its thresholds apply to."""

    support_ml: float  # the support mask's physical volume
    warped_ml: float  # the warped mask's, on the query's grid
    correlation: float  # Pearson's r of the warped image and the query (NaN when one is constant)

    @property
    def volume_ratio(self) -> float:
        """The warped volume over the support's (NaN for an empty support mask: never trusted)."""
        return self.warped_ml / self.support_ml if self.support_ml > 0 else math.nan


def check_registration(support: SupportScan, warped: SupportScan, query: np.ndarray,
                       query_spacing: Sequence[float]) -> RegistrationCheck:
    """Step 1's measurements of the registration of ``support`` onto ``query`` (``warped``: on the query's grid)."""
    return RegistrationCheck(float(support.mask.sum() * np.prod(support.spacing) / 1000),
                             float(warped.mask.sum() * np.prod(query_spacing) / 1000),
                             pearson_r(warped.image, query))


def registration_failure(check: RegistrationCheck, config: GuidanceConfig) -> str | None:
    """Why a registration measured by ``check`` is not trusted under ``config``'s thresholds (step 1), or None."""
    if not 1 / config.max_volume_ratio <= check.volume_ratio <= config.max_volume_ratio:
        return (f"the warped mask holds {check.warped_ml:.1f} mL against the support's {check.support_ml:.1f} mL "
                f"(allowed ratio 1/{config.max_volume_ratio:g} to {config.max_volume_ratio:g})")
    if not check.correlation >= config.min_correlation:
        return (f"the warped image correlates with the query at r = {check.correlation:.2f} "
                f"(< {config.min_correlation:g})")
    return None


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two arrays of one shape (NaN when one is constant), in float64, a slice of axis 0 at a time.

    ``np.corrcoef`` would stack both as float64: 16 bytes a voxel, 2.4 GiB for a 512 x 512 x 600 CT.
    """
    mean_a, mean_b = float(np.mean(a, dtype=np.float64)), float(np.mean(b, dtype=np.float64))
    saa = sbb = sab = 0.0
    for slice_a, slice_b in zip(a, b):
        da, db = slice_a.astype(np.float64) - mean_a, slice_b.astype(np.float64) - mean_b
        saa, sbb, sab = saa + float(np.vdot(da, da)), sbb + float(np.vdot(db, db)), sab + float(np.vdot(da, db))
    return sab / math.sqrt(saa * sbb) if saa > 0 and sbb > 0 else math.nan


@dataclass(frozen=True)
class GuidanceEvidence:
    """What step 4 combines, for one class of one query."""

    networks: dict[str, np.ndarray]  # support-slice rule -> [H, W, n] the network's foreground probability on the
    # n slices of ``extent`` (a slab, not the volume: a large CT's volume is 600 MiB); the single key "position"
    # when every registration failed
    prior: np.ndarray | None  # [H, W, D] the trusted registrations' P(foreground) (step 4); None: all failed
    spacing: tuple[float, float, float]  # the query's voxel size in mm
    query: np.ndarray  # [H, W, D] the query image (the learned fusion's appearance model reads it)
    extent: tuple[int, int]  # the predicted slices, inclusive: the fusion is 0 outside them


def fuse(evidence: GuidanceEvidence, config: GuidanceConfig) -> np.ndarray:
    """Step 4, [H, W, D]: the average or the learned fusion; the network alone when every registration failed.

    Both are computed a slice at a time: no full-volume temporaries beside p.
    """
    top, bottom = evidence.extent
    if evidence.prior is None:
        return full_volume(evidence.networks["position"], top, evidence.query.shape[-1])
    fused = np.zeros(evidence.prior.shape, dtype=np.float32)  # [H, W, D]
    if config.fusion == "learned":
        body = body_mask(evidence.query)  # [H, W, D]: eq. 2's ring lies in the body
        for z, features in volume_features(evidence.networks, evidence.prior, evidence.query, body,
                                           evidence.spacing, evidence.extent):
            fused[..., z] = logistic(features, config.coefficients)
        return fused
    w, network = config.network_weight, evidence.networks[config.support_slices]  # [H, W, n]
    for z in range(top, bottom + 1):
        fused[..., z] = w * network[..., z - top] + (1 - w) * soften(evidence.prior[..., z], config.prior_sigma_mm,
                                                                      evidence.spacing)
    return fused


@dataclass
class GuidedPredictor:
    """A :class:`~medfss.inference.VolumePredictor`: ``network`` guided by ``registration`` (module docstring)."""

    network: Predictor
    registration: RegistrationPredictor
    config: GuidanceConfig = GuidanceConfig()
    chunks: int = 3
    batch_size: int = 8
    last_guidance: dict[str, Any] = field(default_factory=dict)  # what the last call used, for summaries

    def evidence(self, supports: Sequence[SupportScan], query: np.ndarray,
                 query_spacing: tuple[float, float, float], rules: Sequence[str] | None = None) -> GuidanceEvidence:
        """Steps 1-3: the checked registrations' prior and the network's probability on their extent.

        ``rules``: the support-slice rules to run the network with (default: those the config's fusion reads).
        """
        rules = self.config.network_rules if rules is None else tuple(rules)
        keep_images = self.registration.label_fusion == "jlf"  # else none kept: a large CT's is 600 MiB
        depth = query.shape[-1]
        trusted, masks, images, registered, failures = [], [], [], [], []  # of the trusted supports
        for support in supports:
            warped = self.registration.warp(support, query, query_spacing)
            failure = registration_failure(check_registration(support, warped, query, query_spacing), self.config)
            if failure is None:
                trusted.append(support)
                masks.append(warped.mask)
                if keep_images:
                    images.append(warped.image)
                if "registered" in rules:
                    registered.append(warped)
            else:
                failures.append(failure)
            del warped  # before the next warp
        self.last_guidance = {"registered_supports": len(masks), "supports": len(supports), "failures": failures}
        if not masks:
            plan = chunk_plan(supports, estimated_extent(supports, (0, depth)), query.shape[:2], self.chunks)
            self.last_guidance |= {"fallback": "position", "network_slices": [plan.top, plan.bottom]}
            return GuidanceEvidence({"position": self._network(query, plan)}, None, tuple(query_spacing), query,
                                    (plan.top, plan.bottom))
        prior = self.registration.label_probability(trusted, masks, images if keep_images else None, query,
                                                    query_spacing)  # [H, W, D]
        covered = np.flatnonzero(np.any([m.any(axis=(0, 1)) for m in masks], axis=0))  # slices a warped mask holds
        extent = (max(0, int(covered[0]) - self.config.margin_slices),
                  min(depth - 1, int(covered[-1]) + self.config.margin_slices))
        plans = {"registered": lambda: registered_plan(registered, extent),
                 "chunks": lambda: chunk_plan(supports, extent, query.shape[:2], self.chunks)}
        networks = {rule: self._network(query, plans[rule]()) for rule in rules}
        self.last_guidance["network_slices"] = list(extent)  # the fused labels lie within them
        return GuidanceEvidence(networks, prior, tuple(query_spacing), query, extent)

    def _network(self, query: np.ndarray, plan) -> np.ndarray:
        """The network's probability [H, W, n] on ``plan``'s slices."""
        return predict_volume(self.network, query, plan, batch_size=self.batch_size)

    def segment_volume(self, supports: Sequence[SupportScan], query: np.ndarray,
                       query_spacing: tuple[float, float, float]) -> np.ndarray:
        return fuse(self.evidence(supports, query, query_spacing), self.config)


@dataclass(frozen=True)
class Guide:
    """Wraps network predictors in guided predictors that share one registration (and its cache).

    ``fold_configs`` gives a test fold its own config (a nested selection's
    choice, :mod:`medfss.registration.selection`), ``class_configs`` a
    class of a test fold its own (a per-class fit); other folds and single
    scans use ``config``.
    """

    registration: RegistrationPredictor
    config: GuidanceConfig = GuidanceConfig()
    fold_configs: Mapping[int, GuidanceConfig] = field(default_factory=dict)
    class_configs: Mapping[int, Mapping[str, GuidanceConfig]] = field(default_factory=dict)

    def config_for(self, fold: int | None, class_name: str | None = None) -> GuidanceConfig:
        classes = self.class_configs.get(fold, {})
        return classes[class_name] if class_name in classes else self.fold_configs.get(fold, self.config)

    def record(self) -> dict:
        """What guided predictions use, for results.json and segment summaries."""
        record = {"registration": self.registration.record(), **asdict(self.config)}
        if self.fold_configs:
            record["fold_configs"] = {str(f): asdict(c) for f, c in sorted(self.fold_configs.items())}
        if self.class_configs:
            record["class_configs"] = {str(f): {name: asdict(c) for name, c in classes.items()}
                                       for f, classes in sorted(self.class_configs.items())}
        return record

    def __call__(self, network: Predictor, fold: int | None = None, class_name: str | None = None
                 ) -> GuidedPredictor:
        return GuidedPredictor(network, self.registration, self.config_for(fold, class_name))
