"""On-disk dataset layouts: which format a path holds, and the path helpers the format readers share.

A path given on the command line is matched to exactly one format by its layout; a layout that
fits none, or several, is left to the user to name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from defectlab import IMAGE_SUFFIXES, DataError, DefectDataset, canonical_split, natural_key

YOLO_YAML_NAMES = ("data.yaml", "data.yml")


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes: the key of a sample."""
    return Path(os.path.relpath(path, root)).as_posix()


def split_of(key: str) -> str | None:
    """The split named by the first folder of a relative path (train/, val/, valid/, test/), if any."""
    first, _, rest = key.partition("/")
    return canonical_split(first) if rest else None


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


LAYOUTS: dict[str, Callable[[Path], bool]] = {
    "csv_index": lambda p: p.is_file() and p.suffix.lower() == ".csv",
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


class LayoutDataset(DefectDataset):
    """An on-disk format, recognised by the layout of a path."""

    @classmethod
    def detect(cls, path: Path) -> bool:
        return detected_format(Path(path)) == cls.name
