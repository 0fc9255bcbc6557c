"""The ``anomaly`` evaluator: image AUROC, AUROC per defect class, best F1 and its threshold, pixel AUROC and PRO.

Issue 13 (the anomaly contract): ``pred`` is an anomaly model's {"scores", "maps"}, ``target``
the anomaly task's {"labels", "classes", "masks"}. The image scores are kept whole (a few
numbers per image), the maps and masks only of images with masks (for the pixel scores), and
for the overlays only the highest-scored images of each kind.
"""

from __future__ import annotations

import csv
import heapq
import itertools
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from defectlab import DataError, Range, atomic_write

from defectlab_plugins.anomaly_metrics.curves import thinned
from defectlab_plugins.anomaly_metrics.pixels import (
    PRO_MAX_FPR,
    PixelCurves,
    pixel_curves,
)
from defectlab_plugins.anomaly_metrics.plots import display_image
from defectlab_plugins.anomaly_metrics.scores import (
    best_f1,
    check_both_kinds,
    class_aurocs,
    image_auroc,
    roc_points,
)

NO_MASKS = "pixel metrics skipped: the data have no masks"
NO_DEFECT_PIXELS = "pixel metrics skipped: the masks hold no defect pixel"
NO_GOOD_PIXELS = "pixel metrics skipped: the masks hold no good pixel"
DETAILS_STEP = 5e-3  # the pixel curves in details() keep a point where FPR or TPR/PRO moves by this much
PRED_FORM = "the anomaly model's dict {'scores': (N,), 'maps': (N, H, W)}"
TARGET_FORM = ("the anomaly task's dict {'labels': (N,) 0 good / 1 defect, 'classes': (N,) class index, "
               "'masks': (N, H, W) 0/1 when the data have masks}")


def numpy_of(value: Any) -> np.ndarray:
    """A tensor (any device) or anything NumPy reads, as a NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def checked_batch(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Scores (N,), maps (N, H, W), labels (N,), classes (N,) and masks (N, H, W) or None; DataError if unusable."""
    if not isinstance(pred, Mapping) or not {"scores", "maps"} <= set(pred):
        raise DataError(f"pred must be {PRED_FORM}, got {sorted(pred) if isinstance(pred, Mapping) else type(pred)}")
    if not isinstance(target, Mapping) or not {"labels", "classes"} <= set(target):
        raise DataError(f"target must be {TARGET_FORM}, got "
                        f"{sorted(target) if isinstance(target, Mapping) else type(target)}")
    scores, maps = numpy_of(pred["scores"]).astype(np.float64), numpy_of(pred["maps"]).astype(np.float32)
    labels, classes = numpy_of(target["labels"]), numpy_of(target["classes"])
    n = len(labels)
    if scores.shape != (n,) or maps.ndim != 3 or len(maps) != n or classes.shape != (n,):
        raise DataError(f"pred scores {scores.shape} and maps {maps.shape}, target labels {labels.shape} and classes "
                        f"{classes.shape} do not fit: expected {PRED_FORM} and {TARGET_FORM}")
    if not (np.isfinite(scores).all() and np.isfinite(maps).all()):
        raise DataError("pred holds NaN or infinite scores or map values")
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"target labels must be 0 (good) or 1 (defect), found {sorted(set(labels.tolist()))[:5]}")
    masks = None
    if "masks" in target:
        masks = numpy_of(target["masks"])
        if masks.shape != maps.shape:
            raise DataError(f"target masks of shape {masks.shape} do not fit maps of shape {maps.shape}")
        if not np.isin(masks, (0, 1)).all():
            raise DataError(f"target masks must hold 0 (good) and 1 (defect), found "
                            f"{sorted(set(np.unique(masks).tolist()))[:5]}")
        masks = masks.astype(bool)
    return scores, maps, labels.astype(np.int64), classes.astype(np.int64), masks


