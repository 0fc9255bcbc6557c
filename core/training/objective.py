"""A self-supervised objective as the engine trains it: one module whose forward is the loss.

The engine's loop calls ``loss(model(images), targets)``. :class:`ObjectiveModel` makes an
objective fit that loop without a second one: its forward returns ``objective.loss(
objective.views(images))``, and :class:`ObjectiveLoss` passes that value through. Everything
else (checkpoints, resume, AMP, DDP, the non-finite stop) is the engine's own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def vision_transformer(backbone: nn.Module) -> nn.Module | None:
    """The timm VisionTransformer inside a backbone (the backbone itself, or its ``encoder`` attribute, as the
    built-in ViTs hold it), else None: what an objective that works on patches needs to reach."""
    from timm.models.vision_transformer import VisionTransformer

    for candidate in (backbone, getattr(backbone, "encoder", None)):
        if isinstance(candidate, VisionTransformer):
            return candidate
    return None


class ObjectiveModel(nn.Module):
    """Wraps an ``ssl`` objective so that ``forward(images)`` is its loss on its own views of the batch."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.objective.loss(self.objective.views(images))

    def param_groups(self) -> list[dict[str, Any]]:
        return self.objective.param_groups()

    def before_optimizer_step(self, progress: float) -> None:
        hook = getattr(self.objective, "before_optimizer_step", None)
        if hook is not None:
            hook(progress)

    def after_step(self, progress: float, optimizer: torch.optim.Optimizer) -> None:
        self.objective.after_step(progress, optimizer)

    def epoch_metrics(self) -> dict[str, float]:
        hook = getattr(self.objective, "epoch_metrics", None)
        return dict(hook()) if hook is not None else {}


class ObjectiveLoss(nn.Module):
    """The loss of an :class:`ObjectiveModel` step: the model already returned it."""

    def forward(self, loss: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss
