"""An exported model (ONNX or TorchScript) with its metadata, predicting raw uint8 images.

``defectlab export`` writes the run's preprocessing (resize, grey/RGB, normalisation) into the
graph and its facts into the file: the metadata entry ``defectlab`` (ONNX ``metadata_props``,
TorchScript extra file ``defectlab.json``) is a JSON object with the task, the class names, the
decision threshold, the network's input size, the detection post-processing and the
defectlab version. :func:`load_exported` reads both back; ONNX files need only onnxruntime.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectlab.plugin_system.errors import DataError
from defectlab.runtime.detections import dense_detections
from defectlab.runtime.formats import METADATA_KEY, OUTPUT_NAMES, format_of
from defectlab.runtime.images import as_images, same_shape_groups
from defectlab.runtime.predicting import Predictions, checked_settings, detect_images, predict_files
from defectlab.runtime.resuming import model_identity
from defectlab.runtime.results import image_result

RUNTIME_HINT = "pip install 'defectlab[runtime]'"


class ExportedModel:
    """An exported file ready to predict; see :func:`load_exported`.

    Attributes: ``path``, ``format``, ``metadata`` (the whole entry), and from it ``task``,
    ``classes``, ``image_size`` (height, width of the network's input), ``threshold`` (the
    decision threshold the run chose: None for classification, which takes the most probable
    class) and ``tta`` (the test-time augmentation inside the graph: 'none', 'flips' or
    'dihedral').
    """

    def __init__(self, path: Path, file_format: str, metadata: dict[str, Any], runner: Any) -> None:
        self.path, self.format, self.metadata, self._runner = path, file_format, metadata, runner
        self.task: str = metadata["task"]
        self.classes: list[str] = list(metadata["classes"])
        self.image_size: tuple[int, int] = tuple(metadata["image_size"])  # type: ignore[assignment]
        self.threshold: float | None = metadata.get("threshold")
        self.tta: str = metadata.get("tta", "none")  # files exported before test-time augmentation have none

    def __repr__(self) -> str:
        return (f"ExportedModel({str(self.path)!r}, format={self.format!r}, task={self.task!r}, "
                f"classes={self.classes!r}, threshold={self.threshold!r})")

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's raw outputs by name for a uint8 batch (N, H, W, C) of one size."""
        return self._run(np.stack(as_images(batch)))

    def _run(self, stacked: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`run` on a batch whose images are checked already."""
        try:
            values = self._runner(stacked)
        except Exception as exc:  # the runtime's own failure on a checked input: say which file and batch
            raise DataError(f"{self.format} could not run '{self.path}' on a batch of shape {stacked.shape}: "
                            f"{type(exc).__name__}: {exc}") from exc
        return dict(zip(OUTPUT_NAMES[self.task], values))

    def outputs(self, images: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """Per image, the outputs in the network's frame (:mod:`defectlab.runtime.results`); same-sized images
        run as one batch."""
        checked = as_images(list(images))
        found: list[dict[str, np.ndarray]] = [{} for _ in checked]
        for group in same_shape_groups(checked):
            raw = self._run(np.stack([checked[i] for i in group]))
            for position, index in enumerate(group):
                found[index] = self._per_image(raw, position)
        return found

    def _per_image(self, raw: dict[str, np.ndarray], position: int) -> dict[str, np.ndarray]:
        if self.task == "detect":
            return dense_detections(raw["boxes"][position], raw["scores"][position], self.metadata["postprocess"],
                                    self.image_size)
        if self.task == "anomaly":
            return {"score": raw["scores"][position], "map": raw["maps"][position]}
        return {"probabilities": raw["probabilities"][position]}

    def predict(self, images: Any, threshold: float | None = None, batch_size: int = 32,
                slice_size: int | None = None, overlap: float = 0.2) -> list[dict[str, Any]]:
        """One answer per image (paths, uint8 arrays (H, W[, C]) or a batch (N, H, W, C)), in its own pixels.

        classify: label, confidence, probabilities; segment: mask (H, W) 0/1; anomaly: score,
        defect, map (H, W); detect: boxes [(class, score, x1, y1, x2, y2)]. ``threshold``
        replaces the exported one; ``slice_size`` predicts boxes in overlapping slices.
        """
        checked_settings(self.task, threshold, slice_size, overlap)
        threshold = self.threshold if threshold is None else threshold
        checked = as_images(images)
        if self.task == "detect":
            return [{"boxes": boxes} for boxes in detect_images(self, checked, batch_size, threshold, slice_size,
                                                                overlap)]
        results = []
        for start in range(0, len(checked), batch_size):
            group = checked[start:start + batch_size]
            results += [image_result(self.task, output, image.shape[:2], threshold, self.classes)
                        for image, output in zip(group, self.outputs(group))]
        return results

    def predict_files(self, inputs: Sequence[str | Path], out: str | Path, threshold: float | None = None,
                      batch_size: int = 32, overwrite: bool = False, slice_size: int | None = None,
                      overlap: float = 0.2, resume: bool = False) -> Predictions:
        """Predict image files and folders into ``out`` (CSV) and pictures, as ``defectlab predict`` does;
        ``resume`` continues a prediction into ``out`` that was stopped."""
        return predict_files(self, inputs, out, self.threshold if threshold is None else threshold, batch_size,
                             overwrite, slice_size, overlap, resume, model_identity(self.path, self.tta))


def load_exported(path: str | Path, providers: Sequence[str] | None = None) -> ExportedModel:
    """An exported ``.onnx`` (run by onnxruntime; ``providers`` default to the CPU) or ``.torchscript`` file."""
    file = Path(path).expanduser()
    file_format = format_of(file)
    if file_format is None:
        raise DataError(f"'{file}' is not an exported model: give a .onnx or .torchscript file written by "
                        f"`defectlab export`")
    if not file.is_file():
        raise DataError(f"'{file}' does not exist; write it with `defectlab export RUN --format {file_format}`")
    loader = _onnx_runner if file_format == "onnx" else _torchscript_runner
    text, runner = loader(file, providers)
    if text is None:
        raise DataError(f"'{file}' holds no '{METADATA_KEY}' metadata: it was not written by `defectlab export` "
                        f"(export the run with it to get the preprocessing and class names inside)")
    try:
        metadata = json.loads(text)
        if metadata["task"] not in OUTPUT_NAMES:
            raise KeyError("task")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"the '{METADATA_KEY}' metadata of '{file}' is damaged ({exc}); export the run again"
                        ) from exc
    return ExportedModel(file, file_format, metadata, runner)


def _onnx_runner(file: Path, providers: Sequence[str] | None) -> tuple[str | None, Any]:
    try:
        import onnxruntime
    except ImportError as exc:
        raise DataError(f"predicting with an ONNX file needs onnxruntime, which is not installed: {RUNTIME_HINT}"
                        ) from exc
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the exporter's unused initialisers are not the user's concern
    try:
        session = onnxruntime.InferenceSession(str(file), options, providers=list(providers or
                                                                                  ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own classes for unreadable and invalid files
        raise DataError(f"onnxruntime cannot load '{file}' ({type(exc).__name__}: {exc}); is it a whole ONNX file "
                        f"written by `defectlab export`?") from exc
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    name = session.get_inputs()[0].name
    return text, lambda batch: session.run(None, {name: batch})


def _torchscript_runner(file: Path, providers: Sequence[str] | None) -> tuple[str | None, Any]:
    try:
        import torch
    except ImportError as exc:
        raise DataError("a TorchScript file needs torch; export to ONNX for a machine without it") from exc
    extra = {"defectlab.json": ""}
    try:
        with warnings.catch_warnings():  # torch marks torch.jit deprecated; docs/deploy.md says why it is kept
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
            module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError and others for files that are not TorchScript
        raise DataError(f"torch cannot load '{file}' as TorchScript ({type(exc).__name__}: {exc})") from exc
    module.eval()

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            values = module(torch.from_numpy(batch))
        return [value.numpy() for value in (values if isinstance(values, (tuple, list)) else [values])]

    text = extra["defectlab.json"]
    return (text.decode() if isinstance(text, bytes) else text) or None, run
