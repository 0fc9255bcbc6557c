"""Class folders: ROOT/<class>/... images, for classification."""

from __future__ import annotations

import logging

from defectlab import DataError, Sample, image_files
from defectlab_plugins.datasets.layouts import LayoutDataset, existing_folder, relative, subfolders

log = logging.getLogger("defectlab.datasets")


class ImageFolder(LayoutDataset):
    """Images in one subfolder per class (ROOT/<class>/...), for classification.

    Class names are the subfolder names in natural order (``defect2`` before ``defect10``); an
    image may sit at any depth below its class folder. Hidden files and folders are skipped, and
    so is a class folder without images (with a warning), unless ``classes`` names it.

    Args:
        root: Folder holding one subfolder per class.
        classes: Class subfolders to use, in this order (default: every subfolder). Fixes the
            class indices when two folders (train and test) do not hold the same classes.
    """

    name = "image_folder"
    task = "classify"

    def __init__(self, root: str, classes: list[str] | None = None) -> None:
        super().__init__()
        folder = existing_folder(root, "image folder")
        found = subfolders(folder)
        if classes is not None:
            missing = [c for c in classes if c not in found]
            if missing:
                raise DataError(f"'{root}' has no class folder {', '.join(missing)} "
                                f"(its folders: {', '.join(found) or 'none'})")
        self.root = str(folder)
        images = {name: image_files(folder / name) for name in (found if classes is None else classes)}
        empty = [name for name, paths in images.items() if not paths]
        if classes is None and empty:  # a class named in `classes` is kept, images or not
            log.warning("'%s': class folder(s) %s hold no image and are left out; name them in `classes` to keep "
                        "them as classes", root, ", ".join(empty))
            images = {name: paths for name, paths in images.items() if paths}
        self.classes = list(images)
        for label, name in enumerate(self.classes):
            for path in images[name]:
                self.samples.append(Sample(key=relative(path, folder), path=str(path), label=label))
