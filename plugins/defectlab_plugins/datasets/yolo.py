"""The YOLO detection layout: data.yaml, images/ and labels/ with one 'cls xc yc w h' line per box."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from defectlab import Box, DataError, DefectDataset, Sample, image_files
from defectlab_plugins.datasets.checks import (
    MAX_CLASSES,
    class_name,
    exists,
    read_names,
    read_text,
    shown,
    whole_number,
)
from defectlab_plugins.datasets.layouts import (
    NORMALISED_TOLERANCE,
    LayoutDataset,
    box_from_corners,
    existing,
    relative,
    split_of,
    yolo_yaml,
)
from defectlab_plugins.datasets.writing import place_images, write_lines

log = logging.getLogger("defectlab.data.datasets")


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
            listed = given / "classes.txt"
            base, names, sources = given, read_names(listed) if listed.is_file() else None, [(None, given / "images")]
        if classes is not None:
            names = list(classes)
        self.root = str(base)
        entries, seen = [], set()
        for split, source in sources:
            for image in _source_images(source):
                resolved = _resolved(image)
                if resolved in seen:
                    log.warning("%s is listed in more than one split; keeping it in the first", image)
                    continue
                seen.add(resolved)
                image_split = split if split is not None else split_of(relative(image, source))
                boxes = read_yolo_labels(label_path(image), None if names is None else len(names))
                entries.append((image, image_split, boxes))
        if names is None:
            top = max((b.label for _, _, boxes in entries for b in boxes), default=0)
            names = [str(i) for i in range(top + 1)]
        self.classes = list(names)
        self.samples = [Sample(key=relative(image, base), path=str(image), boxes=boxes, split=split)
                        for image, split, boxes in entries]

    @classmethod
    def write(cls, dataset: DefectDataset, folder: str | Path, indices: Sequence[int] | None = None) -> Path:
        """Write FOLDER/images/<split>/, a labels/<split>/<stem>.txt per image (empty: no defect) and a
        data.yaml that ultralytics reads (absolute ``path``, the splits there are, ``names``).

        data.yaml needs every image in a split; when some have none, they go into images/ itself and
        the classes into classes.txt instead, which this reader reads back with the splits as they were.
        YOLO labels have no crowd flag: crowd regions are left out, with a note.
        """
        import yaml

        root = Path(folder).absolute()
        placed = place_images(dataset, indices, lambda split: root / "images" / (split or ""))
        for item in placed:
            labels = root / "labels" / item.file.parent.relative_to(root / "images") / f"{item.file.stem}.txt"
            write_lines(labels, (f"{b.label} {b.x_center:.6f} {b.y_center:.6f} {b.width:.6f} {b.height:.6f}"
                                 for b in item.sample.boxes or ()))
        crowd = sum(len(p.sample.crowd) for p in placed)
        if crowd:
            log.warning("note: YOLO labels have no crowd flag, so %s leaves out %d crowd region(s) (regions that "
                        "evaluation ignores, not objects)", root, crowd)
        splits = [s for s in ("train", "val", "test") if any(p.sample.split == s for p in placed)]
        if placed and all(p.sample.split in splits for p in placed):
            content = {"path": str(root), **{s: f"images/{s}" for s in splits}, "nc": len(dataset.classes),
                       "names": dict(enumerate(dataset.classes))}
            write_lines(root / "data.yaml", [yaml.safe_dump(content, sort_keys=False, allow_unicode=True).rstrip()])
        else:
            log.warning("note: some images have no split, so %s gets classes.txt instead of a data.yaml "
                        "(ultralytics needs one, with train and val)", root)
            write_lines(root / "classes.txt", dataset.classes)
        return root


def _load_yaml(config: Path) -> Any:
    """A data.yaml's content, read without aliases (``*name``): nested ones expand without bound."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise DataError(f"{config}, line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are "
                                f"refused (nested ones expand without bound); write the value out instead")
            return super().compose_node(parent, index)

    text = read_text(config)
    try:
        return yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader, aliases refused
    except yaml.YAMLError as exc:
        raise DataError(f"cannot read '{config}': {exc}") from exc
    except RecursionError as exc:
        raise DataError(f"'{config}' is nested too deeply to be a YOLO data.yaml") from exc
    except (ValueError, OverflowError) as exc:  # a value YAML reads but Python cannot hold: 2024-13-01, 10**5000
        raise DataError(f"'{config}' holds a value that cannot be read: {exc}") from exc


