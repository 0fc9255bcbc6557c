"""``defectlab export``: a run's model as one ONNX or TorchScript file with its preprocessing inside, checked.

The file takes raw uint8 images (:mod:`defectlab.workflows.export_graph`) and carries its facts
as metadata (:mod:`defectlab.runtime.exported`). ONNX files come from torch's dynamo exporter;
a model it cannot capture falls back to the TorchScript-based ("legacy") exporter, and the file
and the summary say which was used. After writing, the file and the run's PyTorch model predict
the run's own validation images and :func:`~defectlab.workflows.parity.check_parity` compares
them; a file that disagrees beyond the tolerance is kept under a ``.failed`` name and reported.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from defectlab.plugin_system.errors import DataError, DefectlabError, ParameterError
from defectlab.plugin_system.files import atomic_write
from defectlab.plugin_system.parameters import Range
from defectlab.plugin_system.version import VERSION
from defectlab.runtime.formats import METADATA_KEY, OUTPUT_NAMES, SUFFIXES

if TYPE_CHECKING:  # the command line reads this module's constants without numpy or torch
    from defectlab.workflows.parity import Parity
    from defectlab.workflows.predict import TrainedModel

log = logging.getLogger(__name__)

FORMATS = tuple(SUFFIXES)
EXPORTERS = ("auto", "dynamo", "legacy")
#: The oldest ONNX opset with an antialiased Resize, which the preprocessing needs.
MIN_OPSET = 18
DEFAULT_OPSET = 18
#: Images of the run's validation split the parity check predicts by default.
PARITY_IMAGES = 64


class ExportError(DefectlabError):
    """The model could not be exported, or the exported file disagrees with the run."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote: the file, its format, the exporter used, and the parity check's result."""

    path: Path
    format: str
    exporter: str
    metadata: dict[str, Any]
    parity: Parity | None

    def summary(self) -> str:
        size = self.path.stat().st_size / 2 ** 20
        tta = f", test-time augmentation '{self.metadata['tta']}'" if self.metadata["tta"] != "none" else ""
        lines = [f"wrote {self.path} ({self.format}, {self.exporter} exporter{tta}, {size:.1f} MiB)"]
        if self.parity is not None:
            lines.append(self.parity.summary())
        return "\n".join(lines)


def export_settings(*, formats: tuple[Literal["onnx", "torchscript"], ...] = ("onnx",),
                    opset: Annotated[int, Range(MIN_OPSET)] = DEFAULT_OPSET,
                    exporter: Literal["auto", "dynamo", "legacy"] = "auto",
                    threshold: Annotated[float, Range(0, low_open=True)] | None = None, check: bool = True,
                    images: Annotated[int, Range(1)] = PARITY_IMAGES,
                    tolerance: Annotated[float, Range(0, low_open=True)] | None = None) -> None:
    """The ``[export]`` table of a training config: the run exports itself when training ends.

    Args:
        formats: files written into the run folder, best.onnx and/or best.torchscript.
        opset: ONNX opset (18 or newer).
        exporter: "dynamo", "legacy", or "auto" (dynamo, else legacy).
        threshold: the decision threshold written into the files (default: the one predict uses).
        check: compare each file with the run on its validation images (the parity check).
        images: validation images the check predicts.
        tolerance: largest difference the check accepts (default per task; docs/deploy.md).
    """


def export_run(folder: Path, settings: dict[str, Any]) -> list[Exported]:
    """A finished run's files in each of ``settings``' formats (an ``[export]`` table, resolved), checked."""
    options = {key: value for key, value in settings.items() if key != "formats"}
    done = []
    for file_format in settings["formats"]:
        done.append(export(folder, file_format, overwrite=True, **options))
        print(done[-1].summary(), file=sys.stderr)  # beside the training's own lines
    return done


