"""Pictures of a screening: the all-pairs discrepancy heatmap (the paper's Table 2 as an image)."""

from __future__ import annotations

import math
from pathlib import Path


def plot_pair_scores(pairs: dict[str, dict[str, float | None]], path: str | Path, title: str = "") -> Path:
    """Heatmap of scores, rows = targets, columns = sources; the diagonal and unselectable pairs are blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(pairs)
    values = np.array([[math.nan if pairs[t][s] is None else pairs[t][s] for s in names] for t in names], float)
    size = max(4.0, 1.1 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis_r")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    for i in range(len(names)):
        for j in range(len(names)):
            text = "-" if math.isnan(values[i, j]) else f"{values[i, j]:.3g}"
            axes.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    figure.colorbar(image, ax=axes, label="score (lower = closer)")
    axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