def _read_data_yaml(config: Path) -> tuple[Path, list[str] | None, list[tuple[str | None, Path]]]:
    """The root, class names and (split, image source) entries of a YOLO data.yaml."""
    data = _load_yaml(config)
    if not isinstance(data, dict):
        raise DataError(f"'{config}' is not a YOLO data.yaml (expected the keys names, train and val)")
    folder = config.parent
    base = folder
    if data.get("path"):
        try:
            declared = Path(str(data["path"])).expanduser()
        except RuntimeError as exc:  # ~user of a user that does not exist
            raise DataError(f"'{config}': path {shown(data['path'])}: {exc}") from exc
        base = declared if declared.is_absolute() else folder / declared
    sources: list[tuple[str | None, Path]] = []
    for split in ("train", "val", "test"):
        value = data.get(split)
        items = [] if value in (None, "") else value if isinstance(value, list) else [value]
        for item in items:
            candidates = list(dict.fromkeys([base / str(item), folder / str(item)]))
            found = next((c for c in candidates if exists(c)), None)
            if found is None:
                raise DataError(f"'{config}': {split} entry {shown(str(item))} not found "
                                f"(looked for {' and '.join(str(c) for c in candidates)})")
            sources.append((split, found))
    if not sources:
        raise DataError(f"'{config}' lists no train, val or test images")
    return base, _yaml_names(data, config), sources


def _yaml_names(data: dict[str, Any], config: Path) -> list[str] | None:
    names, count = data.get("names"), data.get("nc")
    if count is not None:
        count = whole_number(count, f"'{config}'", "nc", 1, MAX_CLASSES)
    if isinstance(names, dict):
        try:
            numbered = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError, OverflowError):
            numbered = {}
        if sorted(numbered) != list(range(len(names))):
            raise DataError(f"'{config}': names must be numbered 0..{len(names) - 1}, got {shown(list(names))}")
        names = [numbered[i] for i in range(len(numbered))]
    if isinstance(names, list):
        names = [class_name(n if isinstance(n, str) else _scalar(n), f"'{config}', names entry {i}")
                 for i, n in enumerate(names)]
    elif names is None and count is not None:
        names = [str(i) for i in range(count)]
    elif names is not None:
        raise DataError(f"'{config}': names must be a list or an {{index: name}} mapping, got {shown(names)}")
    if names is not None and count is not None and count != len(names):
        raise DataError(f"'{config}': nc is {count} but names lists {len(names)} classes")
    return names


def _scalar(value: Any) -> Any:
    """A number or date written as a class name, as text; other values as they are (refused as names)."""
    return value if isinstance(value, (list, dict)) or value is None else str(value)


def _resolved(image: Path) -> str:
    """The real path of an image, to find one listed twice; as given for a path no file can have."""
    try:
        return str(image.resolve())
    except (OSError, ValueError):
        return str(image.absolute())


def _source_images(source: Path) -> list[Path]:
    """The images of a data.yaml entry: a folder, a .txt list (paths relative to it), or one image."""
    if source.is_dir():
        return image_files(source)
    if source.suffix.lower() == ".txt":
        lines = [line.strip() for line in read_text(source).splitlines() if line.strip()]
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
    """The boxes of one YOLO label file (no file: no boxes); a malformed line is a DataError naming it.
    The file is UTF-8, with or without a BOM."""
    if not exists(path):
        return ()
    boxes = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
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
                        f"'class x1 y1 x2 y2 ...'), got {shown(' '.join(fields))}")
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"{where}: numbers must be finite (no nan or inf), got {shown(' '.join(fields))}")
    label, coords = values[0], values[1:]
    if not label.is_integer():
        raise DataError(f"{where}: the class must be an integer index, got {shown(fields[0])}")
    limit = MAX_CLASSES if num_classes is None else num_classes
    if not 0 <= label < limit:
        known = f"0..{limit - 1}" if limit else "there are none"
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
    return normalised_box(int(label), x_center, y_center, width, height, where)


def normalised_box(label: int, x_center: float, y_center: float, width: float, height: float, where: str) -> Box:
    """A Box from normalised centre and size, checked to lie within the image (x_center ± width / 2 within 0..1,
    give or take NORMALISED_TOLERANCE, then clipped)."""
    corners = (x_center - width / 2, y_center - height / 2, x_center + width / 2, y_center + height / 2)
    if all(-1e-9 <= v <= 1 + 1e-9 for v in corners):
        return Box(label, x_center, y_center, width, height)  # as written, not recomputed from the corners
    return box_from_corners(label, corners, (1, 1), where, NORMALISED_TOLERANCE)
