"""Entry point of the masked autoencoder of Hemmingsson and Olsson 2026 (seed §2.6), an ``ssl`` objective for ViT encoders,
and of ``mae_recon``, the anomaly model that scores images by its reconstruction error (seed 001 §3).

The objective needs torch and timm, so it is imported only when the registry asks for it:
importing this module (as every ``defectlab`` command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_ssl_objectives():
    from defectlab_plugins.mae.objective import MAE

    return [MAE]


@hookimpl
def register_backbones():
    from defectlab_plugins.mae.recon import MAEReconstruction

    return [MAEReconstruction]
