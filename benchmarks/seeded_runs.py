"""What the seeded benchmarks share: one training run timed once and kept, and mean +- std of a score in %.

Imported by the scripts beside it (``from seeded_runs import ...``): Python puts a script's own
folder first on the import path.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import defectlab as dl


def timed_train(config: dict[str, Any], folder: Path) -> dict[str, float]:
    """Train ``config`` into ``folder`` unless an earlier call finished it; its CPU and wall minutes.

    The cost is kept in ``folder/benchmark.json``, written only when the run has finished, so a
    script run again skips what it has and repeats what a kill interrupted.
    """
    cost = folder / "benchmark.json"
    if not cost.is_file():
        wall, cpu = time.perf_counter(), time.process_time()
        dl.train(config, out=folder, overwrite=True)
        cost.write_text(json.dumps({"cpu_minutes": (time.process_time() - cpu) / 60,
                                    "wall_minutes": (time.perf_counter() - wall) / 60}))
    return json.loads(cost.read_text())


def summary(values: list[float], scale: float = 100, digits: int = 1) -> str:
    """``mean +- std`` of ``values`` times ``scale`` (scores in [0, 1] as percentages), to ``digits``
    decimals; std 0 for one value."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.{digits}f} +- {scale * spread:.{digits}f}"
