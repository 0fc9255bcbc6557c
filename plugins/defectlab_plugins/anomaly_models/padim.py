"""PaDiM (Defard et al. 2021): a Gaussian per patch position over good images, Mahalanobis-distance maps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from defectlab import DataError, ParameterError
from defectlab_plugins.anomaly_models.anomaly_model import AnomalyModel, full_precision, no_images, patch_grid
from defectlab_plugins.anomaly_models.patch_features import concat_at_first


def mahalanobis(features: Tensor, mean: Tensor, inverse_covariance: Tensor) -> Tensor:
    """sqrt((f - mu)^T Sigma^-1 (f - mu)) per image and position: features (N, P, d), mean (P, d),
    inverse covariance (P, d, d) -> (N, P)."""
    centred = features - mean
    return torch.einsum("npi,pij,npj->np", centred, inverse_covariance, centred).clamp(min=0).sqrt()


class PaDiM(AnomalyModel):
    """PaDiM on a frozen backbone; see ``defectlab show backbone padim``."""

    fitted_buffers = ("channels", "mean", "inverse_covariance")

    def __init__(self, in_chans: int = 3, weights: str | None = None, backbone: str = "resnet18",
                 layers: Sequence[str] = ("layer1", "layer2", "layer3"), feature_dim: int = 100,
                 epsilon: float = 0.01, blur_sigma: float = 4.0, seed: int = 0) -> None:
        super().__init__(backbone, in_chans, weights, layers, blur_sigma, seed)
        self.feature_dim = feature_dim
        self.epsilon = epsilon

    def all_channels(self, x: Tensor) -> Tensor:
        """(N, C, h, w): the layers' maps resized to the first one's grid and concatenated."""
        return concat_at_first(self.layer_maps(x))

    def choose_channels(self, count: int) -> Tensor:
        """``feature_dim`` of ``count`` channel indices, drawn at random with ``seed``, ascending."""
        if self.feature_dim > count:
            raise ParameterError(f"feature_dim: {self.feature_dim} is more than the {count} channels of layers "
                                 f"{', '.join(self.layers)}; give at most {count}")
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(count, generator=generator)[:self.feature_dim].sort().values

    @torch.no_grad()
    def fit(self, batches: Iterable[Tensor]) -> dict[str, float]:
        """Fit a Gaussian per position to the good images in ``batches``: mean and inverse covariance.

        Sums and sums of outer products are accumulated in float64 over the batches, so the
        images are never all held at once.
        """
        images, total, outer, channels = 0, 0, 0, None
        for batch in batches:
            full = self.all_channels(batch)
            if channels is None:
                channels, grid = self.choose_channels(full.shape[1]).to(full.device), full.shape[-2:]
            features = patch_grid(full[:, channels]).double()
            total = total + features.sum(dim=0)
            outer = outer + torch.einsum("npi,npj->pij", features, features)
            images += len(features)
        if channels is None:
            raise no_images("padim")
        if images < 2:
            raise DataError(f"padim: a covariance needs at least 2 good images, fit got {images}")
        mean = total / images
        covariance = outer.sub_(images * mean[:, :, None] * mean[:, None, :]).div_(images - 1)
        covariance.diagonal(dim1=-2, dim2=-1).add_(self.epsilon)
        self.channels = channels
        self.mean = mean.float().view(*grid, -1)
        inverse = torch.linalg.inv(covariance).float().contiguous()  # as a loaded state dict's, for equal results
        self.inverse_covariance = inverse.view(*grid, len(channels), len(channels))
        return {"feature_dim": len(channels), "positions": grid[0] * grid[1], "patches": images * grid[0] * grid[1]}

    def score_patches(self, x: Tensor) -> Tensor:
        """(N, h, w): the Mahalanobis distance of each patch to its position's Gaussian."""
        self.check_fitted()
        features = self.all_channels(x)[:, self.channels]
        n, _, h, w = features.shape
        if (h, w) != self.mean.shape[:2]:
            raise DataError(f"padim: fitted on a {self.mean.shape[0]}x{self.mean.shape[1]} grid of patches, these "
                            f"images give {h}x{w}; score images of the size it was fitted on")
        with full_precision(features):
            distances = mahalanobis(patch_grid(features), self.mean.flatten(0, 1),
                                    self.inverse_covariance.flatten(0, 1))
        return distances.view(n, h, w)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``{"scores": (N,), "maps": (N, H, W)}``: the map's maximum is the image score."""
        maps = self.anomaly_maps(self.score_patches(x), x.shape[-2:])
        return {"scores": maps.amax(dim=(1, 2)), "maps": maps}
