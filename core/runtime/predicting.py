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

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from defectlab.data.datasets import UnreadableImageError, read_image
from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.progress import progress
from defectlab.plugin_system.version import VERSION
from defectlab.runtime.detections import classwise_nms
from defectlab.runtime.results import decision, image_result
from defectlab.runtime.resuming import check_settings, remaining, settings_path, write_settings
from defectlab.runtime.table import Written, appending, write_detection_json, written
from defectlab.runtime.writing import (
    check_outputs,
    detection_rows,
    draw_detections,
    header,
    image_inputs,
    picture_folder,
    result_row,
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
    """What ``predict`` wrote: the CSV, how many images it predicted and how many it could not read, the
    folder of masks, maps or drawn boxes, and how many of the images an earlier, resumed prediction wrote."""

    csv: Path
    predicted: int
    failed: int
    masks: Path | None = None
    resumed: int = 0


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
                  overlap: float = 0.2, resume: bool = False, model: dict[str, Any] | None = None) -> Predictions:
    """Predict every image in ``inputs`` with ``predictor`` and write ``out`` (CSV) and the pictures beside it;
    unreadable files get a row with the error. ``threshold`` is the task's (see ``defectlab.predict``).

    Batch by batch: each batch's rows are appended to the CSV and flushed before the next is read, so
    memory holds one batch of images whatever the number of files. ``resume`` continues a prediction
    into ``out`` that was stopped (:mod:`defectlab.runtime.resuming`); ``model`` identifies the
    predictor there (:func:`~defectlab.runtime.resuming.model_identity`).
    """
    checked_settings(predictor.task, threshold, slice_size, overlap)
    if resume and overwrite:
        raise DataError("--resume continues the earlier prediction and --overwrite replaces it; pass one of them")
    out = Path(out)
    task, files = predictor.task, image_inputs(inputs)
    pictures = picture_folder(task, out)
    columns = header(task, predictor.classes)
    settings = {"defectlab": VERSION, "task": task, "columns": columns, **(model or {"model": None}),
                "threshold": threshold, "slice_size": slice_size, "overlap": overlap, "inputs": list(map(str, inputs))}
    done = Written(Counter())
    if resume and out.exists():
        check_settings(out, settings)
        done = written(out, columns, task)
    else:
        check_outputs(out, pictures, overwrite, also=[out.with_suffix(".json"), settings_path(out)])
        write_settings(out, settings)
    todo = remaining(files, done)
    predicted, failed = done.predicted, done.failed
    with appending(out, columns, fresh=not done.paths) as append:
        for group in progress(_batches(todo, batch_size), "predict"):
            rows, unread = predict_group(predictor, group, threshold, pictures, batch_size, slice_size, overlap)
            append(rows)
            predicted, failed = predicted + len(group) - unread, failed + unread
    if task == "detect":
        write_detection_json(out, out.with_suffix(".json"), columns)
    if predicted == 0:
        raise DataError(f"none of the {failed} images could be predicted; {out} lists why")
    return Predictions(out, predicted, failed, pictures, resumed=done.predicted + done.failed)


def predict_group(predictor: Predictor, group: Sequence[tuple[Path, str]], threshold: float | None,
                  pictures: Path | None, batch_size: int, slice_size: int | None = None, overlap: float = 0.2
                  ) -> tuple[list[dict[str, Any]], int]:
    """The CSV rows of a group of files (path, unique name), in their order, with their masks, maps or drawn
    boxes written into ``pictures``; and how many of them could not be read."""
    read = [_read(path) for path, _ in group]
    images = [image for image, _ in read]
    named = [None if pictures is None else (pictures / name).with_suffix(".png") for _, name in group]
    rows: list[dict[str, Any]] = []
    if predictor.task == "detect":
        found = detect_images(predictor, images, batch_size, threshold, slice_size, overlap)
        for (path, _), (image, error), boxes, target in zip(group, read, found, named):
            rows += detection_rows(path, boxes, error)
            if image is not None:
                draw_detections(image, boxes, target)
    else:
        readable = [image for image in images if image is not None]
        outputs = iter(predictor.outputs(readable) if readable else [])
        for (path, _), (image, error), target in zip(group, read, named):
            if image is None:
                rows.append({"path": str(path), "error": error})
                continue
            result = image_result(predictor.task, next(outputs), image.shape[:2], threshold, predictor.classes)
            rows.append(result_row(predictor.task, path, result, target, threshold))
    return rows, sum(image is None for image in images)


def _read(path: Path) -> tuple[Any, str]:
    """The decoded image and no error, or None and why it cannot be read."""
    try:
        return read_image(path), ""
    except UnreadableImageError as exc:
        return None, str(exc)


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


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
