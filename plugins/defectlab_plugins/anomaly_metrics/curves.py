"""Threshold sweeps shared by the image and pixel scores: weight sums above each threshold, areas under curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sums_at_or_above(values: np.ndarray, weights: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct ``values`` from the highest down and, for each, every weight array summed over the values ≥ it.

    Equal values fall together at one threshold, so a curve drawn through these points joins
    tied samples by a straight segment (which is how a trapezoidal AUROC counts ties half).
    """
    order = np.argsort(values, kind="stable")[::-1]
    ordered = values[order]
    ends = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1)  # last of each tie group
    return ordered[ends], [np.cumsum(weight[order], dtype=np.float64)[ends] for weight in weights]


def area_under(x: np.ndarray, y: np.ndarray, limit: float | None = None) -> float:
    """Trapezoidal area under the points (x, y), x non-decreasing from x[0] ≤ ``limit``; with it, only over x ≤ limit.

    The curve is cut exactly at x = ``limit``, its y there interpolated linearly between the
    points on either side.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if limit is not None:
        inside = int(np.searchsorted(x, limit, side="right"))  # the points with x <= limit
        if inside < len(x):
            before, after = inside - 1, inside
            share = (limit - x[before]) / (x[after] - x[before])
            x = np.append(x[:inside], limit)
            y = np.append(y[:inside], y[before] + share * (y[after] - y[before]))
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def thinned(x: np.ndarray, y: np.ndarray, step: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """The points of a curve non-decreasing in x and y where (x, y) rounded to ``step`` changes, first and last kept.

    A curve of millions of pixel thresholds becomes at most about 2 / ``step`` points, for plots and JSON.
    """
    key = np.round(np.asarray(x) / step) * (2 / step + 1) + np.round(np.asarray(y) / step)
    keep = np.append(True, key[1:] != key[:-1])
    keep[-1] = True
    return np.asarray(x)[keep], np.asarray(y)[keep]
