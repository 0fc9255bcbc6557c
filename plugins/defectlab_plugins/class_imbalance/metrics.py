"""Input imbalance of a class distribution: the Gini coefficient (Valle Salgado et al. 2023 eq. 16-20) and the imbalance ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence

from defectlab import DataError


def _checked_counts(counts: Sequence[float]) -> list[float]:
    values = [float(c) for c in counts]
    if not values:
        raise DataError("no class counts given; pass one count per class, e.g. --counts 349,62,250")
    if any(not math.isfinite(c) or c < 0 for c in values):
        raise DataError(f"class counts must be finite and non-negative, got {list(counts)}")
    if sum(values) == 0:
        raise DataError("every class count is zero: the dataset is empty")
    return values


def gini_coefficient(counts: Sequence[float]) -> float:
    """Gini of class counts over k = len(counts) classes, zero-count classes included.

    With counts sorted ascending and C_i their cumulative share (C_0 = 0):
    B = sum_i (C_i + C_{i-1}) / (2k), A = 0.5 - B, Gini = A / (A + B) = 1 - 2B.
    """
    values = sorted(_checked_counts(counts))
    k, total = len(values), sum(values)
    area_b, cumulative, previous = 0.0, 0.0, 0.0
    for value in values:
        cumulative += value / total
        area_b += (cumulative + previous) / (2 * k)
        previous = cumulative
    area_a = 0.5 - area_b
    return max(0.0, area_a / (area_a + area_b))


class Gini:
    """Gini coefficient of class counts: 0 when balanced, 1 - 1/k when one class holds everything.

    The number of classes k is the number of counts given, zero-count classes included, so pass
    counts over the label set you mean (for screening, the target's label set).
    """

    name = "gini"
    scope = "input"

    def __call__(self, counts: Sequence[float]) -> float:
        return gini_coefficient(counts)


class ImbalanceRatio:
    """Largest class count divided by the smallest non-empty one (1 when balanced)."""

    name = "imbalance_ratio"
    scope = "input"

    def __call__(self, counts: Sequence[float]) -> float:
        values = [c for c in _checked_counts(counts) if c > 0]
        return max(values) / min(values)

