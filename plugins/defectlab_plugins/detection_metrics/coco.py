"""COCO's average precision, from pycocotools through torchmetrics' ``MeanAveragePrecision``.

torchmetrics turns the boxes into COCO's format and runs pycocotools' COCOeval; with
``extended_summary`` it hands back COCOeval's accumulated precision array, indexed
[IoU threshold, recall point, class, area range, max detections]. Every AP here is COCOeval's
own summary rule applied to that array: the mean of its entries that are not −1 (−1 marks a
class, or an area range, without ground truth). Nothing of COCO's definition is redone here.
Values are rounded to 12 decimals: COCOeval divides by TP + FP + 2.2e-16, which would report a
perfect AP as 0.9999999999999998.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's ten: 0.5, 0.55, ..., 0.95 (index 0 is 0.5)
RECALL_POINTS = np.linspace(0, 1, 101)  # COCO's 101-point interpolation: recall 0, 0.01, ..., 1
AREAS = ("all", "small", "medium", "large")  # COCO's area ranges: < 32², 32²–96², > 96² pixels
MAX_DETECTIONS = (1, 10, 100)  # COCO's detections per image; AP uses the last
DECIMALS = 12  # the precision of a reported AP


@dataclass
class CocoPrecision:
    """COCOeval's precision array and the class index of each of its class columns."""

    precision: np.ndarray  # (10 IoU thresholds, 101 recall points, classes, 4 areas, 3 max detections)
    class_ids: list[int]  # sorted: the classes that occur among the boxes or the predictions

    def mean(self, iou: slice | int = slice(None), column: slice | int = slice(None),
             area: str = "all") -> float | None:
        """COCOeval.summarize's mean over the entries that are not −1; None where all are −1 (no ground truth)."""
        values = self.precision[iou, :, column, AREAS.index(area), -1]
        values = values[values > -1]
        return float(round(values.mean(), DECIMALS)) if values.size else None

    def column_of(self, class_index: int) -> int | None:
        return self.class_ids.index(class_index) if class_index in self.class_ids else None

    def class_ap(self, class_index: int, iou: slice | int = slice(None)) -> float | None:
        """AP of one class (over all ten IoU thresholds, or at one), None when it has no ground truth."""
        column = self.column_of(class_index)
        return None if column is None else self.mean(iou, column)

    def pr_curve(self, class_index: int) -> np.ndarray | None:
        """COCO's interpolated precision at IoU 0.5 on the 101 recall points, None without ground truth."""
        column = self.column_of(class_index)
        if column is None or (self.precision[0, :, column, 0, -1] < 0).any():
            return None
        return self.precision[0, :, column, 0, -1].round(DECIMALS)


def as_tensors(items: Sequence[dict[str, np.ndarray]]) -> list[dict[str, torch.Tensor]]:
    """NumPy per-image dicts as the tensors torchmetrics takes (boxes kept in float64: no rounding)."""
    return [{key: torch.from_numpy(value) for key, value in item.items()} for item in items]


def coco_precision(predictions: Sequence[dict[str, np.ndarray]], targets: Sequence[dict[str, np.ndarray]]
                   ) -> CocoPrecision:
    """Run COCOeval (pycocotools, through torchmetrics) on per-image xyxy predictions and targets (``iscrowd`` too)."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", extended_summary=True, backend="pycocotools",
                                  iou_thresholds=IOU_THRESHOLDS.tolist(), rec_thresholds=RECALL_POINTS.tolist(),
                                  max_detection_thresholds=list(MAX_DETECTIONS))
    metric.warn_on_many_detections = False  # COCO keeps the 100 best per image; the docs say so
    metric.update(as_tensors(predictions), as_tensors(targets))
    result = metric.compute()
    labels = [item["labels"] for item in (*predictions, *targets)]
    class_ids = sorted(set(np.concatenate(labels).tolist())) if labels else []
    precision = result["precision"].numpy()
    if precision.shape[2] != len(class_ids):  # torchmetrics' columns are the sorted classes seen
        raise RuntimeError(f"COCOeval returned {precision.shape[2]} class columns for {len(class_ids)} classes")
    return CocoPrecision(precision, class_ids)
