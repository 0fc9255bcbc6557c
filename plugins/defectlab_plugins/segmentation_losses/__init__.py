"""Entry point of the segmentation losses of Yi et al. 2022 (BCE ... DIBE).

The losses need torch, so they are imported only when the registry asks for them: importing
this module (as every ``defectlab`` command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_losses():
    from defectlab_plugins.segmentation_losses.losses import LOSSES

    return list(LOSSES)
