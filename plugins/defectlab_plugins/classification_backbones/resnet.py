"""ResNet-18/34/50 with the fine-tuning options of the ResNet-18 cable notes (seed 001, cable classification).

The four variants of the seed are combinations of one model's options:

1. custom head with regularisation: ``head_hidden=256, head_dropout=0.3``;
2. self-attention after layer1 and layer2 with dropout: ``attention=["layer1", "layer2"]``;
3. early layers frozen, DropBlock after layer3 and layer4, redesigned head:
   ``freeze=["conv1", "bn1", "layer1", "layer2"], dropblock=["layer3", "layer4"], head_hidden=256``;
4. (best) learnable GeM pooling, layer3 + layer4 + head trained:
   ``pooling="gem", head_dropout=0.3, freeze=["conv1", "bn1", "layer1", "layer2"]``.

The stem and stages keep the torchvision/timm names (conv1, bn1, layer1 ... layer4), so their
ImageNet checkpoints load as they are and ``freeze`` takes the names users know. DropBlock is
timm's ``DropBlock2d``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectlab import ParameterError, Range
from defectlab_plugins.classification_backbones.classifier import (
    ClassifierBase,
    Count,
    DropRate,
    HiddenWidth,
    check_names,
    variant,
    with_common_args,
)
from defectlab_plugins.classification_backbones.heads import classifier_head

STAGES = ("layer1", "layer2", "layer3", "layer4")


class GeM(nn.Module):
    """Generalised-mean pooling, (mean over positions of x^p)^(1/p), with a learnable exponent p.

    p = 1 is average pooling and p -> infinity approaches max pooling. Inputs are clamped to
    ``eps`` first so that fractional powers stay defined.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([float(p)]))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(self.p.reciprocal())

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4g}, eps={self.eps}"


class GlobalAveragePool(nn.Module):
    """Mean over the spatial positions: (N, C, H, W) -> (N, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


class SpatialSelfAttention(nn.Module):
    """Self-attention over the positions of a feature map, added back with a learnable scale.

    Queries and keys are 1x1 convolutions to C/8 channels, values a 1x1 convolution to C; the
    softmax runs over positions (scaled dot product) with dropout on the attention weights.
    ``gamma`` starts at 0, so the block is the identity when inserted into a pretrained network.
    """

    def __init__(self, channels: int, dropout: float = 0.1, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        # (N, 1 head, positions, channels)
        q, k, v = (proj(x).flatten(2).transpose(1, 2).unsqueeze(1) for proj in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return x + self.gamma * attended.squeeze(1).transpose(1, 2).reshape(n, c, h, w)


class ResNetVariant(ClassifierBase):
    """A ResNet whose pooling, head, inserted blocks and frozen layers are chosen by parameters."""

    arch = ""

    @with_common_args
    def __init__(
        self,
        num_classes: Count = 2,
        in_chans: Count = 3,
        weights: str | None = None,
        pooling: Literal["avg", "gem"] = "avg",
        gem_p: Annotated[float, Range(1e-3)] = 3.0,
        head_dropout: DropRate = 0.0,
        head_hidden: HiddenWidth = None,
        attention: tuple[str, ...] = (),
        attention_dropout: DropRate = 0.1,
        dropblock: tuple[str, ...] = (),
        dropblock_size: Count = 5,
        dropblock_prob: DropRate = 0.1,
        freeze: tuple[str, ...] = (),
    ):
        """Build the network, load ``weights``, then freeze the ``freeze`` prefixes.

        Args:
            pooling: "avg" (global average) or "gem" (generalised mean with a learnable exponent).
            gem_p: initial exponent p of GeM pooling (1 = average, large = max).
            attention: stages after which a spatial self-attention block is inserted ("layer1", "layer2").
            attention_dropout: dropout on the attention weights of those blocks.
            dropblock: stages after which DropBlock (timm's DropBlock2d) is inserted ("layer3", "layer4");
                active in training only.
            dropblock_size: side of the square blocks DropBlock zeroes (clipped to the feature map),
                each channel on its own.
            dropblock_prob: the fraction of positions DropBlock aims to zero (less the overlap of blocks).
        """
        super().__init__()
        check_names("pooling", pooling, ("avg", "gem"))
        check_names("attention", attention, STAGES)
        check_names("dropblock", dropblock, STAGES)
        import timm
        from timm.layers import DropBlock2d

        body = timm.create_model(self.arch, pretrained=False, in_chans=in_chans, num_classes=0, global_pool="")
        self.conv1, self.bn1, self.act1, self.maxpool = body.conv1, body.bn1, body.act1, body.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = body.layer1, body.layer2, body.layer3, body.layer4
        widths = {info["module"]: info["num_chs"] for info in body.feature_info}
        self.attention = nn.ModuleDict({s: SpatialSelfAttention(widths[s], attention_dropout) for s in attention})
        self.dropblock = nn.ModuleDict({s: DropBlock2d(dropblock_prob, dropblock_size, couple_channels=False)
                                        for s in dropblock})
        self.pool = GeM(gem_p) if pooling == "gem" else GlobalAveragePool()
        self.num_features = body.num_features
        self.head = classifier_head(self.num_features, num_classes, head_dropout, head_hidden)
        self.setup_weights_and_freezing(weights, freeze, f"{self.arch}.tv_in1k", in_chans=in_chans)

    def stage_outputs(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """(stage name, its output) for layer1 ... layer4 in turn, after any inserted attention or DropBlock."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for stage in STAGES:
            x = getattr(self, stage)(x)
            if stage in self.attention:
                x = self.attention[stage](x)
            if stage in self.dropblock:
                x = self.dropblock[stage](x)
            yield stage, x

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled output of layer4 (N, 512 for ResNet-18/34, 2048 for ResNet-50)."""
        return self.pool(dict(self.stage_outputs(x))["layer4"])

    def feature_maps(self, x: Tensor, layers: Sequence[str]) -> list[Tensor]:
        """The outputs (N, C, h, w) of the stages named in ``layers`` ("layer1" ... "layer4"), in that order.

        They are taken on the path of ``forward_features`` (inserted attention and DropBlock
        included); the network runs only as deep as the deepest stage asked for. Strides 4, 8,
        16, 32; channels 64/128/256/512 (ResNet-18/34) or 256/512/1024/2048 (ResNet-50).
        """
        check_names("layers", layers, STAGES)
        if not layers:
            raise ParameterError(f"layers: name at least one of {', '.join(STAGES)}")
        maps: dict[str, Tensor] = {}
        for stage, out in self.stage_outputs(x):
            if stage in layers:
                maps[stage] = out
            if len(maps) == len(set(layers)):
                break
        return [maps[name] for name in layers]


OPTIONS = "the head, pooling, attention, DropBlock and freezing options of the ResNet-18 cable notes"
ResNet18, ResNet34, ResNet50 = RESNETS = tuple(
    variant(ResNetVariant, f"ResNet{depth}", f"resnet{depth}", f"ResNet-{depth} (torchvision layout) with {OPTIONS}.",
            arch=f"resnet{depth}")
    for depth in (18, 34, 50))
