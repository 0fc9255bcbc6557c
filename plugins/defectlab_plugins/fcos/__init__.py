"""FCOS detectors (torchvision) trained by defectlab's engine, with FCOS's own positive-sample assignment or
Liu et al. 2026's task-guided feature selection (TGFS).

torch and torchvision are imported only when a detector is built, so listing the backbones stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_backbones():
    from defectlab_plugins.fcos.component import fcos

    return [fcos]
