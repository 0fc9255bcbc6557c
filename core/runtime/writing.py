"""What ``predict`` writes, whichever model predicted: the CSV's columns and rows (the file: :mod:`defectlab.runtime.
table`), masks, maps and drawn boxes."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectlab.data.datasets import IMAGE_SUFFIXES, image_files
from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import atomic_write

DETECTION_HEADER = ["path", "boxes", "class", "score", "x1", "y1", "x2", "y2", "error"]
#: Significant digits of the probabilities, fractions and scores in the CSV (float32 holds about 7).
DIGITS = 6


def header(task: str, classes: Sequence[str]) -> list[str]:
    """The CSV columns of a task's predictions."""
    if task == "detect":
        return DETECTION_HEADER
    return {"segment": ["path", "defect_pixels", "defect_fraction", "mask"],
            "anomaly": ["path", "score", "decision", "map"]}.get(
        task, ["path", "predicted", "confidence", *[f"p_{c}" for c in classes]]) + ["error"]


def picture_folder(task: str, out: Path) -> Path | None:
    """Where the pictures beside the CSV go: masks, anomaly maps or drawn boxes (none for classification)."""
    suffix = {"segment": "_masks", "anomaly": "_maps", "detect": "_boxes"}.get(task)
    return None if suffix is None else out.with_name(out.stem + suffix)


def image_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """The image files named by ``inputs`` (files as given, folders searched recursively), each with a
    name unique among them for its outputs.

    A file in a folder input is named by its path below that folder (``crack/000.png`` and
    ``good/000.png`` stay apart), prefixed by the folder's name when several inputs are given; a
    name taken twice all the same gets ``-2``, ``-3``, ...

    The list is whole and sorted (natural order within a folder): the CSV comes out in the same
    order however often a prediction is resumed, and the unique names need every name. It holds
    paths, not images: about 0.4 KB a file, 40 MB for 100,000.
    """
    found: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        prefix = f"{path.name}/" if len(inputs) > 1 else ""
        if path.is_dir():
            found += [(file, prefix + file.relative_to(path).as_posix()) for file in image_files(path)]
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise DataError(f"'{path}' is neither an image file nor a folder")
    if not found:
        raise DataError(f"no image files in {', '.join(map(str, inputs))} (suffixes {', '.join(IMAGE_SUFFIXES)})")
    taken: set[str] = set()
    named = []
    for path, name in found:
        stem, suffix, count = str(Path(name).with_suffix("")), Path(name).suffix, 1
        while name in taken:
            count += 1
            name = f"{stem}-{count}{suffix}"
        taken.add(name)
        named.append((path, name))
    return named


def check_outputs(out: Path, pictures: Path | None, overwrite: bool, also: Sequence[Path] = ()) -> None:
    """Refuse to write into a run's folder, or over an earlier CSV or picture folder without ``overwrite``
    (which removes the pictures; the CSV is started anew by its writer)."""
    from defectlab.runs.run import OUTPUT_MARKERS

    folder = out.parent
    if any((folder / marker).exists() for marker in ("run.json", "config.json")):
        raise DataError(f"--out {out} lies in the run folder '{folder}'; predictions go outside runs, e.g. "
                        f"--out predictions/{out.name}")
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give the CSV file to write")
    existing = [p for p in (out, *also, pictures) if p is not None and p.exists() and (p.is_file() or any(p.iterdir()))]
    if existing and not overwrite:
        raise DataError(f"{' and '.join(map(str, existing))} already exist(s) from an earlier prediction; choose "
                        f"another --out, pass --resume to continue it, or --overwrite to replace it")
    if pictures is not None and pictures.is_dir() and overwrite:
        if any((pictures / marker).exists() for marker in OUTPUT_MARKERS):
            raise DataError(f"'{pictures}' holds a run, not predictions; choose another --out")
        shutil.rmtree(pictures)


def short(value: float) -> str:
    """``value`` with DIGITS significant digits, as the CSV writes it."""
    return f"{value:.{DIGITS}g}"


def result_row(task: str, path: Path, result: dict[str, Any], picture: Path | None, threshold: float | None
               ) -> dict[str, Any]:
    """The CSV row of one classified, segmented or anomaly-scored image, writing its mask or map to ``picture``."""
    if task == "classify":
        return {"path": str(path), "predicted": result["label"], "confidence": short(result["confidence"]),
                **{f"p_{c}": short(p) for c, p in result["probabilities"].items()}, "error": ""}
    if task == "segment":
        mask = result["mask"]
        save_png(mask * 255, picture)
        defect = int((mask > 0).sum())
        return {"path": str(path), "defect_pixels": defect, "defect_fraction": short(defect / mask.size),
                "mask": str(picture), "error": ""}
    save_map(result["map"], threshold, picture)
    return {"path": str(path), "score": short(result["score"]), "decision": "defect" if result["defect"] else "good",
            "map": str(picture), "error": ""}


def detection_rows(path: Path, boxes: Sequence[tuple[Any, ...]], error: str) -> list[dict[str, Any]]:
    """The CSV rows of one image's boxes: a row per box, or one row with 0 boxes (or the error)."""
    if error or not boxes:
        return [{"path": str(path), "boxes": "" if error else 0, "error": error}]
    return [{"path": str(path), "boxes": len(boxes), "class": name, "score": round(score, 5),
             **{k: round(v, 2) for k, v in zip(("x1", "y1", "x2", "y2"), box)}, "error": ""}
            for name, score, *box in boxes]


def draw_detections(image: Any, boxes: Sequence[tuple[Any, ...]], target: Path) -> None:
    """``image`` with its boxes and their class and score drawn, as a PNG at ``target``."""
    from defectlab.data.drawing import draw_boxes

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as temporary:
        draw_boxes(image, [(box, f"{n} {s:.2f}") for n, s, *box in boxes]).save(temporary, "PNG")


def save_map(anomaly_map: Any, threshold: float, path: Path) -> None:
    """An anomaly map (at the image's size) as an 8-bit PNG: 255 * map / (2 * threshold), capped (128: the
    threshold)."""
    if threshold <= 0:
        raise DataError(f"the threshold must be above 0 to draw anomaly maps, got {threshold}")
    save_png(np.clip(np.asarray(anomaly_map) / (2 * threshold) * 255, 0, 255), path)


def save_png(array: Any, path: Path) -> None:
    """A uint8 picture of ``array`` at ``path`` (folders made), written whole or not at all."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        Image.fromarray(np.asarray(array).astype("uint8")).save(temporary, format="PNG")
