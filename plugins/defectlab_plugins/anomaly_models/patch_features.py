"""Patch features from a registered backbone: the frozen extractor and the operations on its maps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import defectlab
from defectlab import ConfigError, ParameterError

log = logging.getLogger("defectlab.backbones")


def build_extractor(backbone: str, in_chans: int, weights: str | None) -> nn.Module:
    """The registered backbone ``backbone`` with ``weights``, frozen, in eval mode.

    ``weights`` that name an existing file or run folder are loaded as transfer learning does
    (``init_backbone_from``: the backbone's tensors, not its head); any other string is a source
    the backbone itself knows (``imagenet``). ConfigError, naming the backbones that have one,
    when the backbone has no ``feature_maps(x, layers)``.
    """
    local = weights is not None and Path(weights).expanduser().exists()
    extractor = defectlab.create("backbone", {"name": backbone}, num_classes=2, in_chans=in_chans,
                                 weights=None if local else weights)
    if not callable(getattr(extractor, "feature_maps", None)):
        having = [c.name for c in defectlab.list_components("backbone") if hasattr(c.obj, "feature_maps")]
        problem = (f"backbone: {backbone!r} has no feature_maps(x, layers), so an anomaly model cannot take patch "
                   f"features from it; backbones that have it: {', '.join(having)}")
        raise ConfigError([problem])
    if local:
        log.info(defectlab.init_backbone_from(extractor, weights).summary())
    return extractor.requires_grad_(False).eval()


def check_odd(name: str, value: int) -> None:
    """ParameterError unless ``value`` is odd (a window centred on its patch)."""
    if value % 2 == 0:
        raise ParameterError(f"{name}: must be odd so that the window is centred on its patch, got {value}")


def local_average(feature_map: Tensor, patch_size: int) -> Tensor:
    """Each position's mean over its ``patch_size`` x ``patch_size`` neighbourhood (odd size, stride 1).

    Positions outside the map are left out of the mean, so the map keeps its size and its border.
    """
    if patch_size == 1:
        return feature_map
    return F.avg_pool2d(feature_map, patch_size, stride=1, padding=patch_size // 2, count_include_pad=False)


def concat_at_first(feature_maps: Sequence[Tensor]) -> Tensor:
    """The maps (N, C_i, h_i, w_i) resized (bilinear) to the first one's h x w and concatenated: (N, sum C_i, h, w)."""
    size = feature_maps[0].shape[-2:]
    resized = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
               for m in feature_maps]
    return torch.cat(resized, dim=1)


def pool_channels(features: Tensor, dim: int) -> Tensor:
    """(N, C, h, w) -> (N, dim, h, w): each position's C channels averaged into ``dim`` adaptive bins."""
    n, c, h, w = features.shape
    if dim > c:
        raise ParameterError(f"feature_dim: {dim} is more than the {c} channels of the chosen layers; give at most "
                             f"{c}, or None to keep them all")
    flat = features.permute(0, 2, 3, 1).reshape(-1, 1, c)
    return F.adaptive_avg_pool1d(flat, dim).reshape(n, h, w, dim).permute(0, 3, 1, 2)
