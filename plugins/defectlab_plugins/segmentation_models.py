"""Segmentation networks of SPEC 003: U-Net, U-Net++, FPN, PSPNet, DeepLabv3(+) from
segmentation-models-pytorch, and a compact SegNet (max-pool indices, max-unpool).

Every factory takes ``num_classes`` (1 = one logit per pixel for binary segmentation),
``in_chans`` and ``weights``: None (random initialisation), a local state-dict file (loaded
tensor by tensor with a report of what fitted), or a named source such as ``"imagenet"``,
which is downloaded by segmentation-models-pytorch and therefore refused when
``HF_HUB_OFFLINE`` is set. Each returned model has an ``encoder`` attribute: the part a
transfer loads or an SSL objective pretrains.

segmentation-models-pytorch is imported when a model is built, not when this module is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from defectlab import DataError, ParameterError, WeightReport, did_you_mean, load_matching, read_state_dict

log = logging.getLogger("defectlab.backbones")

OFFLINE_VALUES = {"1", "true", "yes", "on"}


# --- weights -----------------------------------------------------------------------------------------

def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads (the values huggingface_hub accepts as true)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def rgb_to_grey(tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """An RGB first convolution (O, 3, kh, kw) summed over its channels for a grey model's (O, 1, kh, kw), as
    timm and smp adapt it; any other tensor as it is."""
    if tensor.ndim == 4 and target.ndim == 4 and tensor.shape[1] == 3 and target.shape[1] == 1 \
            and tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]:
        return tensor.sum(dim=1, keepdim=True)
    return tensor


def load_local_weights(model: nn.Module, path: str | os.PathLike[str]) -> WeightReport:
    """Load the tensors of ``path`` that fit ``model`` (by name and shape), log and return the report.

    The file may hold the whole model or its encoder alone (names without ``encoder.``). A
    first convolution saved for 3 channels is summed over them to fit a 1-channel model. A
    file of which no tensor fits is a DataError: it is not weights of this network.
    """
    report = load_matching(model, read_state_dict(path), str(path), prefixes=("encoder.",), adapt=rgb_to_grey)
    # a file tensor left out (not in this model, or of another shape) is worth a warning
    (log.warning if report.skipped or report.unused else log.info)(report.summary())
    return report


def resolve_weights(weights: str | None, named: Mapping[str, Any], what: str) -> tuple[Path | None, Any]:
    """(local file, named source) for a ``weights`` value; at most one is set.

    ``named`` maps the source names ``what`` knows (e.g. 'imagenet') to what the builder
    needs. A named source downloads, so it is refused while HF_HUB_OFFLINE is set.
    """
    if weights is None:
        return None, None
    path = Path(weights).expanduser()
    if path.is_file():
        return path, None
    if weights in named:
        if hub_offline():
            raise DataError(f"weights='{weights}' for {what} needs a download, but HF_HUB_OFFLINE is set; "
                            f"download them where the network is available, save the model's state dict "
                            f"(torch.save(model.state_dict(), 'weights.pt')) and pass weights='weights.pt'")
        return None, named[weights]
    if path.exists():
        raise DataError(f"weights '{weights}' is a folder; give the state-dict file")
    sources = ", ".join(repr(n) for n in named) or "none"
    raise DataError(f"weights '{weights}' is not a file, nor a named source of {what} (sources: {sources})")


def attach_weights(model: nn.Module, local: Path | None) -> nn.Module:
    """Load a local weights file into ``model`` (if given) and keep the report as ``model.weights_report``."""
    model.weights_report = load_local_weights(model, local) if local is not None else None
    return model


def check_common(num_classes: int, in_chans: int) -> None:
    if num_classes < 1:
        raise ParameterError(f"num_classes must be >= 1 (1 = one binary logit per pixel), got {num_classes}")
    if in_chans < 1:
        raise ParameterError(f"in_chans must be >= 1 (1 for grey images, 3 for colour), got {in_chans}")


# --- segmentation-models-pytorch ---------------------------------------------------------------------

def encoder_sources(encoder: str) -> dict[str, Any]:
    """Named weights of an smp encoder -> the ``encoder_weights`` value smp takes for them.

    An unknown encoder is a ParameterError naming the close matches among smp's encoders.
    ``tu-`` (timm universal) encoders have one source, 'imagenet' (timm's pretrained tag).
    """
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        return {"imagenet": True}
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        raise ParameterError(f"unknown encoder '{encoder}'{did_you_mean(encoder, names)} (any of segmentation_models_pytorch."
                             f"encoders.get_encoder_names(), or 'tu-<timm model>')")
    return {name: name for name in smp.encoders.encoders[encoder]["pretrained_settings"]}


def segmentation_model(arch: str, encoder: str, num_classes: int, in_chans: int, weights: str | None,
                       **options: Any) -> nn.Module:
    """An smp model of architecture ``arch`` (smp class name) with its weights; shared by every smp component."""
    import segmentation_models_pytorch as smp

    check_common(num_classes, in_chans)
    local, source = resolve_weights(weights, encoder_sources(encoder), f"encoder '{encoder}'")
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=source, in_channels=in_chans,
                                 classes=num_classes, **options)
    except (KeyError, RuntimeError) as exc:  # e.g. a tu- name timm does not know
        raise ParameterError(f"cannot build {arch} with encoder '{encoder}': {exc}") from exc
    return attach_weights(model, local)


SMP_ARGS = """Args:
    encoder: Encoder name from segmentation-models-pytorch (resnet18, resnet34, efficientnet-b0,
        mit_b0, ..., or 'tu-<timm model>').
    num_classes: Output channels: 1 for binary segmentation (one logit per pixel), else one per class.
    in_chans: Input channels: 1 for grey images (EL cells), 3 for colour.
    weights: None for random initialisation; a local state-dict file of the model or of its
        encoder (tensors that fit are loaded and the rest reported); or a named source of the
        encoder, e.g. 'imagenet', which is downloaded (not while HF_HUB_OFFLINE is set)."""


def smp_component(arch: str, name: str, doc: str, **options: Any) -> Callable[..., nn.Module]:
    """A backbone component for smp architecture ``arch``: its signature, docstring and ``tasks``."""

    def build(encoder: str = "resnet18", num_classes: int = 1, in_chans: int = 3,
              weights: str | None = None) -> nn.Module:
        return segmentation_model(arch, encoder, num_classes, in_chans, weights, **options)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{doc}\n\n{SMP_ARGS}"
    build.tasks = ("segment",)  # type: ignore[attr-defined]
    return build


unet = smp_component("Unet", "unet", "U-Net (Ronneberger 2015): encoder-decoder with skip connections at every scale.")
unetplusplus = smp_component("UnetPlusPlus", "unetplusplus",
                             "U-Net++ (Zhou 2018): U-Net with nested, densely connected skip pathways.")
fpn = smp_component("FPN", "fpn", "FPN (Lin 2017): feature pyramid decoder merging every scale, output at 1/4 "
                                  "upsampled to the input.")
pspnet = smp_component("PSPNet", "pspnet", "PSPNet (Zhao 2017): pyramid pooling of the encoder's 1/8 features for "
                                           "global context.")
deeplabv3 = smp_component("DeepLabV3", "deeplabv3", "DeepLabv3 (Chen 2017): dilated encoder and atrous spatial "
                                                    "pyramid pooling (ASPP).")
deeplabv3plus = smp_component("DeepLabV3Plus", "deeplabv3plus",
                              "DeepLabv3+ (Chen 2018): DeepLabv3 with a light decoder that sharpens boundaries.")

SMP_COMPONENTS = [unet, unetplusplus, fpn, pspnet, deeplabv3, deeplabv3plus]


# --- SegNet ------------------------------------------------------------------------------------------

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

    def __init__(self, num_classes: int = 1, in_chans: int = 3, weights: str | None = None,
                 base_channels: int = 32, depth: int = 4) -> None:
        super().__init__()
        check_common(num_classes, in_chans)
        if base_channels < 1 or not 1 <= depth <= 6:
            raise ParameterError(f"segnet needs base_channels >= 1 and depth in 1..6, got {base_channels} and {depth}")
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


BACKBONES = [*SMP_COMPONENTS, SegNet]
