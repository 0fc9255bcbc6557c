"""defectlab-hello: an example third-party defectlab plugin.

It provides one component, the input-scope imbalance metric ``balance`` (Shannon evenness of
class counts), and one command, ``defectlab hello``. This module is imported whenever
defectlab loads its plugins, so it imports only what is cheap: anything heavy (torch, a model
zoo, even click) is imported inside the hook or component that needs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from defectlab import DataError, hookimpl


class ShannonBalance:
    """Shannon evenness of class counts: 1 when balanced, 0 when one class holds everything.

    With p_i = n_i / N the share of class i and k the number of classes, the Shannon entropy is
    H = -sum_i p_i ln p_i (empty classes add nothing) and the evenness is H / ln k. It is the
    opposite direction of the Gini coefficient: higher means more balanced. A single class is
    counted as balanced (1.0), as there is nothing for it to be unequal to.

    Args:
        ignore_empty: Leave out classes whose count is zero, so k counts only the classes that
            occur. By default every count given is a class, as for ``gini``.
    """

    name = "balance"
    scope = "input"

    def __init__(self, ignore_empty: bool = False):
        self.ignore_empty = ignore_empty

    def __call__(self, counts: Sequence[float]) -> float:
        values = [float(c) for c in counts]
        if not values:
            raise DataError("no class counts given; pass one count per class, e.g. --counts 2,1,1")
        if any(not math.isfinite(c) or c < 0 for c in values):
            raise DataError(f"class counts must be finite and non-negative, got {list(counts)}")
        total = sum(values)
        if total == 0:
            raise DataError("every class count is zero: the dataset is empty")
        if self.ignore_empty:
            values = [c for c in values if c > 0]
        if len(values) == 1:
            return 1.0
        entropy = -sum(c / total * math.log(c / total) for c in values if c > 0)
        return entropy / math.log(len(values))


@hookimpl
def register_imbalance_metrics() -> list[Any]:
    """The components of kind ``imbalance`` this plugin provides."""
    return [ShannonBalance]


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``defectlab hello`` to the command line."""
    import click  # imported here, not at module level: only needed when commands are built

    @cli.command("hello")
    @click.option("--name", default="inspector", show_default=True, help="Whom to greet.")
    def hello(name: str) -> None:
        """Greet, and say how many components are registered (an example plugin command)."""
        import defectlab

        components = defectlab.list_components()
        kinds = sorted({c.kind for c in components})
        click.echo(f"Hello, {name}! defectlab {defectlab.__version__} has {len(components)} "
                   f"components registered ({', '.join(kinds) or 'none'}).")