class AnomalyEvaluator:
    """Image AUROC, AUROC per defect class and best F1 of anomaly scores; pixel AUROC and PRO of anomaly maps.

    ``update(pred, target)`` adds a batch: ``pred`` = {"scores": (N,), "maps": (N, H, W)} (larger
    means more anomalous), ``target`` = {"labels": (N,) 0 good / 1 defect, "classes": (N,) class
    index, "masks": (N, H, W) 0/1, absent when the data have no masks}; tensors on any device
    or NumPy arrays. ``compute()`` gives:

    - ``image_auroc``: the area under the ROC curve of the image scores, defective against good
      images: the chance that a random defective image scores above a random good one (ties
      count half);
    - ``auroc/<class>``: the same for each defect class's images against all the good images;
    - ``f1``: the best F1 = 2TP / (2TP + FP + FN) over thresholds t on the image scores (an
      image is called a defect when its score is ≥ t) and ``threshold``: the highest t reaching it;
    - ``pixel_auroc``: the ROC AUC over every pixel of every image, defect pixels (mask 1)
      against good ones (mask 0);
    - ``pro`` (per-region overlap, Bergmann et al., MVTec AD): at a threshold t, PRO(t) is the
      mean over the connected defect regions of all masks (8-connectivity, each image's regions
      apart) of the share of the region's pixels scoring ≥ t, and FPR(t) the share of good
      pixels of all images scoring ≥ t; ``pro`` is the area under PRO(FPR) for FPR in [0, 0.3]
      (the curve interpolated linearly at 0.3), divided by 0.3. Unlike pixel AUROC it weighs a
      small defect as much as a large one.

    Pixel scores need masks: without them, or when no mask has a defect pixel, they are left
    out and ``details()["pixel_note"]`` says why. They are exact (every distinct map value a
    threshold) while the images with masks hold at most ``exact_pixels`` pixels; above that
    they come from a histogram of ``bins`` equal bins between the lowest and highest map value
    (within 1e-3 of the exact values in the tests). The maps and masks of images with masks
    are kept until ``compute()`` (5 bytes a pixel). ``compute()`` raises DataError when the
    images are all good or all defective: AUROC needs both.

    ``details()`` gives the counts, per-class AUROC, TP/FP/FN/TN at the threshold, the ROC and
    PRO curves (thinned). ``write(folder)`` draws roc.png (image and pixel ROC), score_histogram.png
    (good and defective image scores, the threshold), overlays/ (the anomaly map in jet at 50 %
    over each image, mask outlined, for the ``examples`` highest-scored defective and good
    images; the engine passes images and keys, ``wants``) and writes scores.csv (key, class,
    label, score).

    Args:
        examples: how many of the highest-scored defective images, and as many good ones,
            overlays/ draws (0: none).
        bins: histogram bins of the pixel scores when the images with masks hold more than
            ``exact_pixels`` pixels.
        exact_pixels: up to this many pixels (all images with masks together) pixel AUROC and
            PRO are exact; exact needs about 100 bytes a pixel while computing (the default: 16
            images of 256 x 256), the histogram one image's pixels at a time.
    """

    name = "anomaly"
    wants = ("images", "keys")

    def __init__(self, examples: Annotated[int, Range(0, 32)] = 8, bins: Annotated[int, Range(100)] = 10_000,
                 exact_pixels: Annotated[int, Range(0)] = 2**20):
        self.examples, self.bins, self.exact_pixels = examples, bins, exact_pixels
        self.classes: list[str] = []
        self.reset()

    def setup(self, *, classes: list[str], class_counts: list[int]) -> None:
        """Name the classes (the counts are not needed); without it classes are called "0", "1", ..."""
        self.classes = [str(name) for name in classes]

    def reset(self) -> None:
        """Forget every image seen."""
        self.batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # scores, labels, classes
        self.keys: list[str] = []
        self.maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.with_masks: bool | None = None
        self.defect_pixels = 0
        self.kept: dict[str, list[tuple[float, int, dict[str, Any]]]] = {"defect": [], "good": []}  # min-heaps
        self.arrival = itertools.count()  # breaks ties between equal scores in the heaps
        self._forget()

    def _forget(self) -> None:
        for name in ("image_arrays", "pixels"):
            self.__dict__.pop(name, None)

    def update(self, pred: Mapping[str, Any], target: Mapping[str, Any], images: Any = None,
               keys: Sequence[Any] | None = None) -> None:
        """Add a batch of scores and maps with their labels, classes (and masks); optionally the images and keys."""
        scores, maps, labels, classes, masks = checked_batch(pred, target)
        n = len(labels)
        for name, given in (("keys", keys), ("images", images)):
            if given is not None and len(given) != n:
                raise DataError(f"got {len(given)} {name} for a batch of {n} targets: expected one per image")
        if self.with_masks is not None and self.with_masks != (masks is not None):
            raise DataError("some batches have masks and others do not: give every batch masks (all 0 for a good "
                            "image) or none")
        self.with_masks = masks is not None
        keys = [str(key) for key in keys] if keys is not None else [f"image {len(self.keys) + i}" for i in range(n)]
        self.batches.append((scores, labels, classes))
        self.keys.extend(keys)
        if masks is not None:
            self.maps.extend(maps)
            self.masks.extend(masks)
            self.defect_pixels += int(masks.sum())
        for i in range(n):
            self._keep(float(scores[i]), int(labels[i]), {
                "key": keys[i], "class": int(classes[i]), "map": maps[i],
                "mask": masks[i] if masks is not None else None,
                "image": images[i] if images is not None else None})
        self._forget()

    def _keep(self, score: float, label: int, example: dict[str, Any]) -> None:
        """Keep ``example`` if it is among the ``examples`` highest-scored images of its kind so far."""
        heap = self.kept["defect" if label else "good"]
        if not self.examples or len(heap) == self.examples and score <= heap[0][0]:
            return
        image = example["image"]
        example = {**example, "score": score, "label": label, "map": example["map"].copy(),
                   "image": display_image(numpy_of(image)) if image is not None else None}
        entry = (score, next(self.arrival), example)
        if len(heap) < self.examples:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    @cached_property
    def image_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, labels and classes of every image seen, checked to hold good and defective images."""
        empty = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
        scores, labels, classes = [np.concatenate(part) for part in zip(*self.batches)] if self.batches else empty
        check_both_kinds(labels)
        return scores, labels, classes

    @property
    def pixel_note(self) -> str | None:
        """Why the pixel scores are left out, or None when they are computed."""
        if not self.masks:
            return NO_MASKS
        if not self.defect_pixels:
            return NO_DEFECT_PIXELS
        if self.defect_pixels == sum(mask.size for mask in self.masks):
            return NO_GOOD_PIXELS
        return None

    @cached_property
    def pixels(self) -> PixelCurves | None:
        """The pixel FPR, TPR and PRO curves (exact or histogram), None when there is no pixel score."""
        if self.pixel_note is not None:
            return None
        exact = sum(mask.size for mask in self.masks) <= self.exact_pixels
        return pixel_curves(self.maps, self.masks, None if exact else self.bins)

    def class_name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else str(index)

    def compute(self) -> dict[str, float]:
        """The scores over every image seen since the last ``reset()``, as plain floats."""
        scores, labels, classes = self.image_arrays
        f1, threshold = best_f1(scores, labels)
        result = {"image_auroc": image_auroc(scores, labels), "f1": f1, "threshold": threshold}
        if self.pixels is not None:
            result.update(pixel_auroc=self.pixels.auroc(), pro=self.pixels.pro_score())
        result.update(class_aurocs(scores, labels, classes, self.classes))
        return result

    def details(self) -> dict[str, Any]:
        """Counts, per-class AUROC, the outcome at the threshold, the ROC and PRO curves and the pixel note (JSON-ready)."""
        scores, labels, classes = self.image_arrays
        result = self.compute()
        called = scores >= result["threshold"]
        fpr, tpr = roc_points(scores, labels)
        details: dict[str, Any] = {
            "images": len(labels), "good": int(np.sum(labels == 0)), "defective": int(np.sum(labels == 1)),
            "per_class": [{"class": self.class_name(c), "images": int(np.sum(classes == c)),
                           "defective": int(np.sum((classes == c) & (labels == 1))),
                           "auroc": result.get(f"auroc/{self.class_name(c)}")} for c in np.unique(classes).tolist()],
            "threshold": result["threshold"], "f1": result["f1"],
            "at_threshold": {"tp": int(np.sum(called & (labels == 1))), "fp": int(np.sum(called & (labels == 0))),
                             "fn": int(np.sum(~called & (labels == 1))), "tn": int(np.sum(~called & (labels == 0)))},
            "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
            "examples": {kind: [entry[2]["key"] for entry in sorted(heap, reverse=True)]
                         for kind, heap in self.kept.items()},
        }
        if self.pixels is None:
            details["pixel_note"] = self.pixel_note
            return details
        pixels = self.pixels
        roc_x, roc_y = thinned(pixels.fpr, pixels.tpr, DETAILS_STEP)
        inside = pixels.fpr <= PRO_MAX_FPR
        pro_x, pro_y = thinned(pixels.fpr[inside], pixels.pro[inside], DETAILS_STEP)
        details["pixels"] = {
            "good_pixels": pixels.good_pixels, "defect_pixels": pixels.defect_pixels, "regions": pixels.regions,
            "connectivity": 8, "pro_max_fpr": PRO_MAX_FPR,
            "thresholds": "exact" if pixels.bins is None else f"histogram of {pixels.bins} bins",
            "roc": {"fpr": np.round(roc_x, 6).tolist(), "tpr": np.round(roc_y, 6).tolist()},
            "pro_curve": {"fpr": np.round(pro_x, 6).tolist(), "pro": np.round(pro_y, 6).tolist()},
        }
        return details

    def write(self, folder: str | Path) -> dict[str, Path]:
        """roc.png, score_histogram.png, scores.csv and overlays/<kind>-<rank>.png in ``folder``, by label."""
        from defectlab_plugins.anomaly_metrics import plots

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        scores, labels, _ = self.image_arrays
        result = self.compute()
        pixel_roc = None
        if self.pixels is not None:
            pixel_roc = (*thinned(self.pixels.fpr, self.pixels.tpr), result["pixel_auroc"])
        written = {
            "roc": plots.plot_roc((*roc_points(scores, labels), result["image_auroc"]), pixel_roc, folder / "roc.png"),
            "score_histogram": plots.plot_score_histogram(scores, labels, result["threshold"], result["f1"],
                                                          folder / "score_histogram.png"),
            "scores": self.write_scores(folder / "scores.csv"),
        }
        examples = []
        for kind, heap in self.kept.items():
            for rank, (score, _, example) in enumerate(sorted(heap, reverse=True), start=1):
                caption = f"{kind} #{rank}, score {score:.4g}: {example['key']} ({self.class_name(example['class'])})"
                examples.append({**example, "name": f"{kind}-{rank:02d}", "caption": caption})
        if examples:
            drawn = plots.draw_overlays(examples, folder / "overlays")
            written.update({f"overlay/{name}": path for name, path in drawn.items()})
        return written

    def write_scores(self, path: Path) -> Path:
        """scores.csv: one row per image seen, its key, class name, label (0 good, 1 defect) and score."""
        scores, labels, classes = self.image_arrays
        with atomic_write(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["key", "class", "label", "score"])
            for key, c, label, score in zip(self.keys, classes.tolist(), labels.tolist(), scores.tolist()):
                writer.writerow([key, self.class_name(c), label, f"{score:.6g}"])
        return path
