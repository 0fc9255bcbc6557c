"""``train.mixup``: mixup and CutMix of a classifier's training batches (timm.data.Mixup).

A batch is mixed with itself in reverse order and its class indices become the same mix of
one-hot rows, which the loss takes as soft targets (``soft_targets = True`` on the loss). λ is
drawn from NumPy's generator, which the engine seeds from (train.seed, epoch): a resumed run
mixes as a run that never stopped.
"""

from __future__ import annotations

from typing import Any

import torch
from defectlab.training.events import Callback
from defectlab.training.settings import Mixup


class BatchMixing(Callback):
    """Replaces each training batch's images and targets by their mix before the forward pass.

    timm mixes batches of even size; the last image of an odd batch is left as it is, with its
    one-hot target.
    """

    def __init__(self, settings: Mixup, num_classes: int) -> None:
        from timm.data import Mixup as TimmMixup

        self.num_classes = num_classes
        self.mix = TimmMixup(mixup_alpha=settings.mixup_alpha, cutmix_alpha=settings.cutmix_alpha,
                             prob=settings.prob, switch_prob=settings.switch_prob, mode="batch",
                             label_smoothing=0.0, num_classes=num_classes)

    def on_batch_start(self, trainer: Any, batch: dict[str, Any]) -> None:
        images, targets = batch["images"], batch["targets"]
        even = len(images) - len(images) % 2
        soft = torch.nn.functional.one_hot(targets, self.num_classes).to(images.dtype)
        if even:
            mixed, mixed_targets = self.mix(images[:even].clone(), targets[:even])
            images = torch.cat([mixed, images[even:]])
            soft = torch.cat([mixed_targets.to(images.dtype), soft[even:]])
        batch["images"], batch["targets"] = images, soft
