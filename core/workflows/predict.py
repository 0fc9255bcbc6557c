"""Using a trained run: rebuild its model from a checkpoint and predict image files with it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectlab.plugin_system.errors import DataError, ParameterError
from defectlab.runtime.predicting import Predictions, checked_settings, predict_files
from defectlab.runtime.resuming import model_identity
from defectlab.training.checkpoints import checkpoint_path, load_checkpoint

#: Boxes kept when a run has no evaluated best-F1 confidence to offer.
DEFAULT_CONFIDENCE = 0.25


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what it needs to preprocess images and name its outputs."""

    model: Any
    task: str
    classes: list[str]
    transform: dict[str, Any]
    checkpoint: Path
    model_spec: dict[str, Any] | None = None
    tta: str = "none"
    logit_adjustment: float = 0.0  # τ of train.logit_adjustment (defectlab.training.adjustment)
    offsets: Any = None  # its offsets −τ·log π (a tensor), None without one


def load_trained(run_or_file: str | Path, which: str = "best", tta: str | None = None,
                 logit_adjustment: float | None = None) -> TrainedModel:
    """The model of a run (or checkpoint) with its trained weights, in eval mode, predicting with test-time
    augmentation ``tta`` and a classifier's logit adjustment τ ``logit_adjustment`` (defaults: the run's train.tta
    and train.logit_adjustment)."""
    from defectlab.plugin_system.components import create
    from defectlab.training.adjustment import logit_offsets
    from defectlab.training.tta import checked_tta

    file = checkpoint_path(run_or_file, which)
    state = load_checkpoint(file)
    if "model_spec" not in state:
        raise DataError(f"'{file}' has no model description; it was not written by `defectlab train`")
    if state.get("task") == "pretrain":
        raise DataError(f"'{file}' is a pretraining run's: its encoder has no trained classifier to predict or "
                        f"evaluate with; train one on it with `defectlab train CONFIG --init-from "
                        f"{Path(run_or_file)}`")
    settings = state.get("settings", {})
    tta = checked_tta(state["task"], settings.get("tta", "none") if tta is None else tta)
    tau = float(settings.get("logit_adjustment", 0.0) if logit_adjustment is None else logit_adjustment)
    if tau and state["task"] != "classify":
        raise ParameterError(f"logit_adjustment is for classifiers only; '{file}' is a '{state['task']}' model")
    offsets = logit_offsets(tau, state.get("class_counts"), state["classes"])
    model = create("backbone", state["model_spec"])
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedModel(model, state["task"], state["classes"], state["transform"], file, state["model_spec"], tta,
                        tau, offsets)


class TorchPredictor:
    """A run's model as a predictor (:mod:`defectlab.runtime.predicting`): the run's own preprocessing, then the
    outputs in the network's frame as numpy arrays (with the model's test-time augmentation, ``trained.tta``)."""

    def __init__(self, trained: TrainedModel) -> None:
        from defectlab.data.transforms import ImageTransform

        self.trained, self.task, self.classes = trained, trained.task, trained.classes
        self.transform = ImageTransform(task="classify" if trained.task == "anomaly" else trained.task,
                                        **trained.transform)
        self.image_size = self.transform.size

    def outputs(self, images: Sequence[Any]) -> list[dict[str, Any]]:
        import torch

        from defectlab.training.adjustment import adjusted
        from defectlab.training.tta import tta_logits

        batch = torch.stack([self.transform(self.transform.resize(image), train=False) for image in images])
        model, tta = self.trained.model, self.trained.tta
        with torch.no_grad():
            output = model(batch) if tta == "none" else tta_logits(model, batch, tta)
        if self.task == "detect":
            return [{"boxes": found["boxes"].float().numpy(), "scores": found["scores"].float().numpy(),
                     "labels": found["labels"].long().numpy()} for found in output]
        if self.task == "anomaly":
            from defectlab.training.contracts import checked_anomaly

            checked = checked_anomaly(self.trained.model, output, batch)
            return [{"score": score, "map": heat} for score, heat in
                    zip(checked["scores"].numpy(), checked["maps"].numpy())]
        logits = output.float()
        if self.task == "segment":
            probabilities = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)
        else:
            probabilities = torch.softmax(adjusted(logits, self.trained.offsets), 1)
        return [{"probabilities": row} for row in probabilities.numpy()]


