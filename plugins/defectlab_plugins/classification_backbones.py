"""Entry point of the classification backbones: ResNet-18/34/50 variants (SPEC 001), ViT-Ti/S/B
(SPEC 002) and any timm model by name.

The backbones need torch and timm, so they are imported only when the registry asks for them:
importing this module (as every ``defectlab`` command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_backbones():
    from defectlab_plugins.resnet_variants import RESNETS
    from defectlab_plugins.timm_backbones import VITS, TimmClassifier

    return [*RESNETS, *VITS, TimmClassifier]
