"""On-disk dataset layouts: which format a path holds, and the path helpers the format readers share.

A path given on the command line is matched to exactly one format by its layout; a layout that
fits none, or several, is left to the user to name.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from defectlab import IMAGE_SUFFIXES, Box, DataError, DefectDataset, canonical_split, natural_key

YOLO_YAML_NAMES = ("data.yaml", "data.yml")
PIXEL_TOLERANCE = 1.0  # how far (px) a box may reach past the image's edge before it is an error; it is clipped
NORMALISED_TOLERANCE = 1e-3  # the same for normalised coordinates (YOLO, CSV boxes), where the size is unknown


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes: the key of a sample."""
    return Path(os.path.relpath(path, root)).as_posix()


def split_of(key: str) -> str | None:
    """The split named by the first folder of a relative path (train/, val/, valid/, test/), if any."""
    first, _, rest = key.partition("/")
    return canonical_split(first) if rest else None


def split_in_name(name: str) -> str | None:
    """The split a file or folder name spells, by its letters (instances_train2017, valid), if any."""
    for word in re.split(r"[^a-zA-Z]+", name):
        if canonical_split(word):
            return canonical_split(word)
    return None


def subfolders(folder: Path) -> list[str]:
    """Names of the visible subfolders of ``folder``, in natural order."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    return sorted(names, key=natural_key)


def existing(root: str | os.PathLike[str], what: str) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise DataError(f"{what} '{root}' does not exist")
    return path


def existing_folder(root: str | os.PathLike[str], what: str) -> Path:
    path = existing(root, what)
    if not path.is_dir():
        raise DataError(f"{what} '{root}' is a file; give the folder")
    return path


def _has_folders(path: Path, *names: str) -> bool:
    return path.is_dir() and all((path / name).is_dir() for name in names)


def _has_image_directly(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_SUFFIXES and e.is_file()
                   for e in entries)


def yolo_yaml(folder: Path) -> Path | None:
    """The data.yaml of a YOLO dataset folder, if it has one."""
    return next((folder / n for n in YOLO_YAML_NAMES if (folder / n).is_file()), None)


def coco_files(folder: Path, loose: bool = False) -> list[Path]:
    """The COCO annotation files of a folder: annotations/instances*.json (else annotations/*.json), or
    the _annotations.coco.json of it or of its split subfolders; ``loose`` adds any *.json beside it."""
    for pattern in ("annotations/instances*.json", "annotations/*.json", "_annotations.coco.json",
                    "*/_annotations.coco.json", *(["*.json"] if loose else [])):
        found = sorted((p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: natural_key(p.as_posix()))
        if found:
            return found
    return []


LAYOUTS: dict[str, Callable[[Path], bool]] = {
    "csv_index": lambda p: p.is_file() and p.suffix.lower() == ".csv",
    "coco": lambda p: (p.is_file() and p.suffix.lower() == ".json") or (p.is_dir() and bool(coco_files(p))),
    "voc": lambda p: _has_folders(p, "Annotations", "JPEGImages"),
    "yolo": lambda p: (p.is_file() and p.suffix.lower() in (".yaml", ".yml"))
    or (p.is_dir() and (yolo_yaml(p) is not None or _has_folders(p, "images", "labels"))),
    "mvtec": lambda p: _has_folders(p, "train/good", "test"),
    "image_mask": lambda p: _has_folders(p, "images", "masks"),
}


def detected_format(path: Path) -> str | None:
    """The one format whose layout ``path`` has; None when it has none, or several, of them.

    Class folders are the fallback: a folder that fits no other layout and has a subfolder
    holding images.
    """
    specific = [name for name, looks_like in LAYOUTS.items() if looks_like(path)]
    if specific:
        return specific[0] if len(specific) == 1 else None
    if path.is_dir() and any(_has_image_directly(path / name) for name in subfolders(path)):
        return "image_folder"
    return None


def box_from_corners(label: int, corners: tuple[float, float, float, float], size: tuple[float, float],
                     where: str, tolerance: float = PIXEL_TOLERANCE) -> Box:
    """A normalised Box from corners (x1, y1, x2, y2) in an image of ``size`` (width, height).

    A box with a coordinate that is not finite (NaN, infinity), without area, or reaching past the
    image by more than ``tolerance`` is a DataError that starts with ``where``; a box within the
    tolerance is clipped to the image. ``size`` must be finite and positive (the readers check it).
    """
    x1, y1, x2, y2 = corners
    width, height = size
    shown = f"x {x1:.6g}..{x2:.6g}, y {y1:.6g}..{y2:.6g}"
    if not all(math.isfinite(v) for v in corners):
        raise DataError(f"{where}: a box's coordinates must be finite numbers, got {shown}")
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: a box needs a width and height > 0, got {shown}")
    image = "the image (0..1)" if size == (1, 1) else f"the {width:g}x{height:g} image"
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        raise DataError(f"{where}: the box ({shown}) reaches outside {image}; fix the box"
                        + ("" if size == (1, 1) else " or the image size"))
    x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height)
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: the box ({shown}) lies outside {image}")
    return Box(label, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)


def box_corners(box: Box, size: tuple[float, float]) -> tuple[float, float, float, float]:
    """The corners (x1, y1, x2, y2) of a normalised Box in an image of ``size`` (width, height)."""
    width, height = size
    return ((box.x_center - box.width / 2) * width, (box.y_center - box.height / 2) * height,
            (box.x_center + box.width / 2) * width, (box.y_center + box.height / 2) * height)


class LayoutDataset(DefectDataset):
    """An on-disk format, recognised by the layout of a path."""

    @classmethod
    def detect(cls, path: Path) -> bool:
        return detected_format(Path(path)) == cls.name
