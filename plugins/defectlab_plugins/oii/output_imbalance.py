"""Output imbalance index (OII) of a binary segmentation or detection (Yi et al. 2022 eq. 15-17)."""

from __future__ import annotations

import math

from defectlab import DataError


def output_imbalance_index(tp: float, fp: float, fn: float) -> float:
    """OII from pixel (or object) counts; FP = background predicted as defect.

    Eq. 15 with x = FP/FN and k = 1 - IoU/2 is k(1 - 1/(x + 1/x - 1)) for x <= 1 and
    k(1/(x + 1/x - 1) - 1) for x > 1. Multiplying through by FN^2 gives the closed form used
    here, sign(FN - FP) * k * (FP - FN)^2 / (FP^2 - FP*FN + FN^2), which is exactly
    antisymmetric in FP and FN and reaches the limits FP = 0 -> +k, FN = 0 -> -k, FP = FN = 0 -> 0.
    """
    for label, value in (("TP", tp), ("FP", fp), ("FN", fn)):
        if not math.isfinite(value) or value < 0:
            raise DataError(f"{label} must be a finite count >= 0, got {value}")
    if fp == 0 and fn == 0:
        return 0.0
    k = 1.0 - (tp / (tp + fp + fn)) / 2.0
    magnitude = k * (fp - fn) ** 2 / (fp * fp - fp * fn + fn * fn)
    return magnitude if fn > fp else -magnitude


class OII:
    """Output imbalance index in [-1, 1]: > 0 when FN > FP (defects missed), < 0 when FP > FN.

    Its magnitude grows with the imbalance of FP and FN and is scaled by k = 1 - IoU/2, so a
    model with a higher IoU shows less imbalance for the same FP/FN ratio.
    """

    name = "oii"
    scope = "output"

    def __call__(self, tp: float, fp: float, fn: float) -> float:
        return output_imbalance_index(tp, fp, fn)

