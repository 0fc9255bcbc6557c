"""Image-level scores of an anomaly detector: AUROC (overall and per defect class) and the best F1 with its threshold.

Labels are 0 (good) and 1 (defect); a larger score means more anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from defectlab import DataError

from defectlab_plugins.anomaly_metrics.curves import sums_at_or_above


def check_both_kinds(labels: np.ndarray) -> None:
    """DataError unless ``labels`` holds good (0) and defective (1) images: AUROC and F1 need both."""
    defective = int(np.sum(labels == 1))
    if len(labels) == 0:
        raise DataError("no image was evaluated: call update(pred, target) on the anomaly evaluator first")
    if defective in (0, len(labels)):
        kind = "good (label 0)" if defective == 0 else "defective (label 1)"
        raise DataError(f"AUROC needs both good and defective images, but all {len(labels)} images evaluated are "
                        f"{kind}; evaluate on a split that holds both (e.g. MVTec AD's test split; set data.split or "
                        f"give a test dataset with good and defective images, and check data.good_class)")


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of defect (1) against good (0): P(defect scores above good), ties counting half."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    check_both_kinds(labels)
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of the image ROC curve, from (0, 0) to (1, 1)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    return fpr, tpr


def class_aurocs(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray, names: Sequence[str]
                 ) -> dict[str, float]:
    """``auroc/<class>`` for each class of the defective images: its defective images against every good one.

    ``names`` names the class indices (an index beyond it is called by its number).
    """
    good = labels == 0
    result = {}
    for c in np.unique(classes[labels == 1]):
        chosen = good | ((classes == c) & (labels == 1))
        name = names[c] if c < len(names) else str(int(c))
        result[f"auroc/{name}"] = image_auroc(scores[chosen], labels[chosen])
    return result


def best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The highest F1 = 2TP / (2TP + FP + FN) over thresholds t and the highest t reaching it.

    An image is called a defect when its score is ≥ t; every distinct score is tried.
    """
    labels = np.asarray(labels)
    check_both_kinds(labels)
    defect = labels == 1
    thresholds, (tp, fp) = sums_at_or_above(np.asarray(scores, dtype=np.float64), [defect, ~defect])
    f1 = 2 * tp / (tp + fp + defect.sum())  # 2TP + FP + FN = TP + FP + (TP + FN)
    best = int(np.argmax(f1))  # the first maximum: thresholds run from the highest down
    return float(f1[best]), float(thresholds[best])
