"""The engine's own training features that hang on the loop's events, built from the settings."""

from __future__ import annotations

from typing import Any

from defectlab.training.settings import TrainSettings


def training_features(settings: TrainSettings, data: Any) -> list[Any]:
    """The callbacks ``settings`` turn on: batch mixing (train.mixup), then the weight average (train.ema)."""
    features: list[Any] = []
    if settings.mixup is not None:
        from defectlab.training.mixing import BatchMixing

        features.append(BatchMixing(settings.mixup, data.num_classes))
    if settings.ema is not None:
        from defectlab.training.averaging import WeightAverage

        features.append(WeightAverage(settings.ema))
    return features
