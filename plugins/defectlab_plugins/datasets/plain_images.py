"""A plain folder of images without labels: what self-supervised pretraining reads."""

from __future__ import annotations

from defectlab import IMAGE_SUFFIXES, DataError, DefectDataset, Sample, image_files
from defectlab_plugins.datasets.layouts import existing_folder, relative


class PlainImages(DefectDataset):
    """Every image below a folder, at any depth, without labels (for ``defectlab pretrain``).

    Subfolders are read like any other folder, so a class-folder dataset can be pretrained on
    as it is; hidden files and folders are skipped.

    Args:
        root: Folder of images.
    """

    name = "images"
    task = "pretrain"

    def __init__(self, root: str) -> None:
        super().__init__()
        folder = existing_folder(root, "image folder")
        self.root = str(folder)
        self.classes = []
        self.samples = [Sample(key=relative(path, folder), path=str(path)) for path in image_files(folder)]
        if not self.samples:
            raise DataError(f"'{root}' holds no image (suffixes: {', '.join(IMAGE_SUFFIXES)})")
