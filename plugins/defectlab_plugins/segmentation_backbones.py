"""Entry point of the segmentation backbones of SPEC 003 (U-Net, U-Net++, FPN, PSPNet, DeepLabv3(+), SegNet).

The networks need torch, so they are imported only when the registry asks for backbones:
importing this module (as every ``defectlab`` command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_backbones():
    from defectlab_plugins.segmentation_models import BACKBONES

    return list(BACKBONES)
