"""The ``detection`` evaluator: COCO mAP, AP per class and per box size, and P/R/F1 at the best confidence.

Issue 12 part 3, Valle Salgado et al. 2023 §3.2 (F1 at its best confidence, reported like YOLO as ``0.67@0.256``;
PR curves; mAP@0.5). AP is COCO's, from pycocotools through torchmetrics (``coco.py``); the
precision/recall/F1-against-confidence curves and the confusion matrix come from one greedy
matching per image (``matching.py``). Predictions and targets follow torchvision's detection
convention: one dict per image, boxes in xyxy pixels of the image the model saw.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from defectlab import DataError, Range, atomic_write
from defectlab_plugins.detection_metrics.coco import RECALL_POINTS, CocoPrecision, coco_precision
from defectlab_plugins.detection_metrics.matching import (
    CROWD,
    ConfidenceCurves,
    box_iou,
    confidence_curves,
    confusion_counts,
    greedy_match,
    match_image,
    missed_boxes,
)

SIZES = ("small", "medium", "large")


def f1_at(f1: float, confidence: float) -> str:
    """F1 at its best confidence as YOLO reports it: ``0.67@0.256``."""
    return f"{f1:.2f}@{confidence:.3f}"


def numpy_of(value: Any) -> np.ndarray:
    """A tensor (any device) or anything NumPy reads, as a NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def checked_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class indices as int64: integers, or floats holding whole numbers; empty ones of any dtype."""
    if labels.size and labels.dtype.kind == "f":
        fraction = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        if fraction.size:
            raise DataError(f"{where}: labels must be integer class indices, got {labels.dtype} values such as "
                            f"{float(fraction[0])}")
    elif labels.size and labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integer class indices, got {labels.dtype}")
    return labels.astype(np.int64)


def checked_crowd(values: Any, n: int, where: str) -> np.ndarray:
    """A target's optional ``iscrowd`` (n,) of 0/1 (bool or numbers) as bool; all False when absent."""
    if values is None:
        return np.zeros(n, dtype=bool)
    values = numpy_of(values)
    if values.size == 0:
        values = values.reshape(0)
    if values.shape != (n,):
        raise DataError(f"{where}: iscrowd of shape {values.shape} does not fit {n} boxes: expected shape ({n},)")
    if values.dtype.kind not in "biuf" or not np.isin(values, (0, 1)).all():
        raise DataError(f"{where}: iscrowd must hold 0 (an object) or 1 (a crowd region), got {values.dtype} "
                        f"values {sorted(set(values.tolist()))[:5]}")
    return values.astype(bool)


