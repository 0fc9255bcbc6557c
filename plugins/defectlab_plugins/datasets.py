"""Dataset formats: class folders, a CSV index, YOLO, MVTec AD, image/mask pairs and the ELPV cells.

Each component lists its samples up front (paths, labels, boxes, mask paths) and decodes pixels
only when asked, through :class:`defectlab.DefectDataset`. A path given on the command line is
matched to exactly one format by its layout; a layout that fits none, or several, is left to the
user to name.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from defectlab import IMAGE_SUFFIXES, Box, DataError, DefectDataset, Sample, UnreadableImageError, hookimpl

log = logging.getLogger("defectlab.data.datasets")

# The suffixes the core reads as images (kept in step with defectlab's own list by test_datasets).
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
YOLO_YAML_NAMES = ("data.yaml", "data.yml")
EXAMPLES_SHOWN = 5


# --- files and layouts ---------------------------------------------------------------------------

def natural_key(text: str) -> tuple[list[Any], str]:
    """Sort key that puts ``defect2`` before ``defect10`` (case-insensitive, ties by the text)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)], text


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """Image files at any depth below ``folder`` (hidden files and folders skipped), in natural order."""
    found = []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found.extend(Path(directory, name) for name in files if is_image_name(name))
    return sorted(found, key=lambda p: natural_key(relative(p, folder)))


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes: the key of a sample."""
    return Path(os.path.relpath(path, root)).as_posix()


def split_of(key: str) -> str | None:
    """The split named by the first folder of a relative path (train/, val/, valid/, test/), if any."""
    first, _, rest = key.partition("/")
    return SPLIT_NAMES.get(first.lower()) if rest else None


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
        return any(is_image_name(e.name) and e.is_file() for e in entries)


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


# --- masks -----------------------------------------------------------------------------------------

def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UnreadableImageError(f"cannot read image '{path}': {exc}") from exc


def read_mask(path: str) -> Any:
    """A mask file as a 2-D integer array of its stored values (palette indices for 'P' images)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image.convert("RGB") if mode in ("RGBA", "LA", "CMYK", "YCbCr") else image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UnreadableImageError(f"cannot read mask '{path}': {exc}") from exc
    if array.ndim == 3:
        if not (array == array[..., :1]).all():
            raise DataError(f"mask '{path}' is a colour image ({mode}); save masks with one channel of "
                            f"class indices (0 = background)")
        array = array[..., 0]
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise DataError(f"mask '{path}' holds fractional values; save class indices as integers")
    return array.astype(np.int64) if array.dtype != np.uint8 else array


def checked_mask_size(mask: Any, sample: Sample) -> None:
    """DataError unless ``mask`` has the size of the sample's image."""
    width, height = image_size(str(sample.path))
    if tuple(mask.shape[:2]) != (height, width):
        raise DataError(f"mask '{sample.mask_path}' is {mask.shape[1]}x{mask.shape[0]} but its image "
                        f"'{sample.path}' is {width}x{height}; a mask must match its image pixel for pixel")


def class_indices(mask: Any, classes: list[str], path: str) -> Any:
    """Mask values as class indices: 0..k-1 as they are, and 0/255 as 0/1 for two classes."""
    import numpy as np

    k = len(classes)
    values = np.unique(mask).tolist()
    if all(0 <= v < k for v in values):
        return mask.astype(np.uint8)
    if k == 2 and set(values) <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    bad = [v for v in values if not 0 <= v < k][:EXAMPLES_SHOWN]
    raise DataError(f"mask '{path}' has values {bad} outside the {k} classes ({', '.join(classes)} = 0..{k - 1}); "
                    f"store class indices (a two-class mask may also use 0 and 255)")


# --- class folders and CSV index -------------------------------------------------------------------

