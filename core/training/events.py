"""The training loop's events, and the callbacks that listen to them.

:class:`~defectlab.training.loop.Trainer` fires one event at each point of a run below, in the
order the callbacks were given. A callback is an object with any of the ``on_<event>`` methods
(subclass :class:`Callback`, the ``callback`` kind's protocol, and override what you need); a
plain function ``f(trainer, record)`` is an ``epoch_end`` callback, as before the events existed.
The engine's own training features (the weight average, mixup) are callbacks too, so an
experiment tracker sees exactly what they see (docs/kinds/callback.md). A callback may end the run after the
current epoch with ``trainer.stop(status, message)`` (``defectlab tune`` prunes a trial so:
run.json says 'pruned').

=================  ==============  ====  =============================================================
event              arguments       rank  when
=================  ==============  ====  =============================================================
fit_start          --              all   set up (and restored, when resuming); before epoch 1
epoch_start        epoch           all   before the epoch's first batch
batch_start        batch           all   before the forward pass: ``batch`` is a dict (images,
                                         targets, epoch, step) a callback may change
batch_end          batch           all   after the backward pass (and the optimiser step, when
                                         ``batch["stepped"]``); ``batch["loss"]`` is its loss
evaluation_end     split, scores   all   after the validation split was evaluated; the final test
                                   / 0   (or val) of best.pt fires on rank 0 only
epoch_end          record          all   after the epoch's line was written to metrics.jsonl
checkpoint         state           0     before last.pt (and best.pt) are saved: ``state`` is the
                                         dict written, which a callback may add to
fit_end            run             all   after the final evaluation and report.html
=================  ==============  ====  =============================================================

A callback with ``main_process_only = True`` hears every event on rank 0 only. An exception from
a plugin's callback becomes a PluginError that names the plugin and the event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from defectlab.plugin_system.errors import DefectlabError, PluginError, error_text
from defectlab.plugin_system.protocols import Callback

EVENTS = ("fit_start", "epoch_start", "batch_start", "batch_end", "evaluation_end", "epoch_end", "checkpoint",
          "fit_end")


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
        """Call ``on_<event>(trainer, *args)`` of every callback that has it (on rank 0 only for a callback with
        ``main_process_only``)."""
        for callback in self.callbacks:
            method = getattr(callback, f"on_{event}", None)
            if method is None or getattr(callback, "main_process_only", False) and not trainer.world.is_main:
                continue
            try:
                method(trainer, *args)
            except Exception as exc:
                error = plugin_failure(callback, event, trainer, exc)
                if error is None:  # the engine's own features and the caller's callbacks raise theirs as it is
                    raise
                raise error from exc


def plugin_failure(callback: Any, event: str, trainer: Any, exc: Exception) -> PluginError | None:
    """The error of a plugin's callback that raised ``exc``: the plugin, the event and what is kept; None for a
    callback that no plugin registered."""
    from defectlab.training.contracts import component_label, registered

    if registered("callback", callback) is None:
        return None
    kept = f"last.pt is kept: `defectlab train --resume {trainer.folder}` continues once the plugin is fixed" if \
        (trainer.folder / "last.pt").is_file() else "no checkpoint was written yet"
    return PluginError(f"{component_label('callback', callback)} failed in on_{event}: {error_text(exc)}. The training "
                       f"stopped; {kept}")
