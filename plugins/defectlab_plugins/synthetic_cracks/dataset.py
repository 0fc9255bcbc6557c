"""Synthetic electroluminescence images of PV cells with thin, faint cracks and their masks.

A stand-in for the tiny hidden cracks of Yi et al. 2022 (defect:background pixels down to 1:2228)
that needs no download: images are drawn on the fly, each from (seed, index) alone, so a data
set of any size costs nothing until it is read and is the same on every machine.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from defectlab import DataError, DefectDataset, Range, Sample
from defectlab_plugins.synthetic_cracks.drawing import cell_background, crack_pixels

if TYPE_CHECKING:
    import numpy as np

GENERATOR_VERSION = 1  # part of the fingerprint: bump when the same parameters draw other pixels
SPLIT_CYCLE = ("train",) * 14 + ("val",) * 3 + ("test",) * 3  # index % 20 -> split: 70/15/15
GOLDEN = (math.sqrt(5) - 1) / 2  # steps of low-discrepancy sequences: shares hold over any index range
SILVER = math.sqrt(2) - 1
MIN_DEFECT_PIXELS = 5
MAX_DEFECT_RATIO = 1 / 20
NOISE = 0.015  # sensor noise, standard deviation as a fraction of the full range


class SyntheticCracks(DefectDataset):
    """Synthetic EL images of mono/poly PV cells with thin low-contrast cracks, drawn on the fly by seed.

    Image ``i`` depends on (``seed``, ``i``) only: the same parameters give the same pixels
    everywhere, and a larger ``count`` adds images without changing the first ones.
    Backgrounds are a uniform mono-crystalline cell (slight vignetting and gradient, faint dark
    busbar lines) or a poly-crystalline one (Voronoi grains of varied brightness with slightly
    darker boundaries, busbars); sensor noise is added to both.

    A crack is a smooth random walk (occasional kinks; a branch starts from the crack when it
    reaches the border) drawn 1 pixel wide, or 2 pixels wide when a 1-pixel crack would be
    longer than twice the image side. It has exactly ``round(size**2 * r / (1 + r))`` pixels
    for ``defect_ratio`` r, so every cracked image's defect:background ratio is r to the
    nearest pixel (within 2 % for 1/500 at 128x128, 6 % for 1/2000; fewer than 5 pixels is
    refused). Crack pixels are the background darkened by ``contrast`` (x (1 - contrast))
    before the noise, and the mask (0 background, 1 defect) marks exactly them.

    Whether image ``i`` has a crack, and its texture in 'mixed', follow low-discrepancy
    sequences of ``i``, so ``defect_fraction`` (and half mono, half poly) hold to within a
    couple of images over any range of indices. Image ``i`` belongs to split train, val or test
    by ``i % 20`` (14/3/3: 70/15/15). ``class_counts()`` counts images: [images without a crack,
    images with one]; ``pixel_counts()`` counts pixels. ``export(folder)`` writes the
    image/mask folder that the ``image_mask`` reader opens.

    Args:
        count: Number of images of the whole set, before ``split`` selects its share.
        size: Side of the square images, in pixels.
        texture: Cell background: 'mono', 'poly', or 'mixed' (half of each).
        defect_ratio: Defect:background pixel ratio of each cracked image (1/500 = 0.002;
            1/2000 and below need larger images).
        contrast: How much darker crack pixels are than the background around them (relative).
        defect_fraction: Share of images with a crack; the others are all background.
        seed: Seed of everything drawn (>= 0).
        split: Which images: 'train', 'val', 'test' (index % 20 < 14, < 17, else) or 'all'.
    """

    name = "synthetic_cracks"
    task = "segment"

    def __init__(self, count: Annotated[int, Range(1)] = 64, size: Annotated[int, Range(16)] = 128,
                 texture: Literal["mono", "poly", "mixed"] = "mixed",
                 defect_ratio: Annotated[float, Range(0, MAX_DEFECT_RATIO, low_open=True)] = 1 / 500,
                 contrast: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.15,
                 defect_fraction: Annotated[float, Range(0, 1)] = 0.8, seed: Annotated[int, Range(0)] = 0,
                 split: Literal["train", "val", "test", "all"] = "all") -> None:
        super().__init__()
        if texture not in ("mono", "poly", "mixed"):
            raise ValueError(f"texture must be 'mono', 'poly' or 'mixed', got {texture!r}")
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"split must be train, val, test or all, got {split!r}")
        self.count, self.size, self.texture, self.defect_ratio = count, size, texture, defect_ratio
        self.contrast, self.defect_fraction, self.seed, self.split = contrast, defect_fraction, seed, split
        self.defect_pixels = round(size * size * defect_ratio / (1 + defect_ratio))
        if self.defect_pixels < MIN_DEFECT_PIXELS:
            raise ValueError(f"{size}x{size} images at defect_ratio {defect_ratio:.3g} would have "
                             f"{self.defect_pixels} crack pixels; use size >= "
                             f"{math.ceil(math.sqrt(MIN_DEFECT_PIXELS * (1 + defect_ratio) / defect_ratio))} "
                             f"for this ratio")
        self.classes = ["background", "defect"]
        self.root = f"synthetic_cracks(seed={seed}, size={size}, texture={texture})"
        starts = random.Random(seed)
        crack_start, texture_start = starts.random(), starts.random()
        for index in range(count):
            part = SPLIT_CYCLE[index % len(SPLIT_CYCLE)]
            if split not in ("all", part):
                continue
            crack = (crack_start + index * GOLDEN) % 1.0 < defect_fraction
            kind = texture if texture != "mixed" else ("mono" if (texture_start + index * SILVER) % 1.0 < 0.5
                                                       else "poly")
            self.samples.append(Sample(key=f"{index:05d}", split=part,
                                       meta={"index": index, "crack": crack, "texture": kind}))

    # --- pixels ----------------------------------------------------------------------------------

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        import numpy as np

        return np.random.default_rng([self.seed, index, stream])

    def load_mask(self, index: int) -> np.ndarray:
        """The (size, size) uint8 mask of sample ``index``: 1 on crack pixels, 0 elsewhere."""
        import numpy as np

        meta = self.samples[index].meta
        mask = np.zeros((self.size, self.size), dtype=np.uint8)
        if meta["crack"]:
            ys, xs = crack_pixels(self._rng(meta["index"], 1), self.size, self.defect_pixels)
            mask[ys, xs] = 1
        return mask

    def load_image(self, index: int) -> np.ndarray:
        """The (size, size) uint8 grey image of sample ``index``."""
        import numpy as np

        meta = self.samples[index].meta
        rng = self._rng(meta["index"], 2)
        values = cell_background(rng, self.size, meta["texture"])
        values[self.load_mask(index).astype(bool)] *= 1.0 - self.contrast
        values += rng.normal(0.0, NOISE, values.shape)
        return np.clip(values * 255.0, 0, 255).round().astype(np.uint8)

    # --- counts and identity ---------------------------------------------------------------------

    def class_counts(self) -> list[int]:
        """Images per class: [images without a crack, images with a crack] (every image has background)."""
        cracked = sum(bool(s.meta["crack"]) for s in self.samples)
        return [len(self) - cracked, cracked]

    def pixel_counts(self) -> list[int]:
        """Pixels per class over the whole set: [background, defect] (known without drawing any image)."""
        defect = self.class_counts()[1] * self.defect_pixels
        return [len(self) * self.size * self.size - defect, defect]

    def fingerprint(self) -> str:
        """A hash of the generator version and the parameters, which determine every pixel."""
        text = (f"synthetic_cracks:v{GENERATOR_VERSION}:{self.count}:{self.size}:{self.texture}:"
                f"{self.defect_ratio!r}:{self.contrast!r}:{self.defect_fraction!r}:{self.seed}:{self.split}")
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def export(self, folder: str | Path) -> Path:
        """Write FOLDER/images/<split>/<key>.png and FOLDER/masks/<split>/<key>.png (0/255), for ``image_mask``.

        The split subfolders keep each image's split when the folder is read back. Refuses to
        write into an images/ or masks/ folder that already holds files, so sets never mix.
        """
        from PIL import Image

        root = Path(folder).expanduser().absolute()
        for name in ("images", "masks"):
            if (root / name).is_dir() and any((root / name).iterdir()):
                raise DataError(f"'{root / name}' is not empty; export into a new folder")
        for index, sample in enumerate(self.samples):
            for name, array in (("images", self.load_image(index)), ("masks", self.load_mask(index) * 255)):
                path = root / name / str(sample.split) / f"{sample.key}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array, mode="L").save(path)
        return root
