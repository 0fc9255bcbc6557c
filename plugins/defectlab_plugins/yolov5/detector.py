"""The YOLOv5 network (ultralytics' anchor-free "v5u" DetectionModel) as a defectlab detection backbone.

:class:`YOLOv5` holds ultralytics' ``DetectionModel`` as ``model``, so its tensors are named
``model.model.<layer>.…`` and the backbone, ``model.model[0:10]`` (stem, C3 stages and SPPF), is
what ``--init-from`` loads and ``freeze`` keeps. It follows the shared detection convention:
in eval mode ``model(images)`` returns one dict of ``boxes`` (x1, y1, x2, y2 in pixels of the
input), ``scores`` and ``labels`` per image, after ultralytics' own NMS with its validator's
settings; in training mode ``model(images, targets)`` returns ultralytics' box, cls and dfl
losses by name, so defectlab's engine could train it too. ``defectlab train`` trains it with
ultralytics' own trainer instead (:meth:`YOLOv5.train_externally`).
"""

from __future__ import annotations

import inspect
import logging
import zipfile
from collections.abc import Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from defectlab import DataError, WeightReport, load_matching, read_state_dict
from defectlab_plugins.yolov5.environment import ultralytics_module

log = logging.getLogger("defectlab.backbones")

#: Layers 0-9 of YOLOv5's network are its backbone; 10 on are the neck (PAN) and the Detect head.
BACKBONE_LAYERS = 10


