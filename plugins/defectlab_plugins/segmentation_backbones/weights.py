"""Local weights files for the segmentation networks: loaded tensor by tensor, a 3-channel stem fitted to grey input."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from defectlab import WeightReport, load_matching, read_state_dict

log = logging.getLogger("defectlab.backbones")


def rgb_to_grey(tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """An RGB first convolution (O, 3, kh, kw) summed over its channels for a grey model's (O, 1, kh, kw), as
    timm and smp adapt it; any other tensor as it is."""
    if tensor.ndim == 4 and target.ndim == 4 and tensor.shape[1] == 3 and target.shape[1] == 1 \
            and tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]:
        return tensor.sum(dim=1, keepdim=True)
    return tensor


def load_local_weights(model: nn.Module, path: str | os.PathLike[str]) -> WeightReport:
    """Load the tensors of ``path`` that fit ``model`` (by name and shape), log and return the report.

    The file may hold the whole model or its encoder alone (names without ``encoder.``). A
    first convolution saved for 3 channels is summed over them to fit a 1-channel model. A
    file of which no tensor fits is a DataError: it is not weights of this network.
    """
    report = load_matching(model, read_state_dict(path), str(path), prefixes=("encoder.",), adapt=rgb_to_grey)
    # a file tensor left out (not in this model, or of another shape) is worth a warning
    (log.warning if report.skipped or report.unused else log.info)(report.summary())
    return report


def attach_weights(model: nn.Module, local: Path | None) -> nn.Module:
    """Load a local weights file into ``model`` (if given) and keep the report as ``model.weights_report``."""
    model.weights_report = load_local_weights(model, local) if local is not None else None
    return model
