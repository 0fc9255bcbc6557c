"""Segmentation networks of Yi et al. 2022 from segmentation-models-pytorch: U-Net, U-Net++, FPN, PSPNet, DeepLabv3(+).

Every factory takes ``num_classes`` (1 = one logit per pixel for binary segmentation),
``in_chans`` and ``weights``: None (random initialisation), a local state-dict file (loaded
tensor by tensor with a report of what fitted), or a named source of the encoder such as
``"imagenet"``, which segmentation-models-pytorch downloads: refused at once when that cannot work
(``HF_HUB_OFFLINE`` set, or no answer from the hub) unless the Hugging Face cache holds them, and
a failed download is an error that names the ways on without the network. Each
returned model has an ``encoder`` attribute: the part a transfer loads or an SSL objective
pretrains.

segmentation-models-pytorch is imported when a model is built, not when this module is.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Annotated, Any

from torch import nn

from defectlab import ParameterError, Range, did_you_mean, downloading_weights, resolve_weights
from defectlab_plugins.segmentation_backbones.weights import attach_weights


# --- segmentation-models-pytorch ---------------------------------------------------------------------

def encoder_sources(encoder: str) -> dict[str, Any]:
    """Named weights of an smp encoder -> the ``encoder_weights`` value smp takes for them.

    An unknown encoder is a ParameterError naming the close matches among smp's encoders.
    ``tu-`` (timm universal) encoders have one source, 'imagenet' (timm's pretrained tag).
    """
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        import timm

        model = encoder.removeprefix("tu-")
        if not timm.is_model(model.split(".", 1)[0]):
            raise ParameterError(f"unknown encoder '{encoder}': timm has no model '{model}'"
                                 f"{did_you_mean(model, timm.list_models())} (see timm.list_models())")
        return {"imagenet": True}
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        raise ParameterError(f"unknown encoder '{encoder}'{did_you_mean(encoder, names)} (any of segmentation_models_pytorch."
                             f"encoders.get_encoder_names(), or 'tu-<timm model>')")
    return {name: name for name in smp.encoders.encoders[encoder]["pretrained_settings"]}


def hub_repo(encoder: str, source: Any) -> str | None:
    """The Hugging Face repository smp downloads the weights ``source`` of ``encoder`` from (None: not the hub)."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        import timm

        return getattr(timm.models.get_pretrained_cfg(encoder.removeprefix("tu-")), "hf_hub_id", None)
    return smp.encoders.encoders[encoder]["pretrained_settings"][source].get("repo_id")


def segmentation_model(arch: str, encoder: str, num_classes: int, in_chans: int, weights: str | None,
                       **options: Any) -> nn.Module:
    """An smp model of architecture ``arch`` (smp class name) with its weights; shared by every smp component."""
    import segmentation_models_pytorch as smp

    what = f"encoder '{encoder}'"
    local, source = resolve_weights(weights, encoder_sources(encoder), what)
    downloading = nullcontext() if source is None else downloading_weights(str(weights), what,
                                                                            hub_repo(encoder, source))
    try:
        with downloading:
            model = smp.create_model(arch, encoder_name=encoder, encoder_weights=source, in_channels=in_chans,
                                     classes=num_classes, **options)
    except (KeyError, RuntimeError) as exc:  # an encoder that cannot take these options
        raise ParameterError(f"cannot build {arch} with encoder '{encoder}': {exc}") from exc
    return attach_weights(model, local)


SMP_ARGS = """Args:
    encoder: Encoder name from segmentation-models-pytorch (resnet18, resnet34, efficientnet-b0,
        mit_b0, ..., or 'tu-<timm model>').
    num_classes: Output channels: 1 for binary segmentation (one logit per pixel), else one per class.
    in_chans: Input channels: 1 for grey images (EL cells), 3 for colour.
    weights: None for random initialisation; a local state-dict file of the model or of its
        encoder (tensors that fit are loaded and the rest reported); or a named source of the
        encoder, e.g. 'imagenet', which needs the network or the Hugging Face cache."""


def smp_component(arch: str, name: str, doc: str, **options: Any) -> Callable[..., nn.Module]:
    """A backbone component for smp architecture ``arch``: its signature, docstring and ``tasks``."""

    def build(encoder: str = "resnet18", num_classes: Annotated[int, Range(1)] = 1,
              in_chans: Annotated[int, Range(1)] = 3, weights: str | None = None) -> nn.Module:
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
