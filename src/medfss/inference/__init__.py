"""The one inference path of every few-shot model.

    plan       which support slices serve which query slices (:class:`SlicePlan`): the chunk rule,
               with a given or an estimated extent, and the registration rule
    volume     predict_volume(predictor, query, plan): the batched loop; threshold + largest component
    body       body_mask: the rule that no label lies outside the patient; constant scans refused
    predictor  the Predictor interface and EpisodicPredictor, the adapter of a trained model;
               VolumePredictor, for methods that take whole volumes (registration)

``medfss evaluate`` adds scoring on top (:mod:`medfss.evaluation.protocol`);
``medfss segment`` adds reorientation, intensity normalisation and multi-label
assembly (:mod:`medfss.scan_segmentation`). Trained weights are loaded by
:func:`medfss.checkpoints.load_predictor`.
"""

from medfss.inference.body import body_mask, check_informative
from medfss.inference.plan import (SliceGroup, SlicePlan, SupportScan, assign_query_chunks, chunk_plan,
                                   chunk_support_slices, estimate_query_extent, estimated_extent, registered_plan)
from medfss.inference.predictor import EpisodicPredictor, Predictor, VolumePredictor, resize_slices
from medfss.inference.volume import (foreground, full_volume, keep_largest_component, predict_class,
                                     predict_volume)

__all__ = ["EpisodicPredictor", "Predictor", "SliceGroup", "SlicePlan", "SupportScan", "VolumePredictor",
           "assign_query_chunks", "body_mask", "check_informative", "chunk_plan", "chunk_support_slices",
           "estimate_query_extent", "estimated_extent", "foreground", "full_volume", "keep_largest_component",
           "predict_class", "predict_volume", "registered_plan", "resize_slices"]
