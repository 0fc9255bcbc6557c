"""Writing a detection dataset's images into a new layout: what the yolo, coco and voc writers share.

Each image is placed once under a name unique in its folder (by stem, since label files go by
stem): a file on disk is hard-linked when the file system allows it, else copied, and an image
that exists only as pixels (a generated data set) is saved as PNG. An image that cannot be read
is recorded in the dataset's ``unreadable`` and left out, never a crash.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from defectlab import IMAGE_SUFFIXES, Box, DefectDataset, Sample, UnreadableImageError, atomic_write, open_image


@dataclass(frozen=True)
class Placed:
    """One image written into the new layout: which sample, where it went, its size and channels."""

    index: int
    sample: Sample
    file: Path
    width: int
    height: int
    channels: int

    @property
    def annotations(self) -> list[tuple[Box, int]]:
        """The sample's boxes with 0, then its crowd regions with 1: COCO's iscrowd, VOC's difficult."""
        return [*((box, 0) for box in self.sample.boxes or ()), *((box, 1) for box in self.sample.crowd)]


def place_images(dataset: DefectDataset, indices: Sequence[int] | None,
                 folder_of: Callable[[str | None], Path]) -> list[Placed]:
    """Put the image of each sample (of ``indices``, else all) into ``folder_of(sample.split)``."""
    stems: dict[Path, set[str]] = {}
    placed = []
    for index in range(len(dataset)) if indices is None else indices:
        sample = dataset.samples[index]
        source = Path(sample.path) if sample.path else None
        if source is not None and not (source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES):
            source = None
        try:
            if source is not None:
                with open_image(source) as image:
                    (width, height), channels, pixels = image.size, len(image.getbands()), None
            else:
                pixels = dataset.load_image(index)
                height, width = pixels.shape[:2]
                channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        except UnreadableImageError as exc:
            dataset.note_unreadable(index, exc)
            continue
        folder = folder_of(sample.split)
        stem = unique_stem(Path(sample.key).stem or f"{index:06d}", stems.setdefault(folder, set()))
        file = folder / f"{stem}{source.suffix if source is not None else '.png'}"
        if source is not None:
            link_or_copy(source, file)
        else:
            save_png(pixels, file)
        placed.append(Placed(index, sample, file, int(width), int(height), int(channels)))
    return placed


def unique_stem(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ... when it is taken; the result is added to ``taken``."""
    candidate, number = stem, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}-{number}"
    taken.add(candidate)
    return candidate


def link_or_copy(source: Path, destination: Path) -> None:
    """A hard link to ``source`` at ``destination`` where the file system allows it, else a copy."""
    with atomic_write(destination) as temporary:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)


def save_png(pixels: object, destination: Path) -> None:
    from PIL import Image

    with atomic_write(destination) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """A text file of ``lines``, each ended by a newline, written atomically."""
    with atomic_write(path) as temporary:
        temporary.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
