"""The score threshold a fitted anomaly model predicts with: the one the run's evaluation chose."""

from __future__ import annotations

from pathlib import Path

from defectlab.plugin_system.errors import DataError


def run_threshold(checkpoint: Path) -> float:
    """The score threshold of best F1 found on the run's validation split, else on its test evaluation.

    A DataError when the run has neither (it was not evaluated): predict then needs ``--threshold``.
    """
    from defectlab.runs.run import Run

    folder = checkpoint.parent
    if (folder / "config.json").is_file():
        run = Run(folder)
        for value in [line.get("val/threshold") for line in run.metrics] + [run.scores.get("threshold")]:
            if isinstance(value, (int, float)):
                return float(value)
    raise DataError(f"the run of '{checkpoint}' holds no score threshold (it was never evaluated on images of "
                    f"both kinds); give one with --threshold")