class YOLOv5(nn.Module):
    """ultralytics' YOLOv5 (v5u: anchor-free Detect head) built from its yaml, with defectlab's input and output.

    Images come in normalised as the data module makes them; ``input_mean`` and ``input_std``
    (buffers, saved with the weights) undo that normalisation, since YOLO works on pixels in
    [0, 1]. They are 0 and 1 (no change) until :meth:`take_normalisation` sets them.
    """

    #: State-dict prefixes of the backbone, model.model[0:10]: what --init-from loads and freeze keeps.
    backbone_prefixes = tuple(f"model.model.{layer}." for layer in range(BACKBONE_LAYERS))

    def __init__(self, size: str = "n", num_classes: int = 80, in_chans: int = 3, weights: str | None = None,
                 freeze: bool = False, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
                 train_args: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        tasks = ultralytics_module("ultralytics.nn.tasks")
        settings = ultralytics_module("ultralytics.cfg")
        self.size, self.freeze, self.conf, self.iou, self.max_det = size, freeze, conf, iou, max_det
        self.train_args = dict(train_args or {})
        self.model = tasks.DetectionModel(f"yolov5{size}.yaml", ch=in_chans, nc=num_classes, verbose=False)
        self.model.args = settings.get_cfg()  # ultralytics' default loss gains (box, cls, dfl) for the criterion
        self.register_buffer("input_mean", torch.zeros(in_chans))
        self.register_buffer("input_std", torch.ones(in_chans))
        self.weights_report: WeightReport | None = None
        if weights is not None:
            self.weights_report = self.load_weights(weights)
        if freeze:
            for parameter in self.backbone().parameters():
                parameter.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        return int(self.model.model[-1].nc)

    @property
    def in_chans(self) -> int:
        return int(self.input_mean.numel())

    def backbone(self) -> nn.Module:
        """model.model[0:10], the part that transfer loads and freezing keeps."""
        return self.model.model[:BACKBONE_LAYERS]

    # --- input and output ------------------------------------------------------------------------------

    def take_normalisation(self, transform: Any) -> None:
        """Learn what ``transform`` (the data module's ImageTransform) does to pixel values, to undo it.

        It is probed with a black and a white pixel: a normalisation (x - mean) / std maps 0 to
        -mean/std and 1 to (1 - mean)/std.
        """
        import numpy as np

        channels = self.in_chans
        black, white = (np.full((1, 1, 3) if channels == 3 else (1, 1), value, np.uint8) for value in (0, 255))
        low, high = (transform(image, train=False).reshape(channels, -1)[:, 0].double() for image in (black, white))
        std = 1.0 / (high - low)
        self.input_std.copy_(std.float())
        self.input_mean.copy_((-low * std).float())

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """The images as YOLO takes them: pixel values in [0, 1]."""
        return images * self.input_std.view(1, -1, 1, 1) + self.input_mean.view(1, -1, 1, 1)

    def forward(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]] | None = None) -> Any:
        """Eval mode: one dict (boxes, scores, labels) per image. Training mode: the losses by name."""
        x = self.pixels(images)
        if self.training:
            if targets is None:
                raise DataError("in training mode the yolov5 model needs the targets: model(images, targets)")
            return self.losses(x, targets)
        return self.detections(self.model(x), x.shape[-2:])

    def detections(self, raw: Any, size: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """ultralytics' NMS (its validator's settings: multi-label, conf, iou, max_det), boxes clipped to the image."""
        nms = ultralytics_module("ultralytics.utils.nms")
        kept = nms.non_max_suppression(raw, self.conf, self.iou, multi_label=True, max_det=self.max_det)
        height, width = int(size[0]), int(size[1])
        result = []
        for rows in kept:
            boxes = rows[:, :4].float().clone()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            result.append({"boxes": boxes, "scores": rows[:, 4].float(), "labels": rows[:, 5].long()})
        return result

    def export_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every anchor point's box (N, A, 4) as x1, y1, x2, y2 and class scores (N, A, K): what ultralytics' NMS
        selects from, as tensors of a fixed shape that an exported graph can return."""
        raw = self.model(self.pixels(images))
        dense = (raw[0] if isinstance(raw, (tuple, list)) else raw).transpose(1, 2)
        centre, half = dense[..., :2], dense[..., 2:4] / 2
        return {"boxes": torch.cat([centre - half, centre + half], -1), "scores": dense[..., 4:]}

    def export_postprocess(self, image_size: tuple[int, int]) -> dict[str, Any]:
        """ultralytics' selection (see :meth:`detections`) for :func:`defectlab.runtime.detections.dense_detections`."""
        nms = ultralytics_module("ultralytics.utils.nms")
        max_nms = inspect.signature(nms.non_max_suppression).parameters["max_nms"].default
        return {"score_threshold": self.conf, "iou": self.iou, "max_detections": self.max_det,
                "max_candidates": int(max_nms), "clip_after_nms": True}

    def losses(self, x: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """ultralytics' detection loss (task-aligned assignment; box, cls and dfl terms with its gains), per image."""
        batch = ultralytics_batch(x, targets)
        total, parts = self.model.loss(batch)  # total: the three terms times the batch size
        terms = total / max(len(x), 1)
        return {name: terms[index] for index, name in enumerate(parts)}

    # --- weights ----------------------------------------------------------------------------------------

    def load_weights(self, path: str | Path) -> WeightReport:
        """Load what fits from a local file: a defectlab checkpoint or state dict, or an ultralytics .pt
        (yolov5nu.pt, a run's weights/best.pt); report and log the rest."""
        state = read_weights(path)
        report = load_matching(self, state, str(path), prefixes=("model.",))
        (log.warning if report.skipped or report.unused else log.info)(report.summary())
        return report

    def ultralytics_checkpoint(self) -> dict[str, Any]:
        """This network as an ultralytics checkpoint (its ``model`` entry), which ultralytics' ``YOLO(file)`` loads."""
        network = deepcopy(self.model).float()
        network.criterion = None
        return {"model": network, "train_args": {}}

    def train_externally(self, folder: Path, data: Any, settings: Any, resolved: Mapping[str, Any], resume: bool,
                         describe: Mapping[str, Any]) -> Any:
        """Train with ultralytics' own trainer into defectlab's run directory ``folder`` (see training.py); the
        resolved config is in ``folder``/config.json already and needs nothing more here."""
        from defectlab_plugins.yolov5.training import UltralyticsTraining

        return UltralyticsTraining(self, folder, data, settings, describe).fit(resume)


def ultralytics_batch(x: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Shared-convention targets (xyxy pixels, 0-based labels) as ultralytics' batch: img, batch_idx, cls and
    bboxes as normalised centre x, centre y, width, height."""
    height, width = x.shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=x.device)
    boxes, classes, owners = [], [], []
    for index, target in enumerate(targets):
        xyxy = target["boxes"].to(x.device, torch.float32).reshape(-1, 4)
        centre, extent = (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]
        boxes.append(torch.cat([centre, extent], 1) / scale)
        classes.append(target["labels"].to(x.device, torch.float32).reshape(-1, 1))
        owners.append(torch.full((len(xyxy),), float(index), device=x.device))
    return {"img": x, "bboxes": torch.cat(boxes) if boxes else torch.zeros(0, 4, device=x.device),
            "cls": torch.cat(classes) if classes else torch.zeros(0, 1, device=x.device),
            "batch_idx": torch.cat(owners) if owners else torch.zeros(0, device=x.device)}


def is_ultralytics_file(path: Path) -> bool:
    """Whether ``path`` is a torch zip file whose pickle names ultralytics' classes (a checkpoint it wrote)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            return any(b"ultralytics" in archive.read(name) for name in pickles)
    except (OSError, zipfile.BadZipFile):
        return False


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: through defectlab's safe reader, else (an ultralytics checkpoint, which
    pickles its model) through ultralytics' loader restricted to its own classes."""
    file = Path(path).expanduser()
    try:
        return read_state_dict(file)
    except DataError:
        if not (file.is_file() and is_ultralytics_file(file)):
            raise
    tasks = ultralytics_module("ultralytics.nn.tasks")
    try:
        checkpoint, _ = tasks.torch_safe_load(str(file), safe_only=True)
    except Exception as exc:  # a damaged file or classes of another ultralytics version: one line for the user
        raise DataError(f"cannot read the ultralytics checkpoint '{file}' ({type(exc).__name__}: {exc}); give a "
                        f"YOLOv5u .pt written by ultralytics, or a state dict (torch.save(model.state_dict(), PATH))"
                        ) from exc
    network = checkpoint.get("ema") or checkpoint.get("model")
    if not isinstance(network, nn.Module):
        raise DataError(f"'{file}' holds no network under 'model' or 'ema'; it is not an ultralytics checkpoint")
    return {name: tensor.float() if tensor.is_floating_point() else tensor
            for name, tensor in network.state_dict().items()}
