"""One MVTec AD category: defect-free training images, test images by defect type, defect masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectlab import DataError, Sample, image_files, natural_key
from defectlab_plugins.datasets.layouts import LayoutDataset, existing_folder, relative, subfolders
from defectlab_plugins.datasets.masks import checked_mask_size, image_size, read_mask


class MVTecAD(LayoutDataset):
    """One MVTec AD category: defect-free training images, test images by defect type, defect masks.

    ROOT is one category folder (e.g. mvtec_anomaly_detection/cable): ROOT/train/good holds the
    training images, ROOT/test/<type> the test images by defect type ('good' among them) and
    ROOT/ground_truth/<type>/<stem>_mask.png the defect masks.
    Classes are 'good' then the defect types in natural order; the split is the folder (train,
    test, and val for a validation/ folder). ``load_mask`` gives each defect pixel its image's
    class index (1 with ``binary_masks``) and a good image an all-zero mask of its size.

    Args:
        root: The category folder, holding train/, test/ and ground_truth/.
        binary_masks: Masks of 0 (background) and 1 (defect) instead of class indices.
    """

    name = "mvtec"
    task = "classify"

    def __init__(self, root: str, binary_masks: bool = False) -> None:
        super().__init__()
        folder = existing_folder(root, "MVTec AD category")
        if not (folder / "train" / "good").is_dir():
            raise DataError(f"'{root}' is not an MVTec AD category: it has no train/good folder")
        self.root = str(folder)
        self.binary_masks = binary_masks
        splits = [(s, folder / d) for s, d in (("train", "train"), ("val", "validation"), ("test", "test"))
                  if (folder / d).is_dir()]
        types = {name for _, d in splits for name in subfolders(d)}
        self.classes = ["good", *sorted(types - {"good"}, key=natural_key)]
        for split, directory in splits:
            for defect in sorted(subfolders(directory), key=self.classes.index):
                for image in image_files(directory / defect):
                    mask = None if defect == "good" else _mvtec_mask(folder / "ground_truth" / defect, image)
                    self.samples.append(Sample(key=relative(image, folder), path=str(image),
                                               label=self.classes.index(defect), mask_path=mask, split=split,
                                               meta={"defect_type": defect}))

    def load_mask(self, index: int) -> Any:
        import numpy as np

        sample = self.samples[index]
        if sample.mask_path is None:
            width, height = image_size(str(sample.path))
            return np.zeros((height, width), dtype=np.uint8)
        mask = read_mask(sample.mask_path)
        checked_mask_size(mask, sample)
        return np.where(mask > 0, 1 if self.binary_masks else sample.label, 0).astype(np.uint8)


def _mvtec_mask(folder: Path, image: Path) -> str:
    """``<stem>_mask.png`` (or ``<stem>.png``) in the defect's ground_truth folder; the former if neither exists."""
    candidates = [folder / f"{image.stem}_mask.png", folder / f"{image.stem}.png"]
    return str(next((c for c in candidates if c.is_file()), candidates[0]))
