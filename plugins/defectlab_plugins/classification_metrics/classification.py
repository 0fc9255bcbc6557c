"""The ``classification`` evaluator: accuracy, balanced accuracy, macro and per-class P/R/F1, AP, F1@best confidence.

Hemmingsson and Olsson 2026 §5.1 (balanced accuracy = mean recall, macro-F1, per-class scores, confusion matrix,
misclassified samples as CSV) and Valle Salgado et al. 2023 §3.2 (F1 at its best confidence, reported like
YOLO as ``0.67@0.256``; PR curves; mAP). The scores come from torchmetrics on every sample
seen since the last ``reset()``, whose probabilities, targets and keys are kept for the curves
and the CSV files. torchmetrics is imported when the scores are computed, not with this module.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from defectlab import DataError
from defectlab_plugins.classification_metrics.collecting import CollectingEvaluator, as_tensor, checked_targets

THRESHOLDS = np.arange(1001) / 1000  # the confidence grid of the F1 curve: 0, 0.001, ..., 1
PR_POINTS = 200  # the most points per class of a PR curve in details()


def per_class_metrics() -> dict[str, Callable[..., Tensor]]:
    """The torchmetrics functions of the per-class scores: precision, recall, f1 and ap."""
    from torchmetrics.functional.classification import (
        multiclass_average_precision,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    return {"precision": multiclass_precision, "recall": multiclass_recall, "f1": multiclass_f1_score,
            "ap": multiclass_average_precision}


# --- F1 against the confidence threshold --------------------------------------------------------

def f1_confidence_curves(probabilities: np.ndarray, targets: np.ndarray,
                         thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """F1 of every class at every threshold t, one-vs-rest: class c is predicted where p_c ≥ t. Shape (K, T).

    F1 = 2TP / (2TP + FP + FN), 0 where no sample is of class c and none is predicted.
    """
    k = probabilities.shape[1]
    curves = np.zeros((k, len(thresholds)))
    for c in range(k):
        is_c = targets == c
        positives, negatives = np.sort(probabilities[is_c, c]), np.sort(probabilities[~is_c, c])
        tp = len(positives) - np.searchsorted(positives, thresholds, side="left")  # samples with p ≥ t
        fp = len(negatives) - np.searchsorted(negatives, thresholds, side="left")
        errors_and_hits = 2 * tp + fp + (len(positives) - tp)
        np.divide(2 * tp, errors_and_hits, out=curves[c], where=errors_and_hits > 0)
    return curves


def f1_best_text(f1: float, threshold: float) -> str:
    """F1 at its best confidence as YOLO reports it: ``0.67@0.256``."""
    return f"{f1:.2f}@{threshold:.3f}"


def thinned(most: int, *arrays: np.ndarray) -> list[list[float]]:
    """The arrays at no more than ``most`` evenly spread indices (first and last kept), as lists."""
    n = len(arrays[0])
    index = np.arange(n) if n <= most else np.unique(np.linspace(0, n - 1, most).round().astype(int))
    return [np.asarray(a)[index].tolist() for a in arrays]


def float32_decimals(values: Tensor) -> np.ndarray:
    """torchmetrics' float32 scores as the shortest decimals that read back as the same float32 (2/3 -> 0.6666667).

    So that 0.4 is reported as 0.4, not as float32's 0.4000000059604645.
    """
    return np.array([float(str(v)) for v in values.float().cpu().numpy().ravel()]).reshape(values.shape)


@contextmanager
def quiet_about_absent_classes() -> Iterator[None]:
    """Silence torchmetrics' warning on classes without positives: they are left out of the means here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No positive samples found in target")
        yield


def number(value: float) -> str:
    """A float for a CSV cell: six significant digits."""
    return f"{value:.6g}"


