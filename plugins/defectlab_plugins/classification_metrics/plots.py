"""Pictures of a classification evaluation: confusion matrices, PR curves, F1 against confidence, t-SNE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defectlab import pyplot, save_figure

ANNOTATED_CLASSES = 25  # up to this many classes, confusion-matrix cells carry their numbers
LEGEND_CLASSES = 12  # up to this many classes, per-class curves are named in the legend
DPI = 110


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: str | Path) -> Path:
    """Counts and row-normalised shares side by side; rows are the true class, columns the predicted one."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    rows = matrix.sum(1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = 1.2 + 0.45 * len(classes)
    figure, axes = plt.subplots(1, 2, figsize=(2 * side + 2.5, side + 1.2), layout="constrained")
    for ax, values, title, text in ((axes[0], matrix, "counts", "{:d}"),
                                    (axes[1], shares, "share of each true class (rows sum to 1)", "{:.2f}")):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10)
        if len(classes) <= ANNOTATED_CLASSES:
            middle = values.max() / 2 if values.size else 0
            for i in range(len(classes)):
                for j in range(len(classes)):
                    value = values[i, j].item()
                    ax.text(j, i, text.format(value), ha="center", va="center", fontsize=8,
                            color="white" if value > middle else "black")
        figure.colorbar(image, ax=ax, shrink=0.8)
    return save_figure(figure, path, dpi=DPI)


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path) -> Path:
    """One precision-recall curve per class (recall, precision, AP), AP in the legend, mAP in the title."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.5, 5), layout="constrained")
    for name, (recall, precision, ap) in curves.items():
        ax.plot(recall, precision, drawstyle="steps-post", linewidth=1.2, label=f"{name} (AP {ap:.3f})")
    mean_ap = float(np.mean([ap for _, _, ap in curves.values()])) if curves else float("nan")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title=f"precision-recall, mAP {mean_ap:.3f}")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left", fontsize=8)
    return save_figure(figure, path, dpi=DPI)


def plot_f1_curve(thresholds: np.ndarray, per_class: dict[str, np.ndarray], mean: np.ndarray, f1_best: float,
                  threshold: float, text: str, path: str | Path) -> Path:
    """Mean F1 against the confidence threshold (per-class curves thin), the best point marked ``text`` (0.67@0.256)."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.5, 5), layout="constrained")
    named = len(per_class) <= LEGEND_CLASSES
    for name, curve in per_class.items():
        ax.plot(thresholds, curve, linewidth=0.8, alpha=0.6, label=name if named else None)
    ax.plot(thresholds, mean, color="tab:blue", linewidth=2.5, label=f"all classes {text}")
    ax.plot([threshold], [f1_best], "o", color="tab:red")
    ax.annotate(text, (threshold, f1_best), textcoords="offset points", xytext=(6, 6), color="tab:red")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold", ylabel="F1",
           title="F1 against confidence (class c predicted where p_c ≥ t)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(figure, path, dpi=DPI)


def plot_tsne(points: np.ndarray, targets: np.ndarray, classes: list[str], path: str | Path, title: str) -> Path:
    """A 2-D t-SNE map of embeddings, one colour per class."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        chosen = targets == c
        if chosen.any():
            ax.scatter(points[chosen, 0], points[chosen, 1], s=10, alpha=0.8, color=colours(c % colours.N),
                       label=f"{name} ({int(chosen.sum())})")
    ax.set(xticks=[], yticks=[])
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8, markerscale=1.5)
    return save_figure(figure, path, dpi=DPI)
