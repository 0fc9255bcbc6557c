"""ELPV: electroluminescence images of solar cells rated by defect probability, from the elpv-dataset package."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Literal

from defectlab import DataError, DefectDataset, Sample


ELPV_CLASSES = ["0", "1/3", "2/3", "1"]
ELPV_BINARY_CLASSES = ["functional", "defective"]


@functools.cache
def elpv_records() -> tuple[tuple[str, float, str], ...]:
    """(image file, defect probability, cell type) of every ELPV cell, read once per process.

    These are the rows of the labels.csv that ``elpv_dataset.utils.load_dataset`` reads; the
    image files beside it are decoded one at a time by ``ELPV.load_image``.
    """
    try:
        from elpv_dataset import utils
    except ImportError as exc:
        raise DataError("the ELPV data come with the elpv-dataset package: pip install elpv-dataset") from exc
    labels = Path(utils.__file__).parent / "data" / "labels.csv"
    if not labels.is_file():
        raise DataError(f"the elpv-dataset package has no '{labels}'; reinstall it (pip install elpv-dataset)")
    records = []
    for line in labels.read_text(encoding="utf-8").splitlines():
        if line.strip():
            path, probability, cell_type = line.split()
            records.append((str(labels.parent / path), float(probability), cell_type))
    return tuple(records)


class ELPV(DefectDataset):
    """ELPV: 2,624 electroluminescence images of solar cells (300x300 grey) rated by defect probability.

    From the ``elpv-dataset`` package (Buerhop-Lutz et al. 2018; Deitsch et al. 2019), licensed
    CC BY-NC-SA 4.0: non-commercial use with attribution, and what is derived from it shared
    alike. Experts rated each cell defective with probability 0, 1/3, 2/3 or 1; 1,074 cells are
    monocrystalline and 1,550 polycrystalline. Samples carry meta ``cell_type`` and
    ``probability``; images are decoded one at a time from the package's files (all of them as
    pixels would take 236 MB).

    Args:
        cell_type: Which cells: 'mono', 'poly' or 'all'.
        binary: Two classes, 'functional' and 'defective' (defect probability >= 0.5), instead of
            the four probabilities '0', '1/3', '2/3' and '1'.
    """

    name = "elpv"
    task = "classify"

    def __init__(self, cell_type: Literal["mono", "poly", "all"] = "all", binary: bool = False) -> None:
        super().__init__()
        if cell_type not in ("mono", "poly", "all"):
            raise ValueError(f"cell_type must be 'mono', 'poly' or 'all', got {cell_type!r}")
        self.cell_type, self.binary = cell_type, binary
        self.classes = list(ELPV_BINARY_CLASSES if binary else ELPV_CLASSES)
        records = elpv_records()
        self.root = str(Path(records[0][0]).parent) if records else ""
        for path, probability, kind in records:
            if cell_type not in ("all", kind):
                continue
            if abs(probability * 3 - round(probability * 3)) > 1e-6:
                raise DataError(f"ELPV cell {Path(path).name} has probability {probability}, not 0, 1/3, 2/3 or 1")
            label = int(probability >= 0.5) if binary else round(probability * 3)
            self.samples.append(Sample(key=Path(path).name, path=path, label=label,
                                       meta={"cell_type": kind, "probability": probability}))

    def fingerprint(self) -> str:
        """The package version and the selection: the packaged files do not change under one version."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            package = version("elpv-dataset")
        except PackageNotFoundError:
            package = "unknown"
        text = f"elpv:{package}:{self.cell_type}:{self.binary}:{len(self)}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]
