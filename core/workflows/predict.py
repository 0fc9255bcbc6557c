"""Using a trained run: rebuild its model from a checkpoint and predict image files."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.data.datasets import (
    IMAGE_SUFFIXES,
    UnreadableImageError,
    image_files,
    read_image,
)
from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import atomic_write
from defectlab.training.checkpoints import checkpoint_path, load_checkpoint


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what it needs to preprocess images and name its outputs."""

    model: Any
    task: str
    classes: list[str]
    transform: dict[str, Any]
    checkpoint: Path


def load_trained(run_or_file: str | Path, which: str = "best") -> TrainedModel:
    """The model of a run (or checkpoint) with its trained weights, in eval mode."""
    from defectlab.plugin_system.components import create

    file = checkpoint_path(run_or_file, which)
    state = load_checkpoint(file)
    if "model_spec" not in state:
        raise DataError(f"'{file}' has no model description; it was not written by `defectlab train`")
    if state.get("task") == "pretrain":
        raise DataError(f"'{file}' is a pretraining run's: its encoder has no trained classifier to predict or "
                        f"evaluate with; train one on it with `defectlab train CONFIG --init-from "
                        f"{Path(run_or_file)}`")
    model = create("backbone", state["model_spec"])
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedModel(model, state["task"], state["classes"], state["transform"], file)