class ImageFolder(LayoutDataset):
    """Images in one subfolder per class (ROOT/<class>/...), for classification.

    Class names are the subfolder names in natural order (``defect2`` before ``defect10``); an
    image may sit at any depth below its class folder. Hidden files and folders are skipped.

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
        self.classes = list(found if classes is None else classes)
        for label, name in enumerate(self.classes):
            for path in image_files(folder / name):
                self.samples.append(Sample(key=relative(path, folder), path=str(path), label=label))


class CsvIndex(LayoutDataset):
    """A CSV file of images and their classes (columns path,label[,split]), for classification.

    The first row is the header; column names match whatever their case, and other columns are
    kept in each sample's ``meta``. Paths are relative to the CSV's folder (absolute paths are
    kept). A listed file that does not exist is reported as unreadable when it is loaded, so
    ``defectlab check-data`` can list them all.

    Args:
        root: The CSV file.
        classes: Class names in index order (default: the labels found, in natural order);
            every label must be one of them.
    """

    name = "csv_index"
    task = "classify"

    def __init__(self, root: str, classes: list[str] | None = None) -> None:
        super().__init__()
        index = existing(root, "CSV file")
        if index.is_dir():
            raise DataError(f"'{root}' is a folder; csv_index needs the CSV file itself")
        self.root = str(index)
        header, rows = _read_csv(index)
        columns = {name.lower(): name for name in header}
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise DataError(f"'{root}' has no {' or '.join(missing)} column; csv_index needs a header row "
                            f"path,label[,split] (found: {', '.join(header) or 'nothing'})")
        used = {columns[c] for c in ("path", "label", "split") if c in columns}
        records = []
        for line, row in rows:
            text, label = ((row.get(columns[c]) or "").strip() for c in ("path", "label"))
            if not text or not label:
                raise DataError(f"'{root}', line {line}: empty path or label")
            split = (row.get(columns["split"]) or "").strip().lower() if "split" in columns else ""
            meta = {k: v for k, v in row.items() if k and k not in used}
            records.append((line, text, label, SPLIT_NAMES.get(split, split) or None, meta))
        found = sorted({r[2] for r in records}, key=natural_key)
        if classes is not None:
            unknown = [label for label in found if label not in classes]
            if unknown:
                raise DataError(f"'{root}' has labels {', '.join(unknown[:EXAMPLES_SHOWN])} that are not among "
                                f"the classes {', '.join(classes)}")
        self.classes = list(found if classes is None else classes)
        number = {name: i for i, name in enumerate(self.classes)}
        self._lines: list[int] = []
        keys: set[str] = set()
        for line, text, label, split, meta in records:
            key = text if text not in keys else f"{text} (line {line})"
            keys.add(key)
            self._lines.append(line)
            self.samples.append(Sample(key=key, path=str(index.parent / text), label=number[label],
                                       split=split, meta=meta))

    def load_image(self, index: int) -> Any:
        path = self.samples[index].path
        if path is not None and not os.path.exists(path):
            raise UnreadableImageError(f"'{path}', listed in '{self.root}' line {self._lines[index]}, does not exist")
        return super().load_image(index)


def _read_csv(index: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs; the delimiter (, ; or tab) is the one the header uses most."""
    try:
        with open(index, newline="", encoding="utf-8-sig") as handle:
            delimiter = max(",;\t", key=handle.readline().count)
            handle.seek(0)
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = [(name or "").strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            rows = []
            for row in reader:
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise DataError(f"'{index}' is not a UTF-8 text file: {exc}") from exc
    except csv.Error as exc:
        raise DataError(f"'{index}' is not a valid CSV file: {exc}") from exc
    return header, rows


# --- YOLO --------------------------------------------------------------------------------------------

class Yolo(LayoutDataset):
    """YOLO detection layout: data.yaml, images/ and labels/ with a line 'cls xc yc w h' per box.

    ROOT is the data.yaml file or the folder holding it. Its ``train``/``val``/``test`` entries
    (a folder, a list of folders, or a .txt list of images) are relative to its ``path`` or to its
    own folder, and ``names`` is a list or an {index: name} mapping. A folder with images/ and
    labels/ and no data.yaml works too: images/train, images/val and images/test give the split,
    and class names come from ``classes`` or a classes.txt beside images/ (else 0, 1, ...).
    An image's labels are the .txt file of its stem at the same place under labels/; an image
    without one has no defect (no boxes). A polygon line (cls x1 y1 x2 y2 ...) counts as its
    bounding box.

    Args:
        root: The data.yaml file, or the folder holding it (or holding images/ and labels/).
        classes: Class names in index order, instead of the data.yaml's ``names``.
    """

    name = "yolo"
    task = "detect"

    def __init__(self, root: str, classes: list[str] | None = None) -> None:
        super().__init__()
        given = existing(root, "YOLO dataset")
        config = given if given.is_file() else yolo_yaml(given)
        if config is not None:
            base, names, sources = _read_data_yaml(config)
        else:
            if not (given / "images").is_dir():
                raise DataError(f"'{root}' has neither a data.yaml nor an images/ folder")
            base, names, sources = given, _classes_txt(given / "classes.txt"), [(None, given / "images")]
        if classes is not None:
            names = list(classes)
        self.root = str(base)
        entries, seen = [], set()
        for split, source in sources:
            for image in _source_images(source):
                if str(image.resolve()) in seen:
                    log.warning("%s is listed in more than one split; keeping it in the first", image)
                    continue
                seen.add(str(image.resolve()))
                image_split = split if split is not None else split_of(relative(image, source))
                boxes = read_yolo_labels(label_path(image), None if names is None else len(names))
                entries.append((image, image_split, boxes))
        if names is None:
            top = max((b.label for _, _, boxes in entries for b in boxes), default=0)
            names = [str(i) for i in range(top + 1)]
        self.classes = list(names)
        self.samples = [Sample(key=relative(image, base), path=str(image), boxes=boxes, split=split)
                        for image, split, boxes in entries]


def _read_data_yaml(config: Path) -> tuple[Path, list[str] | None, list[tuple[str | None, Path]]]:
    """The root, class names and (split, image source) entries of a YOLO data.yaml."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read '{config}': {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"'{config}' is not a YOLO data.yaml (expected the keys names, train and val)")
    folder = config.parent
    base = folder
    if data.get("path"):
        declared = Path(str(data["path"])).expanduser()
        base = declared if declared.is_absolute() else folder / declared
    sources: list[tuple[str | None, Path]] = []
    for split in ("train", "val", "test"):
        value = data.get(split)
        items = [] if value in (None, "") else value if isinstance(value, list) else [value]
        for item in items:
            candidates = list(dict.fromkeys([base / str(item), folder / str(item)]))
            found = next((c for c in candidates if c.exists()), None)
            if found is None:
                raise DataError(f"'{config}': {split} entry '{item}' not found "
                                f"(looked for {' and '.join(str(c) for c in candidates)})")
            sources.append((split, found))
    if not sources:
        raise DataError(f"'{config}' lists no train, val or test images")
    return base, _yaml_names(data, config), sources


def _yaml_names(data: dict[str, Any], config: Path) -> list[str] | None:
    names, count = data.get("names"), data.get("nc")
    if isinstance(names, dict):
        try:
            numbered = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            numbered = {}
        if sorted(numbered) != list(range(len(names))):
            raise DataError(f"'{config}': names must be numbered 0..{len(names) - 1}, got {list(names)}")
        names = [numbered[i] for i in range(len(numbered))]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is None and isinstance(count, int):
        names = [str(i) for i in range(count)]
    elif names is not None:
        raise DataError(f"'{config}': names must be a list or an {{index: name}} mapping, got {names!r}")
    if names is not None and isinstance(count, int) and count != len(names):
        raise DataError(f"'{config}': nc is {count} but names lists {len(names)} classes")
    return names


def _classes_txt(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _source_images(source: Path) -> list[Path]:
    """The images of a data.yaml entry: a folder, a .txt list (paths relative to it), or one image."""
    if source.is_dir():
        return image_files(source)
    if source.suffix.lower() == ".txt":
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [source.parent / line for line in lines]
    return [source]


def label_path(image: Path) -> Path:
    """The label file of an image: its path with the last images/ folder replaced by labels/, as .txt."""
    parts = image.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo_labels(path: Path, num_classes: int | None) -> tuple[Box, ...]:
    """The boxes of one YOLO label file (no file: no boxes); a malformed line is a DataError naming it."""
    if not path.is_file():
        return ()
    boxes = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if fields:
            boxes.append(_parse_box(fields, num_classes, f"{path}, line {number}"))
    return tuple(boxes)


def _parse_box(fields: list[str], num_classes: int | None, where: str) -> Box:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = []
    if not (len(values) == 5 or (len(values) >= 7 and len(values) % 2 == 1)):
        raise DataError(f"{where}: expected 'class x_center y_center width height' (a polygon: "
                        f"'class x1 y1 x2 y2 ...'), got '{' '.join(fields)}'")
    label, coords = values[0], values[1:]
    if not label.is_integer() or label < 0 or (num_classes is not None and label >= num_classes):
        known = f"0..{num_classes - 1}" if num_classes else "a class index >= 0"
        raise DataError(f"{where}: class '{fields[0]}' is not one of the classes ({known})")
    if not all(-1e-6 <= v <= 1 + 1e-6 for v in coords):
        raise DataError(f"{where}: coordinates must be normalised to 0..1, got '{' '.join(fields[1:])}'")
    if len(coords) == 4:
        x_center, y_center, width, height = coords
    else:
        xs, ys = coords[0::2], coords[1::2]
        x_center, y_center = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        width, height = max(xs) - min(xs), max(ys) - min(ys)
    if width <= 0 or height <= 0:
        raise DataError(f"{where}: a box needs a width and height > 0, got '{' '.join(fields[1:])}'")
    return Box(int(label), x_center, y_center, width, height)


# --- MVTec AD and image/mask pairs -------------------------------------------------------------------

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
                f"(e.g. {', '.join(unmatched[:EXAMPLES_SHOWN])}); save each mask under masks/ with its "
                f"image's name (a.png or a_mask.png), or move those images out")

    def load_mask(self, index: int) -> Any:
        sample = self.samples[index]
        mask = read_mask(str(sample.mask_path))
        checked_mask_size(mask, sample)
        return class_indices(mask, self.classes, str(sample.mask_path))


# --- ELPV --------------------------------------------------------------------------------------------

ELPV_CLASSES = ["0", "1/3", "2/3", "1"]
ELPV_BINARY_CLASSES = ["functional", "defective"]


@functools.cache
def elpv_records() -> tuple[tuple[str, float, str], ...]:
    """(image file, defect probability, cell type) of every ELPV cell, read once per process.

    These are the rows of the labels.csv that ``elpv_dataset.utils.load_dataset`` reads; the
    image files beside it are decoded one at a time by ``ELPV.load_image``.
    """
    try:
        from elpv_dataset import utils
    except ImportError as exc:
        raise DataError("the ELPV data come with the elpv-dataset package: pip install elpv-dataset") from exc
    labels = Path(utils.__file__).parent / "data" / "labels.csv"
    if not labels.is_file():
        raise DataError(f"the elpv-dataset package has no '{labels}'; reinstall it (pip install elpv-dataset)")
    records = []
    for line in labels.read_text(encoding="utf-8").splitlines():
        if line.strip():
            path, probability, cell_type = line.split()
            records.append((str(labels.parent / path), float(probability), cell_type))
    return tuple(records)


class ELPV(DefectDataset):
    """ELPV: 2,624 electroluminescence images of solar cells (300x300 grey) rated by defect probability.

    From the ``elpv-dataset`` package (Buerhop-Lutz et al. 2018; Deitsch et al. 2019), licensed
    CC BY-NC-SA 4.0: non-commercial use with attribution, and what is derived from it shared
    alike. Experts rated each cell defective with probability 0, 1/3, 2/3 or 1; 1,074 cells are
    monocrystalline and 1,550 polycrystalline. Samples carry meta ``cell_type`` and
    ``probability``; images are decoded one at a time from the package's files (all of them as
    pixels would take 236 MB).

    Args:
        cell_type: Which cells: 'mono', 'poly' or 'all'.
        binary: Two classes, 'functional' and 'defective' (defect probability >= 0.5), instead of
            the four probabilities '0', '1/3', '2/3' and '1'.
    """

    name = "elpv"
    task = "classify"

    def __init__(self, cell_type: Literal["mono", "poly", "all"] = "all", binary: bool = False) -> None:
        super().__init__()
        if cell_type not in ("mono", "poly", "all"):
            raise ValueError(f"cell_type must be 'mono', 'poly' or 'all', got {cell_type!r}")
        self.cell_type, self.binary = cell_type, binary
        self.classes = list(ELPV_BINARY_CLASSES if binary else ELPV_CLASSES)
        records = elpv_records()
        self.root = str(Path(records[0][0]).parent) if records else ""
        for path, probability, kind in records:
            if cell_type not in ("all", kind):
                continue
            if abs(probability * 3 - round(probability * 3)) > 1e-6:
                raise DataError(f"ELPV cell {Path(path).name} has probability {probability}, not 0, 1/3, 2/3 or 1")
            label = int(probability >= 0.5) if binary else round(probability * 3)
            self.samples.append(Sample(key=Path(path).name, path=path, label=label,
                                       meta={"cell_type": kind, "probability": probability}))

    def fingerprint(self) -> str:
        """The package version and the selection: the packaged files do not change under one version."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            package = version("elpv-dataset")
        except PackageNotFoundError:
            package = "unknown"
        text = f"elpv:{package}:{self.cell_type}:{self.binary}:{len(self)}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@hookimpl
def register_datasets():
    return [CsvIndex, ELPV, ImageFolder, ImageMask, MVTecAD, Yolo]

