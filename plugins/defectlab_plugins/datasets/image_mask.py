"""Images and segmentation masks paired by name (ROOT/images/*, ROOT/masks/*), for segmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectlab import DataError, Sample, first_few, image_files
from defectlab_plugins.datasets.layouts import LayoutDataset, existing_folder, relative, split_of
from defectlab_plugins.datasets.masks import checked_mask_size, class_indices, read_mask


class ImageMask(LayoutDataset):
    """Images and segmentation masks paired by name (ROOT/images/*, ROOT/masks/*), for segmentation.

    A mask has its image's stem (``<stem>_mask`` also works, any image extension) at the same
    place under masks/ as the image under images/; its pixels are class indices, and a two-class
    mask stored as 0/255 reads as 0/1. Subfolders train/, val/ and test/ give the split.

    Args:
        root: Folder holding images/ and masks/.
        classes: Class names by mask value, background first.
    """

    name = "image_mask"
    task = "segment"

    def __init__(self, root: str, classes: tuple[str, ...] = ("background", "defect")) -> None:
        super().__init__()
        if len(classes) < 2:
            raise ValueError(f"classes needs at least two names (background first), got {list(classes)}")
        folder = existing_folder(root, "image/mask dataset")
        images_dir, masks_dir = folder / "images", folder / "masks"
        for needed in (images_dir, masks_dir):
            if not needed.is_dir():
                raise DataError(f"'{root}' has no {needed.name}/ folder; image_mask needs images/ and masks/")
        self.root = str(folder)
        self.classes = list(classes)
        exact: dict[str, Path] = {}
        suffixed: dict[str, Path] = {}
        for mask in image_files(masks_dir):
            stem = relative(mask.with_suffix(""), masks_dir)
            exact.setdefault(stem, mask)
            if stem.endswith("_mask"):
                suffixed.setdefault(stem[: -len("_mask")], mask)
        unmatched = []
        for image in image_files(images_dir):
            key = relative(image, images_dir)
            stem = relative(image.with_suffix(""), images_dir)
            mask = exact.get(stem) or suffixed.get(stem)
            if mask is None:
                unmatched.append(key)
                continue
            self.samples.append(Sample(key=key, path=str(image), mask_path=str(mask), split=split_of(key)))
        if unmatched:
            raise DataError(
                f"{len(unmatched)} image(s) in '{images_dir}' have no mask in '{masks_dir}' "
                f"(e.g. {first_few(unmatched)}); save each mask under masks/ with its "
                f"image's name (a.png or a_mask.png), or move those images out")

    def load_mask(self, index: int) -> Any:
        sample = self.samples[index]
        mask = read_mask(str(sample.mask_path))
        checked_mask_size(mask, sample)
        return class_indices(mask, self.classes, str(sample.mask_path))