def checked_image(item: Any, with_scores: bool, num_classes: int | None, where: str) -> dict[str, np.ndarray]:
    """One image's prediction (``with_scores``) or target dict as float64 boxes (n, 4), int64 labels, scores
    (predictions) or a bool ``iscrowd`` (targets).

    Raises DataError naming ``where`` for anything that cannot be scored.
    """
    needed = ("boxes", "scores", "labels") if with_scores else ("boxes", "labels")
    if not isinstance(item, Mapping) or not set(needed) <= set(item):
        got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
        raise DataError(f"{where} must be a dict with {', '.join(needed)} (torchvision's detection convention), "
                        f"got {got}")
    boxes = numpy_of(item["boxes"])
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype.kind not in "fiu":
        raise DataError(f"{where}: boxes must be numbers of shape (n, 4), got {boxes.dtype} of shape {boxes.shape}")
    boxes = boxes.astype(np.float64)
    n = len(boxes)
    result = {"boxes": boxes}
    for key in needed[1:]:
        values = numpy_of(item[key])
        if values.size == 0:
            values = values.reshape(0)
        if values.shape != (n,):
            raise DataError(f"{where}: {key} of shape {values.shape} do not fit {n} boxes: expected shape ({n},)")
        result[key] = values
    if not np.isfinite(boxes).all():
        raise DataError(f"{where}: boxes contain NaN or infinite values")
    backwards = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if backwards.size:
        i = int(backwards[0])
        raise DataError(f"{where}: box {i} {boxes[i].tolist()} has x2 < x1 or y2 < y1; boxes must be (x1, y1, x2, y2) "
                        f"in pixels (convert (x, y, w, h) or (cx, cy, w, h) boxes first)")
    labels = checked_labels(result["labels"], where)
    bad = (labels < 0) | (labels >= num_classes) if num_classes is not None else labels < 0
    if bad.any():
        allowed = f"in [0, {num_classes})" if num_classes is not None else "≥ 0"
        found = sorted(set(labels[bad].tolist()))[:5]
        raise DataError(f"{where}: labels must be class indices {allowed}; found {found}")
    result["labels"] = labels
    if with_scores:
        scores = result["scores"]
        if scores.dtype.kind != "f":
            raise DataError(f"{where}: scores must be floating-point confidences, got {scores.dtype}")
        scores = scores.astype(np.float64)
        if n and (not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1):
            raise DataError(f"{where}: scores must be confidences in [0, 1], got values in [{scores.min():g}, "
                            f"{scores.max():g}]; apply the sigmoid or softmax to logits first")
        result["scores"] = scores
    else:
        result["iscrowd"] = checked_crowd(item.get("iscrowd"), n, where)
    return result


def display_image(image: Any) -> np.ndarray:
    """A normalised (C, H, W) or (H, W) image as (H, W, 3) uint8, min-max stretched over all its channels."""
    image = numpy_of(image).astype(np.float64)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise DataError(f"images must be (N, C, H, W) or a list of (C, H, W), got an image of shape {image.shape}")
    if image.shape[0] != 3:
        image = image.mean(0, keepdims=True).repeat(3, 0)
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)


