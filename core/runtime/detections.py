"""Boxes from a detector's dense outputs, in numpy: score threshold, candidate limits, class-wise NMS.

An exported detector returns, for every anchor point, a box and one score per class; the steps
that turn these into detections run here, where ONNX cannot express them well (a varying number
of boxes per image). They follow the detectors' own PyTorch post-processing step for step, so
the exported file and the run give the same boxes (the parity check proves it):

- ``levels`` and ``level_topk``: torchvision FCOS keeps, per pyramid level, the ``level_topk``
  best (anchor, class) pairs above the threshold;
- ``max_candidates``: ultralytics keeps the best ``max_nms`` pairs over all anchors;
- ``clip_after_nms``: ultralytics clamps boxes to the image after NMS (FCOS clips before, in the
  graph).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with each of ``boxes`` (M, 4), all x1, y1, x2, y2, as torchvision computes it."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: 0 / 0, NaN, as in torchvision
        return inter / (area + areas - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first; a box goes when its IoU with
    a kept, better-scored box exceeds ``iou`` (an undefined IoU, of two empty boxes, does not)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[~(box_iou(boxes[best], boxes[order]) > iou)]
    return np.asarray(keep, dtype=np.int64)


def classwise_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """:func:`nms` within each class; the kept indices of all classes, best score first."""
    kept = [np.flatnonzero(labels == label)[nms(boxes[labels == label], scores[labels == label], iou)]
            for label in np.unique(labels)]
    merged = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return merged[np.argsort(-scores[merged], kind="stable")]


def dense_detections(boxes: np.ndarray, scores: np.ndarray, settings: Mapping[str, Any],
                     size: Sequence[int]) -> dict[str, np.ndarray]:
    """One image's detections from dense ``boxes`` (A, 4) and ``scores`` (A, K) in pixels of the network's
    input ``size`` (height, width): {"boxes" (M, 4), "scores" (M,), "labels" (M,)}, best first.

    ``settings`` (an exported file's ``postprocess``): score_threshold (pairs must score above
    it), iou, max_detections, and optionally levels with level_topk, max_candidates and
    clip_after_nms (see the module's docstring).
    """
    classes = scores.shape[1]
    flat = scores.reshape(-1)
    threshold = float(settings["score_threshold"])
    levels = settings.get("levels")
    if levels:
        chosen = []
        start = 0
        for count in levels:
            part = flat[start * classes:(start + count) * classes]
            above = np.flatnonzero(part > threshold)
            best = above[np.argsort(-part[above], kind="stable")[:int(settings["level_topk"])]]
            chosen.append(best + start * classes)
            start += count
        pairs = np.concatenate(chosen)
    else:
        pairs = np.flatnonzero(flat > threshold)
    limit = settings.get("max_candidates")
    if limit is not None and pairs.size > limit:
        pairs = pairs[np.argsort(-flat[pairs], kind="stable")[:int(limit)]]
    anchor, label = pairs // classes, pairs % classes
    found_boxes, found_scores = boxes[anchor].astype(np.float32), flat[pairs].astype(np.float32)
    keep = classwise_nms(found_boxes, found_scores, label, float(settings["iou"]))[:int(settings["max_detections"])]
    found_boxes = found_boxes[keep]
    if settings.get("clip_after_nms"):
        height, width = size
        found_boxes[:, 0::2] = found_boxes[:, 0::2].clip(0, width)
        found_boxes[:, 1::2] = found_boxes[:, 1::2].clip(0, height)
    return {"boxes": found_boxes, "scores": found_scores[keep], "labels": label[keep].astype(np.int64)}