@dataclass
class ClassificationResults:
    """Everything the evaluator reports, from the probabilities (N, K) and targets (N,) seen."""

    classes: list[str]
    probabilities: np.ndarray
    targets: np.ndarray
    keys: list[Any]

    @cached_property
    def tensors(self) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(self.probabilities), torch.from_numpy(self.targets)

    @property
    def k(self) -> int:
        return len(self.classes)

    @cached_property
    def per_class(self) -> dict[str, np.ndarray]:
        """precision, recall, f1 and ap of every class from torchmetrics (average=None), 0 where 0/0."""
        with quiet_about_absent_classes():
            return {name: float32_decimals(metric(*self.tensors, num_classes=self.k, average=None).nan_to_num(0.0))
                    for name, metric in per_class_metrics().items()}

    @cached_property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @cached_property
    def support(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=self.k)

    @property
    def present(self) -> np.ndarray:
        """The classes that occur in the targets: the macro means and mAP average over these."""
        return self.support > 0

    @cached_property
    def confusion(self) -> np.ndarray:
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        return multiclass_confusion_matrix(*self.tensors, num_classes=self.k).numpy()

    @cached_property
    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(recall, precision) of every class that occurs in the targets, at every distinct score."""
        from torchmetrics.functional.classification import multiclass_precision_recall_curve

        with quiet_about_absent_classes():
            precision, recall, _ = multiclass_precision_recall_curve(*self.tensors, num_classes=self.k)
        return {self.classes[c]: (recall[c].numpy(), precision[c].numpy()) for c in np.flatnonzero(self.present)}

    @cached_property
    def f1_curves(self) -> np.ndarray:
        return f1_confidence_curves(self.probabilities, self.targets)

    @cached_property
    def mean_f1_curve(self) -> np.ndarray:
        """F1 against the confidence threshold, averaged over the classes that occur in the targets."""
        return self.f1_curves[self.present].mean(0)

    @property
    def f1_best(self) -> tuple[float, float]:
        """The highest mean F1 and the smallest threshold that reaches it."""
        index = int(self.mean_f1_curve.argmax())
        return float(self.mean_f1_curve[index]), float(THRESHOLDS[index])

    def scores(self) -> dict[str, float]:
        from torchmetrics.functional.classification import multiclass_accuracy

        f1_best, threshold = self.f1_best
        accuracy = multiclass_accuracy(*self.tensors, num_classes=self.k, average="micro")
        macro = {name: float(values[self.present].mean()) for name, values in self.per_class.items()}
        result = {
            "accuracy": float(float32_decimals(accuracy)),
            "balanced_accuracy": macro["recall"],
            "macro_f1": macro["f1"],
            "macro_precision": macro["precision"],
            "macro_recall": macro["recall"],
            "map": macro["ap"],
            "f1_best": f1_best,
            "f1_best_threshold": threshold,
        }
        for metric, values in self.per_class.items():
            result.update({f"{metric}/{name}": float(v) for name, v in zip(self.classes, values)})
        return result

    def per_class_rows(self) -> list[dict[str, Any]]:
        return [{"class": name, **{metric: float(values[c]) for metric, values in self.per_class.items()},
                 "support": int(self.support[c])}
                for c, name in enumerate(self.classes)]

    def ap_of(self, name: str) -> float:
        return float(self.per_class["ap"][self.classes.index(name)])

    def details(self) -> dict[str, Any]:
        f1_best, threshold = self.f1_best
        return {
            "classes": list(self.classes),
            "confusion_matrix": self.confusion.tolist(),
            "per_class": self.per_class_rows(),
            "f1_best": f1_best,
            "f1_best_threshold": threshold,
            "f1_best_text": f1_best_text(f1_best, threshold),
            "pr_curves": {name: dict(zip(("recall", "precision"), thinned(PR_POINTS, recall, precision)),
                                     ap=self.ap_of(name))
                          for name, (recall, precision) in self.pr_curves.items()},
        }

    def write_misclassified(self, path: Path) -> Path:
        """One row per sample whose most probable class is not its target, in the order seen."""
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["key", "true", "predicted", "confidence", *(f"p_{name}" for name in self.classes)])
            for i in np.flatnonzero(self.predicted != self.targets):
                predicted = self.predicted[i]
                writer.writerow([self.keys[i], self.classes[self.targets[i]], self.classes[predicted],
                                 number(self.probabilities[i, predicted]), *map(number, self.probabilities[i])])
        return path

    def write_per_class(self, path: Path) -> Path:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "precision", "recall", "f1", "ap", "support"])
            for row in self.per_class_rows():
                writer.writerow([row["class"], *(number(row[key]) for key in ("precision", "recall", "f1", "ap")),
                                 row["support"]])
        return path

    def write(self, folder: Path) -> dict[str, Path]:
        from defectlab_plugins.classification_metrics import plots

        f1_best, threshold = self.f1_best
        present = {self.classes[c]: self.f1_curves[c] for c in np.flatnonzero(self.present)}
        return {
            "confusion_matrix": plots.plot_confusion_matrix(self.confusion, self.classes,
                                                            folder / "confusion_matrix.png"),
            "pr_curves": plots.plot_pr_curves({name: (*curve, self.ap_of(name))
                                               for name, curve in self.pr_curves.items()},
                                              folder / "pr_curves.png"),
            "f1_curve": plots.plot_f1_curve(THRESHOLDS, present, self.mean_f1_curve, f1_best, threshold,
                                            f1_best_text(f1_best, threshold), folder / "f1_curve.png"),
            "misclassified": self.write_misclassified(folder / "misclassified.csv"),
            "per_class": self.write_per_class(folder / "per_class.csv"),
        }


class ClassificationEvaluator(CollectingEvaluator):
    """Accuracy, balanced accuracy, macro and per-class precision/recall/F1, AP and F1 at its best confidence.

    ``update(pred, target, keys=None)`` adds a batch: ``pred`` holds logits of shape (N, K)
    (softmax applied; probabilities with ``from_logits=False``) and ``target`` class indices
    (N,). The predicted class is the most probable one. ``compute()`` gives accuracy,
    balanced_accuracy (= macro_recall, the mean recall), macro_f1, macro_precision, map (mean
    average precision) and ``precision/<class>``, ``recall/<class>``, ``f1/<class>``,
    ``ap/<class>`` from torchmetrics; the macro means and mAP average over the classes that
    occur in the targets, and a per-class score that is 0/0 is 0. ``f1_best`` is F1 at its
    best confidence (Valle Salgado et al. 2023, §3.2): for each t in 0, 0.001, ..., 1 class c is predicted for
    a sample when p_c ≥ t (one-vs-rest), F1_c(t) is averaged over the classes in the targets,
    and f1_best is the highest mean, reached first at ``f1_best_threshold`` (YOLO reports it
    as ``0.67@0.256``). ``write(folder)`` draws confusion_matrix.png, pr_curves.png and
    f1_curve.png and writes misclassified.csv and per_class.csv.

    Args:
        from_logits: whether ``pred`` holds logits (True: softmax is applied) or class
            probabilities in [0, 1] (False).
    """

    name = "classification"
    wants = ("keys",)

    def __init__(self, from_logits: bool = True):
        self.from_logits = bool(from_logits)
        super().__init__()

    def reset(self) -> None:
        """Forget every sample seen."""
        super().reset()
        self.probabilities: list[np.ndarray] = []
        self.num_classes: int | None = None
        self.__dict__.pop("results", None)

    def update(self, pred: Any, target: Any, keys: Sequence[Any] | None = None) -> None:
        """Add a batch of logits (N, K) or probabilities, class indices (N,) and optional sample keys."""
        pred = as_tensor(pred, "pred")
        if pred.ndim != 2 or not pred.is_floating_point():
            raise DataError(f"pred must hold floating-point class scores of shape (N, K), got {pred.dtype} of shape "
                            f"{tuple(pred.shape)}")
        n, k = pred.shape
        if self.num_classes is not None and k != self.num_classes:
            raise DataError(f"pred of shape {(n, k)} has {k} classes but earlier batches had {self.num_classes}")
        if self.classes is not None and k != len(self.classes):
            raise DataError(f"pred of shape {(n, k)} has {k} classes but setup named {len(self.classes)}: "
                            f"{', '.join(self.classes)}")
        target = checked_targets(target, n, k, f"pred of shape {(n, k)}")
        pred = pred.double() if pred.dtype == torch.float64 else pred.float()
        if bool(pred.isnan().any()):
            raise DataError("pred contains NaN")
        if self.from_logits:
            probabilities = pred.softmax(1)
        elif n and (float(pred.min()) < 0 or float(pred.max()) > 1):
            raise DataError(f"pred holds values in [{float(pred.min()):g}, {float(pred.max()):g}] but "
                            f"from_logits=False expects probabilities in [0, 1]; pass from_logits=True for logits")
        else:
            probabilities = pred
        self.add_samples(target, keys)
        self.probabilities.append(probabilities.cpu().double().numpy())
        self.num_classes = k
        self.__dict__.pop("results", None)

    @cached_property
    def results(self) -> ClassificationResults:
        targets = self.all_targets()
        probabilities = np.concatenate(self.probabilities)
        return ClassificationResults(self.class_names(probabilities.shape[1]), probabilities, targets, self.keys)

    def compute(self) -> dict[str, float]:
        """The scores over every sample seen since the last ``reset()``, as plain floats."""
        return self.results.scores()

    def details(self) -> dict[str, Any]:
        """Classes, confusion matrix (rows = true class), per-class rows, F1@best text and PR curves (JSON-ready)."""
        return self.results.details()

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Draw the plots and write the CSV tables into ``folder``; returns them by label."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return self.results.write(folder)
