"""Segmentation masks on disk: read as arrays of class indices and checked against their images."""

from __future__ import annotations

from typing import Any

from defectlab import DataError, Sample, first_few, open_image


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    with open_image(path) as image:
        return image.size


def read_mask(path: str) -> Any:
    """A mask file as a 2-D integer array of its stored values (palette indices for 'P' images)."""
    import numpy as np

    with open_image(path, "mask") as image:
        image.load()
        mode = image.mode
        array = np.asarray(image.convert("RGB") if mode in ("RGBA", "LA", "CMYK", "YCbCr") else image)
    if array.ndim == 3:
        if not (array == array[..., :1]).all():
            raise DataError(f"mask '{path}' is a colour image ({mode}); save masks with one channel of "
                            f"class indices (0 = background)")
        array = array[..., 0]
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise DataError(f"mask '{path}' holds fractional values; save class indices as integers")
    return array.astype(np.int64) if array.dtype != np.uint8 else array


def checked_mask_size(mask: Any, sample: Sample) -> None:
    """DataError unless ``mask`` has the size of the sample's image."""
    width, height = image_size(str(sample.path))
    if tuple(mask.shape[:2]) != (height, width):
        raise DataError(f"mask '{sample.mask_path}' is {mask.shape[1]}x{mask.shape[0]} but its image "
                        f"'{sample.path}' is {width}x{height}; a mask must match its image pixel for pixel")


def class_indices(mask: Any, classes: list[str], path: str) -> Any:
    """Mask values as class indices: 0..k-1 as they are, and 0/255 as 0/1 for two classes."""
    import numpy as np

    k = len(classes)
    values = np.unique(mask).tolist()
    if all(0 <= v < k for v in values):
        return mask.astype(np.uint8)
    if k == 2 and set(values) <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    bad = [v for v in values if not 0 <= v < k]
    raise DataError(f"mask '{path}' has values [{first_few(bad)}] outside the {k} classes "
                    f"({', '.join(classes)} = 0..{k - 1}); store class indices (a two-class mask may also use 0 and 255)")
