"""SegNet (Badrinarayanan 2017), compact: a VGG-like encoder-decoder that upsamples with max-pool indices."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from defectlab import DataError, Range, resolve_weights
from defectlab_plugins.segmentation_backbones.weights import attach_weights


def conv_block(in_channels: int, out_channels: int, convs: int = 2) -> nn.Sequential:
    """``convs`` times 3x3 convolution, batch norm, ReLU (a VGG stage without its pooling)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def segnet_widths(base_channels: int, depth: int) -> list[int]:
    """Channels of each SegNet stage: doubling from ``base_channels``, at most 8x (VGG's 64 ... 512)."""
    return [base_channels * 2 ** min(i, 3) for i in range(depth)]


class SegNetEncoder(nn.Module):
    """VGG-like stages, each followed by 2x2 max pooling that remembers where each maximum was."""

    def __init__(self, in_chans: int, widths: list[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out in zip([in_chans, *widths], widths))
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.out_channels = widths

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Size]]]:
        """The deepest features and, per stage, the pooling indices and the size before pooling."""
        pooled = []
        for stage in self.stages:
            x = stage(x)
            size = x.shape[-2:]
            x, indices = self.pool(x)
            pooled.append((indices, size))
        return x, pooled


class SegNetDecoder(nn.Module):
    """Mirror of the encoder: max-unpooling with the encoder's indices, then convolutions."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        outputs = [widths[0], *widths[:-1]]
        self.stages = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out in zip(widths[::-1], outputs[::-1]))
        self.unpool = nn.MaxUnpool2d(2, stride=2)

    def forward(self, x: torch.Tensor, pooled: list[tuple[torch.Tensor, torch.Size]]) -> torch.Tensor:
        for stage, (indices, size) in zip(self.stages, pooled[::-1]):
            x = stage(self.unpool(x, indices, output_size=size))
        return x


class SegNet(nn.Module):
    """SegNet (Badrinarayanan 2017): VGG-like encoder-decoder that upsamples with max-pool indices.

    A compact version for small inputs and CPU training: ``depth`` stages of two 3x3
    convolutions each, widths doubling from ``base_channels`` up to 8x. The decoder places
    each value back where the encoder's maximum was (max-unpooling to the pre-pooling size, so
    any input of at least 2**depth pixels a side comes back at its own size) and refines it with
    convolutions; a 3x3 convolution gives the logits.

    Args:
        num_classes: Output channels: 1 for binary segmentation (one logit per pixel), else one per class.
        in_chans: Input channels: 1 for grey images (EL cells), 3 for colour.
        weights: None for random initialisation, or a local state-dict file of a SegNet or of its
            encoder (tensors that fit are loaded and the rest reported).
        base_channels: Channels of the first stage.
        depth: Number of pooling stages (1 to 6).
    """

    name = "segnet"
    tasks = ("segment",)

    def __init__(self, num_classes: Annotated[int, Range(1)] = 1, in_chans: Annotated[int, Range(1)] = 3,
                 weights: str | None = None, base_channels: Annotated[int, Range(1)] = 32,
                 depth: Annotated[int, Range(1, 6)] = 4) -> None:
        super().__init__()
        local, _ = resolve_weights(weights, {}, "segnet")
        widths = segnet_widths(base_channels, depth)
        self.encoder = SegNetEncoder(in_chans, widths)
        self.decoder = SegNetDecoder(widths)
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)
        attach_weights(self, local)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, H, W) for images (N, in_chans, H, W)."""
        side = 2 ** len(self.encoder.stages)
        if min(x.shape[-2:]) < side:
            raise DataError(f"segnet of depth {len(self.encoder.stages)} needs inputs of at least {side}x{side}, "
                            f"got {tuple(x.shape[-2:])}")
        features, pooled = self.encoder(x)
        return self.head(self.decoder(features, pooled))

