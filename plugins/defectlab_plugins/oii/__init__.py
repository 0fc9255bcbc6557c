"""Output imbalance index (OII) of a binary segmentation or detection (Yi et al. 2022 eq. 15-17)."""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_imbalance_metrics():
    from defectlab_plugins.oii.output_imbalance import OII

    return [OII]
