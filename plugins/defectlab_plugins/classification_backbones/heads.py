"""Classifier heads: logits (N, num_classes) from a pooled embedding (N, D).

Without a hidden layer the head is timm's ``ClassifierHead`` with no pooling of its own:
Dropout-Linear. With one it is :class:`HiddenLayerHead`, Linear-BatchNorm-ReLU-Dropout-Linear
(the ResNet-18 cable notes's redesigned head), which timm has no head for: its ``NormMlpClassifierHead``
normalises the input (LayerNorm) before a tanh hidden layer, another function. The last linear
layer is ``fc`` in both, and the hidden head keeps the module names of defectlab 0.1, so
checkpoints written by 0.1 load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class HiddenLayerHead(nn.Sequential):
    """Linear-BatchNorm-ReLU-Dropout-Linear, as ``hidden``, ``norm``, ``act``, ``drop`` and ``fc``."""

    def __init__(self, in_features: int, num_classes: int, hidden: int, dropout: float = 0.0):
        super().__init__(OrderedDict([
            ("hidden", nn.Linear(in_features, hidden)),
            ("norm", nn.BatchNorm1d(hidden)),
            ("act", nn.ReLU(inplace=True)),
            ("drop", nn.Dropout(dropout)),
            ("fc", nn.Linear(hidden, num_classes)),
        ]))


def classifier_head(in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None) -> nn.Module:
    """Dropout-Linear (timm's ClassifierHead), or Linear-BatchNorm-ReLU-Dropout-Linear with ``hidden`` units."""
    if hidden is not None:
        return HiddenLayerHead(in_features, num_classes, hidden, dropout)
    from timm.layers import ClassifierHead

    return ClassifierHead(in_features, num_classes, pool_type="", drop_rate=dropout)
