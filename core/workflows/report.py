"""Comparing runs side by side: ``defectlab report`` and ``defectlab.compare_runs``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from defectlab.runs.report import Comparison, write_comparison
from defectlab.runs.run import Run, new_run_dir


def compare_runs(runs: Sequence[Run | str | os.PathLike[str]], out: str | os.PathLike[str] | None = None,
                 title: str | None = None, overwrite: bool = False) -> Comparison:
    """A table and overlaid curves of ``runs`` (run folders or Runs; a staged run counts as its stages).

    Writes report.html, curves.png and comparison.json into ``out`` (default runs/report-<time>).
    """
    loaded = [run if isinstance(run, Run) else Run(Path(run)) for run in runs]
    expanded = [stage for run in loaded for stage in (run.stages or [run])]
    folder = new_run_dir("report", out, overwrite=overwrite)
    return write_comparison(expanded, folder, title=title or "comparison of " + ", ".join(r.name for r in expanded))
