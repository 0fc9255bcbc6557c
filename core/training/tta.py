"""Test-time augmentation (``train.tta``): a model's prediction averaged over flipped and turned views of the image.

'flips' takes the image, its horizontal flip, its vertical flip and both flips; 'dihedral' adds
the quarter turns and the two transposes (all 8 symmetries of a square) where the image is
square, else it takes the 4 flips. A view is ``(vertical, horizontal, transposed)``: the
height and/or the width flipped, then height and width swapped if ``transposed`` (a quarter
turn is a flip and a transpose; ``torch.flip`` and ``transpose`` export to ONNX with either
exporter, where the legacy one has no ``torch.rot90``). A segmenter's logits of each view are
mapped back to the image's orientation by the view's inverse.

The views are combined in probability space, the mean of the softmax (of the sigmoid for one
logit per image or pixel), and returned as the logits of that mean: ``log p̄`` for softmax,
``log(p̄ / (1 - p̄))`` for one logit. So softmax (sigmoid) of the result is the mean probability,
and its argmax, the threshold at 0.5 and the loss all see the same answer. The engine, the
run's predictor and the exported graph call :func:`tta_logits` alike.

torch is imported when a prediction is made, not with this module (the command line reads
:data:`MODES`).
"""

from __future__ import annotations

import math
import typing
from typing import TYPE_CHECKING, Any

from defectlab.plugin_system.errors import ParameterError
from defectlab.plugin_system.parameters import parameters_of
from defectlab.training.settings import TrainSettings

if TYPE_CHECKING:
    from torch import Tensor

#: The settings of ``train.tta``, as TrainSettings declares them: 'none', 'flips', 'dihedral'.
MODES: tuple[str, ...] = typing.get_args(next(p.annotation for p in parameters_of(TrainSettings) if p.name == "tta"))
#: The tasks whose models test-time augmentation averages.
TASKS = ("classify", "segment")
#: The views (vertical, horizontal, transposed) of 'flips': the image, its horizontal flip, its vertical flip, both.
FLIPS = ((False, False, False), (False, True, False), (True, False, False), (True, True, False))
#: The other 4 views of 'dihedral': the flips transposed, which are the transpose, the quarter turns and the
#: anti-transpose.
TURNS = tuple((vertical, horizontal, True) for vertical, horizontal, _ in FLIPS)


def checked_tta(task: str, tta: str) -> str:
    """``tta`` if it is a mode and the ``task`` takes it; else a ParameterError that says what does."""
    if tta not in MODES:
        raise ParameterError(f"tta: unknown test-time augmentation {tta!r}; choose one of {', '.join(MODES)}")
    if tta != "none" and task not in TASKS:
        raise ParameterError(f"test-time augmentation (tta '{tta}') is for classification and segmentation only; "
                             f"this model's task is '{task}' (use tta 'none')")
    return tta


def views(tta: str, height: int, width: int) -> tuple[tuple[bool, bool, bool], ...]:
    """The ``(vertical, horizontal, transposed)`` views of ``tta`` for an image of ``height`` × ``width``
    (transposed ones only if it is square)."""
    if tta == "none":
        return FLIPS[:1]
    return FLIPS + TURNS if tta == "dihedral" and height == width else FLIPS


def view(x: Tensor, vertical: bool, horizontal: bool, transposed: bool) -> Tensor:
    """``x`` (..., H, W) seen in one view: flipped upside down and/or left to right, then transposed."""
    x = _flipped(x, vertical, horizontal)
    return x.transpose(-2, -1) if transposed else x


def unview(x: Tensor, vertical: bool, horizontal: bool, transposed: bool) -> Tensor:
    """The inverse of :func:`view`: ``x`` seen in the view back in the image's orientation."""
    return _flipped(x.transpose(-2, -1) if transposed else x, vertical, horizontal)


def _flipped(x: Tensor, vertical: bool, horizontal: bool) -> Tensor:
    dims = [dim for dim, flipped in ((-2, vertical), (-1, horizontal)) if flipped]
    return x.flip(dims) if dims else x


def tta_logits(model: Any, images: Tensor, tta: str) -> Tensor:
    """The logits of ``model``'s mean probability over the views of ``images`` (N, C, H, W), as float32: (N, K)
    for a classifier, (N, K, h, w) for a segmenter (each view's map turned back first)."""
    import torch
    import torch.nn.functional as F

    from defectlab.training.contracts import checked_logits

    outputs = []
    for which in views(tta, *images.shape[-2:]):
        logits = checked_logits(model, model(view(images, *which))).float()
        outputs.append(unview(logits, *which) if logits.ndim == 4 else logits)
    stacked = torch.stack(outputs)
    if stacked.shape[2] == 1:  # log p̄ - log(1 - p̄), each a log-mean-exp (whose log of the count cancels)
        return torch.logsumexp(F.logsigmoid(stacked), 0) - torch.logsumexp(F.logsigmoid(-stacked), 0)
    return torch.logsumexp(torch.log_softmax(stacked, 2), 0) - math.log(len(outputs))
