"""Drawing steel-like surfaces and the six NEU-DET defect kinds, each as a change of brightness in its patch.

Every defect is drawn in a patch of its own as a signed change ``delta`` of brightness (on a
0..1 scale); pixels that change by less than ``VISIBLE`` are set back to no change, so the
pixels a defect touches are exactly ``delta != 0`` and its box is their tight bounding box.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

VISIBLE = 0.03  # the least change of brightness (about 8 grey levels) that counts as a defect pixel


def _linear(values: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` to ``length`` samples, ends aligned (no BLAS: cheap
    when other processes hold the cores)."""
    import numpy as np

    points = values.shape[axis]
    position = np.linspace(0, points - 1, length)
    low = np.minimum(position.astype(int), points - 2)
    shape = [1, 1]
    shape[axis] = length
    fraction = (position - low).astype(np.float32).reshape(shape)
    return np.take(values, low, axis=axis) * (1 - fraction) + np.take(values, low + 1, axis=axis) * fraction


def upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation of a coarse grid (at least 2x2) to (height, width), corners aligned."""
    return _linear(_linear(coarse.astype("float32"), height, 0), width, 1)


def taper(height: int, width: int, share: float = 0.2) -> np.ndarray:
    """A (height, width) window that rises from 0 at the patch's border to 1 at ``share`` of its side inward,
    so that no defect is cut off by its patch."""
    import numpy as np

    def ramp(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
        return np.clip(distance / max(share * n, 1.0), 0.0, 1.0).astype(np.float32)

    return ramp(height)[:, None] * ramp(width)[None, :]


def steel_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size) float image of hot-rolled steel: grey level, a few octaves of smooth noise,
    streaks along the rolling direction (horizontal) and a fine grain stretched along it."""
    import numpy as np
    from scipy.ndimage import gaussian_filter, gaussian_filter1d

    values = np.full((size, size), rng.uniform(0.40, 0.62), dtype=np.float32)
    for cells, amplitude in ((3, 0.05), (6, 0.03), (12, 0.02), (24, 0.01)):
        values += amplitude * upsample(rng.normal(0.0, 1.0, (cells + 1, cells + 1)), size, size)
    streaks = gaussian_filter1d(rng.normal(0.0, 1.0, size), 1.2).astype(np.float32)
    along = 1.0 + 0.6 * upsample(rng.normal(0.0, 1.0, (2, 7)), 1, size)[0]
    values += 0.025 * streaks[:, None] * along[None, :]
    grain = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), (0.5, 2.5))
    return values + 0.02 * grain / max(float(grain.std()), 1e-9)


def polyline_pixels(lines: np.ndarray, height: int, width: int, thickness: int = 1) -> np.ndarray:
    """A (height, width) boolean array of the pixels that polylines pass, drawn with a square brush.

    ``lines`` is (n, k, 2): n polylines of k points (row, column) each; points outside the patch
    are not drawn.
    """
    import numpy as np

    starts, ends = lines[:, :-1].reshape(-1, 2), lines[:, 1:].reshape(-1, 2)
    steps = np.maximum(2, (np.hypot(*(ends - starts).T) * 2).astype(int) + 1)
    segment = np.repeat(np.arange(len(steps)), steps)
    fraction = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / (steps[segment] - 1)
    points = starts[segment] + fraction[:, None] * (ends - starts)[segment]
    hit = np.zeros((height, width), dtype=bool)
    for dy in range(thickness):
        for dx in range(thickness):
            rows = np.round(points[:, 0] + dy - (thickness - 1) / 2).astype(int)
            cols = np.round(points[:, 1] + dx - (thickness - 1) / 2).astype(int)
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            hit[rows[inside], cols[inside]] = True
    return hit


def crazing(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A network of fine dark cracks: many short kinked polylines over the patch."""
    import numpy as np

    count, bends = int(np.clip(height * width / 250, 5, 45)), int(rng.integers(2, 5))
    headings = rng.uniform(0, 2 * math.pi, (count, 1)) + np.cumsum(rng.normal(0.0, 0.7, (count, bends)), axis=1)
    steps = rng.uniform(0.3, 1.0, (count, bends)) * (0.3 * min(height, width) + 3)
    moves = np.stack([steps * np.sin(headings), steps * np.cos(headings)], axis=-1)
    starts = rng.uniform((0, 0), (height - 1, width - 1), (count, 1, 2))
    lines = np.concatenate([starts, starts + np.cumsum(moves, axis=1)], axis=1)
    return -rng.uniform(0.2, 0.3) * polyline_pixels(lines, height, width) * taper(height, width, 0.1)


def inclusion(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Dark slag spots stretched along the rolling direction: a few elongated Gaussian blobs."""
    import numpy as np

    rows, cols = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    field = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.3, 0.7) * (height - 1), rng.uniform(0.3, 0.7) * (width - 1)
        sy, sx = rng.uniform(0.12, 0.2) * height + 0.5, rng.uniform(0.12, 0.25) * width + 0.5
        blob = np.exp(-0.5 * ((rows - cy) / sy) ** 2)[:, None] * np.exp(-0.5 * ((cols - cx) / sx) ** 2)[None, :]
        field = np.maximum(field, blob)
    texture = 0.75 + 0.25 * upsample(rng.uniform(0.0, 1.0, (4, 6)), height, width)
    return -0.45 * field * texture * taper(height, width)


