"""The network an export writes: raw uint8 images in, the run's preprocessing, the model, the task's answer out.

Preprocessing follows :class:`~defectlab.data.transforms.ImageTransform` step for step:
bilinear resize as Pillow does it (antialiased; the width first, then the height, each pass
rounded half up to whole grey levels; this matches Pillow exactly or on all but 0.2-0.5 % of
pixels, by one level, where a one-pass float resize differs on 10-25 %; docs/deploy.md), grey/RGB conversion (luminance
weights of ITU-R 601, or grey repeated), then the normalisation. Input: ``images`` uint8 (N, H, W, C), any N, H, W, and C 1 or 3. Outputs by task
(:data:`defectlab.runtime.exported.OUTPUT_NAMES`):

- classify: ``probabilities`` (N, classes) softmax, ``labels`` (N,) int64 argmax;
- segment: ``probabilities`` (N, h, w) sigmoid or (N, K, h, w) softmax, ``mask`` (N, h, w) uint8
  (1 above the threshold; for K classes the class index);
- anomaly: ``scores`` (N,), ``maps`` (N, h, w), ``defect`` (N,) bool (score >= threshold);
- detect: ``boxes`` (N, A, 4) x1, y1, x2, y2 and ``scores`` (N, A, classes) for every anchor,
  from the backbone's ``export_outputs``; the runtime's NMS makes detections of them.

(h, w) is the network's input size; boxes are in its pixels. A classifier or segmenter exported
with test-time augmentation runs its views inside the graph (:class:`Augmented`), on the
preprocessed batch, so the probabilities are the mean over the views.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectlab.data.transforms import (
    GREY_MEAN,
    GREY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LUMINANCE,
    ImageTransform,
    standardized,
)
from defectlab.training.adjustment import adjusted
from defectlab.training.tta import tta_logits


class Preprocessing(nn.Module):
    """uint8 (N, H, W, C) images to the normalised (N, channels, height, width) batch the network takes."""

    def __init__(self, size: tuple[int, int], channels: int, normalize: str) -> None:
        super().__init__()
        self.size, self.channels, self.per_image = [int(size[0]), int(size[1])], int(channels), normalize == "image"
        if normalize == "imagenet":
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((GREY_MEAN,), (GREY_STD,))
        else:
            mean, std = (0.0,) * channels, (1.0,) * channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.register_buffer("luminance", torch.tensor(LUMINANCE))

    def forward(self, images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).float()
        x = self._resized(x, [x.shape[2], self.size[1]])
        x = self._resized(x, self.size) / 255.0
        c = x.shape[1]
        if self.channels == 3:  # channel c // 2 and c - 1 are 0 for grey input, 1 and 2 for RGB
            x = torch.cat([x[:, :1], x[:, c // 2:c // 2 + 1], x[:, c - 1:]], 1)
        else:  # 0.299 R + 0.587 G + 0.114 B, or the grey channel itself
            weights = self.luminance[:c].view(1, -1, 1, 1)
            x = (x * weights).sum(1, keepdim=True) / weights.sum()
        return standardized(x) if self.per_image else (x - self.mean) / self.std


    def _resized(self, x: Tensor, size: list[int]) -> Tensor:
        """One of Pillow's two passes: antialiased bilinear to ``size``, rounded half up to uint8 levels."""
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return torch.floor(x + 0.5).clamp(0.0, 255.0)


class Adapter(nn.Module):
    """A model whose output an exported graph cannot return as it is, with a forward that makes it tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


class AnomalyOutputs(Adapter):
    """An anomaly model's ``{"scores", "maps"}`` as a tuple."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(x)
        return out["scores"].float(), out["maps"].float()


class Augmented(Adapter):
    """A classifier's or segmenter's logits of the mean probability over the views of test-time augmentation."""

    def __init__(self, model: nn.Module, tta: str) -> None:
        super().__init__(model)
        self.tta = tta

    def forward(self, x: Tensor) -> Tensor:
        return tta_logits(self.model, x, self.tta)


class Adjusted(Adapter):
    """A classifier's logits plus the offsets of its post-hoc logit adjustment (:mod:`defectlab.training.adjustment`),
    a constant of the graph."""

    def __init__(self, model: nn.Module, offsets: Tensor) -> None:
        super().__init__(model)
        self.register_buffer("offsets", offsets.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        return adjusted(self.model(x), self.offsets)


class DenseDetections(Adapter):
    """A detector's ``export_outputs``: boxes (N, A, 4) and scores (N, A, K) before NMS."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model.export_outputs(x)
        return out["boxes"].float(), out["scores"].float()


class TaskGraph(nn.Module):
    """Preprocessing, the network, and the decision threshold; each task's graph below adds its forward."""

    def __init__(self, prepare: Preprocessing, network: nn.Module, threshold: float) -> None:
        super().__init__()
        self.prepare, self.network, self.threshold = prepare, network, float(threshold)


class ClassifierGraph(TaskGraph):
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        probabilities = torch.softmax(self.network(self.prepare(images)).float(), 1)
        return probabilities, probabilities.argmax(1)


class SegmenterGraph(TaskGraph):
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.network(self.prepare(images)).float()
        if logits.shape[1] == 1:
            probabilities = torch.sigmoid(logits[:, 0])
            return probabilities, (probabilities > self.threshold).to(torch.uint8)
        probabilities = torch.softmax(logits, 1)
        return probabilities, probabilities.argmax(1).to(torch.uint8)


class AnomalyGraph(TaskGraph):
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        scores, maps = self.network(self.prepare(images))
        return scores, maps, scores >= self.threshold


class DetectorGraph(TaskGraph):
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.network(self.prepare(images))


GRAPHS = {"classify": ClassifierGraph, "segment": SegmenterGraph, "anomaly": AnomalyGraph, "detect": DetectorGraph}
ADAPTERS: dict[str, Any] = {"anomaly": AnomalyOutputs, "detect": DenseDetections}


def network_of(model: nn.Module, task: str, tta: str = "none", offsets: Tensor | None = None) -> nn.Module:
    """The part of the graph between preprocessing and the task's answer: the model, its adapter, or the model
    under test-time augmentation ``tta``; with a classifier's logit adjustment ``offsets`` added last."""
    if tta != "none":
        network: nn.Module = Augmented(model, tta)
    else:
        adapter = ADAPTERS.get(task)
        network = model if adapter is None else adapter(model)
    return network if offsets is None else Adjusted(network, offsets)


def preprocessing(transform: dict[str, Any]) -> Preprocessing:
    """The preprocessing of a run's ``transform`` (a checkpoint's image_size, channels and normalize)."""
    return Preprocessing(ImageTransform(**transform).size, transform.get("channels", 3),
                         transform.get("normalize", "imagenet"))


def inference_graph(model: nn.Module, task: str, transform: dict[str, Any], threshold: float | None,
                    network: nn.Module | None = None, tta: str = "none", offsets: Tensor | None = None) -> nn.Module:
    """The whole graph of a run's model (see the module's docstring), with test-time augmentation ``tta``, in eval
    mode; ``network`` replaces the model's own (a traced copy, for TorchScript)."""
    graph = GRAPHS[task](preprocessing(transform), network if network is not None else network_of(model, task, tta, offsets),
                         0.0 if threshold is None else threshold)
    return graph.eval()
