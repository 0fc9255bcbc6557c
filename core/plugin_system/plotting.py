"""Matplotlib for files, never for a screen: every plot in defectlab is drawn through :func:`pyplot`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from defectlab.plugin_system.files import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save ``figure`` to ``path`` atomically (the format from the suffix, PNG if none) and close it."""
    path = Path(path)
    try:
        with atomic_write(path) as temporary:
            figure.savefig(temporary, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        pyplot().close(figure)
    return path