def patches(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Large irregular dark blotches: smooth noise under an elliptical envelope, soft edges."""
    import numpy as np

    rows = ((np.arange(height) - (height - 1) / 2) / (0.42 * height)) ** 2  # the ellipse stays inside the patch
    cols = ((np.arange(width) - (width - 1) / 2) / (0.42 * width)) ** 2
    noise = upsample(rng.normal(0.0, 1.0, (5, 5)), height, width)
    strength = np.clip((1.0 - rows[:, None] - cols[None, :] + 0.35 * noise) * 2.5, 0.0, 1.0)
    return -rng.uniform(0.18, 0.26) * strength * taper(height, width, 0.1)


def pitted_surface(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Many small dark pits scattered over the patch."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    impulses = np.zeros((height, width), dtype=np.float32)
    count = max(4, int(height * width / rng.uniform(35, 70)))
    impulses[rng.integers(0, height, count), rng.integers(0, width, count)] = rng.uniform(0.6, 1.0, count)
    pits = gaussian_filter(impulses, 0.8)
    return -0.5 * pits / max(float(pits.max()), 1e-9) * taper(height, width, 0.1)


def rolled_in_scale(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Oxide scale pressed into the surface: flakes stretched along the rolling direction, mostly dark."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    impulses = np.zeros((height, width), dtype=np.float32)
    count = max(3, int(height * width / rng.uniform(100, 200)))
    signs = np.where(rng.random(count) < 0.75, -1.0, 0.6)
    impulses[rng.integers(0, height, count), rng.integers(0, width, count)] = signs * rng.uniform(0.6, 1.0, count)
    flakes = gaussian_filter(impulses, (0.8, 2.0))
    return 0.5 * flakes / max(float(np.abs(flakes).max()), 1e-9) * taper(height, width, 0.1)


def scratches(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One to three long thin straight scratches along the patch's long axis, bright or dark."""
    import numpy as np

    along_rows = height >= width
    long, short = (height, width) if along_rows else (width, height)
    count = int(rng.integers(1, 4))
    across = rng.uniform(0, short - 1, (count, 2))
    ends = np.stack([np.tile([0.0, long - 1.0], (count, 1)), across], axis=-1)  # (count, 2 points, (along, across))
    lines = ends if along_rows else ends[..., ::-1]
    hit = polyline_pixels(lines, height, width, thickness=int(rng.integers(1, 3)))
    return (1.0 if rng.random() < 0.6 else -1.0) * rng.uniform(0.15, 0.25) * hit * taper(height, width, 0.05)


#: The six NEU-DET classes, in its order, and how each is drawn.
DRAWERS = {
    "crazing": crazing,
    "inclusion": inclusion,
    "patches": patches,
    "pitted_surface": pitted_surface,
    "rolled-in_scale": rolled_in_scale,
    "scratches": scratches,
}


def patch_shape(rng: np.random.Generator, kind: str, long: float, size: int) -> tuple[int, int]:
    """(height, width) of a defect's patch whose longer side is ``long`` px: scratches long and thin,
    inclusions stretched along the rolling direction, the others roughly square."""
    if kind == "scratches":
        short = max(4.0, long * rng.uniform(0.08, 0.3))
    elif kind == "inclusion":
        short = long * rng.uniform(0.35, 0.7)
    else:
        short = long * rng.uniform(0.6, 1.0)
    long_side, short_side = min(size, max(8, round(long))), min(size, max(4, round(short)))
    vertical = rng.random() < 0.5 if kind in ("scratches", "crazing", "patches", "pitted_surface") else False
    return (long_side, short_side) if vertical else (short_side, long_side)


def visible_part(delta: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The change with sub-visible pixels zeroed, cropped to its tight box (top, left, bottom, right; bottom
    and right exclusive); None when no pixel is visible."""
    import numpy as np

    visible = np.abs(delta) >= VISIBLE
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    if rows.size == 0:
        return None
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    kept = np.where(visible, delta, 0.0)[top:bottom, left:right]
    return kept, (top, left, bottom, right)
