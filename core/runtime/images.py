"""What an exported model takes: uint8 images, one by one or as a batch, checked before they reach the graph."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectlab.data.datasets import read_image
from defectlab.plugin_system.errors import DataError

#: The smallest side an exported graph takes (its bilinear resize needs two pixels).
MIN_SIDE = 2


def as_images(images: Any) -> list[np.ndarray]:
    """``images`` as a list of uint8 arrays (H, W, C), C 1 or 3; a DataError that says what is wrong otherwise.

    Takes an image file path, a uint8 array (H, W), (H, W, C) or a batch (N, H, W, C), or a list
    of any of these. Files are decoded as training decodes them (grey stays grey).
    """
    if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        items: Sequence[Any] = [images]
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    elif isinstance(images, np.ndarray):
        raise DataError(f"an image array has 2 (H, W), 3 (H, W, C) or, for a batch, 4 (N, H, W, C) axes; got "
                        f"shape {images.shape}")
    else:
        items = list(images)
    return [checked_image(read_image(item) if isinstance(item, (str, Path)) else item, index)
            for index, item in enumerate(items)]


def checked_image(image: Any, index: int = 0) -> np.ndarray:
    """One image as a uint8 array (H, W, C) with C 1 or 3, or a DataError naming the problem and the fix."""
    what = f"image {index}"
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("L" if image.mode in ("L", "1", "I;16", "I", "F") else "RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise DataError(f"{what} has dtype {array.dtype}; the model takes uint8 pixels 0-255 (e.g. "
                        f"(image * 255).round().astype(numpy.uint8) for floats in [0, 1])")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise DataError(f"{what} has shape {array.shape}; give (H, W) or (H, W, C) images")
    if array.shape[2] not in (1, 3):
        hint = (" (channels first? move them last: image.transpose(1, 2, 0))" if array.shape[0] in (1, 3)
                else " (RGBA? drop the alpha channel: image[..., :3])" if array.shape[2] == 4 else "")
        raise DataError(f"{what} has shape {array.shape}: {array.shape[2]} channels, where the model takes 1 (grey) "
                        f"or 3 (RGB) in the last axis{hint}")
    if min(array.shape[:2]) < MIN_SIDE:
        raise DataError(f"{what} is {array.shape[0]}x{array.shape[1]} pixels; the model takes images of at least "
                        f"{MIN_SIDE}x{MIN_SIDE}")
    return np.ascontiguousarray(array)


def same_shape_groups(images: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``images`` grouped by shape (a graph takes one shape per batch), in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape, []).append(index)
    return list(groups.values())
