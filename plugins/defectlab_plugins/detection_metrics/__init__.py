"""Entry point of the ``detection`` evaluator: COCO mAP, AP per class and box size, F1 at its best confidence.

The evaluator needs torch, torchmetrics and pycocotools when it scores, so it is imported only
when the registry asks for it: importing this module (as every ``defectlab`` command does
through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_evaluators():
    from defectlab_plugins.detection_metrics.evaluator import DetectionEvaluator

    return [DetectionEvaluator]
