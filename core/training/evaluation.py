"""Scoring a model on one split: the loss and every evaluator, and what they write at the end.

Evaluators follow docs/training.md: ``update(pred, target, **wanted)``, ``compute()``,
``reset()``, and optionally ``wants`` (keys, embeddings, images), ``details()`` and
``write(folder)``. With test-time augmentation (``tta``, :mod:`defectlab.training.tta`) the loss
and the evaluators get the logits of the mean probability over the views; embeddings stay the
image's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from defectlab.plugin_system.errors import DataError
from defectlab.plugin_system.files import write_json
from defectlab.training.contracts import (
    checked_anomaly,
    checked_detections,
    checked_logits,
    checked_loss,
    checked_scores,
)
from defectlab.training.adjustment import adjusted
from defectlab.training.tta import checked_tta, tta_logits
from torch import nn

SkipNote = Callable[[str, dict[str, Any]], None]


def _forward(model: nn.Module, images: torch.Tensor, want_embeddings: bool, tta: str,
             offsets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (of the mean probability over ``tta``'s views, plus a logit adjustment's ``offsets``), and the
    penultimate-layer embeddings of the images themselves when asked and the model has them."""
    has_embeddings = want_embeddings and hasattr(model, "forward_features") and hasattr(model, "head")
    embeddings = model.forward_features(images) if has_embeddings else None
    if tta != "none":
        return adjusted(tta_logits(model, images, tta), offsets), embeddings
    logits = checked_logits(model, model(images) if embeddings is None else model.head(embeddings))
    return adjusted(logits, offsets), embeddings


def to_device(target: Any, device: torch.device) -> Any:
    """A batch's target on ``device``: a tensor, anomaly's dict of tensors, or detection's list of dicts."""
    if isinstance(target, torch.Tensor):
        return target.to(device, non_blocking=True)
    if isinstance(target, dict):
        return {key: value.to(device, non_blocking=True) for key, value in target.items()}
    return [{key: value.to(device, non_blocking=True) for key, value in item.items()} for item in target]


@torch.no_grad()
def evaluate_split(model: nn.Module, loss: nn.Module | None, data: Any, split: str, evaluators: Sequence[Any],
                   device: torch.device, on_skipped: SkipNote | None = None, amp: bool = False,
                   tta: str = "none", offsets: torch.Tensor | None = None) -> dict[str, float]:
    """Mean loss (``loss``) and every evaluator's scores on ``split``, of the model's predictions under test-time
    augmentation ``tta`` (classification and segmentation) and a classifier's logit adjustment ``offsets``
    (:mod:`defectlab.training.adjustment`); evaluators are reset first."""
    checked_tta(data.task, tta)
    wants = set().union(*(getattr(e, "wants", ()) for e in evaluators)) if evaluators else set()
    for evaluator in evaluators:
        evaluator.reset()
    was_training = model.training
    model.eval()
    total, seen = 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
    try:
        for batch in data.loader(split):
            if on_skipped is not None:
                on_skipped(split, batch)
            if not len(batch["image"]):
                continue
            images, targets = batch["image"].to(device), to_device(batch["target"], device)
            with autocast:
                if isinstance(targets, list):  # a detector: boxes out, its losses only in training mode
                    pred, embeddings = checked_detections(model, model(images), len(images)), None
                elif isinstance(targets, dict):  # an anomaly model: a score and a map per image
                    pred, embeddings = checked_anomaly(model, model(images), images), None
                else:
                    pred, embeddings = _forward(model, images, "embeddings" in wants, tta, offsets)
                if loss is not None:
                    total += float(checked_loss(loss, loss(pred, targets))) * len(images)
            seen += len(images)
            pred = pred.float() if isinstance(pred, torch.Tensor) else pred
            extras = {"keys": [data.sample_key(split, int(i)) for i in batch["index"]],
                      "embeddings": embeddings, "images": batch["image"]}
            for evaluator in evaluators:
                wanted = {name: extras[name] for name in getattr(evaluator, "wants", ()) if name in extras}
                evaluator.update(pred, targets, **wanted)
    finally:
        model.train(was_training)
    if not seen:
        raise DataError(f"no image of the {split} split could be read; run `defectlab check-data` on the dataset")
    scores: dict[str, float] = {"loss": total / seen} if loss is not None else {}
    for evaluator in evaluators:
        scores.update(checked_scores(evaluator, evaluator.compute()))
    return scores


def write_evaluation(model: nn.Module, loss: nn.Module | None, data: Any, split: str, evaluators: Sequence[Any],
                     device: torch.device, folder: Path, on_skipped: SkipNote | None = None,
                     amp: bool = False, tta: str = "none", offsets: torch.Tensor | None = None) -> dict[str, Any]:
    """Evaluate ``split`` (with test-time augmentation ``tta`` and logit adjustment ``offsets``) and save
    metrics.json (scores, details) and each evaluator's plots/tables in ``folder``."""
    scores = evaluate_split(model, loss, data, split, evaluators, device, on_skipped, amp, tta, offsets)
    folder.mkdir(parents=True, exist_ok=True)
    details: dict[str, Any] = {}
    files: dict[str, str] = {}
    for evaluator in evaluators:
        name = getattr(evaluator, "name", type(evaluator).__name__)
        if hasattr(evaluator, "details"):
            details[name] = evaluator.details()
        if hasattr(evaluator, "write"):
            files.update({label: str(path) for label, path in evaluator.write(folder).items()})
    results = {"split": split, "samples": len(data.splits[split]), "tta": tta,
               "logit_offsets": None if offsets is None else [float(v) for v in offsets], "scores": scores,
               "details": details, "files": files}
    write_json(folder / "metrics.json", results)
    return results
