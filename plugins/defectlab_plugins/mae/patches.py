"""Images as sequences of patches and back, and the fixed 2-D sine-cosine positions of MAE's decoder.

A patch is flattened as (patch row, patch column, channel), the order of facebookresearch/mae,
and patches follow each other in raster order (row by row over the patch grid).
"""

from __future__ import annotations

import torch
from torch import Tensor


def patchify(images: Tensor, patch: tuple[int, int]) -> Tensor:
    """(N, C, H, W) -> (N, L, ph·pw·C) with L = (H / ph)·(W / pw)."""
    n, c, h, w = images.shape
    ph, pw = patch
    x = images.reshape(n, c, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch: tuple[int, int]) -> Tensor:
    """(N, L, ph·pw·C) -> (N, C, rows·ph, cols·pw): the inverse of :func:`patchify`."""
    n = patches.shape[0]
    (rows, cols), (ph, pw) = grid, patch
    c = patches.shape[-1] // (ph * pw)
    x = patches.reshape(n, rows, cols, ph, pw, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, rows * ph, cols * pw)


def normalised_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch minus its own mean, over sqrt(its variance + eps): MAE's normalised-pixel targets.

    The variance is the unbiased one (``Tensor.var``), as in facebookresearch/mae.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def sincos_positions(width: int, grid: tuple[int, int]) -> Tensor:
    """(rows·cols, width) fixed positions: half the channels encode the row, half the column.

    Each half is sin and cos of the coordinate times the frequencies 1 / 10000^(i / (width / 4)),
    i < width / 4, as in MAE and MoCo v3; ``width`` must be a multiple of 4.
    """
    rows, cols = grid
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for coordinate in (ys.flatten(), xs.flatten()):
        angles = coordinate[:, None] * frequencies[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()
