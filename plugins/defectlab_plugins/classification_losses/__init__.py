"""Entry point of the classification losses: cross-entropy (the ResNet-18 cable notes, 002 §4.2–4.4), softmax focal loss and
logit-adjusted cross-entropy (Menon et al. 2021).

The losses need torch, so they are imported only when the registry asks for them: importing
this module (as every ``defectlab`` command does through the entry point) stays cheap.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_losses():
    from defectlab_plugins.classification_losses.losses import LOSSES

    return list(LOSSES)
