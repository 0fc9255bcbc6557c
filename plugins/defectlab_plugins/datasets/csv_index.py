"""A CSV index of images and their classes (path,label[,split]) or their boxes (path,boxes[,split])."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from defectlab import DataError, Sample, UnreadableImageError, canonical_split, first_few, natural_key
from defectlab_plugins.datasets.checks import class_name
from defectlab_plugins.datasets.layouts import LayoutDataset, existing
from defectlab_plugins.datasets.yolo import normalised_box


class CsvIndex(LayoutDataset):
    """A CSV file of images and their classes (path,label[,split]) or detection boxes (path,boxes[,split]).

    The first row is the header; column names match whatever their case, and other columns are
    kept in each sample's ``meta``. Paths are relative to the CSV's folder (absolute paths are
    kept). A listed file that does not exist is reported as unreadable when it is loaded, so
    ``defectlab check-data`` can list them all. With a ``boxes`` column and no labels the CSV
    is a detection dataset (the subset.csv that ``screen`` writes for one): each box is
    'class x_center y_center width height', normalised to 0..1, and boxes are separated by ';'
    (an empty cell: an image without defects).

    Args:
        root: The CSV file.
        classes: Class names in index order (default: the labels or box classes found, in
            natural order); every label must be one of them.
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
        missing = [c for c in ("path", "label") if c not in columns and (c == "path" or "boxes" not in columns)]
        if missing:
            raise DataError(f"'{root}' has no {' or '.join(missing)} column; csv_index needs a header row "
                            f"path,label[,split] or path,boxes[,split] (found: {', '.join(header) or 'nothing'})")
        used = {columns[c] for c in ("path", "label", "split", "boxes") if c in columns}
        if "boxes" in columns and not any((row.get(columns.get("label", "")) or "").strip() for _, row in rows):
            self.task = "detect"
        records = []
        for line, row in rows:
            text = (row.get(columns["path"]) or "").strip()
            label = (row.get(columns["label"]) or "").strip() if self.task == "classify" else None
            if not text or label == "":
                raise DataError(f"'{root}', line {line}: empty path or label")
            if label is not None:
                class_name(label, f"'{root}', line {line}")
            boxes = None if label is not None else _read_boxes(row.get(columns["boxes"]) or "", f"'{root}', line {line}")
            split = (row.get(columns["split"]) or "").strip().lower() if "split" in columns else ""
            meta = {k: v for k, v in row.items() if k and k not in used}
            records.append((line, text, label, boxes, canonical_split(split) or split or None, meta))
        found = sorted({r[2] for r in records} - {None} | {name for r in records for name, *_ in r[3] or ()},
                       key=natural_key)
        if classes is not None:
            unknown = [label for label in found if label not in classes]
            if unknown:
                raise DataError(f"'{root}' has {'classes' if self.task == 'detect' else 'labels'} {first_few(unknown)} "
                                f"that are not among the classes {', '.join(classes)}")
        self.classes = list(found if classes is None else classes)
        number = {name: i for i, name in enumerate(self.classes)}
        self._lines: list[int] = []
        keys: set[str] = set()
        for line, text, label, boxes, split, meta in records:
            key = text if text not in keys else f"{text} (line {line})"
            keys.add(key)
            self._lines.append(line)
            self.samples.append(Sample(
                key=key, path=str(index.parent / text), label=None if label is None else number[label],
                boxes=None if boxes is None else tuple(normalised_box(number[name], *values, f"'{root}', line {line}")
                                                       for name, *values in boxes),
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
    except OSError as exc:
        raise DataError(f"cannot read '{index}': {exc.strerror or exc}") from exc
    return header, rows


def _read_boxes(cell: str, where: str) -> list[tuple[str, float, float, float, float]]:
    """The boxes of one cell: 'class x_center y_center width height' separated by ';' (empty: none)."""
    boxes = []
    for part in (p.strip() for p in cell.split(";") if p.strip()):
        fields = part.rsplit(None, 4)
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            values = []
        if len(values) != 4:
            raise DataError(f"{where}: expected boxes 'class x_center y_center width height' separated by ';', "
                            f"got '{part}'")
        if values[2] <= 0 or values[3] <= 0:
            raise DataError(f"{where}: a box needs a width and height > 0, got '{part}'")
        boxes.append((class_name(fields[0], where), *values))
    return boxes
