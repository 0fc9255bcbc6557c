"""Segmentation evaluator of Yi et al. 2022: pixel IoU, precision (PA), recall, Dice and OII of binary defect masks."""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_evaluators():
    from defectlab_plugins.segmentation_metrics.evaluator import SegmentationEvaluator

    return [SegmentationEvaluator]
