"""Using a trained run: rebuild its model from a checkpoint and predict image files."""

from __future__ import annotations

import csv
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
    model = create("backbone", state["model_spec"])
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedModel(model, state["task"], state["classes"], state["transform"], file)


def image_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders searched recursively."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += image_files(path)
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"'{path}' is neither an image file nor a folder")
    if not found:
        raise DataError(f"no image files in {', '.join(map(str, inputs))} (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return found


def _batches(files: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(files), size):
        yield files[start:start + size]


def predict(run_or_file: str | Path, inputs: Sequence[str | Path], out: str | Path, batch_size: int = 32,
            which: str = "best", threshold: float = 0.5) -> Path:
    """Predict every image in ``inputs`` and write ``out`` (CSV); unreadable files get a row with the error.

    Classification rows: path, predicted class, confidence, one probability per class.
    Segmentation rows: path, defect pixels, defect fraction and the mask PNG written beside the
    CSV (``<out stem>_masks/``) at the image's own size.
    """
    import numpy as np
    import torch
    from defectlab.data.transforms import ImageTransform

    trained = load_trained(run_or_file, which)
    transform = ImageTransform(task=trained.task, **trained.transform)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    masks = out.with_name(out.stem + "_masks")
    segment = trained.task == "segment"
    header = (["path", "defect_pixels", "defect_fraction", "mask"] if segment else
              ["path", "predicted", "confidence", *[f"p_{c}" for c in trained.classes]]) + ["error"]
    rows: list[dict[str, Any]] = []
    for group in _batches(image_inputs(inputs), batch_size):
        images, sizes, kept = [], [], []
        for path in group:
            try:
                image = read_image(path)
            except UnreadableImageError as exc:
                rows.append({"path": str(path), "error": str(exc)})
                continue
            sizes.append(image.shape[:2])
            images.append(transform(transform.resize(image), train=False))
            kept.append(path)
        if not images:
            continue
        with torch.no_grad():
            logits = trained.model(torch.stack(images)).float()
        if segment:
            masks.mkdir(parents=True, exist_ok=True)
            probability = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)
            for path, size, prob in zip(kept, sizes, probability):
                mask = (prob > threshold) if prob.ndim == 2 else prob.argmax(0).bool()
                mask_image = _resized_mask(mask.numpy().astype(np.uint8), size)
                target = masks / f"{path.stem}.png"
                _save_png(mask_image * (255 if mask_image.max() <= 1 else 1), target)
                defect = int((mask_image > 0).sum())
                rows.append({"path": str(path), "defect_pixels": defect, "defect_fraction": defect / mask_image.size,
                             "mask": str(target), "error": ""})
        else:
            probabilities = torch.softmax(logits, 1)
            for path, row in zip(kept, probabilities.tolist()):
                best = int(np.argmax(row))
                rows.append({"path": str(path), "predicted": trained.classes[best], "confidence": row[best],
                             **{f"p_{c}": p for c, p in zip(trained.classes, row)}, "error": ""})
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    return out


def _resized_mask(mask: Any, size: tuple[int, int]) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


def _save_png(array: Any, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array.astype("uint8")).save(path)
