"""What every dataset component provides: light sample records, images streamed on demand.

A dataset component (kind ``dataset``) subclasses :class:`DefectDataset`. It lists its samples
up front (paths and labels only) and decodes an image only when asked, so no dataset is held
whole in memory. An unreadable image is reported once and skipped, never a crash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import (
    DataError,
    DefectlabError,
    UnknownComponentError,
)
from defectlab.plugin_system.naming import natural_key

log = logging.getLogger("defectlab.data.datasets")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix and is not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files at any depth below ``folder`` (hidden files and folders skipped), in natural order."""
    folder = Path(folder)
    found = []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found.extend(Path(directory, name) for name in files if is_image_name(name))
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


class UnreadableImageError(DataError):
    """An image file that cannot be decoded."""


@dataclass(frozen=True)
class Box:
    """One bounding box in YOLO convention: class index and centre/size normalised to [0, 1]."""

    label: int
    x_center: float
    y_center: float
    width: float
    height: float


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and its annotations; the image itself is loaded on demand.

    ``label`` is the class index of a classification sample (None for detection or
    segmentation), ``boxes`` the detection boxes, ``crowd`` the regions that evaluation
    ignores (COCO's ``iscrowd``, VOC's ``<difficult>``), ``mask_path`` a segmentation mask,
    ``split`` a predefined split ('train', 'val', 'test') if the format has one, and
    ``meta`` anything else a format knows (cell type, defect type, ...).

    ``crowd`` is a field of its own, not a flag on :class:`Box`: a crowd region is not an
    object, so everything that reads ``boxes`` (class counts, splits, screening, training
    targets, writers without a crowd flag) stays right without knowing of crowds, and only
    evaluation, which passes them to the evaluator as ``iscrowd`` targets, and the writers that
    can store them read ``crowd``.
    """

    key: str
    path: str | None = None
    label: int | None = None
    boxes: tuple[Box, ...] | None = None
    mask_path: str | None = None
    split: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    crowd: tuple[Box, ...] = ()

    @property
    def labels(self) -> frozenset[int]:
        """The classes present in the sample: its label, or its boxes' classes."""
        if self.boxes is not None:
            return frozenset(b.label for b in self.boxes)
        return frozenset() if self.label is None else frozenset({self.label})


#: Environment variable with the most pixels an image may have (Pillow's guard against decompression
#: bombs); 'none' lifts the limit. Unset: Pillow's own limit.
MAX_PIXELS_ENV = "DEFECTLAB_MAX_IMAGE_PIXELS"

# What Pillow's decoders raise, besides OSError and ValueError, for a broken file (a PNG chunk: SyntaxError).
_DECODING_ERRORS = (SyntaxError, EOFError, struct.error, zlib.error)

_PILLOW_LIMIT_LOCK = threading.Lock()  # Pillow's limit is a module global: swap it under a lock


def max_image_pixels() -> int | None:
    """The pixel limit in force: DEFECTLAB_MAX_IMAGE_PIXELS, else the size at which Pillow itself refuses
    an image (twice its MAX_IMAGE_PIXELS); None: no limit."""
    from PIL import Image

    value = os.environ.get(MAX_PIXELS_ENV, "").strip().lower()
    if not value:
        return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS
    if value in ("none", "0"):
        return None
    try:
        return int(float(value))
    except ValueError:
        raise DataError(f"{MAX_PIXELS_ENV}={value!r}: expected a number of pixels or 'none'") from None


@contextmanager
def open_image(path: str | os.PathLike[str], what: str = "image") -> Iterator[Any]:
    """``PIL.Image.open`` with defectlab's pixel limit in force; any failure to decode, an image over the
    limit included, is an UnreadableImageError naming the file (``what`` says which file it is)."""
    from PIL import Image, UnidentifiedImageError

    limit = max_image_pixels()
    try:
        with _PILLOW_LIMIT_LOCK:  # only the header is read here; our own limit replaces Pillow's
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with image:
            if limit is not None and image.width * image.height > limit:
                raise UnreadableImageError(
                    f"cannot read {what} '{path}': {image.width}x{image.height} is over the limit of {limit} "
                    f"pixels (a guard against decompression bombs); set {MAX_PIXELS_ENV}=N to raise it, "
                    f"or 'none' to lift it")
            yield image
    except UnreadableImageError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, *_DECODING_ERRORS) as exc:
        raise UnreadableImageError(f"cannot read {what} '{path}': {exc}") from exc


def read_image(path: str | os.PathLike[str], grey: bool | None = None) -> Any:
    """Decode an image file to a uint8 array (H, W) for grey images or (H, W, 3) for colour.

    ``grey=None`` keeps the file's own mode (a grey image stays one channel).
    """
    import numpy as np

    with open_image(path) as image:
        image.load()
        if grey is True or (grey is None and image.mode in ("L", "I;16", "I", "F", "1", "LA")):
            image = image.convert("L") if image.mode not in ("I;16", "I", "F") else _to_uint8(image)
        else:
            image = image.convert("RGB")
        return np.asarray(image)


