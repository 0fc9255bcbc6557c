"""Small models and data for engine tests: a few-hundred-parameter CNN and separable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from defectlab import hookimpl
from PIL import Image
from torch import nn


class TinyNet(nn.Module):
    """A tiny CNN classifier (engine tests): conv-BN-ReLU-pool embedding and a linear head.

    Args:
        num_classes: Number of logits.
        in_chans: Input channels.
        weights: Unused (random initialisation only).
        width: Channels of the convolution (the embedding size).
    """

    name = "tiny_cnn"
    tasks = ("classify", "embed")

    def __init__(self, num_classes: int = 2, in_chans: int = 3, weights: str | None = None, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)
        self.num_features = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class TinySegNet(nn.Module):
    """A one-layer segmentation net (fault tests): a 3x3 convolution to one defect logit per pixel.

    Args:
        num_classes: Logits per pixel (1: binary).
        in_chans: Input channels.
        weights: Unused (random initialisation only).
    """

    name = "tiny_segnet"
    tasks = ("segment",)

    def __init__(self, num_classes: int = 1, in_chans: int = 3, weights: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TinyModels:
    """Plugin object registering TinyNet, TinySegNet and MeanImageAnomaly."""

    @hookimpl
    def register_backbones(self):
        return [TinyNet, TinySegNet, MeanImageAnomaly]


def write_two_class_folder(root: Path, per_class: int = 20, size: int = 16, seed: int = 0) -> Path:
    """An image_folder of dark and bright grey images with noise: separable by mean brightness."""
    rng = np.random.default_rng(seed)
    for label, mean in (("bright", 190), ("dark", 60)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = np.clip(rng.normal(mean, 25, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}_{index:02d}.png")
    return root


class MeanImageAnomaly(nn.Module):
    """A fitted anomaly model (engine tests): the per-pixel mean of the good images; the map is the
    squared difference from it averaged over channels, the score its maximum.

    Args:
        num_classes: Unused (one score per image).
        in_chans: Input channels.
        weights: Unused.
    """

    name = "mean_image_anomaly"
    tasks = ("anomaly",)

    def __init__(self, num_classes: int = 1, in_chans: int = 3, weights: str | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(0))

    def fit(self, batches):
        total, count = 0.0, 0
        for images in batches:
            total = total + images.sum(0)
            count += len(images)
        self.mean = total / count
        return {"images": count}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.mean = torch.empty_like(state_dict[prefix + "mean"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.mean.numel():
            raise RuntimeError("fit the model first")
        maps = ((x - self.mean) ** 2).mean(1)
        return {"scores": maps.flatten(1).amax(1), "maps": maps}
