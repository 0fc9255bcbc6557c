"""YOLOv5 on ultralytics (Valle Salgado et al. 2023 §8): the ``yolov5`` detection backbone, trained by ultralytics' own trainer.

ultralytics (AGPL-3.0) is an optional extra, ``pip install "defectlab[yolo]"``: it is imported
only when a yolov5 network is built, so listing and showing components never needs it.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_backbones():
    from defectlab_plugins.yolov5.component import yolov5

    return [yolov5]
