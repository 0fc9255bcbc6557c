"""Classification backbones: ResNet-18/34/50 variants (the ResNet-18 cable notes), ViT-Ti/S/B (Hemmingsson and Olsson 2026) and any timm model by name.

The backbones are torch modules, so they are imported only when the registry asks for them, and
timm only when one is built: importing this module (as every ``defectlab`` command does through
the entry point) stays cheap, and so does listing the backbones.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_backbones():
    from defectlab_plugins.classification_backbones.resnet import RESNETS
    from defectlab_plugins.classification_backbones.timm_models import VITS, TimmClassifier

    return [*RESNETS, *VITS, TimmClassifier]