def export(run: str | Path, file_format: str = "onnx", out: str | Path | None = None, *, which: str = "best",
           opset: int = DEFAULT_OPSET, exporter: str = "auto", threshold: float | None = None, check: bool = True,
           images: int = PARITY_IMAGES, tolerance: float | None = None, overwrite: bool = False,
           tta: str | None = None, logit_adjustment: float | None = None) -> Exported:
    """Export a run's model to ``out`` (default ``RUN/<which>.onnx`` or ``.torchscript``) and check it.

    ``opset`` (ONNX, at least 18) and ``exporter`` ('auto': dynamo, else legacy) choose how the
    ONNX file is made. ``threshold`` replaces the decision threshold the file carries (default:
    the one ``predict`` uses for the run). With ``check`` the file and the run predict up to
    ``images`` of the run's validation images; an ExportError when they differ beyond
    ``tolerance`` (default per task, :data:`~defectlab.workflows.parity.TOLERANCES`). ``tta``
    ('none', 'flips' or 'dihedral'; default: the run's train.tta) is the test-time augmentation the
    graph computes, and the run's side of the check with it; ``logit_adjustment`` likewise the τ of a
    classifier's logit adjustment (default: the run's train.logit_adjustment).
    """
    from defectlab.runtime.exported import load_exported
    from defectlab.runtime.predicting import checked_settings
    from defectlab.workflows.parity import check_parity, run_images
    from defectlab.workflows.predict import TorchPredictor, default_threshold, load_trained

    if file_format not in FORMATS:
        raise ParameterError(f"unknown export format {file_format!r}; choose one of {', '.join(FORMATS)}")
    if exporter not in EXPORTERS:
        raise ParameterError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if file_format == "onnx" and opset < MIN_OPSET:
        raise ParameterError(f"opset {opset} is too old: the preprocessing's antialiased resize needs opset "
                             f"{MIN_OPSET} or newer")
    trained = load_trained(run, which, tta, logit_adjustment)
    checked_settings(trained.task, threshold, None, 0.0)
    target = Path(out) if out is not None else trained.checkpoint.with_suffix(SUFFIXES[file_format])
    if target.suffix != SUFFIXES[file_format]:
        raise ParameterError(f"--out {target} should end in {SUFFIXES[file_format]} for the {file_format} format")
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; choose another --out, or pass --overwrite to replace it")
    samples = run_images(trained, images) if check else []
    threshold = default_threshold(trained) if threshold is None else threshold
    reference = TorchPredictor(trained)
    metadata = export_metadata(trained, threshold, file_format, opset if file_format == "onnx" else None,
                               reference.image_size)
    example = _example_batch(reference.image_size, samples)
    with atomic_write(target) as temporary, _expected_warnings_silenced():
        if file_format == "onnx":
            used = write_onnx(trained, threshold, metadata, example, temporary, opset, exporter)
        else:
            used = write_torchscript(trained, threshold, metadata, example, temporary)
    parity = None
    if check:
        failed = target.with_name(target.name + ".failed")
        try:
            parity = check_parity(reference, load_exported(target), samples, threshold, tolerance)
        except DataError as exc:  # the file cannot even run the run's images (e.g. a batch size fixed by tracing)
            target.replace(failed)
            raise ExportError(f"the exported model cannot predict the run's validation images, so it was moved to "
                              f"{failed}: {exc}") from exc
        if not parity.passed:
            target.replace(failed)
            raise ExportError(f"the exported model disagrees with the run, so it was moved to {failed}:\n"
                              f"{parity.summary()}")
    return Exported(target, file_format, used, metadata, parity)


def export_metadata(trained: TrainedModel, threshold: float | None, file_format: str, opset: int | None,
                    size: tuple[int, int]) -> dict[str, Any]:
    """The facts an exported file carries (see :mod:`defectlab.runtime.exported`); ``size``: the network's input."""
    postprocess = None
    if trained.task == "detect":
        if not hasattr(trained.model, "export_postprocess"):
            raise _not_exportable(trained)
        postprocess = dict(trained.model.export_postprocess(tuple(size)))
    return {"format_version": 1, "defectlab_version": VERSION, "task": trained.task, "classes": trained.classes,
            "threshold": threshold, "image_size": list(size), "transform": trained.transform, "tta": trained.tta,
            "logit_adjustment": trained.logit_adjustment,
            "input": {"name": "images", "dtype": "uint8", "layout": "NHWC", "channels": [1, 3]},
            "outputs": list(OUTPUT_NAMES[trained.task]), "postprocess": postprocess, "model": trained.model_spec,
            "run": str(trained.checkpoint.parent), "checkpoint": trained.checkpoint.name, "format": file_format,
            "opset": opset, "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _not_exportable(trained: TrainedModel) -> ExportError:
    name = type(trained.model).__name__
    return ExportError(f"the detector {name} cannot be exported: a detection backbone needs export_outputs(images) "
                       f"(boxes and scores before NMS) and export_postprocess(image_size) (the NMS settings); see "
                       f"docs/kinds/backbone.md")


def _example_batch(size: tuple[int, int], samples: list[Any]) -> Any:
    """Two RGB images to trace with: the first validation image's size if there is one (never the network's own
    ``size``, where the resize would vanish from a traced graph; never one channel, a size the exporter would
    fix)."""
    import torch

    height, width = samples[0].shape[:2] if samples else size
    if (height, width) == tuple(size):
        height, width = height + 7, width + 5
    return torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def write_onnx(trained: TrainedModel, threshold: float | None, metadata: dict[str, Any], example: Any, path: Path,
               opset: int, exporter: str) -> str:
    """The ONNX file at ``path`` with metadata, checked by onnx's checker; returns the exporter used."""
    import torch

    from defectlab.workflows.export_graph import inference_graph

    graph = inference_graph(trained.model, trained.task, trained.transform, threshold, tta=trained.tta,
                            offsets=trained.offsets)
    names = list(OUTPUT_NAMES[trained.task])
    used, reason = "dynamo", None
    if exporter in ("auto", "dynamo"):
        try:
            with torch.no_grad(), _exportable_ops():
                dims = {axis: torch.export.Dim(name, min=low, max=high) for axis, (name, low, high) in
                        enumerate([("batch", 1, 4096), ("height", 2, 16384), ("width", 2, 16384), ("channels", 1, 3)])}
                program = torch.export.export(graph, (example,), dynamic_shapes=(dims,), strict=False)
                torch.onnx.export(program, (example,), str(path), dynamo=True, opset_version=opset,
                                  input_names=["images"], output_names=names, external_data=False, verbose=False)
        except Exception as exc:  # torch.export and the translation raise many kinds; the legacy one may still work
            if exporter == "dynamo":
                raise ExportError(f"the dynamo exporter cannot export this model ({type(exc).__name__}: "
                                  f"{_first_line(exc)}); try --exporter legacy") from exc
            used, reason = "legacy", f"{type(exc).__name__}: {_first_line(exc)}"
            log.info("the dynamo exporter failed (%s); using the legacy exporter", reason)
    else:
        used = "legacy"
    if used == "legacy":
        _register_antialiased_resize()
        axes = {"images": {0: "batch", 1: "height", 2: "width", 3: "channels"}, **{name: {0: "batch"} for name in names}}
        try:
            with torch.no_grad():
                torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=opset,
                                  input_names=["images"], output_names=names, dynamic_axes=axes)
        except Exception as exc:  # the last exporter: say what failed in one line
            raise ExportError(f"neither ONNX exporter can export this model; legacy: {type(exc).__name__}: "
                              f"{_first_line(exc)}" + (f"; dynamo: {reason}" if reason else "")) from exc
    metadata["exporter"] = used
    _add_metadata(path, metadata)
    return used


