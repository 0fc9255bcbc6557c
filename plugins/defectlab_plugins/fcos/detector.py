"""torchvision's FCOS on a ResNet + FPN built without any download, taking defectlab's prepared images.

The data module already resizes and normalises, so the detector's own transform only pads the
batch to a multiple of 32; boxes come back in pixels of the image the model was given.
``assigner`` picks how training chooses positive samples: "fcos" is torchvision's
``FCOS.compute_loss`` unchanged (centre sampling, a scale range per level), "tgfs" is
:class:`~defectlab_plugins.fcos.tgfs.TaskGuidedSelection` (Liu et al. 2026). Inference is the same for both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from defectlab import load_matching, read_state_dict, resolve_weights
from defectlab_plugins.fcos.tgfs import TaskGuidedSelection

#: The strides of FCOS's five levels P3-P7, and the anchor size torchvision gives each (= its stride).
STRIDES = (8, 16, 32, 64, 128)


class PreparedImages(GeneralizedRCNNTransform):
    """torchvision's detection transform for images the data module has resized and normalised: batching only."""

    def __init__(self) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=[0.0], image_std=[1.0], size_divisible=32)

    def normalize(self, image: Tensor) -> Tensor:
        return image

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, Any]:
        return image, target


class FCOSDetector(TaskGuidedSelection, FCOS):
    """FCOS with the assignment :func:`defectlab_plugins.fcos.component.fcos` documents (no download, prepared images)."""

    def __init__(self, *, num_classes: int, in_chans: int, weights: str | None, depth: int, assigner: str,
                 center_sampling_radius: float, score_thresh: float, nms_thresh: float, detections_per_img: int,
                 tgfs_levels: int, tgfs_loc_weight: float, tgfs_gamma: float) -> None:
        local, _ = resolve_weights(weights, {}, "fcos")
        backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=5,
                                       returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256),
                                       norm_layer=nn.BatchNorm2d)
        if in_chans != 3:
            backbone.body.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        super().__init__(backbone, num_classes, center_sampling_radius=center_sampling_radius,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self.transform = PreparedImages()
        # every box side starts at one anchor size, as FCOS's exp(0) = 1 does: torchvision starts the ReLU'd
        # regression at 0, where the GIoU loss can stay at 1.0 for a whole run (the detection benchmark's seed 1)
        nn.init.constant_(self.head.regression_head.bbox_reg.bias, 1.0)
        self.assigner = assigner
        self.tgfs_levels, self.tgfs_loc_weight, self.tgfs_gamma = tgfs_levels, tgfs_loc_weight, tgfs_gamma
        self.weights_report = None
        if local is not None:
            self.weights_report = load_matching(self, read_state_dict(local), str(local), prefixes=("backbone.body.",))

    def forward(self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Training: the named losses of ``images`` (N, C, H, W) against ``targets``; eval: their detections."""
        return super().forward(list(images), targets)

    def export_outputs(self, images: Tensor) -> dict[str, Tensor]:
        """Every anchor's decoded box (N, A, 4), clipped to the image, and its class scores (N, A, K) =
        sqrt(sigmoid(class) * sigmoid(centre-ness)): what ``postprocess_detections`` selects from, as tensors
        of a fixed shape that an exported graph can return."""
        height, width = images.shape[-2:]
        padded = self._padded(images)
        features = list(self.backbone(padded).values())
        head = self.head(features)
        anchors = self.anchor_generator(ImageList(padded[:1], [(height, width)]), [f[:1] for f in features])[0]
        boxes = self.box_coder.decode(head["bbox_regression"], anchors)
        boxes = torch.stack([boxes[..., 0].clamp(0, width), boxes[..., 1].clamp(0, height),
                             boxes[..., 2].clamp(0, width), boxes[..., 3].clamp(0, height)], -1)
        scores = torch.sqrt(torch.sigmoid(head["cls_logits"]) * torch.sigmoid(head["bbox_ctrness"]))
        return {"boxes": boxes, "scores": scores}

    def export_postprocess(self, image_size: tuple[int, int]) -> dict[str, Any]:
        """torchvision's selection for :func:`defectlab.runtime.detections.dense_detections`: pairs above
        score_thresh, the best topk_candidates per level, class-wise NMS, detections_per_img."""
        with torch.no_grad():
            features = self.backbone(self._padded(torch.zeros(1, self.backbone.body.conv1.in_channels, *image_size)))
        return {"score_threshold": self.score_thresh, "iou": self.nms_thresh,
                "max_detections": self.detections_per_img, "level_topk": self.topk_candidates,
                "levels": [int(f.shape[-2] * f.shape[-1]) for f in features.values()]}

    def _padded(self, images: Tensor) -> Tensor:
        """The batch padded with zeros at the bottom and right to a multiple of 32, as the detection transform pads."""
        height, width = images.shape[-2:]
        return nn.functional.pad(images, (0, (-width) % 32, 0, (-height) % 32))

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor], anchors: list[Tensor],
                     num_anchors_per_level: list[int]) -> dict[str, Tensor]:
        if self.assigner == "tgfs":
            return self.task_guided_loss(targets, head_outputs, anchors, num_anchors_per_level)
        return super().compute_loss(targets, head_outputs, anchors, num_anchors_per_level)

