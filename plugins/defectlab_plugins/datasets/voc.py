"""The Pascal VOC detection layout: Annotations/*.xml, JPEGImages/ and ImageSets/Main/<split>.txt."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from defectlab import (
    IMAGE_SUFFIXES,
    Box,
    DataError,
    DefectDataset,
    Sample,
    UnreadableImageError,
    atomic_write,
    natural_key,
    open_image,
)
from defectlab_plugins.datasets.checks import (
    MAX_SIDE,
    check_inside,
    class_name,
    is_file,
    read_names,
    read_text,
    shown,
    whole_number,
)
from defectlab_plugins.datasets.layouts import LayoutDataset, box_corners, box_from_corners, existing_folder, relative
from defectlab_plugins.datasets.writing import place_images, write_lines

SPLIT_FILES = {"train": ("train", "trainval"), "val": ("val",), "test": ("test",)}  # trainval only without train


class Voc(LayoutDataset):
    """Pascal VOC detection layout: Annotations/*.xml with an <object> per box, JPEGImages/, ImageSets/Main/.

    Each Annotations/<id>.xml names its image (<filename>, in JPEGImages/; else the image of the
    same id) and its <size>, and holds an <object> per box: its class <name> and a <bndbox> of
    xmin, ymin, xmax, ymax in 1-based pixel coordinates as VOC writes them (pixel xmin to pixel
    xmax inclusive, so the box spans xmin - 1 to xmax). An annotation without objects is an
    image without defects. <difficult> objects (``difficult="ignore"``) go to the sample's
    ``crowd``, as the VOC protocol leaves them out: never trained on, ignored in evaluation;
    ``difficult="object"`` keeps them as objects. ImageSets/Main/train.txt, val.txt and
    test.txt (trainval.txt when there is no train.txt) give the split of the ids they list;
    an id in none of them has no split. VOC has no list of classes: they come from ``classes``,
    else from a classes.txt beside Annotations/ (one name a line, as the writer leaves it), else
    they are the names found, in natural order.

    Args:
        root: The folder holding Annotations/ and JPEGImages/ (e.g. VOCdevkit/VOC2007).
        classes: Class names in index order; an object of another class is an error.
        difficult: 'ignore' (regions that evaluation ignores, as COCO's crowd regions) or 'object'
            (objects like the others) for the objects marked <difficult>1</difficult>.
    """

    name = "voc"
    task = "detect"

    def __init__(self, root: str, classes: list[str] | None = None,
                 difficult: Literal["ignore", "object"] = "ignore") -> None:
        super().__init__()
        folder = existing_folder(root, "VOC dataset")
        annotations, images = folder / "Annotations", folder / "JPEGImages"
        for needed in (annotations, images):
            if not needed.is_dir():
                raise DataError(f"'{root}' has no {needed.name}/ folder; a VOC dataset needs Annotations/ and "
                                f"JPEGImages/")
        self.root = str(folder)
        splits = _split_lists(folder / "ImageSets" / "Main", annotations)
        parsed = [_read_annotation(path, images) for path in
                  sorted(annotations.glob("*.xml"), key=lambda p: natural_key(p.name))]
        listed = folder / "classes.txt"
        if classes is None and listed.is_file():
            classes = read_names(listed)
        found = sorted({obj.name for record in parsed for obj in record.objects}, key=natural_key)
        self.classes = list(found if classes is None else classes)
        label_of = {name: i for i, name in enumerate(self.classes)}
        for record in parsed:
            boxes: tuple[list[Box], list[Box]] = ([], [])  # objects, regions to ignore
            for obj in record.objects:
                if obj.name not in label_of:
                    raise DataError(f"{record.xml}, line {obj.name_line}: class '{obj.name}' is not one of the classes "
                                    f"({', '.join(self.classes)})")
                xmin, ymin, xmax, ymax = obj.bounds
                boxes[obj.difficult and difficult == "ignore"].append(box_from_corners(
                    label_of[obj.name], (xmin - 1, ymin - 1, xmax, ymax), record.size,
                    f"{record.xml}, line {obj.box_line}"))
            self.samples.append(Sample(key=relative(record.image, folder), path=str(record.image),
                                       boxes=tuple(boxes[0]), split=splits.get(record.xml.stem),
                                       meta={"id": record.xml.stem}, crowd=tuple(boxes[1])))

    @classmethod
    def write(cls, dataset: DefectDataset, folder: str | Path, indices: Sequence[int] | None = None) -> Path:
        """Write FOLDER/JPEGImages/, an Annotations/<id>.xml per image, ImageSets/Main/<split>.txt and the
        class order as classes.txt (VOC itself has no list of classes); crowd regions are <difficult> objects."""
        root = Path(folder)
        placed = place_images(dataset, indices, lambda split: root / "JPEGImages")
        for item in placed:
            annotation = ET.Element("annotation")
            _add(annotation, folder="JPEGImages", filename=item.file.name)
            _add(ET.SubElement(annotation, "size"), width=item.width, height=item.height, depth=item.channels)
            _add(annotation, segmented=0)
            for box, difficult in item.annotations:
                x1, y1, x2, y2 = box_corners(box, (item.width, item.height))
                xmin, ymin = min(max(round(x1) + 1, 1), item.width), min(max(round(y1) + 1, 1), item.height)
                obj = ET.SubElement(annotation, "object")
                _add(obj, name=dataset.classes[box.label], pose="Unspecified", truncated=0, difficult=difficult)
                _add(ET.SubElement(obj, "bndbox"), xmin=xmin, ymin=ymin, xmax=max(min(round(x2), item.width), xmin),
                     ymax=max(min(round(y2), item.height), ymin))
            ET.indent(annotation)
            with atomic_write(root / "Annotations" / f"{item.file.stem}.xml") as temporary:
                ET.ElementTree(annotation).write(temporary, encoding="utf-8", xml_declaration=False)
        for split in ("train", "val", "test"):
            ids = [item.file.stem for item in placed if item.sample.split == split]
            if ids:
                write_lines(root / "ImageSets" / "Main" / f"{split}.txt", ids)
        write_lines(root / "classes.txt", dataset.classes)
        return root


def _add(parent: ET.Element, **children: object) -> None:
    for tag, text in children.items():
        ET.SubElement(parent, tag).text = str(text)


@dataclass
class Node:
    """An XML element with the line it starts on, so that errors can name the line."""

    tag: str
    line: int
    text: str = ""
    children: list[Node] = field(default_factory=list)

    def find(self, tag: str) -> Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def value(self, tag: str) -> str | None:
        child = self.find(tag)
        return None if child is None else child.text.strip()


def parse_xml(path: Path) -> Node:
    """The element tree of an XML file, each element with its line; a DataError naming the line if malformed.

    A document type declaration (and so any entity declaration) is refused as soon as it starts, before
    anything is expanded: an annotation needs none, and entities are how XML bombs and external files get in.
    """
    import xml.parsers.expat

    parser = xml.parsers.expat.ParserCreate()

    def refuse(*_: object) -> None:
        raise DataError(f"{path}, line {parser.CurrentLineNumber}: a <!DOCTYPE> or <!ENTITY> declaration is "
                        f"refused (annotations need none, and entities can expand without bound); remove it")

    stack: list[Node] = []
    roots: list[Node] = []

    def start(tag: str, attributes: dict[str, str]) -> None:
        node = Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: stack.pop()
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = refuse
    try:
        with open(path, "rb") as handle:
            parser.ParseFile(handle)
    except xml.parsers.expat.ExpatError as exc:
        raise DataError(f"{path}, line {exc.lineno}: not valid XML ({xml.parsers.expat.ErrorString(exc.code)})") from exc
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    return roots[0]


@dataclass
class VocObject:
    name: str
    bounds: tuple[float, float, float, float]
    name_line: int
    box_line: int
    difficult: bool


@dataclass
class VocRecord:
    xml: Path
    image: Path
    size: tuple[float, float]
    objects: list[VocObject]


def _read_annotation(path: Path, images: Path) -> VocRecord:
    """One annotation file: its image, the image's size, and its objects."""
    root = parse_xml(path)
    if root.tag != "annotation":
        raise DataError(f"{path}, line {root.line}: expected an <annotation> element, got <{root.tag}>")
    name, line = root.value("filename"), (root.find("filename") or root).line
    if name:
        check_inside(name, f"{path}, line {line}", "<filename>", f"'{images}'")
    image = images / name if name else None
    if image is None or not is_file(image):
        image = next((images / f"{path.stem}{s}" for s in IMAGE_SUFFIXES if (images / f"{path.stem}{s}").is_file()),
                     None)
    if image is None:
        raise DataError(f"{path}, line {line}: image '{name or path.stem}' not found in '{images}'")
    objects = []
    for node in (c for c in root.children if c.tag == "object"):
        box = node.find("bndbox")
        label = node.value("name")
        try:
            bounds = tuple(float(box.value(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[arg-type,union-attr]
        except (AttributeError, TypeError, ValueError):
            bounds = None
        if not label or bounds is None:
            raise DataError(f"{path}, line {node.line}: an <object> needs a <name> and a <bndbox> with numbers "
                            f"xmin, ymin, xmax and ymax")
        name_line = node.find("name").line  # type: ignore[union-attr]
        class_name(label, f"{path}, line {name_line}")
        difficult = node.value("difficult")
        if difficult not in (None, "", "0", "1"):
            line = node.find("difficult").line  # type: ignore[union-attr]
            raise DataError(f"{path}, line {line}: <difficult> must be 0 or 1, got {shown(difficult)}")
        objects.append(VocObject(label, bounds, name_line, box.line, difficult == "1"))  # type: ignore[arg-type,union-attr]
    return VocRecord(path, image, _size(root, path, image), objects)


def _size(root: Node, path: Path, image: Path) -> tuple[float, float]:
    """The <size> width and height, else (no <size>, or one without them) the image file's own."""
    size = root.find("size")
    values = [None if size is None else size.value(tag) or None for tag in ("width", "height")]
    if values != [None, None]:
        where = f"{path}, line {size.line}"  # type: ignore[union-attr]
        return tuple(whole_number(_number(v), where, f"<size> {tag}", 1, MAX_SIDE)  # type: ignore[return-value]
                     for v, tag in zip(values, ("width", "height")))
    try:
        with open_image(image) as opened:
            return opened.size
    except UnreadableImageError as exc:
        raise DataError(f"{path}: no <size> with a width and height, and {exc}") from exc


def _number(text: str | None) -> float | str | None:
    """The number an element's text spells, else the text itself (for the error message)."""
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return text


def _split_lists(folder: Path, annotations: Path) -> dict[str, str]:
    """Split of each id listed in ImageSets/Main/{train,val,test}.txt; an id without an annotation is an error."""
    splits: dict[str, str] = {}
    for split, names in SPLIT_FILES.items():
        listing = next((folder / f"{n}.txt" for n in names if (folder / f"{n}.txt").is_file()), None)
        if listing is None:
            continue
        for number, line in enumerate(read_text(listing).splitlines(), start=1):
            words = line.split()
            if words and not is_file(annotations / f"{words[0]}.xml"):
                raise DataError(f"{listing}, line {number}: '{words[0]}' has no annotation "
                                f"{annotations / words[0]}.xml; remove the line or add the file")
            if words:
                splits.setdefault(words[0], split)
    return splits