@dataclass
class DetectionResults:
    """Everything the evaluator reports, from the per-image predictions and targets seen."""

    classes: list[str]
    predictions: list[dict[str, np.ndarray]]
    targets: list[dict[str, np.ndarray]]
    iou_threshold: float

    @property
    def k(self) -> int:
        return len(self.classes)

    @cached_property
    def box_counts(self) -> np.ndarray:
        """Ground-truth boxes per class, crowd regions left out."""
        return np.bincount(np.concatenate([t["labels"][~t["iscrowd"]] for t in self.targets]), minlength=self.k)

    @cached_property
    def prediction_counts(self) -> np.ndarray:
        return np.bincount(np.concatenate([p["labels"] for p in self.predictions]), minlength=self.k)

    @cached_property
    def coco(self) -> CocoPrecision:
        return coco_precision(self.predictions, self.targets)

    @cached_property
    def matches(self) -> list[np.ndarray]:
        """Per image, each prediction's matching box of its own class at ``iou_threshold`` (−1 for none, CROWD)."""
        return [match_image(p["boxes"], p["scores"], p["labels"], t["boxes"], t["labels"], self.iou_threshold,
                            t["iscrowd"]) for p, t in zip(self.predictions, self.targets)]

    @cached_property
    def curves(self) -> ConfidenceCurves:
        matches = np.concatenate(self.matches)
        counted = matches != CROWD  # predictions on crowd regions are neither TP nor FP

        def joined(key: str) -> np.ndarray:
            return np.concatenate([p[key] for p in self.predictions])[counted]

        return confidence_curves(joined("scores"), joined("labels"), matches[counted] >= 0, self.box_counts)

    @cached_property
    def confusion(self) -> np.ndarray:
        """(K + 1)² counts at the best-F1 confidence, class-agnostic matching; rows true, columns predicted."""
        matrix = np.zeros((self.k + 1, self.k + 1), dtype=np.int64)
        confidence = self.curves.best_confidence
        for p, t in zip(self.predictions, self.targets):
            kept = p["scores"] >= confidence
            matched = greedy_match(box_iou(p["boxes"][kept], t["boxes"], t["iscrowd"]), p["scores"][kept],
                                   self.iou_threshold, t["iscrowd"])
            confusion_counts(p["labels"][kept], t["labels"], matched, self.k, matrix, t["iscrowd"])
        return matrix

    def ap_50(self, c: int) -> float | None:
        return self.coco.class_ap(c, 0)

    def ap(self, c: int) -> float | None:
        return self.coco.class_ap(c)

    def missing(self) -> dict[str, str]:
        """The scores left out of ``compute()`` because there is nothing to score them on, and why."""
        gone = {f"map_{size}": f"no {size} ground-truth box (COCO: area {area})"
                for size, area in zip(SIZES, ("< 32²", "32²–96²", "> 96² pixels"))
                if self.coco.mean(area=size) is None}
        gone.update({f"ap_50/{name}": "no ground-truth box of this class"
                     for c, name in enumerate(self.classes) if self.box_counts[c] == 0})
        return gone

    def scores(self) -> dict[str, float]:
        result = {"map_50": self.coco.mean(0), "map": self.coco.mean()}
        result.update({f"map_{size}": self.coco.mean(area=size) for size in SIZES})
        result.update({f"ap_50/{name}": self.ap_50(c) for c, name in enumerate(self.classes)})
        result.update(self.curves.at_best())
        return {key: value for key, value in result.items() if value is not None}

    def per_class_rows(self) -> list[dict[str, Any]]:
        return [{"class": name, "boxes": int(self.box_counts[c]), "predictions": int(self.prediction_counts[c]),
                 "ap_50": self.ap_50(c), "ap": self.ap(c)} for c, name in enumerate(self.classes)]

    def pr_curves(self) -> dict[str, dict[str, Any]]:
        """COCO's interpolated precision at IoU 0.5 on the 101 recall points, per class with ground truth."""
        curves = {}
        for c, name in enumerate(self.classes):
            precision = self.coco.pr_curve(c)
            if precision is not None:
                curves[name] = {"recall": RECALL_POINTS.round(2).tolist(), "precision": precision.tolist(),
                                "ap_50": self.ap_50(c)}
        return curves

    def details(self) -> dict[str, Any]:
        best = self.curves.at_best()
        return {
            "classes": list(self.classes),
            "images": len(self.targets),
            "iou_threshold": self.iou_threshold,
            "per_class": self.per_class_rows(),
            **best,
            "f1_best_text": f1_at(best["f1"], best["f1_confidence"]),
            "confusion_matrix": self.confusion.tolist(),
            "confusion_labels": [*self.classes, "background"],
            "pr_curves": self.pr_curves(),
            "missing": self.missing(),
        }

    def write_per_class(self, path: Path) -> Path:
        def cell(value: float | None) -> str:
            return "" if value is None else f"{value:.6g}"

        with atomic_write(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "boxes", "predictions", "ap_50", "ap_50_95"])
            for row in self.per_class_rows():
                writer.writerow([row["class"], row["boxes"], row["predictions"], cell(row["ap_50"]), cell(row["ap"])])
        return path

    def outcomes(self, index: int) -> dict[str, np.ndarray]:
        """Image ``index`` at the best-F1 confidence: the predictions kept (not those on crowd regions), whether
        each is right, the boxes missed."""
        p, t, matched = self.predictions[index], self.targets[index], self.matches[index]
        above = p["scores"] >= self.curves.best_confidence
        kept = above & (matched != CROWD)
        return {"boxes": p["boxes"][kept], "scores": p["scores"][kept], "labels": p["labels"][kept],
                "correct": matched[kept] >= 0, "targets": t["boxes"],
                "missed": missed_boxes(matched[above], t["iscrowd"])}


