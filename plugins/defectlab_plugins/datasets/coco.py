"""COCO detection annotations: JSON files of images, annotations (bbox [x, y, w, h] in pixels) and categories."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from defectlab import Box, DataError, DefectDataset, Sample, UnreadableImageError, atomic_write, open_image
from defectlab_plugins.datasets.checks import (
    MAX_SIDE,
    check_inside,
    class_name,
    identifier,
    is_file,
    is_number,
    read_text,
    shown,
    whole_number,
)
from defectlab_plugins.datasets.layouts import (
    LayoutDataset,
    box_corners,
    box_from_corners,
    coco_files,
    existing,
    existing_folder,
    relative,
    split_in_name,
)
from defectlab_plugins.datasets.writing import place_images

log = logging.getLogger("defectlab.data.datasets")

ROBOFLOW_NAME = "_annotations.coco.json"


class Coco(LayoutDataset):
    """COCO detection annotations: JSON files of images, annotations with bbox [x, y, w, h], categories.

    ROOT is one annotation file or a folder of them: annotations/instances*.json (COCO's own
    layout; else annotations/*.json), the _annotations.coco.json of the folder or of each split
    subfolder, else any *.json in it. A file's split is the one its name spells
    (instances_val2017.json: val; instances.json: none) or, for _annotations.coco.json, its
    folder's (valid/: val). Classes are the categories in order of id; every file must have the
    same ones. Boxes are in pixels ([x, y, width, height] from the top-left corner). An image with
    no annotation has no defect. ``iscrowd`` annotations (crowd regions, not single objects) go
    to the sample's ``crowd``: never trained on, ignored in evaluation as COCOeval ignores them.
    Each image's ``file_name`` is relative to ``images`` if given, else
    to the first of these that holds the file's first image: the JSON's folder, its images/, its
    parent, the parent's images/, each also with a subfolder named like the JSON or its split
    (train2017/, images/train/); one that is absolute or leads out of that folder with '..' is an
    error.

    Args:
        root: An annotation JSON, or a folder of them.
        images: The folder that images' ``file_name`` is relative to (default: searched as above).
    """

    name = "coco"
    task = "detect"

    def __init__(self, root: str, images: str | None = None) -> None:
        super().__init__()
        given = existing(root, "COCO dataset")
        files = [given] if given.is_file() else coco_files(given, loose=True)
        if not files:
            raise DataError(f"'{root}' holds no COCO annotation file (annotations/instances*.json, "
                            f"_annotations.coco.json or *.json); give the JSON file itself")
        base = given.parent if given.is_file() else given
        image_root = None if images is None else existing_folder(images, "image folder")
        self.root = str(given)
        first: tuple[Path, list[tuple[int, str]]] | None = None
        seen: set[str] = set()
        for path in files:
            data = _read_json(path)
            categories = _categories(data, path)
            if first is None:
                first = (path, categories)
                self.classes = [name for _, name in categories]
            elif categories != first[1]:
                raise DataError(f"'{path}' has other categories than '{first[0]}' ({_shown(categories)} against "
                                f"{_shown(first[1])}); every annotation file of a dataset needs the same ones")
            split = split_in_name(path.stem) or (split_in_name(path.parent.name) if path.name == ROBOFLOW_NAME
                                                 else None)
            for sample in _samples(data, path, {cid: i for i, (cid, _) in enumerate(categories)}, split,
                                   image_root, base):
                if sample.path in seen:
                    log.warning("%s is listed in more than one annotation file; keeping it in the first", sample.path)
                    continue
                seen.add(str(sample.path))
                self.samples.append(sample)

    @classmethod
    def write(cls, dataset: DefectDataset, folder: str | Path, indices: Sequence[int] | None = None) -> Path:
        """Write FOLDER/annotations/instances_<split>.json (instances.json for samples without a split)
        with the images in FOLDER/images/<split>/; category ids are 1, 2, ... in the order of ``classes``;
        crowd regions are annotations with iscrowd 1."""
        root = Path(folder)
        placed = place_images(dataset, indices, lambda split: root / "images" / (split or ""))
        categories = [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(dataset.classes)]
        for split in dict.fromkeys(p.sample.split for p in placed):
            images, annotations = [], []
            for item in (p for p in placed if p.sample.split == split):
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": item.file.name, "width": item.width, "height": item.height})
                for box, crowd in item.annotations:
                    x1, y1, x2, y2 = box_corners(box, (item.width, item.height))
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": box.label + 1,
                                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                        "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": crowd})
            content = {"info": {"description": f"converted by defectlab from {dataset.root}"},
                       "images": images, "annotations": annotations, "categories": categories}
            with atomic_write(root / "annotations" / (f"instances_{split}.json" if split else "instances.json")) as tmp:
                tmp.write_text(json.dumps(content, indent=1), encoding="utf-8")
        return root


def _read_json(path: Path) -> dict[str, Any]:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:
        raise DataError(f"'{path}' is nested too deeply to be a COCO annotation file") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise DataError(f"'{path}' is not usable JSON: {exc}") from exc
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(key), list)]
    if missing:
        raise DataError(f"'{path}' is not a COCO annotation file: it has no {', '.join(repr(k) for k in missing)} "
                        f"list (COCO needs images, annotations and categories)")
    return data


def _categories(data: dict[str, Any], path: Path) -> list[tuple[int, str]]:
    """(id, name) of every category, in order of id."""
    found: dict[int, str] = {}
    for number, category in enumerate(data["categories"], start=1):
        where = f"{path}, category {number}"
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise DataError(f"{where}: needs an integer 'id' and a 'name', got {shown(category)}")
        cid = identifier(category["id"], where)
        if cid in found:
            raise DataError(f"{where}: id {cid} is used twice")
        found[cid] = class_name(category["name"], where)
    if not found:
        raise DataError(f"'{path}' lists no categories; COCO needs one per class")
    return sorted(found.items())


def _shown(categories: list[tuple[int, str]]) -> str:
    return ", ".join(f"{cid}: {name}" for cid, name in categories)


def _image_id(value: Any, where: str) -> int | str:
    """An image id: an integer id, or a string as some exporters write."""
    return value if isinstance(value, str) else identifier(value, where)


def _declared_size(image: dict[str, Any], where: str) -> tuple[int, int] | None:
    """An image entry's (width, height), None when it gives neither; a DataError for an unusable one."""
    if image.get("width") is None and image.get("height") is None:
        return None
    return (whole_number(image.get("width"), where, "width", 1, MAX_SIDE),
            whole_number(image.get("height"), where, "height", 1, MAX_SIDE))


def _samples(data: dict[str, Any], path: Path, label_of: dict[int, int], split: str | None,
             image_root: Path | None, base: Path) -> list[Sample]:
    """The samples of one annotation file, every box checked against its image."""
    entries: dict[int | str, dict[str, Any]] = {}
    declared: dict[int | str, tuple[int, int] | None] = {}
    for number, image in enumerate(data["images"], start=1):
        where = f"{path}, image {number}"
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str) \
                or not image["file_name"]:
            raise DataError(f"{where}: needs an 'id' and a 'file_name', got {shown(image)}")
        check_inside(image["file_name"], where, "file_name")
        image_id = _image_id(image["id"], where)
        if image_id in entries:
            raise DataError(f"{where}: id {image_id!r} is used twice")
        entries[image_id], declared[image_id] = image, _declared_size(image, where)
    if not entries:
        return []
    folder = _image_folder(path, next(iter(entries.values()))["file_name"], split, image_root)
    files, sizes = {}, {}
    boxes: dict[int | str, tuple[list[Box], list[Box]]] = {image_id: ([], []) for image_id in entries}  # objects, crowd
    for image_id, image in entries.items():
        files[image_id] = folder / image["file_name"]
        if not is_file(files[image_id]):
            raise DataError(f"{path}, image {image_id!r}: {shown(image['file_name'])} not found in '{folder}'; "
                            f"pass images=FOLDER to say where the images are")
    for number, annotation in enumerate(data["annotations"], start=1):
        if not isinstance(annotation, dict):
            raise DataError(f"{path}, annotation #{number}: expected an object with image_id, category_id and bbox, "
                            f"got {shown(annotation)}")
        where = f"{path}, annotation #{number}"
        if "id" in annotation:
            where = f"{path}, annotation {_image_id(annotation['id'], where)}"
        image_id = annotation.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or image_id not in entries:
            raise DataError(f"{where}: image_id {shown(image_id)} is not among the images")
        where += f" (image '{entries[image_id]['file_name']}')"
        category = annotation.get("category_id")
        if isinstance(category, bool) or not isinstance(category, int) or category not in label_of:
            raise DataError(f"{where}: category_id {shown(category)} is not one of the categories "
                            f"({', '.join(str(c) for c in label_of)})")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            raise DataError(f"{where}: bbox must be [x, y, width, height], four finite numbers in pixels, "
                            f"got {shown(bbox)}")
        if annotation.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{where}: iscrowd must be 0 or 1, got {shown(annotation['iscrowd'])}")
        if image_id not in sizes:
            sizes[image_id] = declared[image_id] or _header_size(files[image_id], f"{path}, image {image_id!r}")
        x, y, width, height = (float(v) for v in bbox)
        boxes[image_id][bool(annotation.get("iscrowd"))].append(
            box_from_corners(label_of[category], (x, y, x + width, y + height), sizes[image_id], where))
    return [Sample(key=relative(files[i], base), path=str(files[i]), boxes=tuple(boxes[i][0]), split=split,
                   meta={"image_id": i}, crowd=tuple(boxes[i][1])) for i in entries]


def _image_folder(path: Path, first_file: str, split: str | None, image_root: Path | None) -> Path:
    """The folder the images' file_name is relative to: the first candidate that holds the first image."""
    if image_root is not None:
        bases, subfolders = [image_root], [""]
    else:
        stem = path.stem.split("_", 1)[1] if path.stem.startswith("instances_") else path.stem
        bases = list(dict.fromkeys([path.parent, path.parent / "images", path.parent.parent,
                                    path.parent.parent / "images"]))
        subfolders = list(dict.fromkeys(["", stem, split or ""]))
    candidates = list(dict.fromkeys(b / s if s else b for b in bases for s in subfolders))
    found = next((c for c in candidates if is_file(c / first_file)), None)
    if found is None:
        raise DataError(f"{path}: the first image, '{first_file}', is in none of "
                        f"{', '.join(str(c) for c in candidates)}; pass images=FOLDER to say where the images are")
    return found


def _header_size(file: Path, where: str) -> tuple[int, int]:
    """(width, height) of an image file, read from its header, for an entry that gives none."""
    try:
        with open_image(file) as opened:
            return opened.size
    except UnreadableImageError as exc:
        raise DataError(f"{where}: no width and height, and {exc}") from exc
