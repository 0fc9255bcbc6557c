"""Cutting large images and their masks into tiles and stitching tile predictions back.

Cracks a few pixels wide vanish when a 1344x1344 cell image is resized to a network's input,
so Yi et al. 2022 trains and predicts on crops (1344x1344 -> nine 448x448 tiles). The spatial axes
are the first two of every array here, (H, W) or (H, W, C): an image and its mask cut with the
same tile size and overlap get the same offsets, tile for tile. numpy is imported inside the
functions so that ``import defectlab`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from defectlab.plugin_system.errors import DataError

if TYPE_CHECKING:
    import numpy as np


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start positions of tiles of ``size`` covering ``length`` with at least ``overlap`` shared pixels.

    Tiles step by ``size - overlap``; the last one is moved back to end at the border, so it may
    overlap its neighbour more than asked but never leaves the image.
    """
    if size > length:
        raise DataError(f"a tile of {size} pixels does not fit in {length} pixels; choose a smaller "
                        f"tile_size or resize the image")
    step = size - overlap
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def tile(array: np.ndarray, tile_size: int | tuple[int, int], overlap: int = 0
         ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Cut ``array`` (H, W, ...) into tiles covering it: (tiles (N, th, tw, ...), offsets [(y, x)]).

    Tiles are in row-major order. Cut an image and its mask with the same arguments to keep
    them paired; :func:`untile` puts tiles (or predictions for them) back.

    Args:
        array: An image (H, W) or (H, W, C), a mask, or any array whose first two axes are spatial.
        tile_size: Tile height and width (one int for square tiles).
        overlap: Pixels shared by neighbouring tiles (0 <= overlap < tile size).
    """
    import numpy as np

    array = np.asarray(array)
    if array.ndim < 2:
        raise DataError(f"tile needs an array with two spatial axes first, got shape {array.shape}")
    height, width = _pair(tile_size, "tile_size")
    if min(height, width) < 1 or not 0 <= overlap < min(height, width):
        raise ValueError(f"need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size} and {overlap}")
    offsets = [(y, x) for y in tile_starts(array.shape[0], height, overlap)
               for x in tile_starts(array.shape[1], width, overlap)]
    tiles = np.stack([array[y:y + height, x:x + width] for y, x in offsets])
    return tiles, offsets


def untile(tiles: Any, offsets: list[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Stitch tiles (N, th, tw, ...) back into an array of spatial ``shape`` (H, W), averaging overlaps.

    The result is float64 (an average); threshold or round it for masks. A pixel no tile
    covers is a DataError, since its value would be made up.

    Args:
        tiles: The tiles, or a prediction for each, in the order of ``offsets``.
        offsets: The (y, x) of each tile's top-left pixel, as :func:`tile` returned them.
        shape: Height and width of the stitched array.
    """
    import numpy as np

    tiles = np.asarray(tiles)
    if len(tiles) != len(offsets):
        raise DataError(f"{len(tiles)} tiles but {len(offsets)} offsets")
    height, width = _pair(tuple(shape), "shape")
    total = np.zeros((height, width, *tiles.shape[3:]), dtype=np.float64)
    covered = np.zeros((height, width), dtype=np.int64)
    th, tw = tiles.shape[1:3]
    for piece, (y, x) in zip(tiles, offsets):
        if y < 0 or x < 0 or y + th > height or x + tw > width:
            raise DataError(f"a {th}x{tw} tile at (y={y}, x={x}) does not fit in {height}x{width}")
        total[y:y + th, x:x + tw] += piece
        covered[y:y + th, x:x + tw] += 1
    if not covered.all():
        raise DataError(f"{int((covered == 0).sum())} pixels of the {height}x{width} array are in no tile")
    return total / covered.reshape(covered.shape + (1,) * (total.ndim - 2))
