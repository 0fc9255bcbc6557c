"""Pictures of a detection evaluation: PR curves, F1 against confidence, the confusion matrix, boxes on images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectlab import atomic_write, pyplot, save_figure
from defectlab_plugins.detection_metrics.matching import ConfidenceCurves

DPI = 110
NAMED_CLASSES = 12  # up to this many classes, per-class curves are named in the legend
NUMBERED_CELLS = 25  # up to this many classes, confusion cells carry their counts
TILE = 256  # the longer side of an image in predictions.png, in pixels
COLUMNS = 4  # images per row of predictions.png
MOST_BOXES = 25  # the most predictions drawn on one image (the highest-scoring), so that it stays readable
OUTCOME_COLOURS = {"correct": (40, 200, 60), "false alarm": (230, 40, 40), "missed box": (40, 110, 255)}


def plot_pr_curves(curves: dict[str, dict[str, Any]], map_50: float | None, path: str | Path) -> Path:
    """COCO's interpolated precision against recall at IoU 0.5, per class and their mean ("all classes")."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.5, 5), layout="constrained")
    named = len(curves) <= NAMED_CLASSES
    for name, curve in curves.items():
        ax.plot(curve["recall"], curve["precision"], linewidth=1, alpha=0.7,
                label=f"{name} {curve['ap_50']:.3f}" if named else None)
    if curves:
        mean = np.mean([curve["precision"] for curve in curves.values()], axis=0)
        recall = next(iter(curves.values()))["recall"]
        ax.plot(recall, mean, color="tab:blue", linewidth=2.5, label=f"all classes mAP@0.5 {map_50:.3f}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title="precision-recall at IoU 0.5 (COCO, 101 recall points)")
    ax.grid(alpha=0.3)
    return save_figure(figure, path, dpi=DPI)


def plot_f1_curve(curves: ConfidenceCurves, names: Sequence[str], text: str, path: str | Path) -> Path:
    """F1 against the confidence threshold per class (thin) and over all classes (thick), best point marked."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.5, 5), layout="constrained")
    named = len(names) <= NAMED_CLASSES
    for name, f1 in zip(names, curves.f1):
        ax.plot(curves.thresholds, f1, linewidth=0.8, alpha=0.6, label=name if named else None)
    ax.plot(curves.thresholds, curves.precision.mean(0), ":", color="grey", label="precision, all classes")
    ax.plot(curves.thresholds, curves.recall.mean(0), "--", color="grey", label="recall, all classes")
    ax.plot(curves.thresholds, curves.f1.mean(0), color="tab:blue", linewidth=2.5, label=f"F1, all classes {text}")
    best = curves.best_index
    ax.plot([curves.thresholds[best]], [curves.f1.mean(0)[best]], "o", color="tab:red")
    ax.annotate(text, (curves.thresholds[best], curves.f1.mean(0)[best]), textcoords="offset points",
                xytext=(6, 6), color="tab:red")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold (boxes scoring ≥ t count)", ylabel="F1",
           title="F1 against confidence")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(figure, path, dpi=DPI)


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], confidence: float, iou: float, path: str | Path) -> Path:
    """The (classes + background)² counts, rows the true class, columns the predicted one."""
    plt = pyplot()
    side = max(4.0, 2.0 + 0.5 * len(labels))
    figure, ax = plt.subplots(figsize=(side + 1.5, side), layout="constrained")
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"boxes scoring ≥ {confidence:.3f},\nmatched at IoU ≥ {iou:g} whatever their class", fontsize=9)
    if len(labels) <= NUMBERED_CELLS:
        dark = matrix.max() / 2
        for (row, column), count in np.ndenumerate(matrix):
            ax.text(column, row, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > dark else "black")
    figure.colorbar(image, ax=ax, shrink=0.8)
    return save_figure(figure, path, dpi=DPI)


def draw_predictions(examples: Sequence[dict[str, Any]], classes: Sequence[str], confidence: float,
                     path: str | Path) -> Path:
    """One PNG grid of the examples, each image with its boxes: correct green, false alarm red, missed blue.

    Each example holds ``image`` ((H, W, 3) uint8), ``key``, the predictions kept at ``confidence``
    (``boxes``, ``scores``, ``labels``, ``correct``) and the ground truth (``targets``, ``missed``).
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    caption, legend = 16, 34
    tiles = []
    for example in examples:
        height, width = example["image"].shape[:2]
        scale = TILE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        tile = Image.new("RGB", (TILE, TILE + caption), "white")
        tile.paste(Image.fromarray(example["image"]).resize(size, Image.NEAREST), (0, caption))
        draw = ImageDraw.Draw(tile)
        kept = len(example["scores"])
        shown = np.argsort(-np.asarray(example["scores"]), kind="stable")[:MOST_BOXES]
        more = f" (the {len(shown)} best of {kept} boxes)" if kept > len(shown) else ""
        draw.text((2, 2), str(example["key"])[-30:] + more, fill="black", font=font)

        def box(xyxy: np.ndarray, colour: tuple[int, int, int], width: int) -> tuple[float, float]:
            x1, y1, x2, y2 = (float(v) * scale for v in xyxy)
            draw.rectangle((x1, y1 + caption, max(x1, x2), max(y1, y2) + caption), outline=colour, width=width)
            return x1, y1 + caption

        for xyxy, missed in zip(example["targets"], example["missed"]):
            if missed:
                box(xyxy, OUTCOME_COLOURS["missed box"], 2)
        for i in shown[::-1]:  # the best drawn last, on top
            xyxy, score, label = example["boxes"][i], example["scores"][i], example["labels"][i]
            colour = OUTCOME_COLOURS["correct" if example["correct"][i] else "false alarm"]
            x, y = box(xyxy, colour, 2)
            text = f"{classes[label]} {score:.2f}"
            draw.rectangle(draw.textbbox((x + 1, y + 1), text, font=font), fill=colour)
            draw.text((x + 1, y + 1), text, fill="white", font=font)
        tiles.append(tile)
    columns = min(COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * (TILE + 4), rows * (TILE + caption + 4) + legend), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * (TILE + 4), (i // columns) * (TILE + caption + 4)))
    draw = ImageDraw.Draw(sheet)
    x, y = 4, rows * (TILE + caption + 4) + 2
    draw.text((x, y), f"boxes scoring >= {confidence:.3f} (the best-F1 confidence):", fill="black", font=font)
    for label, colour in OUTCOME_COLOURS.items():
        draw.rectangle((x, y + 18, x + 10, y + 28), fill=colour)
        draw.text((x + 14, y + 17), label, fill="black", font=font)
        x += 24 + int(draw.textlength(label, font=font))
    path = Path(path)
    with atomic_write(path) as temporary:
        sheet.save(temporary, format="PNG")
    return path
