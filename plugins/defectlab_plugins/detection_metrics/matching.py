"""Matching predicted boxes to ground truth, and the precision/recall/F1 curves against confidence.

COCO's AP comes from pycocotools (through torchmetrics, see ``coco.py``); what COCO does not
give is precision, recall and F1 at one confidence threshold, the way YOLO reports F1 as
``0.67@0.256`` (Valle Salgado et al. 2023 §3.2), and the confusion matrix with a background class. Both rest on
one greedy matching per image: predictions in descending score order each take the unmatched
ground-truth box they overlap most, if that IoU is at least the threshold.

Crowd boxes (COCO's iscrowd = 1) are regions to ignore, as in COCOeval: a prediction that finds
no ordinary box but covers a crowd region by crowd IoU (intersection over the prediction's own
area) ≥ the threshold is neither a true nor a false positive, a crowd region may absorb any
number of predictions, and crowd boxes are never positives to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLDS = np.arange(1001) / 1000  # the confidence grid of the curves: 0, 0.001, ..., 1
CROWD = -2  # the match of a prediction that fell on a crowd region: ignored, neither TP nor FP


def box_iou(a: np.ndarray, b: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of every box of ``a`` (n, 4) with every box of ``b`` (m, 4), both xyxy: shape (n, m).

    Areas are continuous (x2 − x1)·(y2 − y1), as COCO computes them; two empty boxes have IoU 0.
    Columns where ``crowd`` (m,) is True get COCO's crowd IoU: the overlap over the area of ``a``'s box.
    """
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - overlap
    if crowd is not None:
        union = np.where(crowd[None, :], area_a[:, None], union)
    return np.divide(overlap, union, out=np.zeros_like(overlap, dtype=np.float64), where=union > 0)


def greedy_match(iou: np.ndarray, scores: np.ndarray, threshold: float, crowd: np.ndarray | None = None
                 ) -> np.ndarray:
    """For each prediction, the index of the ground-truth box it matches, −1 for none, ``CROWD`` if ignored.

    Predictions are taken in descending score order (ties: the earlier one first); each takes
    the unmatched ordinary box it overlaps most, provided that IoU is ≥ ``threshold``, so every
    box is matched at most once. One that finds none but overlaps a crowd box (``crowd`` (m,)
    True; pass crowd IoU there) by ≥ ``threshold`` is ``CROWD``. ``iou`` is (predictions,
    boxes); set an entry below the threshold to forbid a pair (another class).
    """
    matched = np.full(len(scores), -1, dtype=np.int64)
    if not iou.size:
        return matched
    candidates = iou >= threshold
    if crowd is not None and crowd.any():
        matched[(candidates & crowd[None, :]).any(1)] = CROWD  # unless an ordinary box is found below
        candidates &= ~crowd[None, :]
    has_candidate = candidates.any(1)
    free = np.where(candidates, iou, -1.0)  # only the pairs that may match; −1 marks a taken or forbidden pair
    for p in np.argsort(-scores, kind="stable"):
        if not has_candidate[p]:
            continue
        best = int(free[p].argmax())
        if free[p, best] >= 0:
            matched[p] = best
            free[:, best] = -1.0
    return matched


def match_image(pred_boxes: np.ndarray, pred_scores: np.ndarray, pred_labels: np.ndarray, boxes: np.ndarray,
                labels: np.ndarray, iou_threshold: float, crowd: np.ndarray | None = None) -> np.ndarray:
    """Each prediction's matching box of its own class (−1 for none, ``CROWD`` on a crowd region of its class)."""
    iou = box_iou(pred_boxes, boxes, crowd)
    iou[pred_labels[:, None] != labels[None, :]] = -1.0
    return greedy_match(iou, pred_scores, iou_threshold, crowd)


@dataclass
class ConfidenceCurves:
    """Precision, recall and F1 of every class at every confidence threshold, and their best point.

    At threshold t the predictions with score ≥ t count: TP are those matched to a box of their
    class, FP the rest, FN the boxes left unmatched. Per class c (rows, the classes that have
    ground truth): P = TP/(TP + FP) (0 when nothing is predicted), R = TP/boxes,
    F1 = 2TP/(2TP + FP + FN). "All classes" is the mean over those classes, as in YOLO's F1
    curve; its highest F1, first reached at ``best_confidence``, gives the reported precision,
    recall and F1.
    """

    classes: np.ndarray  # (K',) the class indices with ground truth
    precision: np.ndarray  # (K', T)
    recall: np.ndarray  # (K', T)
    f1: np.ndarray  # (K', T)
    thresholds: np.ndarray  # (T,)

    @property
    def best_index(self) -> int:
        return int(self.f1.mean(0).argmax())

    @property
    def best_confidence(self) -> float:
        return float(self.thresholds[self.best_index])

    def at_best(self) -> dict[str, float]:
        """precision, recall and f1 (means over the classes) at the best confidence, and that confidence."""
        i = self.best_index
        return {"precision": float(self.precision[:, i].mean()), "recall": float(self.recall[:, i].mean()),
                "f1": float(self.f1[:, i].mean()), "f1_confidence": float(self.thresholds[i])}


def confidence_curves(scores: np.ndarray, labels: np.ndarray, true_positive: np.ndarray, box_counts: np.ndarray,
                      thresholds: np.ndarray = THRESHOLDS) -> ConfidenceCurves:
    """The curves from every prediction's score, class and whether it matched, and the boxes per class.

    ``box_counts[c]`` is the number of ground-truth boxes of class c; only classes with boxes get a row.
    """
    classes = np.flatnonzero(box_counts > 0)
    shape = (len(classes), len(thresholds))
    precision, recall, f1 = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for row, c in enumerate(classes):
        of_class = labels == c
        order = np.argsort(scores[of_class], kind="stable")
        ascending, hits = scores[of_class][order], true_positive[of_class][order]
        hits_below = np.concatenate([[0], np.cumsum(hits)])  # hits_below[i]: matches among the i lowest scores
        first_kept = np.searchsorted(ascending, thresholds, side="left")  # predictions ≥ t start here
        tp = hits_below[-1] - hits_below[first_kept]
        predicted = len(ascending) - first_kept
        fp, fn = predicted - tp, box_counts[c] - tp
        np.divide(tp, predicted, out=precision[row], where=predicted > 0)
        recall[row] = tp / box_counts[c]
        f1[row] = 2 * tp / (2 * tp + fp + fn)
    return ConfidenceCurves(classes, precision, recall, f1, thresholds)


def missed_boxes(matched: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Which boxes no prediction matched (crowd boxes are never missed)."""
    missed = ~crowd
    missed[matched[matched >= 0]] = False
    return missed


def confusion_counts(pred_labels: np.ndarray, labels: np.ndarray, matched: np.ndarray, k: int,
                     matrix: np.ndarray, crowd: np.ndarray) -> None:
    """Add one image's class-agnostic matching to ``matrix`` ((k + 1)², rows true, columns predicted; k = background).

    A matched pair counts at (its box's class, its prediction's class); an unmatched prediction
    is a false alarm (background, class); an unmatched box a miss (class, background). Predictions
    on crowd regions and crowd boxes count nowhere.
    """
    hit, alarm = matched >= 0, matched == -1
    np.add.at(matrix, (labels[matched[hit]], pred_labels[hit]), 1)
    np.add.at(matrix, (np.full(alarm.sum(), k), pred_labels[alarm]), 1)
    missed = missed_boxes(matched, crowd)
    np.add.at(matrix, (labels[missed], np.full(missed.sum(), k)), 1)
