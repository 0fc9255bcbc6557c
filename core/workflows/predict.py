"""Using a trained run: rebuild its model from a checkpoint, evaluate it on any dataset, predict image files."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.training.checkpoints import load_checkpoint
from defectlab.data.datasets import IMAGE_SUFFIXES, UnreadableImageError, read_image
from defectlab.plugin_system.errors import DataError


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what it needs to preprocess images and name its outputs."""

    model: Any
    task: str
    classes: list[str]
    transform: dict[str, Any]
    checkpoint: Path


def checkpoint_of(run_or_file: str | Path, which: str = "best") -> Path:
    """A run's best.pt/last.pt, or the checkpoint file itself."""
    path = Path(run_or_file)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"'{path}' is neither a run directory nor a checkpoint file")
    for name in ([f"{which}.pt"] + ["last.pt"] * (which == "best")):
        if (path / name).is_file():
            return path / name
    raise DataError(f"run '{path}' has no {which}.pt; it has not finished an epoch (see its run.json)")


def load_trained(run_or_file: str | Path, which: str = "best") -> TrainedModel:
    """The model of a run (or checkpoint) with its trained weights, in eval mode."""
    from defectlab.plugin_system.components import create

    file = checkpoint_of(run_or_file, which)
    state = load_checkpoint(file)
    if "model_spec" not in state:
        raise DataError(f"'{file}' has no model description; it was not written by `defectlab train`")
    model = create("backbone", state["model_spec"])
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedModel(model, state["task"], state["classes"], state["transform"], file)


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders searched recursively."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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
    for group in _batches(image_files(inputs), batch_size):
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


def evaluate_run(run: str | Path, dataset: Any = None, split: str = "test", which: str = "best",
                 out: str | Path | None = None) -> dict[str, Any]:
    """Score a run's model with its loss and evaluators on a whole ``dataset``, or on ``split`` of its own data.

    Writes metrics.json and each evaluator's plots and tables (misclassified.csv, ...) to
    ``out`` (default ``RUN/evaluate-<time>``) and returns them with ``folder`` added.
    """
    import torch

    from defectlab.plugin_system.components import create
    from defectlab.data.data_module import DataModule
    from defectlab.training.evaluation import write_evaluation
    from defectlab.runs.run import Run, new_run_dir

    folder = Path(run)
    if not folder.is_dir():
        raise DataError(f"'{folder}' is not a run directory; evaluate needs the folder `defectlab train` wrote")
    config = Run(folder).config
    trained = load_trained(folder, which)
    settings = {**config["data"], **trained.transform}
    if dataset is None:
        settings["splits_csv"] = str(folder / "splits.csv")
    else:
        settings.update(dataset=dataset, test=dataset, cache=False)
        split = "test"
    data = DataModule(**settings)
    if split not in data.splits:
        raise DataError(f"the run's data has no '{split}' split (it has {', '.join(data.splits)}); use --split")
    if list(data.classes) != trained.classes:
        raise DataError(f"the data's classes {data.classes} differ from the run's {trained.classes}; evaluate on "
                        f"data with the same classes in the same order")
    loss = create("loss", config["loss"])
    evaluators = [create("evaluator", spec) for spec in config["evaluators"]]
    for component in (loss, *evaluators):
        if hasattr(component, "setup"):
            component.setup(classes=list(data.classes), class_counts=data.class_counts("train"))
    target = new_run_dir("evaluate", out, root=folder)
    results = write_evaluation(trained.model, loss, data, split, evaluators, torch.device("cpu"), target)
    return {**results, "folder": str(target)}
