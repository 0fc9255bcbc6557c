"""Pictures of a screening: the all-pairs discrepancy heatmap (the paper's Table 2 as an image)."""

from __future__ import annotations

import math
from pathlib import Path


def plot_pair_scores(pairs: dict[str, dict[str, float | None]], path: str | Path, title: str = "") -> Path:
    """Heatmap of scores, rows = targets, columns = sources; the diagonal and unselectable pairs are blank."""
    from defectlab.plugin_system.plotting import pyplot, save_figure

    plt = pyplot()
    import numpy as np

    names = list(pairs)
    values = np.array([[math.nan if pairs[t][s] is None else pairs[t][s] for s in names] for t in names], float)
    cell = 1.2
    label_room = 0.09 * max(len(n) for n in names)
    figure, axes = plt.subplots(figsize=(cell * len(names) + label_room + 2.5, cell * len(names) + label_room + 1.2),
                                layout="constrained")
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis_r")
    middle = np.nanmean(values) if np.isfinite(values).any() else 0.0
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    for i in range(len(names)):
        for j in range(len(names)):
            text = "-" if math.isnan(values[i, j]) else f"{values[i, j]:.3g}"
            colour = "black" if math.isnan(values[i, j]) or values[i, j] < middle else "white"
            axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    figure.colorbar(image, ax=axes, label="score (lower = closer)", shrink=0.8)
    axes.set_title(title, fontsize=10)
    return save_figure(figure, path, dpi=110)
