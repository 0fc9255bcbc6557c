"""PatchCore (Roth et al. 2022): a coreset memory bank of good patch features, nearest-neighbour scores."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from defectlab_plugins.anomaly_models.anomaly_model import AnomalyModel, full_precision, no_images, patch_grid
from defectlab_plugins.anomaly_models.coreset import coreset_size, greedy_coreset, random_projection
from defectlab_plugins.anomaly_models.patch_features import check_odd, concat_at_first, local_average, pool_channels

#: Most entries of one block of query-to-bank distances (64 MiB in float32).
DISTANCE_BLOCK = 1 << 24
#: Bank rows per block of an exported graph's search.
EXPORT_BANK_BLOCK = 2048


def nearest_neighbours(queries: Tensor, bank: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """The ``k`` rows of ``bank`` (M, D) nearest to each of ``queries`` (Q, D): distances and indices, (Q, k) each.

    Neighbours are searched with ``torch.cdist`` in blocks of queries (at most DISTANCE_BLOCK
    distances at a time); the distances returned are recomputed exactly from the rows found.
    """
    if torch.compiler.is_exporting():
        indices = _nearest_in_bank_blocks(queries, bank, k)
    else:
        rows = max(1, DISTANCE_BLOCK // max(1, len(bank)))
        indices = torch.cat([torch.cdist(block, bank).topk(k, dim=1, largest=False).indices
                             for block in queries.split(rows)])
    distances = torch.linalg.vector_norm(queries[:, None, :] - bank[indices], dim=-1)
    return distances, indices


def _nearest_in_bank_blocks(queries: Tensor, bank: Tensor, k: int) -> Tensor:
    """The search while exporting, where the number of queries is a symbol: the bank in fixed blocks of
    EXPORT_BANK_BLOCK rows (an exported graph then holds images x patches x EXPORT_BANK_BLOCK distances, not
    the whole bank's), the best ``k`` of each block, then of those."""
    distances, indices = [], []
    for start in range(0, len(bank), EXPORT_BANK_BLOCK):
        block = bank[start:start + EXPORT_BANK_BLOCK]
        found = torch.cdist(queries, block).topk(min(k, len(block)), dim=1, largest=False)
        distances.append(found.values)
        indices.append(found.indices + start)
    best = torch.cat(distances, 1).topk(k, dim=1, largest=False).indices
    return torch.cat(indices, 1).gather(1, best)


def reweighted_score(top_distance: Tensor, neighbour_distances: Tensor) -> Tensor:
    """PatchCore's image score from the largest patch distance s* (N,) and the distances (N, b) of that
    patch to the b bank neighbours of its nearest bank entry m* (m* included):
    (1 - exp(s*) / sum_m exp(d_m)) * s*, computed as -expm1(s* - logsumexp(d)) * s*."""
    return -torch.expm1(top_distance - torch.logsumexp(neighbour_distances, dim=1)) * top_distance


class PatchCore(AnomalyModel):
    """PatchCore on a frozen backbone; see ``defectlab show backbone patchcore``."""

    fitted_buffers = ("memory_bank",)

    def __init__(self, in_chans: int = 3, weights: str | None = None, backbone: str = "resnet18",
                 layers: Sequence[str] = ("layer2", "layer3"), patch_size: int = 3, feature_dim: int | None = None,
                 coreset_ratio: float = 0.1, projection_dim: int | None = 128, neighbours: int = 9,
                 blur_sigma: float = 4.0, seed: int = 0) -> None:
        check_odd("patch_size", patch_size)
        super().__init__(backbone, in_chans, weights, layers, blur_sigma, seed)
        self.patch_size = patch_size
        self.feature_dim = feature_dim
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.neighbours = neighbours

    def patch_features(self, x: Tensor) -> Tensor:
        """(N, D, h, w): the layers' maps locally averaged, resized to the first one's grid, concatenated
        (and pooled to ``feature_dim`` channels when it is set)."""
        features = concat_at_first([local_average(m, self.patch_size) for m in self.layer_maps(x)])
        return features if self.feature_dim is None else pool_channels(features, self.feature_dim)

    @torch.no_grad()
    def fit(self, batches: Iterable[Tensor]) -> dict[str, float]:
        """Fill the memory bank with a coreset of every patch of the good images in ``batches``."""
        rows = [patch_grid(self.patch_features(batch)).flatten(0, 1) for batch in batches]
        if not rows:
            raise no_images("patchcore")
        patches = torch.cat(rows)
        projected = random_projection(patches, self.projection_dim, self.seed)
        self.memory_bank = patches[greedy_coreset(projected, coreset_size(len(patches), self.coreset_ratio))]
        return {"memory_bank": len(self.memory_bank), "feature_dim": patches.shape[1], "patches": len(patches)}

    def score_patches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image scores (N,) and patch scores (N, h, w): each patch's distance to its nearest bank entry."""
        self.check_fitted()
        features = self.patch_features(x)
        n, d, h, w = features.shape
        if d != self.memory_bank.shape[1]:
            raise RuntimeError(f"patchcore: the patch features have {d} channels, the memory bank "
                               f"{self.memory_bank.shape[1]}: it was fitted with other layers or another backbone")
        with full_precision(features):
            patches = patch_grid(features)
            distances, nearest = nearest_neighbours(patches.flatten(0, 1), self.memory_bank)
            distances, nearest = distances.view(n, h * w), nearest.view(n, h * w)
            top = distances.argmax(dim=1)
            images = torch.arange(n, device=x.device)
            worst = patches[images, top]
            anchors = self.memory_bank[nearest[images, top]]
            exact = torch.cdist(anchors, self.memory_bank, compute_mode="donot_use_mm_for_euclid_dist")
            hood = exact.topk(min(self.neighbours, len(self.memory_bank)), dim=1, largest=False).indices  # m* first
            neighbour_distances = torch.linalg.vector_norm(worst[:, None, :] - self.memory_bank[hood], dim=-1)
            scores = reweighted_score(distances[images, top], neighbour_distances)
        return scores, distances.view(n, h, w)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``{"scores": (N,), "maps": (N, H, W)}`` for the batch ``x`` (N, C, H, W)."""
        scores, patch_scores = self.score_patches(x)
        return {"scores": scores, "maps": self.anomaly_maps(patch_scores, x.shape[-2:])}
