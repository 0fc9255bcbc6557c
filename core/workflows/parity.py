"""Does an exported file answer as its run does? Both predict the same raw images and are compared.

The run's side is its own pipeline (Pillow resize, :class:`~defectlab.data.transforms.ImageTransform`,
the PyTorch model, the model's own NMS); the file's side is the graph on the raw uint8 images
and the runtime's NMS. Differences are measured on one scale per task, so that one
``tolerance`` reads the same everywhere:

- classify, segment: probabilities (absolute);
- anomaly: scores and maps divided by the decision threshold;
- detect: scores (absolute) and box corners divided by the network's input side, for the boxes
  matched between the two (same class, IoU >= MATCH_IOU).

Decisions (labels, mask pixels, good/defect, boxes kept at the threshold) must agree, except
near-ties: a decision whose run-side value lies within the tolerance of its boundary (the two
resizes differ by up to one grey level, enough to tip an exact tie).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from defectlab.plugin_system.errors import DataError
from defectlab.runtime.detections import box_iou
from defectlab.runtime.results import decision

#: The default tolerance per task, on the scales of the module's docstring.
TOLERANCES = {"classify": 0.01, "segment": 0.02, "anomaly": 0.02, "detect": 0.02}
#: IoU at which a box of the file and one of the run are the same detection.
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Parity:
    """The comparison: largest differences by output, decisions compared, agreeing, and near-ties among the rest."""

    task: str
    images: int
    tolerance: float
    differences: dict[str, float]
    decisions: int
    agreeing: int
    near_ties: int

    @property
    def passed(self) -> bool:
        return (all(value <= self.tolerance for value in self.differences.values())
                and self.decisions - self.agreeing <= self.near_ties)

    def summary(self) -> str:
        what = {"classify": "labels", "segment": "mask pixels", "anomaly": "good/defect decisions",
                "detect": "boxes"}[self.task]
        largest = ", ".join(f"{name} {value:.2e}" for name, value in self.differences.items()) or "none compared"
        share = self.agreeing / self.decisions if self.decisions else 1.0
        verdict = "PASSED" if self.passed else "FAILED"
        if not self.decisions:
            verdict += f" (nothing to compare: no {what} at this threshold on these images)"
        return (f"parity on {self.images} validation images: largest difference {largest} (tolerance "
                f"{self.tolerance:g}); {what} agree {self.agreeing}/{self.decisions} ({share:.2%}), "
                f"{self.decisions - self.agreeing} differ of which {self.near_ties} near-ties: {verdict}")


def run_images(trained: Any, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` raw images of the run's validation split (else test, else train), as the run read them."""
    from defectlab.data.data_module import DataModule
    from defectlab.runs.run import Run

    folder = trained.checkpoint.parent
    if not (folder / "config.json").is_file():
        raise DataError(f"'{trained.checkpoint}' lies outside a run folder, so there are no validation images to "
                        f"check the export on; export the run folder, or skip the check (--no-check)")
    settings = {**Run(folder).config["data"], **trained.transform, "cache": False}
    if (folder / "splits.csv").is_file():
        settings["splits_csv"] = str(folder / "splits.csv")
    data = DataModule(**settings)
    split = next(name for name in ("val", "test", "train") if name in data.splits)
    images = [image for _, image in data.datasets[split].iter_images(data.splits[split][:limit])]
    if not images:
        raise DataError(f"none of the run's {split} images could be read to check the export; skip the check "
                        f"(--no-check)")
    return images


def check_parity(reference: Any, exported: Any, images: Sequence[np.ndarray], threshold: float | None,
                 tolerance: float | None = None, batch_size: int = 16) -> Parity:
    """Compare two predictors (:mod:`defectlab.runtime.predicting`) on ``images`` at the decision ``threshold``."""
    task = reference.task
    tolerance = TOLERANCES[task] if tolerance is None else float(tolerance)
    tally = _Tally(task, tolerance, threshold, max(reference.image_size))
    for start in range(0, len(images), batch_size):
        group = list(images[start:start + batch_size])
        for ours, theirs in zip(reference.outputs(group), exported.outputs(group)):
            tally.add(ours, theirs)
    return Parity(task, len(images), tolerance, tally.differences, tally.decisions, tally.agreeing, tally.near_ties)


class _Tally:
    """Differences and decisions accumulated image by image."""

    def __init__(self, task: str, tolerance: float, threshold: float | None, side: int) -> None:
        self.task, self.tolerance, self.threshold, self.side = task, tolerance, threshold, side
        self.differences: dict[str, float] = {}
        self.decisions = self.agreeing = self.near_ties = 0

    def note(self, name: str, value: float) -> None:
        self.differences[name] = max(self.differences.get(name, 0.0), float(value))

    def add(self, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
        if self.task == "detect":
            self._add_boxes(ours, theirs)
            return
        if self.task == "anomaly":
            scale = self.threshold if self.threshold and self.threshold > 0 else 1.0
            self.note("score", abs(float(ours["score"]) - float(theirs["score"])) / scale)
            self.note("map", np.abs(ours["map"] - theirs["map"]).max() / scale)
            margin = np.array([abs(float(ours["score"]) - self.threshold) / scale])
        else:
            self.note("probabilities", np.abs(ours["probabilities"] - theirs["probabilities"]).max())
            margin = np.atleast_1d(_margin(self.task, ours["probabilities"], self.threshold))
        same = np.atleast_1d(decision(self.task, ours, self.threshold) == decision(self.task, theirs, self.threshold))
        self.decisions += same.size
        self.agreeing += int(same.sum())
        self.near_ties += int((~same & (margin.reshape(same.shape) <= self.tolerance)).sum())

    def _add_boxes(self, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
        kept_ours, kept_theirs = (decision("detect", side, self.threshold) for side in (ours, theirs))
        free = list(kept_theirs)
        unmatched_ours = []
        for i in kept_ours:
            candidates = [j for j in free if theirs["labels"][j] == ours["labels"][i]]
            ious = box_iou(ours["boxes"][i], theirs["boxes"][candidates]) if candidates else np.zeros(0)
            if ious.size and ious.max() >= MATCH_IOU:
                j = candidates[int(ious.argmax())]
                free.remove(j)
                self.agreeing += 1
                self.note("scores", abs(float(ours["scores"][i]) - float(theirs["scores"][j])))
                self.note("boxes", np.abs(ours["boxes"][i] - theirs["boxes"][j]).max() / self.side)
            else:
                unmatched_ours.append(float(ours["scores"][i]))
        unmatched = unmatched_ours + [float(theirs["scores"][j]) for j in free]
        self.decisions += len(kept_ours) - len(unmatched_ours) + len(unmatched)
        self.near_ties += sum(abs(score - self.threshold) <= self.tolerance for score in unmatched)


def _margin(task: str, probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """How far the run's own output lies from its decision's boundary (per image or per pixel)."""
    if task == "segment" and probabilities.ndim == 2:
        return np.abs(probabilities - threshold)
    top = np.sort(probabilities, axis=0)
    return (top[-1] - top[-2]) / 2 if top.shape[0] > 1 else np.full(top.shape[1:], np.inf)
