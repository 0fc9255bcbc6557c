"""Pictures of an anomaly evaluation: ROC curves, image-score histograms and anomaly maps over their images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from defectlab import atomic_write, pyplot, save_figure

DPI = 110
CAPTION = 28  # pixels of text (two lines) above each overlay
PANEL = 256  # smaller images are enlarged (by a whole factor) to at least this width, for the caption's sake
HEAT_SHARE = 0.5  # the colour-mapped anomaly map's weight over the image


def plot_roc(image: tuple[np.ndarray, np.ndarray, float], pixel: tuple[np.ndarray, np.ndarray, float] | None,
             path: str | Path) -> Path:
    """The image ROC curve and, when given, the pixel one, each (FPR, TPR, AUROC); the AUROCs in the legend."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    fpr, tpr, auroc = image
    ax.plot(fpr, tpr, color="tab:blue", linewidth=2, label=f"images, AUROC {auroc:.3f}")
    if pixel is not None:
        fpr, tpr, auroc = pixel
        ax.plot(fpr, tpr, "--", color="tab:orange", linewidth=1.5, label=f"pixels, AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (good called defect)",
           ylabel="true-positive rate (defects found)", title="ROC, defect against good")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return save_figure(figure, path, dpi=DPI)


def plot_score_histogram(scores: np.ndarray, labels: np.ndarray, threshold: float, f1: float, path: str | Path
                         ) -> Path:
    """Histograms of the good and the defective images' scores on shared bins, with the best-F1 threshold."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    edges = np.histogram_bin_edges(scores, bins=min(50, max(10, len(scores) // 4)))
    for label, name, colour in ((0, "good", "tab:green"), (1, "defective", "tab:red")):
        chosen = scores[labels == label]
        ax.hist(chosen, bins=edges, alpha=0.55, color=colour, label=f"{name} ({len(chosen)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g} (best F1 {f1:.3f})")
    ax.set(xlabel="image anomaly score (defect when ≥ threshold)", ylabel="images",
           title="image scores, good against defective")
    ax.legend(fontsize=9)
    return save_figure(figure, path, dpi=DPI)


def display_image(image: Any) -> np.ndarray:
    """A normalised (C, H, W) image as (H, W, 3) uint8: grey unless it has 3 channels, min-max stretched."""
    image = np.asarray(image, dtype=np.float64)
    image = image[None] if image.ndim == 2 else image
    if image.shape[0] != 3:
        image = np.repeat(image.mean(axis=0, keepdims=True), 3, axis=0)
    span = float(image.max() - image.min())
    stretched = (image - image.min()) / span if span > 0 else np.zeros_like(image)
    return (stretched.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def draw_overlay(example: dict[str, Any], low: float, high: float, path: str | Path) -> Path:
    """One PNG: the image (grey without one) beside it with the anomaly map in jet at 50 %, caption above.

    ``example`` holds ``map`` (H, W), ``caption``, and optionally ``image`` ((H, W, 3) uint8)
    and ``mask`` (H, W), whose outline is drawn white. The map is coloured from ``low`` (blue)
    to ``high`` (red).
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont
    from scipy import ndimage

    heat = np.asarray(example["map"], dtype=np.float64)
    image = example.get("image")
    base = image / 255.0 if image is not None else np.full((*heat.shape, 3), 0.5)
    colours = colormaps["jet"](np.clip((heat - low) / ((high - low) or 1.0), 0, 1))[..., :3]
    overlay = (1 - HEAT_SHARE) * base + HEAT_SHARE * colours
    if example.get("mask") is not None:
        mask = np.asarray(example["mask"], dtype=bool)
        overlay[mask & ~ndimage.binary_erosion(mask)] = 1.0
    zoom = -(-PANEL // heat.shape[1])
    height, width = heat.shape[0] * zoom, heat.shape[1] * zoom
    sheet = Image.new("RGB", (2 * width + 4, height + CAPTION), "white")
    for column, picture in enumerate((base, overlay)):
        panel = Image.fromarray((picture * 255).round().astype(np.uint8)).resize((width, height), Image.NEAREST)
        sheet.paste(panel, (column * (width + 4), CAPTION))
    caption = f"{example['caption']}\nmap {low:.3g} (blue) to {high:.3g} (red), one scale for all overlays"
    ImageDraw.Draw(sheet).multiline_text((2, 2), caption, fill="black", font=ImageFont.load_default())
    path = Path(path)
    with atomic_write(path) as temporary:
        sheet.save(temporary, format="PNG")
    return path


def draw_overlays(examples: Sequence[dict[str, Any]], folder: str | Path) -> dict[str, Path]:
    """``<name>.png`` in ``folder`` for each example (which holds ``name``), the maps on one colour scale."""
    low = min(float(np.min(example["map"])) for example in examples)
    high = max(float(np.max(example["map"])) for example in examples)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {example["name"]: draw_overlay(example, low, high, folder / f"{example['name']}.png")
            for example in examples}
