"""The training loop's events, and the callbacks that listen to them.

:class:`~defectlab.training.loop.Trainer` fires one event at each point of a run below, on every
rank, in the order the callbacks were given. A callback is an object with any of the
``on_<event>`` methods (subclass :class:`Callback` and override what you need); a plain function
``f(trainer, record)`` is an ``epoch_end`` callback, as before the events existed. The engine's
own training features (the weight average, mixup, channels-last batches) are callbacks too, so
an experiment tracker sees exactly what they see (docs/training.md, "Events"). A callback may end
the run after the current epoch with ``trainer.stop(status, message)`` (``defectlab tune`` prunes
a trial so: run.json says 'pruned').

=================  ==========================  ===================================================
event              arguments after trainer     when
=================  ==========================  ===================================================
fit_start          --                          set up (and restored, when resuming); before epoch 1
epoch_start        epoch                       before the epoch's first batch
batch_start        batch                       before the forward pass: ``batch`` is a dict
                                               (images, targets, epoch, step) a callback may change
batch_end          batch                       after the backward pass (and the optimiser step, when
                                               ``batch["stepped"]``); ``batch["loss"]`` is its loss
evaluation_end     split, scores               after a split was evaluated (val each epoch, the
                                               final test or val)
epoch_end          record                      after the epoch's line was written to metrics.jsonl
checkpoint         state                       before last.pt (and best.pt) are saved: ``state`` is
                                               the dict written, which a callback may add to
fit_end            run                         after the final evaluation and report.html
=================  ==========================  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from defectlab.plugin_system.errors import DefectlabError

EVENTS = ("fit_start", "epoch_start", "batch_start", "batch_end", "evaluation_end", "epoch_end", "checkpoint",
          "fit_end")


class Callback:
    """Base of a training callback: every event does nothing until overridden."""

    def on_fit_start(self, trainer: Any) -> None:
        """The trainer is set up (model on its device, optimiser built, a resumed state restored)."""

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Epoch ``epoch`` (from 1) is about to start."""

    def on_batch_start(self, trainer: Any, batch: dict[str, Any]) -> None:
        """``batch["images"]`` and ``batch["targets"]`` are about to go through the model; replace them to
        change what it trains on."""

    def on_batch_end(self, trainer: Any, batch: dict[str, Any]) -> None:
        """The batch's gradients are in (``batch["loss"]``, and ``batch["stepped"]`` after an optimiser step)."""

    def on_evaluation_end(self, trainer: Any, split: str, scores: dict[str, float]) -> None:
        """``split`` was evaluated, with these scores."""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """The epoch's metrics (the line of metrics.jsonl) are written."""

    def on_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        """``state`` is about to be saved as last.pt (and best.pt); entries added here are saved too."""

    def on_fit_end(self, trainer: Any, run: Any) -> None:
        """The run has finished: tested, reported."""


class EpochEnd(Callback):
    """A plain function ``f(trainer, record)`` as an ``epoch_end`` callback."""

    def __init__(self, function: Callable[[Any, dict[str, Any]], None]) -> None:
        self.function = function

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.function(trainer, record)


def as_callback(item: Any) -> Any:
    """``item`` as an object with ``on_<event>`` methods: a callback as it is, a function as ``EpochEnd``."""
    if any(callable(getattr(item, f"on_{event}", None)) for event in EVENTS):
        return item
    if callable(item):
        return EpochEnd(item)
    raise DefectlabError(f"a training callback must have on_<event> methods ({', '.join(EVENTS)}) or be a function "
                         f"f(trainer, record); got {type(item).__name__}")


class Events:
    """The callbacks of one trainer, fired in order."""

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self.callbacks = [as_callback(item) for item in callbacks]

    def fire(self, event: str, trainer: Any, *args: Any) -> None:
        """Call ``on_<event>(trainer, *args)`` of every callback that has it."""
        for callback in self.callbacks:
            method = getattr(callback, f"on_{event}", None)
            if method is not None:
                method(trainer, *args)
