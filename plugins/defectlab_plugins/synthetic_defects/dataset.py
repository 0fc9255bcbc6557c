"""Synthetic steel surfaces with the six NEU-DET defect kinds and their boxes, drawn on the fly by seed.

A stand-in for NEU-DET (1,800 grey 200x200 images of hot-rolled steel, six classes; Liu et al. 2026)
that needs no download: tests, examples, benchmarks and the demo get a detection data set of
any size that is the same on every machine. Boxes are known without drawing any background,
and each image is drawn only when it is read.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import TYPE_CHECKING, Annotated, Literal

from defectlab import Box, DefectDataset, Range, Sample
from defectlab_plugins.synthetic_defects.drawing import DRAWERS, patch_shape, steel_background, visible_part

if TYPE_CHECKING:
    import numpy as np

GENERATOR_VERSION = 1  # part of the fingerprint: bump when the same parameters draw other pixels or boxes
SPLIT_CYCLE = ("train",) * 14 + ("val",) * 3 + ("test",) * 3  # index % 20 -> split: 70/15/15
GOLDEN = (math.sqrt(5) - 1) / 2  # step of a low-discrepancy sequence: the defect-free share holds over any range
#: The longer side of a defect's patch, as a share of the image side, for FPN levels P3, P4 and P5: at 256 px,
#: 16-64, 64-128 and 128-243 px, the objects that strides 8, 16 and 32 are meant for.
LEVELS = ((1 / 16, 1 / 4), (1 / 4, 1 / 2), (1 / 2, 0.95))
NOISE = 0.01  # sensor noise, standard deviation as a fraction of the full range
PLACEMENT_TRIES = 8  # positions tried for a defect, to keep it from covering an earlier one (IoU <= 0.1)

Defect = tuple[int, tuple[int, int, int, int], "np.ndarray"]  # label, (top, left, bottom, right), change of brightness


class SyntheticDefects(DefectDataset):
    """Generated NEU-DET-style steel surfaces with six kinds of defects and their boxes, deterministic by seed.

    Grey hot-rolled steel (smooth noise at a few scales, streaks and grain along the rolling
    direction, sensor noise) with 1 to 4 defects per image, each drawn with its own look:
    crazing (a network of fine dark cracks), inclusion (dark spots stretched along the rolling
    direction), patches (large dark blotches), pitted_surface (many small dark pits),
    rolled-in_scale (flakes pressed in, mostly dark) and scratches (long thin straight lines,
    bright or dark). A defect's size picks one of three FPN levels with equal chance: its patch's
    longer side is 1/16-1/4, 1/4-1/2 or 1/2-0.95 of the image side (16-64, 64-128, 128-243 px
    at 256). Its box is the tight box of the pixels it changes by 3 % or more (the rest of its
    change is dropped), so every box lies on its defect; ``defect_map(i)`` shows those pixels.

    Image ``i`` depends on (``seed``, ``i``) only, so a larger ``count`` adds images without
    changing the first ones. Whether it has no defect follows a low-discrepancy sequence, so
    ``defect_free`` holds to within an image or two over any range. It belongs to split train,
    val or test by ``i % 20`` (14/3/3: 70/15/15). ``defectlab convert synthetic_defects --to
    yolo`` writes the images and boxes to disk.

    Args:
        count: Number of images of the whole set, before ``split`` selects its share.
        size: Side of the square grey images, in pixels.
        classes: Which of the six classes to draw, in this order (default: all six, NEU-DET's order).
        defect_free: Share of images without any defect.
        seed: Seed of everything drawn (>= 0).
        split: Which images: 'train', 'val', 'test' (index % 20 < 14, < 17, else) or 'all'.
    """

    name = "synthetic_defects"
    task = "detect"

    def __init__(self, count: Annotated[int, Range(1)] = 120, size: Annotated[int, Range(32)] = 256,
                 classes: list[str] | None = None, defect_free: Annotated[float, Range(0, 1)] = 0.1,
                 seed: Annotated[int, Range(0)] = 0, split: Literal["train", "val", "test", "all"] = "all") -> None:
        super().__init__()
        chosen = list(DRAWERS) if classes is None else list(classes)
        unknown = [name for name in chosen if name not in DRAWERS]
        if unknown or not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(f"classes must be distinct names among {', '.join(DRAWERS)}; got {chosen}")
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"split must be train, val, test or all, got {split!r}")
        self.count, self.size, self.defect_free, self.seed, self.split = count, size, defect_free, seed, split
        self.classes = chosen
        self.root = f"synthetic_defects(seed={seed}, size={size})"
        free_start = random.Random(seed).random()
        for index in range(count):
            part = SPLIT_CYCLE[index % len(SPLIT_CYCLE)]
            if split not in ("all", part):
                continue
            free = (free_start + index * GOLDEN) % 1.0 < defect_free
            sample = Sample(key=f"{index:05d}", split=part, meta={"index": index, "defect_free": free})
            boxes = tuple(Box(label, (left + right) / 2 / size, (top + bottom) / 2 / size, (right - left) / size,
                              (bottom - top) / size) for label, (top, left, bottom, right), _ in self._defects(sample))
            self.samples.append(Sample(key=sample.key, boxes=boxes, split=part, meta=sample.meta))

    def _defects(self, sample: Sample) -> list[Defect]:
        """The defects of one image, each with its tight box in pixels and its change of brightness."""
        import numpy as np

        if sample.meta["defect_free"]:
            return []
        rng = np.random.default_rng([self.seed, sample.meta["index"], 1])
        defects: list[Defect] = []
        patches: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 5))):
            label = int(rng.integers(len(self.classes)))
            low, high = LEVELS[int(rng.integers(len(LEVELS)))]
            height, width = patch_shape(rng, self.classes[label], self.size * rng.uniform(low, high), self.size)
            best: tuple[float, int, int] | None = None
            for _ in range(PLACEMENT_TRIES):
                top, left = int(rng.integers(0, self.size - height + 1)), int(rng.integers(0, self.size - width + 1))
                overlap = max((_iou((top, left, top + height, left + width), p) for p in patches), default=0.0)
                if best is None or overlap < best[0]:
                    best = (overlap, top, left)
                if overlap <= 0.1:
                    break
            _, top, left = best  # type: ignore[misc]
            patches.append((top, left, top + height, left + width))
            visible = visible_part(DRAWERS[self.classes[label]](rng, height, width))
            if visible is not None:
                change, (t, l, b, r) = visible
                defects.append((label, (top + t, left + l, top + b, left + r), change))
        return defects

    def load_image(self, index: int) -> np.ndarray:
        """The (size, size) uint8 grey image of sample ``index``."""
        import numpy as np

        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, sample.meta["index"], 2])
        values = steel_background(rng, self.size)
        for _, (top, left, bottom, right), change in self._defects(sample):
            values[top:bottom, left:right] += change
        values += rng.normal(0.0, NOISE, values.shape)
        return np.clip(values * 255.0, 0, 255).round().astype(np.uint8)

    def defect_map(self, index: int) -> np.ndarray:
        """A (size, size) uint8 map of sample ``index``: k + 1 where a defect of class k changed the surface
        (a later defect over an earlier one wins), 0 elsewhere."""
        import numpy as np

        drawn = np.zeros((self.size, self.size), dtype=np.uint8)
        for label, (top, left, bottom, right), change in self._defects(self.samples[index]):
            drawn[top:bottom, left:right][change != 0] = label + 1
        return drawn

    def fingerprint(self) -> str:
        """A hash of the generator version and the parameters, which determine every pixel."""
        text = (f"synthetic_defects:v{GENERATOR_VERSION}:{self.count}:{self.size}:{','.join(self.classes)}:"
                f"{self.defect_free!r}:{self.seed}:{self.split}")
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (top, left, bottom, right) rectangles."""
    rows, cols = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(rows, 0) * max(cols, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0
