"""Greedy k-centre coreset selection (PatchCore's memory-bank subsampling)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def coreset_size(count: int, ratio: float) -> int:
    """``ratio * count`` rounded half up, at least 1 and at most ``count``."""
    return min(count, max(1, math.floor(ratio * count + 0.5)))


def random_projection(points: Tensor, dim: int | None, seed: int) -> Tensor:
    """``points`` (n, d) times a seeded Gaussian matrix (d, dim) / sqrt(dim) (Johnson-Lindenstrauss).

    Distances are kept in expectation; ``dim`` None or not below d returns ``points`` unchanged.
    """
    if dim is None or dim >= points.shape[1]:
        return points
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(points.shape[1], dim, generator=generator) / math.sqrt(dim)
    return points @ matrix.to(points)


def greedy_coreset(points: Tensor, count: int) -> Tensor:
    """Indices (count,) of a greedy k-centre coreset of ``points`` (n, d), starting from point 0.

    Each step adds the point farthest from those chosen so far (Sener & Savarese 2018), which
    bounds the largest distance of any point to its nearest centre by twice the optimum. The
    indices are distinct and in the order chosen.
    """
    n = points.shape[0]
    if not 1 <= count <= n:
        raise ValueError(f"a coreset of {count} from {n} points")
    squared_norms = points.pow(2).sum(dim=1)
    chosen = torch.empty(count, dtype=torch.long, device=points.device)
    nearest = torch.full((n,), math.inf, dtype=points.dtype, device=points.device)  # squared distance to the centres
    index = torch.tensor(0, device=points.device)
    for step in range(count):
        chosen[step] = index
        distance = squared_norms - 2 * points @ points[index] + squared_norms[index]
        nearest = torch.minimum(nearest, distance.clamp(min=0))
        nearest[index] = -1  # never chosen twice, even among duplicates at distance 0
        index = torch.argmax(nearest)
    return chosen