class DetectionEvaluator:
    """COCO mAP@0.5 and mAP@0.5:0.95, AP per class and per box size, and P/R/F1 at the best confidence.

    ``update(pred, target)`` adds a batch: lists with one dict per image, ``pred`` holding
    ``boxes`` (n, 4) xyxy pixels, ``scores`` (n,) confidences in [0, 1] and ``labels`` (n,)
    class indices, ``target`` holding ``boxes`` (m, 4), ``labels`` (m,) (m = 0: an image
    without defects; empty labels may have any dtype) and optionally ``iscrowd`` (m,) 0/1. Crowd
    boxes are COCO's ignore regions, in AP and in the matching alike: a prediction that finds
    no ordinary box but lies on a crowd region of its class (intersection over its own area ≥
    the IoU threshold) is neither a true nor a false positive, and crowd boxes are not boxes to
    find (nor counted in ``boxes``). ``compute()`` gives COCO's scores from pycocotools (through torchmetrics):
    ``map_50`` (AP at IoU 0.5), ``map`` (the mean over IoU 0.5, 0.55, ..., 0.95), ``map_small``,
    ``map_medium``, ``map_large`` (boxes of area < 32², 32²-96², > 96² pixels) and
    ``ap_50/<class>``, each averaged over the classes that have ground truth. A score with
    nothing to score (a class, or a size, without ground-truth boxes) is left out rather than
    reported as 0 or COCO's -1; ``details()["missing"]`` says which. ``precision``, ``recall``
    and ``f1`` are taken at the confidence that maximises F1 (``f1_confidence``, Valle Salgado et al. 2023 §3.2,
    printed as ``0.67@0.256``): predictions in descending score order each match the unmatched
    box of their class they overlap most, if by IoU ≥ ``iou_threshold``; at each confidence t in
    0, 0.001, ..., 1 the predictions scoring ≥ t give per class P = TP/(TP+FP) (0 with nothing
    predicted), R = TP/boxes and F1 = 2TP/(2TP+FP+FN), averaged over the classes with ground
    truth as in YOLO's F1 curve, and the first t with the highest mean F1 is chosen.
    ``details()`` adds per-class AP@0.5 and AP@0.5:0.95 with box counts, and the confusion
    matrix of the classes and background at that confidence (class-agnostic matching: an
    unmatched prediction is a false alarm in the background row, an unmatched box a miss in the
    background column). ``write(folder)`` draws pr_curves.png, f1_curve.png,
    confusion_matrix.png and, given images, predictions.png, and writes per_class.csv.

    Args:
        iou_threshold: IoU at which a prediction matches a box for precision, recall, F1 and
            the confusion matrix (COCO's AP uses its own ten thresholds).
        examples: how many images (the first seen, when the engine passes images) predictions.png
            draws with their boxes at the best-F1 confidence (0: no picture).
    """

    name = "detection"
    wants = ("images", "keys")

    def __init__(self, iou_threshold: Annotated[float, Range(0, 1, low_open=True)] = 0.5,
                 examples: Annotated[int, Range(0, 16)] = 8):
        self.iou_threshold = float(iou_threshold)
        self.examples = examples
        self.classes: list[str] | None = None
        self.reset()

    def setup(self, *, classes: list[str], class_counts: list[int]) -> None:
        """Name the classes (the counts are not needed); without it classes are called "0", "1", ..."""
        self.classes = [str(name) for name in classes]
        self.__dict__.pop("results", None)

    def reset(self) -> None:
        """Forget every image seen."""
        self.predictions: list[dict[str, np.ndarray]] = []
        self.targets: list[dict[str, np.ndarray]] = []
        self.kept: list[dict[str, Any]] = []
        self.__dict__.pop("results", None)

    def update(self, pred: Sequence[Mapping[str, Any]], target: Sequence[Mapping[str, Any]], images: Any = None,
               keys: Sequence[Any] | None = None) -> None:
        """Add a batch: per-image prediction and target dicts, and optionally the images and their keys."""
        if isinstance(pred, Mapping) or isinstance(target, Mapping) or not isinstance(pred, Sequence) \
                or not isinstance(target, Sequence):
            raise DataError(f"pred and target must be lists with one dict per image, got {type(pred).__name__} and "
                            f"{type(target).__name__}")
        if len(pred) != len(target):
            raise DataError(f"got predictions for {len(pred)} images but targets for {len(target)}: expected one of "
                            f"each per image")
        if keys is not None and len(keys) != len(target):
            raise DataError(f"got {len(keys)} keys for a batch of {len(target)} images: expected one key per image")
        num_classes = len(self.classes) if self.classes is not None else None
        batch_predictions, batch_targets = [], []
        for i, (p, t) in enumerate(zip(pred, target)):
            image = f"image {len(self.targets) + i}" + (f" ({keys[i]})" if keys is not None else "")
            batch_predictions.append(checked_image(p, True, num_classes, f"the prediction of {image}"))
            batch_targets.append(checked_image(t, False, num_classes, f"the target of {image}"))
        if images is not None and len(self.kept) < self.examples:
            if len(images) != len(target):
                raise DataError(f"got {len(images)} images for a batch of {len(target)} targets")
            for i in range(min(self.examples - len(self.kept), len(target))):
                key = str(keys[i]) if keys is not None else f"image {len(self.targets) + i}"
                self.kept.append({"index": len(self.targets) + i, "key": key, "image": display_image(images[i])})
        self.predictions.extend(batch_predictions)
        self.targets.extend(batch_targets)
        self.__dict__.pop("results", None)

    @cached_property
    def results(self) -> DetectionResults:
        if not self.targets:
            raise DataError("no images were evaluated: call update(pred, target) on the detection evaluator with at "
                            "least one image first")
        if not any((~t["iscrowd"]).any() for t in self.targets):
            raise DataError(f"none of the {len(self.targets)} images evaluated has a ground-truth box (crowd regions "
                            f"aside), so there is no AP, recall or F1 to compute; evaluate a split with labelled "
                            f"defects (check its label files with `defectlab check-data`)")
        seen = max(int(item["labels"].max(initial=-1)) for item in (*self.predictions, *self.targets)) + 1
        classes = self.classes if self.classes is not None else [str(c) for c in range(seen)]
        return DetectionResults(classes, self.predictions, self.targets, self.iou_threshold)

    def compute(self) -> dict[str, float]:
        """The scores over every image seen since the last ``reset()``, as plain floats."""
        return self.results.scores()

    def details(self) -> dict[str, Any]:
        """Per-class AP and box counts, P/R/F1 at the best confidence, the confusion matrix, PR curves (JSON-ready)."""
        details = self.results.details()
        details["examples"] = [example["key"] for example in self.kept]
        return details

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Draw the plots and write per_class.csv into ``folder``; returns them by label."""
        from defectlab_plugins.detection_metrics import plots

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        results = self.results
        best = results.curves.at_best()
        text = f1_at(best["f1"], best["f1_confidence"])
        written = {
            "pr_curves": plots.plot_pr_curves(results.pr_curves(), results.coco.mean(0), folder / "pr_curves.png"),
            "f1_curve": plots.plot_f1_curve(results.curves, [results.classes[c] for c in results.curves.classes],
                                            text, folder / "f1_curve.png"),
            "confusion_matrix": plots.plot_confusion(results.confusion, [*results.classes, "background"],
                                                     best["f1_confidence"], self.iou_threshold,
                                                     folder / "confusion_matrix.png"),
            "per_class": results.write_per_class(folder / "per_class.csv"),
        }
        if self.kept:
            drawn = [{**example, **results.outcomes(example["index"])} for example in self.kept]
            written["predictions"] = plots.draw_predictions(drawn, results.classes, best["f1_confidence"],
                                                            folder / "predictions.png")
        return written
