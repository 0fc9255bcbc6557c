"""What PatchCore and PaDiM share: the frozen extractor, the fitted state as buffers, the output maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectlab import DataError
from defectlab_plugins.anomaly_models.patch_features import build_extractor


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """(N, H, W) maps smoothed by a Gaussian of standard deviation ``sigma`` pixels (0: unchanged).

    The kernel is cut at 4 sigma (as scipy.ndimage.gaussian_filter) and the edges are replicated.
    """
    if sigma <= 0:
        return maps
    radius = max(1, int(4 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(maps[:, None], (radius,) * 4, mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1))[:, 0]


class AnomalyModel(nn.Module):
    """A frozen feature extractor plus a state fitted on good images (``fitted_buffers``, empty until ``fit``).

    ``forward(x)`` returns ``{"scores": (N,), "maps": (N, H, W)}``, larger = more anomalous.
    """

    #: The buffers ``fit`` sets; a fresh model resizes them to a loaded state dict's.
    fitted_buffers: tuple[str, ...] = ()

    def __init__(self, backbone: str, in_chans: int, weights: str | None, layers: Sequence[str],
                 blur_sigma: float, seed: int) -> None:
        super().__init__()
        self.extractor = build_extractor(backbone, in_chans, weights)
        self.layers = tuple(layers)
        self.blur_sigma = blur_sigma
        self.seed = seed
        for name in self.fitted_buffers:
            self.register_buffer(name, torch.empty(0))

    def train(self, mode: bool = True) -> AnomalyModel:
        """Set the mode flag; the extractor stays in eval mode (its BatchNorm statistics are part of the fit)."""
        super().train(mode)
        self.extractor.eval()
        return self

    @property
    def fitted(self) -> bool:
        """Whether ``fit`` has run (or a fitted state dict was loaded)."""
        return all(getattr(self, name).numel() > 0 for name in self.fitted_buffers)

    def check_fitted(self) -> None:
        """RuntimeError saying to fit first when nothing is fitted yet."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(batches) with good images first "
                               f"(defectlab train does so for task 'anomaly'), or load a fitted state dict")

    def layer_maps(self, x: Tensor) -> list[Tensor]:
        """The extractor's maps of ``layers`` for the batch ``x``, in float32."""
        return [m.float() for m in self.extractor.feature_maps(x, self.layers)]

    def anomaly_maps(self, patch_scores: Tensor, size: Sequence[int]) -> Tensor:
        """(N, h, w) patch scores resized (bilinear) to ``size`` (H, W), then Gaussian-blurred: (N, H, W)."""
        maps = F.interpolate(patch_scores[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        return gaussian_blur(maps, self.blur_sigma)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in self.fitted_buffers:
            incoming = state_dict.get(prefix + name)
            if incoming is not None:
                current = getattr(self, name)
                setattr(self, name, torch.empty(incoming.shape, dtype=incoming.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def no_images(model: str) -> DataError:
    """The error of a fit that got no image."""
    return DataError(f"{model}: fit got no images; it needs the good images of the training split")


def full_precision(x: Tensor) -> Any:
    """A context in which autocast is off on ``x``'s device, so distances are computed in float32."""
    return torch.autocast(x.device.type, enabled=False)


def patch_grid(features: Tensor) -> Tensor:
    """(N, D, h, w) -> (N, h * w, D): one row per patch, in row-major order."""
    return features.flatten(2).transpose(1, 2)

