"""The ``fcos`` backbone component: its parameters, documentation and tasks, without importing torchvision."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from defectlab import Range


def fcos(num_classes: Annotated[int, Range(1)] = 1, in_chans: Annotated[int, Range(1)] = 3,
         weights: str | None = None, depth: Literal[18, 34, 50] = 18,
         assigner: Literal["fcos", "tgfs"] = "fcos",
         center_sampling_radius: Annotated[float, Range(0, low_open=True)] = 1.5,
         score_thresh: Annotated[float, Range(0, 1)] = 0.05,
         nms_thresh: Annotated[float, Range(0, 1)] = 0.6,
         detections_per_img: Annotated[int, Range(1)] = 100,
         tgfs_levels: Annotated[int, Range(1, 5)] = 3,
         tgfs_loc_weight: Annotated[float, Range(0)] = 1.0,
         tgfs_gamma: Annotated[float, Range(0)] = 1.0) -> Any:
    """FCOS (Tian et al. 2019), anchor-free one-stage detector, on ResNet-18/34/50 with an FPN (P3-P7).

    Training returns torchvision's named losses (classification: sigmoid focal; bbox_regression:
    GIoU; bbox_ctrness: centre-ness BCE), each divided by the number of positive samples;
    evaluation returns per image a dict of ``boxes`` (x1, y1, x2, y2 pixels), ``scores`` and
    ``labels``. ``assigner="tgfs"`` chooses positives by the task-guided feature selection of Liu et al. 2026
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
    settings = dict(locals())
    from defectlab_plugins.fcos.detector import FCOSDetector

    return FCOSDetector(**settings)


fcos.tasks = ("detect",)  # type: ignore[attr-defined]
