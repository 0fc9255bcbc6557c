"""Predicting boxes with a trained detector: CSV, JSON and drawn images, whole or in overlapping slices.

Small defects on large images vanish when the image is shrunk to the network's input, so
``slice_size`` cuts each image into overlapping tiles (:func:`defectlab.data.tiling.tile`),
predicts each tile at the network's size, moves the boxes back to image pixels and merges
them by class-wise non-maximum suppression (IoU above ``MERGE_IOU``: the same defect seen by
two tiles).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.data.datasets import UnreadableImageError, read_image
from defectlab.plugin_system.files import atomic_write, write_json

#: IoU above which two boxes of one class from overlapping slices are taken for the same defect.
MERGE_IOU = 0.5
#: Boxes kept when a run has no evaluated best-F1 confidence to offer.
DEFAULT_CONFIDENCE = 0.25
HEADER = ["path", "boxes", "class", "score", "x1", "y1", "x2", "y2", "error"]


@dataclass
class Tile:
    """One network input cut from an image: which image, where it starts, and its scale back to pixels."""

    image: int
    x: int
    y: int
    scale_x: float
    scale_y: float


def run_confidence(checkpoint: Path) -> float:
    """The confidence of best F1 the run's test evaluation found (SPEC 000 §3.2), else DEFAULT_CONFIDENCE."""
    for metrics in sorted(checkpoint.parent.glob("eval/*/metrics.json")):
        value = json.loads(metrics.read_text()).get("scores", {}).get("f1_confidence")
        if isinstance(value, (int, float)) and 0 < value < 1:
            return float(value)
    return DEFAULT_CONFIDENCE


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


def detect_images(trained: Any, files: list[tuple[Path, str]], batch_size: int, threshold: float,
                  slice_size: int | None, overlap: float) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per file: {path, name, boxes [(class, score, x1, y1, x2, y2)], error}, and the decoded images."""
    import torch
    from defectlab.data.transforms import ImageTransform
    from torchvision.ops import batched_nms

    transform = ImageTransform(task="detect", **trained.transform)
    results: list[dict[str, Any]] = []
    images: list[Any] = []
    pieces: list[tuple[Any, Tile]] = []
    for path, name in files:
        result = {"path": str(path), "name": name, "boxes": [], "error": ""}
        try:
            image = read_image(path)
        except UnreadableImageError as exc:
            result["error"] = str(exc)
            image = None
        results.append(result)
        images.append(image)
        if image is not None:
            parts, tiles = tiles_of(image, len(results) - 1, slice_size, overlap, transform.size)
            pieces += list(zip(parts, tiles))
    found: dict[int, list[Any]] = {}
    for start in range(0, len(pieces), batch_size):
        group = pieces[start:start + batch_size]
        batch = torch.stack([transform(transform.resize(piece), train=False) for piece, _ in group])
        with torch.no_grad():
            detections = trained.model(batch)
        for (_, where), detected in zip(group, detections):
            scale = torch.tensor([where.scale_x, where.scale_y, where.scale_x, where.scale_y])
            shift = torch.tensor([where.x, where.y, where.x, where.y], dtype=torch.float32)
            keep = detected["scores"] >= threshold
            found.setdefault(where.image, []).append((detected["boxes"][keep].float() * scale + shift,
                                                      detected["scores"][keep].float(), detected["labels"][keep]))
    for index, parts in found.items():
        boxes, scores, labels = (torch.cat(column) for column in zip(*parts))
        kept = batched_nms(boxes, scores, labels, MERGE_IOU) if len(parts) > 1 else torch.argsort(scores, descending=True)
        results[index]["boxes"] = [(trained.classes[int(labels[i])], float(scores[i]), *boxes[i].tolist())
                                   for i in kept.tolist()]
    return results, images


def write_detections(results: list[dict[str, Any]], images: list[Any], out: Path, drawings: Path) -> None:
    """The CSV (a row per box; a row with 0 boxes for an image without any), the JSON beside it, and drawings."""
    from defectlab.data.drawing import draw_boxes

    rows = []
    for result in results:
        if result["error"] or not result["boxes"]:
            rows.append({"path": result["path"], "boxes": 0 if not result["error"] else "", "error": result["error"]})
        for name, score, *box in result["boxes"]:
            rows.append({"path": result["path"], "boxes": len(result["boxes"]), "class": name, "score": round(score, 5),
                         **{k: round(v, 2) for k, v in zip(("x1", "y1", "x2", "y2"), box)}, "error": ""})
    with atomic_write(out) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, HEADER)
        writer.writeheader()
        writer.writerows(rows)
    write_json(out.with_suffix(".json"), [
        {"path": r["path"], "error": r["error"],
         "boxes": [{"class": n, "score": s, "box": box} for n, s, *box in r["boxes"]]} for r in results])
    for result, image in zip(results, images):
        if image is not None:
            target = (drawings / result["name"]).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as temporary:
                draw_boxes(image, [(box, f"{n} {s:.2f}") for n, s, *box in result["boxes"]]).save(temporary, "PNG")
