"""Segmentation backbones of Yi et al. 2022: U-Net, U-Net++, FPN, PSPNet, DeepLabv3(+) and SegNet.

The networks need torch, so they are imported only when the registry asks for backbones, and
segmentation-models-pytorch only when one is built: importing this module (as every
``defectlab`` command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_backbones():
    from defectlab_plugins.segmentation_backbones.segnet import SegNet
    from defectlab_plugins.segmentation_backbones.smp_models import SMP_COMPONENTS

    return [*SMP_COMPONENTS, SegNet]
