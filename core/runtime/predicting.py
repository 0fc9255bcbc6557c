"""Predicting image files with any predictor (a run's model or an exported file) and writing what it found.

A predictor has ``task``, ``classes``, ``image_size`` (height, width of the network's input) and
``outputs(images)``: for a list of uint8 images (H, W) or (H, W, C) of any sizes, one dict of
outputs per image in the network's frame (:mod:`defectlab.runtime.results`). Everything else,
reading files, slicing, decisions, the CSV and the pictures, is the same for every predictor.

Small defects on large images vanish when the image is shrunk to the network's input, so
``slice_size`` cuts each image into overlapping tiles (:func:`defectlab.data.tiling.tile`),
predicts each tile at the network's size, moves the boxes back to image pixels and merges
them by class-wise non-maximum suppression (IoU above ``MERGE_IOU``: the same defect seen by
two tiles).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from defectlab.data.datasets import UnreadableImageError, read_image
from defectlab.plugin_system.errors import DataError
from defectlab.runtime.detections import classwise_nms
from defectlab.runtime.results import decision, image_result
from defectlab.runtime.writing import (
    check_outputs,
    header,
    image_inputs,
    picture_folder,
    result_row,
    write_csv,
    write_detections,
)

#: IoU above which two boxes of one class from overlapping slices are taken for the same defect.
MERGE_IOU = 0.5


class Predictor(Protocol):
    """What :func:`predict_files` needs of a model (see the module's docstring)."""

    task: str
    classes: list[str]
    image_size: tuple[int, int]

    def outputs(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]: ...


@dataclass(frozen=True)
class Predictions:
    """What ``predict`` wrote: the CSV, how many images it predicted and how many it could not read, and the
    folder of masks, maps or drawn boxes."""

    csv: Path
    predicted: int
    failed: int
    masks: Path | None = None


@dataclass
class Tile:
    """One network input cut from an image: which image, where it starts, and its scale back to pixels."""

    image: int
    x: int
    y: int
    scale_x: float
    scale_y: float


def checked_settings(task: str, threshold: float | None, slice_size: int | None, overlap: float) -> None:
    """A DataError for settings the task cannot take."""
    if slice_size is not None and task != "detect":
        raise DataError(f"slicing predicts boxes; this model's task is '{task}' (drop --slice)")
    if threshold is not None and task != "anomaly" and not 0 < threshold < 1:
        raise DataError(f"the threshold of a {task} model is a probability, 0 < threshold < 1; got {threshold}")
    if not 0 <= overlap < 1:
        raise DataError(f"overlap is a share of a slice, 0 <= overlap < 1; got {overlap}")


def predict_files(predictor: Predictor, inputs: Sequence[str | Path], out: str | Path, threshold: float | None,
                  batch_size: int = 32, overwrite: bool = False, slice_size: int | None = None,
                  overlap: float = 0.2) -> Predictions:
    """Predict every image in ``inputs`` with ``predictor`` and write ``out`` (CSV) and the pictures beside it;
    unreadable files get a row with the error. ``threshold`` is the task's (see ``defectlab.predict``)."""
    checked_settings(predictor.task, threshold, slice_size, overlap)
    out = Path(out)
    files = image_inputs(inputs)
    pictures = picture_folder(predictor.task, out)
    check_outputs(out, pictures, overwrite, also=[out.with_suffix(".json")] if predictor.task == "detect" else [])
    if predictor.task == "detect":
        results, images = detect_files(predictor, files, batch_size, threshold, slice_size, overlap)
        write_detections(results, images, out, pictures)
        failed = sum(1 for result in results if result["error"])
        predicted = len(results) - failed
    else:
        rows: list[dict[str, Any]] = []
        for group in _batches(files, batch_size):
            images, kept = [], []
            for path, name in group:
                try:
                    images.append(read_image(path))
                    kept.append((path, name))
                except UnreadableImageError as exc:
                    rows.append({"path": str(path), "error": str(exc)})
            if not images:
                continue
            for (path, name), image, output in zip(kept, images, predictor.outputs(images)):
                result = image_result(predictor.task, output, image.shape[:2], threshold, predictor.classes)
                target = None if pictures is None else (pictures / name).with_suffix(".png")
                rows.append(result_row(predictor.task, path, result, target, threshold))
        write_csv(out, header(predictor.task, predictor.classes), rows)
        failed = sum(1 for row in rows if row["error"])
        predicted = len(rows) - failed
    if predicted == 0:
        raise DataError(f"none of the {failed} images could be predicted; {out} lists why")
    return Predictions(out, predicted, failed, pictures)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def tiles_of(image: Any, index: int, slice_size: int | None, overlap: float, size: tuple[int, int]
             ) -> tuple[list[Any], list[Tile]]:
    """The pieces of ``image`` the network sees (the whole image, or slices) and where each came from."""
    from defectlab.data.tiling import tile

    height, width = image.shape[:2]
    if slice_size is None:
        return [image], [Tile(index, 0, 0, width / size[1], height / size[0])]
    shape = (min(slice_size, height), min(slice_size, width))
    pieces, offsets = tile(image, shape, overlap=int(round(overlap * min(shape))))
    return list(pieces), [Tile(index, x, y, shape[1] / size[1], shape[0] / size[0]) for y, x in offsets]


def detect_images(predictor: Predictor, images: Sequence[Any], batch_size: int, threshold: float,
                  slice_size: int | None = None, overlap: float = 0.2) -> list[list[tuple[Any, ...]]]:
    """Per image (None: skipped): its boxes [(class, score, x1, y1, x2, y2)] in its own pixels, best first."""
    pieces: list[tuple[Any, Tile]] = []
    for index, image in enumerate(images):
        if image is not None:
            parts, tiles = tiles_of(image, index, slice_size, overlap, predictor.image_size)
            pieces += list(zip(parts, tiles))
    found: dict[int, list[Any]] = {}
    for group in _batches(pieces, batch_size):
        for (_, where), output in zip(group, predictor.outputs([piece for piece, _ in group])):
            keep = decision("detect", output, threshold)
            scale = np.array([where.scale_x, where.scale_y] * 2, dtype=np.float32)
            shift = np.array([where.x, where.y] * 2, dtype=np.float32)
            found.setdefault(where.image, []).append((output["boxes"][keep] * scale + shift, output["scores"][keep],
                                                      output["labels"][keep]))
    detected: list[list[tuple[Any, ...]]] = [[] for _ in images]
    for index, parts in found.items():
        boxes, scores, labels = (np.concatenate(column) for column in zip(*parts))
        kept = (classwise_nms(boxes, scores, labels, MERGE_IOU) if len(parts) > 1
                else np.argsort(-scores, kind="stable"))
        detected[index] = [(predictor.classes[int(labels[i])], float(scores[i]), *boxes[i].tolist()) for i in kept]
    return detected


def detect_files(predictor: Predictor, files: list[tuple[Path, str]], batch_size: int, threshold: float,
                 slice_size: int | None, overlap: float) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per file: {path, name, boxes [(class, score, x1, y1, x2, y2)], error}, and the decoded images."""
    results: list[dict[str, Any]] = []
    images: list[Any] = []
    for path, name in files:
        result = {"path": str(path), "name": name, "boxes": [], "error": ""}
        try:
            images.append(read_image(path))
        except UnreadableImageError as exc:
            result["error"] = str(exc)
            images.append(None)
        results.append(result)
    for result, boxes in zip(results, detect_images(predictor, images, batch_size, threshold, slice_size, overlap)):
        result["boxes"] = boxes
    return results, images
