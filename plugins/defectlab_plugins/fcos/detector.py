"""torchvision's FCOS on a ResNet + FPN built without any download, taking defectlab's prepared images.

The data module already resizes and normalises, so the detector's own transform only pads the
batch to a multiple of 32; boxes come back in pixels of the image the model was given.
``assigner`` picks how training chooses positive samples: "fcos" is torchvision's
``FCOS.compute_loss`` unchanged (centre sampling, a scale range per level), "tgfs" is
:class:`~defectlab_plugins.fcos.tgfs.TaskGuidedSelection` (SPEC 004). Inference is the same for both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from defectlab import Range, load_matching, read_state_dict, resolve_weights
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
    """FCOS (Tian et al. 2019), anchor-free one-stage detector, on ResNet-18/34/50 with an FPN (P3-P7).

    Training returns torchvision's named losses (classification: sigmoid focal; bbox_regression:
    GIoU; bbox_ctrness: centre-ness BCE), each divided by the number of positive samples;
    evaluation returns per image a dict of ``boxes`` (x1, y1, x2, y2 pixels), ``scores`` and
    ``labels``. ``assigner="tgfs"`` chooses positives by SPEC 004's task-guided feature selection
    (docs/detection.md: the score, the level choice and the reweighting, and how to replace them).

    Args:
        num_classes: Defect classes (no background class: FCOS scores each class with a sigmoid).
        in_chans: Input channels: 1 for grey images, 3 for colour.
        weights: None (random initialisation), or a local file: a state dict of this detector (a
            run's best.pt works too) or of a torchvision ResNet (loaded into the backbone's body).
        depth: ResNet depth of the backbone: 18, 34 or 50.
        assigner: 'fcos' (torchvision's centre sampling and per-level scale ranges) or 'tgfs'.
        center_sampling_radius: A positive's centre lies within this many strides of its box's centre.
        score_thresh: Detections scored below this are dropped at inference (0.05 keeps enough for mAP).
        nms_thresh: IoU above which non-maximum suppression drops the lower-scored box of a class.
        detections_per_img: Most detections kept per image.
        tgfs_levels: TGFS: the first this many FPN levels (from P3) a box may take its positives from.
        tgfs_loc_weight: TGFS: weight of the localisation (GIoU) loss beside the classification
            (focal) loss in a candidate's cost.
        tgfs_gamma: TGFS: sharpness of the reweighting w = q^gamma of a positive of quality
            q = exp(-cost), normalised to mean 1 per box; 0 leaves every positive at weight 1.
    """

    name = "fcos"
    tasks = ("detect",)

    def __init__(self, num_classes: Annotated[int, Range(1)] = 1, in_chans: Annotated[int, Range(1)] = 3,
                 weights: str | None = None, depth: Literal[18, 34, 50] = 18,
                 assigner: Literal["fcos", "tgfs"] = "fcos",
                 center_sampling_radius: Annotated[float, Range(0, low_open=True)] = 1.5,
                 score_thresh: Annotated[float, Range(0, 1)] = 0.05,
                 nms_thresh: Annotated[float, Range(0, 1)] = 0.6,
                 detections_per_img: Annotated[int, Range(1)] = 100,
                 tgfs_levels: Annotated[int, Range(1, 5)] = 3,
                 tgfs_loc_weight: Annotated[float, Range(0)] = 1.0,
                 tgfs_gamma: Annotated[float, Range(0)] = 1.0) -> None:
        local, _ = resolve_weights(weights, {}, "fcos")
        backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=5,
                                       returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256),
                                       norm_layer=nn.BatchNorm2d)
        if in_chans != 3:
            backbone.body.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        super().__init__(backbone, num_classes, center_sampling_radius=center_sampling_radius,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self.transform = PreparedImages()
        self.assigner = assigner
        self.tgfs_levels, self.tgfs_loc_weight, self.tgfs_gamma = tgfs_levels, tgfs_loc_weight, tgfs_gamma
        self.weights_report = None
        if local is not None:
            self.weights_report = load_matching(self, read_state_dict(local), str(local), prefixes=("backbone.body.",))

    def forward(self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Training: the named losses of ``images`` (N, C, H, W) against ``targets``; eval: their detections."""
        return super().forward(list(images), targets)

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor], anchors: list[Tensor],
                     num_anchors_per_level: list[int]) -> dict[str, Tensor]:
        if self.assigner == "tgfs":
            return self.task_guided_loss(targets, head_outputs, anchors, num_anchors_per_level)
        return super().compute_loss(targets, head_outputs, anchors, num_anchors_per_level)

