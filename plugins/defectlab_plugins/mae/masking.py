"""Which patches MAE hides: random, block-wise and grid-wise masks of an exact size (Hemmingsson and Olsson 2026, seed §2.6).

Every strategy masks exactly ``count`` patches of each image, ``count = round(mask_ratio · N)``
for N patches, so that strategies differ only in where the masked patches lie, never in how
many there are. A mask is a bool tensor (batch, N), True where a patch is hidden, patches in
raster order (row by row). Randomness comes from torch's global CPU generator only, so a seeded
run draws the same masks on any device.

- ``random``: ``count`` patches drawn uniformly without replacement (the original MAE).
- ``block``: one contiguous block per image. Its width ``w`` follows an aspect ratio
  ``w / h`` drawn log-uniformly in [1/3, 3] (the range of BEiT's block-wise masking), then is
  clamped so that the block fits the grid; it spans ``h = ceil(count / w)`` rows, placed
  uniformly at random. All its rows are full but the last, which keeps only its leftmost
  ``count − (h − 1)·w`` patches: a ``w × h`` rectangle when ``count`` is a multiple of ``w``, else
  a rectangle with part of its bottom row removed at the right, which stays one 4-connected region.
  The block is then, at random, transposed (drawn with rows and columns swapped) and flipped
  up-down and left-right, so the cut-short row or column lies on any side, at either end.
- ``grid``: the smaller of the two sets (the visible patches when ``count ≥ N/2``, else the
  masked ones) is put on a rectangular lattice with row stride ``sy`` and column stride ``sx``
  (``|sy − sx| ≤ 1``), at a random offset in [0, sy) × [0, sx). The strides are the pair whose
  lattice is the smallest that still holds the set's k patches at any offset,
  ``(rows // sy)·(cols // sx) ≥ k`` (ties: the squarer pair, then the smaller ``sy``); when the
  offset lattice has P > k points, the set is k of them spread evenly in raster order (point
  ``floor((i + 0.5)·P / k)`` for i < k). A ratio of 0.75 on an even grid is MAE's grid-wise
  sampling: one visible patch in every 2 × 2 cell.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor

#: Block-wise masking draws the block's aspect ratio (width / height) log-uniformly in [1/MAX, MAX].
MAX_BLOCK_ASPECT = 3.0


def masked_count(mask_ratio: float, patches: int) -> int:
    """How many of ``patches`` a mask hides: ``round(mask_ratio · patches)`` (Python's round)."""
    return round(mask_ratio * patches)


def random_masks(batch: int, rows: int, cols: int, count: int) -> Tensor:
    """``count`` patches of each image drawn uniformly without replacement."""
    order = torch.rand(batch, rows * cols).argsort(dim=1)
    masks = torch.zeros(batch, rows * cols, dtype=torch.bool)
    masks.scatter_(1, order[:, :count], True)
    return masks


def _uniform() -> float:
    return float(torch.rand(()))


def _randint(high: int) -> int:
    """An integer in [0, high) from the global generator."""
    return int(torch.randint(high, ()))


def block_mask(rows: int, cols: int, count: int) -> Tensor:
    """One contiguous block of exactly ``count`` patches (rows, cols), its cut-short side at random.

    The block is drawn by :func:`upright_block` on the grid or on its transpose (then transposed
    back), and flipped up-down and left-right at random, so the short row (or column) lies on any
    side of the block and at either end of it.
    """
    if _uniform() < 0.5:
        mask = upright_block(rows, cols, count)
    else:
        mask = upright_block(cols, rows, count).T
    flips = [dim for dim in (0, 1) if _uniform() < 0.5]
    return mask.flip(flips) if flips else mask


def upright_block(rows: int, cols: int, count: int) -> Tensor:
    """A block of exactly ``count`` patches (rows, cols): full rows of width w and a partial last row."""
    aspect = math.exp((2 * _uniform() - 1) * math.log(MAX_BLOCK_ASPECT))
    width = min(max(round(math.sqrt(count * aspect)), math.ceil(count / rows), 1), cols, count)
    height = math.ceil(count / width)
    top, left = _randint(rows - height + 1), _randint(cols - width + 1)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    mask[top:top + height - 1, left:left + width] = True
    mask[top + height - 1, left:left + count - (height - 1) * width] = True
    return mask


def block_masks(batch: int, rows: int, cols: int, count: int) -> Tensor:
    """A block of ``count`` patches at a random place, with a random aspect, in each image."""
    return torch.stack([block_mask(rows, cols, count).flatten() for _ in range(batch)])


@cache
def grid_strides(rows: int, cols: int, points: int) -> tuple[int, int]:
    """Row and column strides (sy, sx), ``|sy − sx| ≤ 1``, of the smallest lattice holding ``points``.

    The lattice holds ``(rows // sy)·(cols // sx)`` points at any offset; ties go to the squarer
    pair, then to the smaller row stride.
    """
    candidates = [(sy, sx) for sy in range(1, rows + 1) for sx in range(max(1, sy - 1), min(cols, sy + 1) + 1)
                  if (rows // sy) * (cols // sx) >= points]
    return min(candidates, key=lambda s: ((rows // s[0]) * (cols // s[1]), abs(s[0] - s[1]), s[0]))


def lattice(rows: int, cols: int, points: int) -> Tensor:
    """A (rows, cols) bool map of ``points`` lattice points at a random offset, spread evenly."""
    sy, sx = grid_strides(rows, cols, points)
    top, left = _randint(sy), _randint(sx)
    ys, xs = torch.meshgrid(torch.arange(top, rows, sy), torch.arange(left, cols, sx), indexing="ij")
    flat = (ys * cols + xs).flatten()
    chosen = flat[((torch.arange(points) + 0.5) * len(flat) / points).long()]
    found = torch.zeros(rows * cols, dtype=torch.bool)
    found[chosen] = True
    return found.view(rows, cols)


def grid_masks(batch: int, rows: int, cols: int, count: int) -> Tensor:
    """A regular lattice of visible patches (``count ≥ N/2``) or of masked ones, randomly offset."""
    total = rows * cols
    visible_sparse = count >= total - count
    points = total - count if visible_sparse else count
    masks = torch.stack([lattice(rows, cols, points).flatten() for _ in range(batch)])
    return ~masks if visible_sparse else masks


MAKERS = {"random": random_masks, "block": block_masks, "grid": grid_masks}


def make_masks(strategy: str, batch: int, rows: int, cols: int, count: int) -> Tensor:
    """Masks (batch, rows·cols), True where hidden, of exactly ``count`` patches per image."""
    return MAKERS[strategy](batch, rows, cols, count)
