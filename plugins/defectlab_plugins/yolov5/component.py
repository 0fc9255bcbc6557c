"""The ``yolov5`` backbone component: its parameters, documentation and tasks, without importing ultralytics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from defectlab import Range


def yolov5(size: Literal["n", "s", "m", "l", "x"] = "n", num_classes: Annotated[int, Range(1)] = 80,
           in_chans: Literal[1, 3] = 3, weights: str | None = None, freeze: bool = False,
           conf: Annotated[float, Range(0, 1)] = 0.001, iou: Annotated[float, Range(0, 1)] = 0.7,
           max_det: Annotated[int, Range(1)] = 300, train_args: dict[str, Any] | None = None) -> Any:
    """YOLOv5 detector (ultralytics' anchor-free v5u), trained by ultralytics' own trainer; AGPL-3.0 extra.

    Built from ultralytics' yolov5{size}.yaml (never downloaded). ``defectlab train`` runs
    ultralytics' trainer on the data module's splits and writes a defectlab run directory;
    ``--init-from`` loads the backbone, model.model[0:10]. Needs ``pip install "defectlab[yolo]"``
    (ultralytics, AGPL-3.0).

    Args:
        size: Scale of the network: n (2.5 M parameters), s, m, l or x (97 M).
        num_classes: Classes of the Detect head (set from the data by ``train``).
        in_chans: Input channels: 3 for colour, 1 for grey images.
        weights: None for random initialisation, or a local file: a defectlab checkpoint or
            state dict, or an ultralytics .pt such as yolov5nu.pt (tensors that fit are loaded,
            the rest reported); never downloaded.
        freeze: Keep the backbone (model.model[0:10]) frozen while training (ultralytics'
            freeze=10); train.linear_probe does the same.
        conf: Lowest confidence of a box the model returns (low, for mAP; predict thresholds its own).
        iou: IoU above which non-maximum suppression drops the lower-scored box of a class.
        max_det: Most boxes per image after non-maximum suppression.
        train_args: Further settings of ultralytics' trainer, as they are, e.g. {mosaic = 0.0,
            fliplr = 0.5}; those that [data] and [train] set are refused here.
    """
    from defectlab_plugins.yolov5.detector import YOLOv5

    return YOLOv5(size, num_classes, in_chans, weights, freeze, conf, iou, max_det, train_args)


yolov5.tasks = ("detect",)  # type: ignore[attr-defined]