def predict(run_or_file: str | Path, inputs: Sequence[str | Path], out: str | Path, batch_size: int = 32,
            which: str = "best", threshold: float | None = None, overwrite: bool = False,
            slice_size: int | None = None, overlap: float = 0.2, tta: str | None = None, resume: bool = False,
            logit_adjustment: float | None = None) -> Predictions:
    """Predict every image in ``inputs`` and write ``out`` (CSV); unreadable files get a row with the error.

    ``run_or_file`` is a run, a checkpoint, or a file ``defectlab export`` wrote (.onnx,
    .torchscript), which predicts the same way without the run. Classification rows: path,
    predicted class, confidence, one probability per class.
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
    (2 * threshold), capped at 255: mid-grey is the threshold). ``tta`` replaces the run's
    test-time augmentation (train.tta: 'none', 'flips' or 'dihedral'; classification and
    segmentation); an exported file computes its own, and is refused another. ``logit_adjustment``
    replaces a classifier's τ of train.logit_adjustment the same way.

    Rows are appended to the CSV batch by batch, so a prediction that is stopped keeps what it
    predicted; ``resume`` continues it: the images already in ``out`` are skipped and the others
    appended, with the same model and settings only (``<out stem>_settings.json`` records them;
    see :mod:`defectlab.runtime.resuming`). ``Predictions`` counts the whole CSV, ``.resumed`` the
    images the earlier prediction wrote.
    """
    from defectlab.runtime.exported import load_exported
    from defectlab.runtime.formats import format_of

    if format_of(run_or_file) is not None:
        exported = load_exported(run_or_file)
        if tta is not None and tta != exported.tta:
            raise DataError(f"'{run_or_file}' computes the test-time augmentation '{exported.tta}' in its graph; to "
                            f"predict with '{tta}', export the run again with --tta {tta}")
        own = float(exported.metadata.get("logit_adjustment") or 0.0)
        if logit_adjustment is not None and logit_adjustment != own:
            raise DataError(f"'{run_or_file}' computes the logit adjustment τ = {own:g} in its graph; to predict "
                            f"with τ = {logit_adjustment:g}, export the run again with --logit-adjustment "
                            f"{logit_adjustment:g}")
        return exported.predict_files(inputs, out, threshold, batch_size, overwrite, slice_size, overlap, resume)
    trained = load_trained(run_or_file, which, tta, logit_adjustment)
    checked_settings(trained.task, threshold, slice_size, overlap)
    if threshold is None:
        threshold = default_threshold(trained)
    return predict_files(TorchPredictor(trained), inputs, out, threshold, batch_size, overwrite, slice_size, overlap,
                         resume, model_identity(trained.checkpoint, trained.tta, trained.logit_adjustment))


def default_threshold(trained: TrainedModel) -> float | None:
    """The decision threshold a run predicts with: its best-F1 score (anomaly) or confidence (detection, else
    DEFAULT_CONFIDENCE), 0.5 for segmentation, none for classification (the most probable class)."""
    if trained.task == "anomaly":
        from defectlab.workflows.predict_anomaly import run_threshold

        return run_threshold(trained.checkpoint)
    if trained.task == "detect":
        return run_confidence(trained.checkpoint)
    return 0.5 if trained.task == "segment" else None


def run_confidence(checkpoint: Path) -> float:
    """The confidence of best F1 the run's test evaluation found (Valle Salgado et al. 2023 §3.2), else DEFAULT_CONFIDENCE."""
    for metrics in sorted(checkpoint.parent.glob("eval/*/metrics.json")):
        value = json.loads(metrics.read_text()).get("scores", {}).get("f1_confidence")
        if isinstance(value, (int, float)) and 0 < value < 1:
            return float(value)
    return DEFAULT_CONFIDENCE