def image_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """The image files named by ``inputs`` (files as given, folders searched recursively), each with a
    name unique among them for its outputs.

    A file in a folder input is named by its path below that folder (``crack/000.png`` and
    ``good/000.png`` stay apart), prefixed by the folder's name when several inputs are given; a
    name taken twice all the same gets ``-2``, ``-3``, ...
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


def _batches(files: list[tuple[Path, str]], size: int) -> Iterator[list[tuple[Path, str]]]:
    for start in range(0, len(files), size):
        yield files[start:start + size]


@dataclass(frozen=True)
class Predictions:
    """What :func:`predict` wrote: the CSV, how many images it predicted and how many it could not read."""

    csv: Path
    predicted: int
    failed: int
    masks: Path | None = None


def predict(run_or_file: str | Path, inputs: Sequence[str | Path], out: str | Path, batch_size: int = 32,
            which: str = "best", threshold: float | None = None, overwrite: bool = False,
            slice_size: int | None = None, overlap: float = 0.2) -> Predictions:
    """Predict every image in ``inputs`` and write ``out`` (CSV); unreadable files get a row with the error.

    Classification rows: path, predicted class, confidence, one probability per class.
    Segmentation rows: path, defect pixels, defect fraction and the mask PNG written beside the
    CSV (``<out stem>_masks/``, under each image's unique name) at the image's own size; a
    pixel is defect above ``threshold`` (default 0.5). Detection rows: one per box (path, boxes
    in the image, class, score, x1, y1, x2, y2 in the image's pixels; an image without boxes
    has one row with 0), the same as JSON (``<out stem>.json``) and the images with their boxes
    drawn (``<out stem>_boxes/``); boxes scored below ``threshold`` (default: the run's best-F1
    confidence, else 0.25) are left out; ``slice_size`` predicts each image in square slices of
    that many pixels overlapping by ``overlap`` of a slice, and merges their boxes. An existing
    output is replaced only with ``overwrite``, and nothing is written into a run's folder. A
    DataError when no image could be predicted (the CSV lists why). Anomaly rows: path, score,
    decision (defect when the score reaches ``threshold``; default: the run's best-F1 threshold)
    and the anomaly map PNG (``<out stem>_maps/``, at the image's size; grey level 255 * map /
    (2 * threshold), capped at 255: mid-grey is the threshold).
    """
    import numpy as np
    import torch
    from defectlab.data.transforms import ImageTransform

    trained = load_trained(run_or_file, which)
    if slice_size is not None and trained.task != "detect":
        raise DataError(f"slicing predicts boxes; this run's task is '{trained.task}' (drop --slice)")
    if threshold is not None and trained.task != "anomaly" and not 0 < threshold < 1:
        raise DataError(f"the threshold of a {trained.task} run is a probability, 0 < threshold < 1; got {threshold}")
    if not 0 <= overlap < 1:
        raise DataError(f"overlap is a share of a slice, 0 <= overlap < 1; got {overlap}")
    out = Path(out)
    files = image_inputs(inputs)
    if trained.task == "detect":  # boxes: CSV, JSON and drawings, with their own preprocessing
        drawings = out.with_name(out.stem + "_boxes")
        _check_outputs(out, drawings, overwrite, also=[out.with_suffix(".json")])
        return _predict_boxes(trained, files, out, drawings, batch_size, threshold, slice_size, overlap)
    transform = ImageTransform(task="segment" if trained.task == "segment" else "classify", **trained.transform)
    segment, anomaly = trained.task == "segment", trained.task == "anomaly"
    masks = out.with_name(out.stem + ("_masks" if segment else "_maps")) if segment or anomaly else None
    _check_outputs(out, masks, overwrite)
    if anomaly:
        from defectlab.training.contracts import checked_anomaly
        from defectlab.workflows.predict_anomaly import anomaly_rows, run_threshold

        threshold = run_threshold(trained.checkpoint) if threshold is None else threshold
    threshold = 0.5 if threshold is None else threshold
    header = (["path", "defect_pixels", "defect_fraction", "mask"] if segment else
              ["path", "score", "decision", "map"] if anomaly else
              ["path", "predicted", "confidence", *[f"p_{c}" for c in trained.classes]]) + ["error"]
    rows: list[dict[str, Any]] = []
    for group in _batches(files, batch_size):
        images, sizes, kept = [], [], []
        for path, name in group:
            try:
                image = read_image(path)
            except UnreadableImageError as exc:
                rows.append({"path": str(path), "error": str(exc)})
                continue
            sizes.append(image.shape[:2])
            images.append(transform(transform.resize(image), train=False))
            kept.append((path, name))
        if not images:
            continue
        batch = torch.stack(images)
        with torch.no_grad():
            output = trained.model(batch)
        if anomaly:
            rows += anomaly_rows(checked_anomaly(trained.model, output, batch), kept, sizes, masks, threshold)
            continue
        logits = output.float()
        if masks is not None:
            probability = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)
            for (path, name), size, prob in zip(kept, sizes, probability):
                mask = (prob > threshold) if prob.ndim == 2 else prob.argmax(0).bool()
                mask_image = _resized_mask(mask.numpy().astype(np.uint8), size)
                target = (masks / name).with_suffix(".png")
                _save_png(mask_image * (255 if mask_image.max() <= 1 else 1), target)
                defect = int((mask_image > 0).sum())
                rows.append({"path": str(path), "defect_pixels": defect, "defect_fraction": defect / mask_image.size,
                             "mask": str(target), "error": ""})
        else:
            probabilities = torch.softmax(logits, 1)
            for (path, _), row in zip(kept, probabilities.tolist()):
                best = int(np.argmax(row))
                rows.append({"path": str(path), "predicted": trained.classes[best], "confidence": row[best],
                             **{f"p_{c}": p for c, p in zip(trained.classes, row)}, "error": ""})
    with atomic_write(out) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(1 for row in rows if row["error"])
    result = Predictions(out, len(rows) - failed, failed, masks)
    if result.predicted == 0:
        raise DataError(f"none of the {failed} images could be predicted; {out} lists why")
    return result


def _predict_boxes(trained: TrainedModel, files: list[tuple[Path, str]], out: Path, drawings: Path, batch_size: int,
                   threshold: float | None, slice_size: int | None, overlap: float) -> Predictions:
    from defectlab.workflows.predict_boxes import detect_images, run_confidence, write_detections

    confidence = run_confidence(trained.checkpoint) if threshold is None else threshold
    results, images = detect_images(trained, files, batch_size, confidence, slice_size, overlap)
    write_detections(results, images, out, drawings)
    failed = sum(1 for result in results if result["error"])
    if failed == len(results):
        raise DataError(f"none of the {failed} images could be predicted; {out} lists why")
    return Predictions(out, len(results) - failed, failed, drawings)


def _check_outputs(out: Path, masks: Path | None, overwrite: bool, also: Sequence[Path] = ()) -> None:
    """Refuse to write into a run's folder, or over an earlier CSV or mask folder without ``overwrite``."""
    from defectlab.runs.run import OUTPUT_MARKERS

    folder = out.parent
    if any((folder / marker).exists() for marker in ("run.json", "config.json")):
        raise DataError(f"--out {out} lies in the run folder '{folder}'; predictions go outside runs, e.g. "
                        f"--out predictions/{out.name}")
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give the CSV file to write")
    existing = [p for p in (out, *also, masks) if p is not None and p.exists() and (p.is_file() or any(p.iterdir()))]
    if existing and not overwrite:
        raise DataError(f"{' and '.join(map(str, existing))} already exist(s) from an earlier prediction; choose "
                        f"another --out, or pass --overwrite to replace them")
    if masks is not None and masks.is_dir() and overwrite:
        if any((masks / marker).exists() for marker in OUTPUT_MARKERS):
            raise DataError(f"'{masks}' holds a run, not masks; choose another --out")
        shutil.rmtree(masks)


def _resized_mask(mask: Any, size: tuple[int, int]) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


def _save_png(array: Any, path: Path) -> None:
    from PIL import Image

    with atomic_write(path) as temporary:
        Image.fromarray(array.astype("uint8")).save(temporary, format="PNG")
