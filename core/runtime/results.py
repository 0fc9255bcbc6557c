"""From a model's outputs for one image to the answer a user wants, the same for a run and an exported file.

Every predictor (the run's PyTorch model, an ONNX or TorchScript file) hands over its outputs
in the frame of the network's input (``image_size``), per image:

- classify: ``{"probabilities": (C,)}``
- segment: ``{"probabilities": (h, w)}`` (one sigmoid channel) or ``(K, h, w)`` (softmax)
- anomaly: ``{"score": (), "map": (h, w)}``
- detect: ``{"boxes": (M, 4), "scores": (M,), "labels": (M,)}`` after NMS, best first

:func:`decision` turns them into the decision in that frame (what the parity check compares),
:func:`image_result` into the answer in the image's own pixels (what ``predict`` writes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

def decision(task: str, output: Mapping[str, np.ndarray], threshold: float | None) -> Any:
    """The decision in the network's frame: a class index, a defect mask (h, w) bool, defect or not, or the indices
    of the boxes kept (score at least ``threshold``)."""
    if task == "classify":
        return int(np.argmax(output["probabilities"]))
    if task == "segment":
        probabilities = output["probabilities"]
        return probabilities > threshold if probabilities.ndim == 2 else probabilities.argmax(0) > 0
    if task == "anomaly":
        return bool(output["score"] >= threshold)
    return np.flatnonzero(output["scores"] >= threshold)


def image_result(task: str, output: Mapping[str, np.ndarray], size: Sequence[int], threshold: float | None,
                 classes: Sequence[str]) -> dict[str, Any]:
    """The answer for one image of ``size`` (height, width), of a classifier, segmenter or anomaly model.

    classify: label, confidence and the probabilities by class; segment: the defect mask (H, W)
    uint8 0/1, resized by nearest neighbour; anomaly: score, defect, and the map (H, W) float32,
    resized bilinearly. (Boxes: :func:`defectlab.runtime.predicting.detect_images`.)
    """
    from PIL import Image

    decided = decision(task, output, threshold)
    height, width = int(size[0]), int(size[1])
    if task == "classify":
        probabilities = output["probabilities"].astype(float)
        return {"label": classes[decided], "confidence": float(probabilities[decided]),
                "probabilities": dict(zip(classes, probabilities.tolist()))}
    if task == "segment":
        mask = Image.fromarray(decided.astype(np.uint8)).resize((width, height), Image.NEAREST)
        return {"mask": np.asarray(mask)}
    heat = Image.fromarray(output["map"].astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return {"score": float(output["score"]), "defect": decided, "map": np.asarray(heat)}