def _to_uint8(image: Any) -> Any:
    """Scale a 16-bit or float grey image to 8 bits by its own range."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = np.zeros_like(array) if high == low else (array - low) / (high - low) * 255.0
    return Image.fromarray(scaled.round().astype(np.uint8))


class DefectDataset:
    """Base of dataset components: ``samples`` and ``classes`` up front, pixels on demand.

    Subclasses fill ``self.samples`` and ``self.classes`` in ``__init__`` and may override
    ``load_image`` (e.g. for images packed in an array) and ``detect`` (format detection for
    a path given on the command line).
    """

    name = "dataset"
    task = "classify"  # or "detect" / "segment" / "pretrain" (images without labels)

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.classes: list[str] = []
        self.root: str = ""
        self.unreadable: dict[str, str] = {}

    @classmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` looks like this format (used when a DATASET is given as a path)."""
        return False

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, {len(self)} samples, classes={self.classes})"

    def load_image(self, index: int) -> Any:
        """The image of sample ``index`` as a uint8 array; UnreadableImageError if it cannot be read."""
        sample = self.samples[index]
        if sample.path is None:
            raise UnreadableImageError(f"sample '{sample.key}' has no image file")
        return read_image(sample.path)

    def load_mask(self, index: int) -> Any:
        """The mask of sample ``index`` as an (H, W) uint8 array of class indices (0 = background)."""
        sample = self.samples[index]
        if sample.mask_path is None:
            raise DataError(f"sample '{sample.key}' has no mask; a segmentation dataset needs one per image")
        return read_image(sample.mask_path, grey=True)

    def iter_images(self, indices: list[int] | None = None) -> Iterator[tuple[int, Any]]:
        """Yield (index, image) for readable images, logging each unreadable one once."""
        for index in range(len(self)) if indices is None else indices:
            try:
                yield index, self.load_image(index)
            except UnreadableImageError as exc:
                self.note_unreadable(index, exc)

    def note_unreadable(self, index: int, exc: UnreadableImageError) -> None:
        """Record sample ``index`` as unreadable (in ``unreadable``) and log it, once per sample."""
        key = self.samples[index].key
        if key not in self.unreadable:
            self.unreadable[key] = str(exc)
            log.warning("skipping %s", exc)

    def class_counts(self, indices: Iterable[int] | None = None) -> list[int]:
        """Samples per class (of ``indices``, else of all), in the order of ``classes``; a detection image
        counts once per class it shows."""
        counter: Counter[int] = Counter()
        for index in range(len(self.samples)) if indices is None else indices:
            counter.update(self.samples[index].labels)
        return [counter.get(i, 0) for i in range(len(self.classes))]

    def fingerprint(self) -> str:
        """A hash of the sample list and the files' sizes and times, for caching derived results."""
        digest = hashlib.sha256(type(self).__name__.encode())
        for sample in self.samples:
            digest.update(sample.key.encode())
            digest.update(repr(sorted(sample.labels)).encode())
            if sample.path and os.path.exists(sample.path):
                stat = os.stat(sample.path)
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


def open_dataset(spec: Any) -> DefectDataset:
    """A dataset from a path (format detected), ``NAME`` or ``NAME:VALUE``, or a spec dict.

    ``NAME:VALUE`` passes VALUE as the component's first parameter (``elpv:mono``).
    """
    from defectlab.plugin_system.components import create, list_components

    if isinstance(spec, DefectDataset):
        return spec
    if isinstance(spec, Mapping):
        return _checked(create("dataset", spec), str(spec))
    text = str(spec)
    path = Path(text)
    if path.exists():
        for component in list_components("dataset"):
            detect = getattr(component.obj, "detect", None)
            if detect is not None and detect(path):
                return _checked(component.build({component.parameters[0].name: str(path)}), text)
        known = ", ".join(c.name for c in list_components("dataset"))
        raise DataError(f"cannot tell the format of '{text}'; name it explicitly, e.g. "
                        f"{{name = \"csv_index\", root = \"{text}\"}} (formats: {known})")
    try:
        return _checked(create("dataset", text), text)
    except UnknownComponentError as exc:  # neither a path nor a name: say both
        raise DataError(f"no file or folder '{text}', and {exc}") from exc


def _checked(dataset: DefectDataset, text: str) -> DefectDataset:
    if not isinstance(dataset, DefectDataset):
        raise DefectlabError(f"dataset '{text}' did not produce a DefectDataset")
    if len(dataset) == 0:
        raise DataError(f"dataset '{text}' has no samples; check the path and its layout")
    return dataset
