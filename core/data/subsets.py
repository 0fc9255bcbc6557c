"""Cutting a source dataset down to a target's label set (Valle Salgado et al. 2023 §2.4) and planning re-balancing (§2.5).

The subset is written as a CSV index (path, label, split, boxes[, repeat]) that the ``csv_index``
dataset reads back; class names, not indices, tie the source to the target.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from defectlab.data.datasets import DefectDataset
from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import atomic_write

Balance = Literal["none", "uniform", "target"]


@dataclass(frozen=True)
class SubsetRow:
    """One kept sample: its image, its class name (classification) or kept boxes (detection)."""

    key: str
    path: str | None
    label: str | None
    split: str | None
    boxes: tuple[tuple[str, float, float, float, float], ...] | None
    repeat: int = 1


def source_subset(source: DefectDataset, target_classes: Sequence[str]) -> list[SubsetRow]:
    """Samples and annotations of ``source`` whose labels the target has.

    Classification samples outside the label set are dropped. Detection boxes outside it are
    dropped, and an image left with none is dropped too unless it had none to begin with
    (a defect-free image). Samples with neither label nor boxes (segmentation) are kept.
    """
    wanted = set(target_classes)
    rows = []
    for sample in source.samples:
        if sample.boxes is not None:
            kept = tuple((source.classes[b.label], b.x_center, b.y_center, b.width, b.height)
                         for b in sample.boxes if source.classes[b.label] in wanted)
            if kept or not sample.boxes:
                rows.append(SubsetRow(sample.key, sample.path, None, sample.split, kept))
        elif sample.label is None:
            rows.append(SubsetRow(sample.key, sample.path, None, sample.split, None))
        elif source.classes[sample.label] in wanted:
            rows.append(SubsetRow(sample.key, sample.path, source.classes[sample.label], sample.split, None))
    return rows


def balancing_plan(rows: Sequence[SubsetRow], balance: Balance, target_counts: dict[str, int] | None = None,
                   seed: int = 0) -> list[SubsetRow]:
    """Rows with ``repeat`` set so each class reaches its share of the subset's size.

    ``uniform`` gives every class the same count; ``target`` the target's class proportions.
    Classes above their share are undersampled (some rows get 0), those below oversampled;
    the rows chosen are drawn deterministically from ``seed``.
    """
    if balance == "none":
        return list(rows)
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        if row.label is not None:
            by_class[row.label].append(index)
    if not by_class:
        raise DataError("balancing needs classification labels; this subset has none")
    total = sum(len(v) for v in by_class.values())
    if balance == "uniform":
        shares = {name: 1 / len(by_class) for name in by_class}
    else:
        weights = {name: (target_counts or {}).get(name, 0) for name in by_class}
        if sum(weights.values()) == 0:
            raise DataError("balance='target' needs the target's class counts over the subset's classes")
        shares = {name: w / sum(weights.values()) for name, w in weights.items()}
    rng = random.Random(seed)
    repeats = [row.repeat for row in rows]
    for name, indices in sorted(by_class.items()):
        wanted = round(total * shares[name])
        full, extra = divmod(wanted, len(indices))
        chosen = set(rng.sample(indices, extra))
        for index in indices:
            repeats[index] = full + (1 if index in chosen else 0)
    return [SubsetRow(r.key, r.path, r.label, r.split, r.boxes, n) for r, n in zip(rows, repeats)]


def with_image_files(rows: Sequence[SubsetRow], source: DefectDataset, folder: str | os.PathLike[str]
                     ) -> list[SubsetRow]:
    """``rows`` with every image that exists only as pixels (a generated dataset, no ``path``) saved as
    FOLDER/<key>.png, so that the subset CSV names a file for each row; unreadable images are left out."""
    from PIL import Image

    from defectlab.data.datasets import UnreadableImageError

    index_of = {sample.key: index for index, sample in enumerate(source.samples)}
    kept = []
    for row in rows:
        if row.path is None and row.key in index_of:
            target = Path(folder) / f"{row.key}.png"
            try:
                pixels = source.load_image(index_of[row.key])
            except UnreadableImageError as exc:
                source.note_unreadable(index_of[row.key], exc)
                continue
            with atomic_write(target) as temporary:
                Image.fromarray(pixels).save(temporary, format="PNG")
            row = SubsetRow(row.key, str(target), row.label, row.split, row.boxes, row.repeat)
        kept.append(row)
    return kept


def write_subset_csv(rows: Sequence[SubsetRow], path: str | os.PathLike[str]) -> Path:
    """Write the subset as a CSV index; images inside the CSV's folder get relative paths."""
    path = Path(path)
    with_repeat = any(r.repeat != 1 for r in rows)
    with atomic_write(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "boxes", "key"] + (["repeat"] if with_repeat else []))
        for row in rows:
            boxes = "" if row.boxes is None else ";".join(" ".join([n, *(f"{v:.6g}" for v in b)])
                                                         for n, *b in row.boxes)
            writer.writerow([_relative(row.path, path.parent), row.label or "", row.split or "", boxes, row.key]
                            + ([row.repeat] if with_repeat else []))
    return path


def _relative(image: str | None, folder: Path) -> str:
    """Relative to the CSV's folder when the image lies inside it (the two move together), else absolute."""
    if not image:
        return ""
    image_path = Path(image).resolve()
    try:
        return image_path.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(image_path)


def class_totals(rows: Sequence[SubsetRow]) -> Counter[str]:
    """Rows per class after the balancing plan's repeats."""
    totals: Counter[str] = Counter()
    for row in rows:
        if row.label is not None:
            totals[row.label] += row.repeat
    return totals
