"""The hooks a defectlab plugin may implement: one per component kind, plus CLI commands.

Each ``register_*`` hook returns a list of components (classes or factory functions).
The registered name of a component is its ``name`` attribute, else its ``__name__`` in
snake_case. See ``docs/hooks.md`` for an example of every hook.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "defectlab"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_distance_metrics() -> list[Any]:
    """Distance metrics between datasets.

    A component summarises a dataset with ``represent(dataset)`` and measures two summaries
    with ``__call__(a, b) -> float``.
    """


@hookspec
def register_imbalance_metrics() -> list[Any]:
    """Imbalance metrics, each declaring ``scope = "input"`` or ``scope = "output"``.

    Input scope: ``__call__(counts) -> float`` from class counts.
    Output scope: ``__call__(tp, fp, fn) -> float`` from prediction counts.
    """


@hookspec
def register_backbones() -> list[Any]:
    """Factories of ``torch.nn.Module`` for the tasks in their ``tasks`` attribute.

    Each takes ``num_classes``, ``in_chans`` and ``weights`` (None, a local file or a named
    source).
    """


@hookspec
def register_ssl_objectives() -> list[Any]:
    """Self-supervised objectives wrapping an encoder: views, loss, after-step update, export."""


@hookspec
def register_losses() -> list[Any]:
    """``torch.nn.Module`` losses with ``forward(pred, target) -> Tensor``."""


@hookspec
def register_evaluators() -> list[Any]:
    """Stateful evaluators: ``update(pred, target)``, ``compute() -> dict[str, float]``, ``reset()``."""


@hookspec
def register_datasets() -> list[Any]:
    """Dataset readers: one on-disk format or packaged data set each."""


@hookspec
def register_callbacks() -> list[Any]:
    """Training callbacks (experiment trackers, ...): objects with ``on_<event>`` methods for the loop's events."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the ``defectlab`` command group passed as ``cli``."""
