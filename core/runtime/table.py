"""The predictions CSV as it grows: rows appended and flushed batch by batch, read back image by image.

``predict`` appends each batch's rows as soon as they are predicted, so a prediction that is
killed has every batch before the one in flight on disk, the last line possibly cut short.
Reading the CSV back (``--resume``, the detection JSON) takes only whole images: a record is
whole when its line ends (the writer ends each with ``\\r\\n``) and it has every column, and a
detection image when all of its ``boxes`` rows are there. :func:`written` cuts the file back to
the end of its last whole image, so appending goes on from there.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import atomic_write, write_error

ENCODING = "utf-8"


@contextmanager
def appending(out: Path, columns: Sequence[str], fresh: bool) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """A function that appends rows to ``out`` and flushes them; ``fresh`` starts the file anew. The header is
    written first into an empty file."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w" if fresh else "a", newline="", encoding=ENCODING) as handle:
            writer = csv.DictWriter(handle, columns)
            if handle.tell() == 0:
                writer.writeheader()

            def append(rows: list[dict[str, Any]]) -> None:
                writer.writerows(rows)
                handle.flush()

            yield append
    except OSError as exc:
        raise write_error(out, exc) from exc


def images_in(out: Path, columns: Sequence[str], task: str) -> Iterator[tuple[list[dict[str, str]], int]]:
    """The whole images of the CSV ``out``: each image's rows (one; a detection image one per box) and the byte
    offset where they end. A DataError for another header, or for a damaged row before the end."""
    records = _records(out)
    first = next(records, None)
    if first is None:  # empty, or the header itself cut short
        return
    if first[0] != list(columns):
        raise DataError(f"{out} has the columns {', '.join(first[0])}, but this model writes "
                        f"{', '.join(columns)}: it was predicted by another model; choose another --out")
    rows: list[dict[str, str]] = []
    for record, end in records:
        row = dict(zip(columns, record))
        rows.append(row)
        if len(rows) == _rows_of(task, rows[0], out):
            yield rows, end
            rows = []


def _rows_of(task: str, row: dict[str, str], out: Path) -> int:
    """How many rows an image has, from its first: a detection image one per box (at least one), else one."""
    if task != "detect" or not row["boxes"]:
        return 1
    try:
        return max(int(row["boxes"]), 1)
    except ValueError:
        raise DataError(f"{out} has a row for {row['path']} with '{row['boxes']}' boxes; it was not written by "
                        f"`defectlab predict`: predict again with --overwrite") from None


def _records(out: Path) -> Iterator[tuple[list[str], int]]:
    """The whole records of ``out`` with the byte offset where each ends; a record cut short at the end is left
    out (before the end, a DataError)."""
    size = out.stat().st_size
    offset, ended = 0, True

    def lines() -> Iterator[str]:
        nonlocal offset, ended
        with out.open("rb") as handle:
            for line in handle:
                offset += len(line)
                ended = line.endswith(b"\n")
                yield line.decode(ENCODING, errors="replace")  # only a line cut inside a character has any

    reader = csv.reader(lines(), strict=True)
    width = None
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a quoted field still open: cut short if at the end
            if offset == size:
                return
            raise DataError(f"{out} is damaged at line {reader.line_num} ({exc}); predict again with --overwrite"
                            ) from exc
        width = len(record) if width is None else width
        if not ended or len(record) != width:
            if offset == size:
                return
            raise DataError(f"{out} line {reader.line_num} has {len(record)} columns, not {width}; it was not "
                            f"written by `defectlab predict`: predict again with --overwrite")
        yield record, offset


@dataclass
class Written:
    """What an earlier prediction wrote: how often each path was predicted, and how many images in all."""

    paths: Counter[str]
    predicted: int = 0
    failed: int = 0


def written(out: Path, columns: Sequence[str], task: str) -> Written:
    """The whole images in ``out``, the file cut back to the end of the last one (a partial line, or a
    detection image with some of its rows, is removed: it is predicted again)."""
    found, end = Written(Counter()), 0
    for rows, end in images_in(out, columns, task):
        found.paths[rows[0]["path"]] += 1
        if rows[0]["error"]:
            found.failed += 1
        else:
            found.predicted += 1
    if out.stat().st_size > end:
        try:
            with out.open("r+b") as handle:
                handle.truncate(end)
        except OSError as exc:
            raise write_error(out, exc) from exc
    return found


def write_detection_json(out: Path, target: Path, columns: Sequence[str]) -> None:
    """The boxes of the detection CSV ``out`` as JSON: per image its path, error and boxes (class, score, box),
    the CSV's numbers; written image by image."""
    with atomic_write(target) as temporary, temporary.open("w", encoding=ENCODING) as handle:
        handle.write("[")
        for index, (rows, _) in enumerate(images_in(out, columns, "detect")):
            boxes = [{"class": row["class"], "score": float(row["score"]),
                      "box": [float(row[k]) for k in ("x1", "y1", "x2", "y2")]} for row in rows if row["class"]]
            image = {"path": rows[0]["path"], "error": rows[0]["error"], "boxes": boxes}
            handle.write(("," if index else "") + "\n  " + json.dumps(image))
        handle.write("\n]\n")
