"""DINO's projection head: a 3-layer MLP to a bottleneck, L2 normalisation, a weight-normalised last layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """Linear-GELU-Linear-GELU-Linear to ``bottleneck_dim``, L2-normalise, then a bias-free
    weight-normalised linear layer to ``out_dim`` logits (the prototypes).

    The last layer's norm g starts at 1; with ``norm_last_layer`` it stays fixed at 1 (not trained),
    so each output is a cosine similarity, which the reference code found steadier. ``batch_norm``
    puts a BatchNorm1d after each hidden Linear (the reference's ``use_bn_in_head``): it removes
    the component that every embedding of the batch shares, as a random ResNet's pooled,
    non-negative features have.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 norm_last_layer: bool = True, batch_norm: bool = False):
        super().__init__()

        def hidden(width_in: int) -> list[nn.Module]:
            return [nn.Linear(width_in, hidden_dim), *([nn.BatchNorm1d(hidden_dim)] if batch_norm else []), nn.GELU()]

        self.mlp = nn.Sequential(*hidden(in_dim), *hidden(hidden_dim), nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        norm = self.last_layer.parametrizations.weight.original0  # g, shape (out_dim, 1)
        with torch.no_grad():
            norm.fill_(1.0)
        norm.requires_grad_(not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_dim) embeddings -> (N, out_dim) logits."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)
