"""Dataset formats: class folders, a CSV index, YOLO, COCO, Pascal VOC, MVTec AD, image/mask pairs, the
ELPV cells and plain image folders. The detection formats (yolo, coco, voc) can also write a dataset
(``defectlab convert``).

Each component lists its samples up front (paths, labels, boxes, mask paths) and decodes pixels
only when asked, through :class:`defectlab.DefectDataset`; one module per format.
"""

from __future__ import annotations

from defectlab import hookimpl


@hookimpl
def register_datasets():
    from defectlab_plugins.datasets.coco import Coco
    from defectlab_plugins.datasets.csv_index import CsvIndex
    from defectlab_plugins.datasets.elpv import ELPV
    from defectlab_plugins.datasets.image_folder import ImageFolder
    from defectlab_plugins.datasets.image_mask import ImageMask
    from defectlab_plugins.datasets.mvtec import MVTecAD
    from defectlab_plugins.datasets.plain_images import PlainImages
    from defectlab_plugins.datasets.voc import Voc
    from defectlab_plugins.datasets.yolo import Yolo

    return [Coco, CsvIndex, ELPV, ImageFolder, ImageMask, MVTecAD, PlainImages, Voc, Yolo]
