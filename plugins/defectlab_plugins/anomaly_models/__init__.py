"""Anomaly detection models fitted on good images only: PatchCore and PaDiM (task ``anomaly``).

Both read mid-level feature maps of a registered backbone (its ``feature_maps``) and keep what
they fit as buffers. torch is imported only when a model is built, so listing them stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_backbones():
    from defectlab_plugins.anomaly_models.component import padim, patchcore

    return [patchcore, padim]
