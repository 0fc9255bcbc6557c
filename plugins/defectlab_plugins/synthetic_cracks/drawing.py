"""Drawing synthetic EL cells: mono or poly backgrounds with busbars, and thin curvilinear cracks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

BUSBAR_DARKNESS = 0.1
GRAIN_SPREAD = 0.07
GRAIN_BOUNDARY_DARKNESS = 0.05


def crack_pixels(rng: np.random.Generator, size: int, target: int) -> tuple[list[int], list[int]]:
    """(rows, columns) of exactly ``target`` distinct pixels of a connected curvilinear crack.

    The crack walks in half-pixel steps whose heading turns smoothly (curvature is an AR(1)
    process) with rare kinks; at the border it branches from a random crack pixel. It is
    1 pixel wide, 2 when ``target`` exceeds twice ``size``, and stops at the target pixel.
    """
    width = 1 if target <= 2 * size else 2
    pixels: dict[tuple[int, int], None] = {}
    low, high = 0.15 * (size - 1), 0.85 * (size - 1)
    y, x = rng.uniform(low, high, size=2)
    heading, turn = rng.uniform(0.0, 2 * math.pi), 0.0
    for _ in range(200 * target):
        turn = 0.7 * turn + rng.normal(0.0, 0.01)
        heading += turn + (rng.normal(0.0, 0.6) if rng.random() < 0.01 else 0.0)
        y, x = y + 0.5 * math.sin(heading), x + 0.5 * math.cos(heading)
        row, col = round(y), round(x)
        if not (0 <= row < size and 0 <= col < size):
            row, col = list(pixels)[int(rng.integers(len(pixels)))] if pixels else (size // 2, size // 2)
            y, x, heading, turn = float(row), float(col), rng.uniform(0.0, 2 * math.pi), 0.0
        step = [(row, col)]
        if width == 2:  # widen across the direction of travel
            across = (row + 1, col) if abs(math.cos(heading)) >= abs(math.sin(heading)) else (row, col + 1)
            if across[0] < size and across[1] < size:
                step.append(across)
        for pixel in step:
            pixels[pixel] = None
            if len(pixels) == target:
                rows, cols = zip(*pixels)
                return list(rows), list(cols)
    raise RuntimeError(f"crack generator stalled at {len(pixels)} of {target} pixels")  # cannot happen: see above


def cell_background(rng: np.random.Generator, size: int, texture: str) -> np.ndarray:
    """A (size, size) float image in [0, 1] of a cell without defects: 'mono' or 'poly'."""
    import numpy as np

    grid = (np.arange(size) + 0.5) / size - 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    level = rng.uniform(0.55, 0.75)
    slope = rng.uniform(-0.05, 0.05, size=2)
    values = level * (1.0 - 0.25 * (yy ** 2 + xx ** 2)) * (1.0 + slope[0] * yy + slope[1] * xx)
    if texture == "poly":
        values *= grain_pattern(rng, size)
    bars = 2 if size < 256 else 3
    thickness = max(1, size // 100)
    for k in range(bars):
        centre = int((k + 0.5) * size / bars + rng.uniform(-0.03, 0.03) * size)
        values[max(0, centre - thickness // 2): centre - thickness // 2 + thickness] *= 1.0 - BUSBAR_DARKNESS
    return values


def grain_pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multiplicative Voronoi grains (about 30 per 128x128) with slightly darker boundaries."""
    import numpy as np
    from scipy.spatial import cKDTree

    grains = max(4, int(rng.uniform(20, 40) * (size / 128) ** 2))
    seeds = rng.uniform(0, size, size=(grains, 2))
    brightness = 1.0 + rng.normal(0.0, GRAIN_SPREAD, grains)
    rows, cols = np.indices((size, size))
    points = np.column_stack([rows.ravel() + 0.5, cols.ravel() + 0.5])
    distance, nearest = cKDTree(seeds).query(points, k=2)
    pattern = brightness[nearest[:, 0]]
    pattern[distance[:, 1] - distance[:, 0] < 1.0] *= 1.0 - GRAIN_BOUNDARY_DARKNESS
    return pattern.reshape(size, size)
