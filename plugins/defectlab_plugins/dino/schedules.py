"""DINO's schedules as functions of training progress p in [0, 1] (the fraction of all steps done).

The reference code (facebookresearch/dino) precomputes them per iteration over epochs; the
objective contract gives progress instead, so each is written over p:

* cosine from ``start`` to ``end``: v(p) = end + (start − end) · (1 + cos(π p)) / 2, used for the
  teacher's EMA momentum (``momentum`` → 1) and the weight decay (``weight_decay`` →
  ``weight_decay_end``);
* teacher temperature: linear from ``warmup`` to ``final`` over the first ``fraction`` of
  training, then constant: τ_t(p) = warmup + (final − warmup) · min(1, p / fraction)
  (``final`` at once when ``fraction`` = 0).
"""

from __future__ import annotations

import math


def clamp_progress(progress: float) -> float:
    """``progress`` as a float in [0, 1]."""
    return min(1.0, max(0.0, float(progress)))


def cosine(start: float, end: float, progress: float) -> float:
    """end + (start − end) · (1 + cos(π p)) / 2: ``start`` at p = 0, their mean at 0.5, ``end`` at 1."""
    p = clamp_progress(progress)
    return end + (start - end) * (1.0 + math.cos(math.pi * p)) / 2.0


def teacher_momentum(base: float, progress: float) -> float:
    """The EMA momentum λ(p): a cosine from ``base`` (0.996) to 1."""
    return cosine(base, 1.0, progress)


def teacher_temperature(warmup: float, final: float, fraction: float, progress: float) -> float:
    """τ_t(p): linear from ``warmup`` to ``final`` over the first ``fraction`` of training, then ``final``."""
    p = clamp_progress(progress)
    if fraction <= 0 or p >= fraction:
        return final
    return warmup + (final - warmup) * p / fraction
