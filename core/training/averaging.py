"""``train.ema``: an exponential moving average of the weights, kept as the run's model (timm's ModelEmaV3).

After every optimiser step the average θ̄ ← d_t·θ̄ + (1 − d_t)·θ moves towards the trained
weights θ (buffers too, so batch-norm statistics are averaged alike). The validation scores,
best.pt and the final test are the average's; a checkpoint's ``model`` entry is the average, so
evaluate, predict and export use it without knowing about it, and ``trained_model`` keeps θ so
that ``--resume`` goes on training where it stopped.
"""

from __future__ import annotations

from typing import Any

from defectlab.training.events import Callback
from defectlab.training.settings import Ema


class WeightAverage(Callback):
    """The moving average of the trainer's weights, updated after each optimiser step."""

    def __init__(self, settings: Ema) -> None:
        self.settings = settings
        self.average: Any = None
        self.steps = 0  # optimiser steps averaged so far (the warm-up's t)

    def on_fit_start(self, trainer: Any) -> None:
        from timm.utils import ModelEmaV3

        self.average = ModelEmaV3(trainer.network, decay=self.settings.decay, use_warmup=self.settings.warmup,
                                  device=trainer.device)
        if trainer.restored is not None and "trained_model" in trainer.restored:  # resumed: the average goes on
            self.average.module.load_state_dict(trainer.restored["model"])
            self.steps = int(trainer.restored.get("ema_steps", 0))
        trainer.evaluated = self.average.module

    def on_batch_end(self, trainer: Any, batch: dict[str, Any]) -> None:
        if batch["stepped"]:
            self.steps += 1
            self.average.update(trainer.network, step=self.steps)

    def on_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        state["trained_model"] = state["model"]
        state["model"] = self.average.module.state_dict()
        state["ema_steps"] = self.steps