@contextlib.contextmanager
def _expected_warnings_silenced() -> Iterator[None]:
    """The exporters' warnings about what defectlab does on purpose: torch.jit and the legacy exporter are
    deprecated (both kept, docs/deploy.md), tracing turns shapes into constants (the traced network sees one
    input size; the parity check runs other batch sizes), ultralytics caches anchors as plain attributes."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"You are using the legacy")
        warnings.filterwarnings("ignore", category=UserWarning, message=r"The tensor attributes .* were assigned "
                                                                        r"during export")
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _add_metadata(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=str)
    model.producer_name, model.producer_version = "defectlab", VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@contextlib.contextmanager
def _exportable_ops() -> Iterator[None]:
    """While capturing for ONNX: ``torch.cdist``, which has no ONNX translation, as its matrix-product form."""
    import torch

    def cdist(x1: Any, x2: Any, p: float = 2.0, compute_mode: str | None = None) -> Any:
        if p != 2.0:
            raise ExportError(f"torch.cdist with p={p} has no ONNX form here (only p=2)")
        squared = (x1 * x1).sum(-1, keepdim=True) - 2 * x1 @ x2.transpose(-1, -2) + (x2 * x2).sum(-1).unsqueeze(-2)
        return squared.clamp_min(0).sqrt()

    class Replaced(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func is torch.cdist:
                return cdist(*args, **(kwargs or {}))
            return func(*args, **(kwargs or {}))

    with Replaced():
        yield


_RESIZE_REGISTERED: list[bool] = []


def _register_antialiased_resize() -> None:
    """Teach the legacy exporter Pillow-like antialiased bilinear resizing (ONNX Resize, antialias=1, opset 18)."""
    if _RESIZE_REGISTERED:
        return
    import torch
    from torch.onnx import register_custom_op_symbolic

    def resize(g: Any, x: Any, output_size: Any, align_corners: Any, scales_h: Any = None, scales_w: Any = None
               ) -> Any:
        leading = g.op("Slice", g.op("Shape", x), g.op("Constant", value_t=torch.tensor([0])),
                       g.op("Constant", value_t=torch.tensor([2])))
        sizes = g.op("Concat", leading, output_size, axis_i=0)
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return g.op("Resize", x, empty, empty, sizes, antialias_i=1, coordinate_transformation_mode_s="half_pixel",
                    mode_s="linear", exclude_outside_i=1)

    register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", resize, MIN_OPSET)
    _RESIZE_REGISTERED.append(True)


def write_torchscript(trained: TrainedModel, threshold: float | None, metadata: dict[str, Any], example: Any,
                      path: Path) -> str:
    """The TorchScript file at ``path``: the network traced at its input size inside a scripted graph that
    holds the preprocessing and the task's answer; the metadata as the extra file ``defectlab.json``."""
    import torch

    from defectlab.workflows.export_graph import inference_graph, network_of, preprocessing

    prepare = preprocessing(trained.transform)
    with torch.no_grad():
        try:
            network = network_of(trained.model, trained.task, trained.tta, trained.offsets).eval()
            traced = torch.jit.trace(network, prepare(example), check_trace=False, strict=False)
            scripted = torch.jit.script(inference_graph(trained.model, trained.task, trained.transform, threshold,
                                                        network=traced))
        except Exception as exc:  # tracing and TorchScript's compiler fail in many classes
            raise ExportError(f"TorchScript cannot capture this model ({type(exc).__name__}: {_first_line(exc)}); "
                              f"export it to ONNX instead (--format onnx)") from exc
        metadata["exporter"] = "torchscript"
        torch.jit.save(scripted, str(path), _extra_files={"defectlab.json": json.dumps(metadata, default=str)})
    return "torchscript"
