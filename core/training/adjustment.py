"""Post-hoc logit adjustment (``train.logit_adjustment``, Menon et al. 2021): predict with the logits minus τ·log π.

π holds the class shares of the training split, so ``argmax_c f_c(x) − τ·log π_c`` moves the
decisions from the classes that are common in training towards the rare ones: τ = 0 is the
model as trained, and τ = 1 is the answer that minimises the balanced error when softmax(f)
estimates the training split's p(y | x). Unlike the ``logit_adjusted`` loss it needs no training
again: a τ can be chosen on a validation split after the run (``defectlab evaluate
--logit-adjustment``). It is applied after test-time augmentation, to the logits of the mean
probability, by the run's evaluations, its predictions and its exported graph alike; training
itself never sees it.

torch is imported when offsets are made, not with this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from defectlab.plugin_system.errors import ParameterError

if TYPE_CHECKING:
    from torch import Tensor


def logit_offsets(tau: float, class_counts: Sequence[int] | None, classes: Sequence[str]) -> Tensor | None:
    """The (K,) offsets −τ·log π that the adjustment adds to a classifier's logits, π the shares of
    ``class_counts``; None when τ is 0. A ParameterError when the counts are missing or a class has none."""
    import torch

    if not tau:
        return None
    if not math.isfinite(tau) or tau < 0:
        raise ParameterError(f"logit_adjustment: τ must be a finite number ≥ 0, got {tau!r}")
    if class_counts is None:
        raise ParameterError("logit_adjustment: this checkpoint holds no training class counts (it was written "
                             "before defectlab stored them); train the run again to adjust its logits")
    if len(class_counts) != len(classes):
        raise ParameterError(f"logit_adjustment: {len(class_counts)} class counts for {len(classes)} classes")
    empty = [name for name, count in zip(classes, class_counts) if count <= 0]
    if empty:
        raise ParameterError(f"logit_adjustment: the training split has no images of {', '.join(map(repr, empty))}, "
                             f"so their prior is 0 and log π is -inf; give every class training images or set "
                             f"train.logit_adjustment = 0")
    counts = torch.tensor([float(count) for count in class_counts])
    return -tau * torch.log(counts / counts.sum())


def adjusted(logits: Tensor, offsets: Tensor | None) -> Tensor:
    """``logits`` (N, K) plus the adjustment's ``offsets`` (unchanged when they are None)."""
    if offsets is None:
        return logits
    if logits.ndim != 2 or logits.shape[1] != len(offsets):
        raise ParameterError(f"logit_adjustment is for classifiers with one logit per class ({len(offsets)}); the "
                             f"model returned logits of shape {tuple(logits.shape)}")
    return logits + offsets.to(logits.device, logits.dtype)
