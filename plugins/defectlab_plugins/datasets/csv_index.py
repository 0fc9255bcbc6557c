"""A CSV index of images and their classes (path,label[,split]), for classification."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from defectlab import DataError, Sample, UnreadableImageError, canonical_split, first_few, natural_key
from defectlab_plugins.datasets.layouts import LayoutDataset, existing


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
            records.append((line, text, label, canonical_split(split) or split or None, meta))
        found = sorted({r[2] for r in records}, key=natural_key)
        if classes is not None:
            unknown = [label for label in found if label not in classes]
            if unknown:
                raise DataError(f"'{root}' has labels {first_few(unknown)} that are not among "
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
