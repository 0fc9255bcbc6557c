"""Pictures of a segmentation evaluation: example images with the mask and the prediction overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectlab import pyplot, save_figure

#: Overlay colours (RGB in [0, 1]) of the pixel outcomes; FP = background predicted as defect.
OUTCOME_COLOURS = {"TP (defect found)": (0.1, 0.85, 0.1), "FP (false alarm)": (0.95, 0.1, 0.1),
                   "FN (missed defect)": (0.15, 0.35, 1.0)}


def min_max(image: np.ndarray) -> np.ndarray:
    """A grey (H, W) image in [0, 1]: channels averaged, then stretched by its own minimum and maximum."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:  # (C, H, W) as the model saw it
        image = image.mean(axis=0)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def outcome_overlay(image: np.ndarray | None, mask: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """An (H, W, 3) picture: the grey image (white without one) with TP, FP and FN pixels coloured."""
    grey = min_max(image) if image is not None else np.ones(mask.shape)
    picture = np.repeat(grey[..., None], 3, axis=2)
    defect, predicted = np.asarray(mask) == 1, np.asarray(predicted, dtype=bool)
    background = np.asarray(mask) == 0  # ignored pixels (neither 0 nor 1) stay uncoloured
    for colour, where in zip(OUTCOME_COLOURS.values(),
                             (defect & predicted, background & predicted, defect & ~predicted)):
        picture[where] = colour
    return picture


def plot_predictions(examples: Sequence[dict[str, Any]], path: str | Path, threshold: float) -> Path:
    """One column per example: the image on top, below it the image with TP/FP/FN pixels coloured.

    Each example holds ``mask`` and ``predicted`` ((H, W) arrays), and optionally ``image``
    ((C, H, W) or (H, W), shown min-max stretched) and ``key``.
    """
    plt = pyplot()
    from matplotlib.patches import Patch

    columns = max(len(examples), 1)
    figure, axes = plt.subplots(2, columns, figsize=(2.3 * columns + 0.4, 5.4), squeeze=False,
                                layout="constrained")
    for column, example in enumerate(examples):
        mask, predicted = np.asarray(example["mask"]), np.asarray(example["predicted"], dtype=bool)
        image = example.get("image")
        top, bottom = axes[0, column], axes[1, column]
        if image is not None:
            top.imshow(min_max(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            top.imshow(mask == 1, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        bottom.imshow(outcome_overlay(image, mask, predicted), interpolation="nearest")
        tp = int(np.sum((mask == 1) & predicted))
        fp, fn = int(np.sum((mask == 0) & predicted)), int(np.sum((mask == 1) & ~predicted))
        top.set_title(str(example.get("key", column)), fontsize=8)
        bottom.set_title(f"TP {tp}  FP {fp}  FN {fn}", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if not examples:
        axes[0, 0].text(0.5, 0.5, "no examples", ha="center", va="center")
    axes[0, 0].set_ylabel("image" if any(e.get("image") is not None for e in examples) else "true mask")
    axes[1, 0].set_ylabel("prediction vs mask")
    handles = [Patch(color=colour, label=label) for label, colour in OUTCOME_COLOURS.items()]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    figure.suptitle(f"predictions at p > {threshold:g}: green TP, red FP (background predicted as defect), "
                    f"blue FN (defect missed)", fontsize=9)
    return save_figure(figure, path, dpi=110)
