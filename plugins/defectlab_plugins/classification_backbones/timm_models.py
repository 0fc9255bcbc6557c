"""timm models as classification backbones: ViT-Ti/S/B (Hemmingsson and Olsson 2026) and any timm model by name.

The timm model is held as ``encoder`` with its own classifier removed (``num_classes=0``), so
``forward_features`` is timm's pooled pre-logits embedding (the CLS token for the ViTs) and the
head is defectlab's; ``feature_maps`` gives the maps of chosen layers (the anomaly models use
them). A bare timm state dict (an ImageNet download, an exported SSL encoder) loads into
``encoder`` as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

from defectlab import ParameterError, Range, did_you_mean
from defectlab_plugins.classification_backbones.classifier import (
    ClassifierBase,
    Count,
    DropRate,
    HiddenWidth,
    variant,
    with_common_args,
)
from defectlab_plugins.classification_backbones.heads import classifier_head

if TYPE_CHECKING:
    from torch import Tensor


class TimmClassifier(ClassifierBase):
    """Any timm model by name (timm:efficientnet_b0) with defectlab's head, weights and freezing."""

    name = "timm"
    native_prefix = "encoder."

    @with_common_args
    def __init__(
        self,
        model_name: str,
        num_classes: Count = 2,
        in_chans: Count = 3,
        weights: str | None = None,
        freeze: tuple[str, ...] = (),
        head_dropout: DropRate = 0.0,
        head_hidden: HiddenWidth = None,
        drop_path_rate: DropRate = 0.0,
    ):
        """Build the timm model (never downloading anything), load ``weights``, freeze ``freeze``.

        Args:
            model_name: a timm architecture, optionally with a pretrained tag that "imagenet" then
                uses (efficientnet_b0, convnext_tiny.fb_in1k); see timm.list_models().
            drop_path_rate: stochastic-depth rate of the encoder's residual blocks (0 = off).
        """
        super().__init__()
        self.build(model_name, {}, num_classes, in_chans, weights, freeze, head_dropout, head_hidden, drop_path_rate)

    def build(self, model_name: str, timm_kwargs: dict[str, Any], num_classes: int, in_chans: int,
              weights: str | None, freeze: tuple[str, ...], head_dropout: float, head_hidden: int | None,
              drop_path_rate: float) -> None:
        """Create ``encoder`` and ``head``, then load weights and freeze (shared by every timm backbone)."""
        import timm

        if not timm.is_model(model_name.split(".", 1)[0]):
            raise ParameterError(f"timm has no model {model_name!r}{did_you_mean(model_name, timm.list_models())} "
                                 f"(see timm.list_models())")
        kwargs = {"in_chans": in_chans, **timm_kwargs}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.model_name = model_name
        self.encoder = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        # the pre-logits width: after a conv head (MobileNetV3's 1024 from 288 channels) it is not num_features
        self.num_features = getattr(self.encoder, "head_hidden_size", None) or self.encoder.num_features
        self.head = classifier_head(self.num_features, num_classes, head_dropout, head_hidden)
        self.setup_weights_and_freezing(weights, freeze, model_name, **kwargs)

    def forward_features(self, x: Tensor) -> Tensor:
        """timm's pooled pre-logits embedding (N, num_features)."""
        return self.encoder(x)

    def feature_maps(self, x: Tensor, layers: Sequence[str]) -> list[Tensor]:
        """The maps (N, C, h, w) of the feature layers named in ``layers``, in that order.

        A layer is a module name of timm's ``feature_info`` ("blocks.3" for a ViT, "stages.1"
        for a ConvNeXt, "layer2" for a ResNet) or its position in that list as a string ("3";
        for a ViT the block index). The maps come from timm's ``forward_intermediates`` (a ViT's
        tokens without the class token, as a grid of side img_size / 16).
        """
        if not hasattr(self.encoder, "forward_intermediates"):
            raise ParameterError(f"timm model {self.model_name!r} has no forward_intermediates, so it gives no "
                                 f"feature maps; use a model that has it (resnet18, convnext_tiny, vit_small_...)")
        names = [info["module"] for info in self.encoder.feature_info]
        if not layers:
            raise ParameterError(f"layers: name at least one of {', '.join(names)}")
        wanted = [feature_index(layer, names) for layer in layers]
        indices = sorted(set(wanted))
        maps = self.encoder.forward_intermediates(x, indices=indices, intermediates_only=True)
        by_index = dict(zip(indices, maps, strict=True))
        return [by_index[i] for i in wanted]


def feature_index(layer: str, names: list[str]) -> int:
    """The position of ``layer`` (a module name or a position as a string) among the feature layers ``names``."""
    if layer in names:
        return names.index(layer)
    if layer.isdigit() and int(layer) < len(names):
        return int(layer)
    raise ParameterError(f"layers: unknown name {layer!r}{did_you_mean(layer, names)} (choices: "
                         f"{', '.join(names)}, or their positions 0-{len(names) - 1})")


class VisionTransformer(TimmClassifier):
    """A timm Vision Transformer whose embedding is the CLS token, at any input size."""

    timm_name = ""

    @with_common_args
    def __init__(
        self,
        num_classes: Count = 2,
        in_chans: Count = 3,
        weights: str | None = None,
        img_size: Annotated[int, Range(16)] = 224,
        freeze: tuple[str, ...] = (),
        head_dropout: DropRate = 0.0,
        head_hidden: HiddenWidth = None,
        drop_path_rate: DropRate = 0.0,
    ):
        """Build the ViT for ``img_size`` inputs, load ``weights``, freeze ``freeze``.

        Args:
            img_size: side of the square input images in pixels; the position embeddings are made
                for it (ImageNet weights are resampled to it, local ones must match).
            drop_path_rate: stochastic-depth rate of the transformer blocks (0 = off).
        """
        ClassifierBase.__init__(self)
        self.build(self.timm_name, {"img_size": img_size, "global_pool": "token"}, num_classes, in_chans,
                   weights, freeze, head_dropout, head_hidden, drop_path_rate)

    def forward_features(self, x: Tensor) -> Tensor:
        """The final CLS-token embedding (N, D): D = 192 (tiny), 384 (small), 768 (base)."""
        return self.encoder(x)


ViTTiny, ViTSmall, ViTBase = VITS = tuple(
    variant(VisionTransformer, f"ViT{size.title()}", f"vit_{size}",
            f"ViT-{short}/16 (timm vit_{size}_patch16_224){note}; forward_features gives the CLS embedding.",
            timm_name=f"vit_{size}_patch16_224")
    for size, short, note in (("tiny", "Ti", ""), ("small", "S", ""),
                              ("base", "B", ", the encoder of Hemmingsson and Olsson 2026")))
