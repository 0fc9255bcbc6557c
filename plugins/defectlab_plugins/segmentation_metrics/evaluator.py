"""The ``segmentation`` evaluator: pixel IoU, precision (PA), recall, Dice and OII of binary defect masks.

Seed 003 eq. 22-23 (IoU, PA) and eq. 15-17 (OII, computed by the ``oii`` imbalance component,
reached through the registry like any other component). Works on torch tensors (on their
device, without importing torch itself) and on NumPy arrays, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from defectlab import DataError, ParameterError, PluginError, Range, UnknownComponentError, create

SCORES = ("iou", "pa", "recall", "dice", "oii")


def segmentation_scores(tp: float, fp: float, fn: float, oii: Callable[[float, float, float], float]
                        ) -> dict[str, float]:
    """IoU, PA = TP/(TP+FP), recall, Dice and ``oii(tp, fp, fn)`` from pixel counts (FP = background
    predicted as defect).

    A ratio whose denominator is 0 is 1.0 when TP + FP + FN = 0 (no defect to find and none
    predicted: a perfect empty prediction) and 0.0 otherwise (then TP = 0: e.g. nothing
    predicted while defects exist gives PA 0). The OII of FP = FN = 0 is 0.
    """
    errors_or_hits = tp + fp + fn

    def ratio(numerator: float, denominator: float) -> float:
        if denominator > 0:
            return numerator / denominator
        return 1.0 if errors_or_hits == 0 else 0.0

    return {
        "iou": ratio(tp, tp + fp + fn),
        "pa": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "oii": oii(tp, fp, fn),
    }


def output_imbalance_index() -> Callable[[float, float, float], float]:
    """The ``oii`` imbalance component (plugin ``oii``), which computes the OII from TP, FP and FN."""
    try:
        return create("imbalance", "oii")
    except UnknownComponentError as exc:
        raise PluginError(f"the segmentation evaluator reports the OII through imbalance 'oii' of the plugin "
                          f"'oii', which is not loaded ({exc}); let DEFECTLAB_PLUGINS or "
                          f"DEFECTLAB_DISABLE_PLUGINS load it") from exc


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "device")


def _as_arrays(pred: Any, target: Any) -> tuple[Any, Any]:
    """Both as torch tensors on the tensor's device if either is one, else both as NumPy arrays."""
    if _is_tensor(pred) or _is_tensor(target):
        import torch  # already imported by whoever made the tensor

        device = (pred if _is_tensor(pred) else target).device
        return torch.as_tensor(pred, device=device).detach(), torch.as_tensor(target, device=device).detach()
    import numpy as np

    return np.asarray(pred), np.asarray(target)


def _per_image(pred: Any, target: Any) -> tuple[Any, Any]:
    """(N, pixels) views of a prediction and a mask of one size, (N, H, W) or (N, 1, H, W) each."""
    def one_channel_more(shape: tuple[int, ...], than: tuple[int, ...]) -> bool:
        return len(shape) >= 3 and shape[1] == 1 and shape[:1] + shape[2:] == than

    pred_shape, target_shape = tuple(pred.shape), tuple(target.shape)
    fits = (pred_shape == target_shape or one_channel_more(pred_shape, target_shape)
            or one_channel_more(target_shape, pred_shape))
    if len(pred_shape) < 2 or not fits:
        raise DataError(
            f"pred of shape {pred_shape} and target of shape {target_shape} do not fit: expected one binary "
            f"defect map per image, (N, H, W) or (N, 1, H, W) each, of one size (score C-class logits "
            f"one class at a time)")
    n = pred_shape[0]
    return pred.reshape(n, -1), target.reshape(n, -1)


class SegmentationEvaluator:
    """Pixel IoU, precision (PA), recall, Dice and OII of binary defect masks over a whole dataset.

    ``update(pred, target)`` adds one batch: ``pred`` holds logits (or probabilities with
    ``from_logits=False``) of shape (N, H, W) or (N, 1, H, W), ``target`` 0/1 masks of the same
    size; torch tensors (any device) or NumPy arrays. A pixel is predicted defect when its
    probability exceeds ``threshold``. TP, FP (background predicted as defect), FN and TN are
    summed over every pixel seen, so the scores are dataset-level; ``compute()`` returns iou,
    pa (= TP/(TP+FP), Yi et al. 2022, eq. 23), recall, dice, oii, tp, fp, fn, tn and, with
    ``per_image``, the means over images as ``<score>_per_image``. A 0/0 ratio is 1.0 when
    TP + FP + FN = 0 (nothing to find, nothing found) and 0.0 otherwise.

    The engine also passes each batch's ``images`` and sample ``keys`` (``wants``): the first
    ``examples`` images are kept with their masks and predictions, and ``write(folder)`` draws
    them as predictions.png (TP green, FP red, FN blue). ``details()`` gives the counts and scores.

    Args:
        threshold: probability above which a pixel counts as defect, in (0, 1).
        from_logits: whether ``pred`` holds logits (True) or probabilities in [0, 1] (False).
        per_image: also report the mean over images of each score (images whose pixels are all
            ignored are left out).
        ignore_index: target value whose pixels are not scored (None: every pixel is scored).
        examples: how many images (the first ones seen) predictions.png shows with their mask
            and prediction overlaid (0: no picture).
    """

    name = "segmentation"
    wants = ("images", "keys")

    def __init__(self, threshold: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.5,
                 from_logits: bool = True, per_image: bool = False, ignore_index: int | None = None,
                 examples: Annotated[int, Range(0)] = 6):
        if ignore_index in (0, 1):
            raise ParameterError(f"ignore_index {ignore_index} is a class of the binary mask; use another value")
        self.oii = output_imbalance_index()
        self.threshold, self.from_logits, self.per_image, self.ignore_index = threshold, from_logits, per_image, ignore_index
        self.examples = examples
        # p > t  <=>  logit > log(t / (1 - t)): logits are compared without a sigmoid
        self.cut = math.log(threshold / (1 - threshold)) if from_logits else threshold
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.tp = self.fp = self.fn = self.tn = 0
        self.images = 0
        self.image_sums = dict.fromkeys(SCORES, 0.0)
        self.kept: list[dict[str, Any]] = []

    def update(self, pred: Any, target: Any, images: Any = None, keys: Any = None) -> None:
        """Add the confusion counts of one batch of predictions and 0/1 masks.

        ``images`` ((N, C, H, W) or (N, H, W)) and ``keys`` (N names) are optional; with them the
        first ``examples`` images seen are kept for predictions.png.
        """
        pred, target = _as_arrays(pred, target)
        shape = tuple(target.shape)
        pred, target = _per_image(pred, target)
        if bool((pred != pred).any()):
            raise DataError("pred contains NaN")
        if not self.from_logits and pred.shape[1] and (float(pred.min()) < 0 or float(pred.max()) > 1):
            raise DataError(f"pred holds values in [{float(pred.min()):g}, {float(pred.max()):g}] but from_logits=False "
                            f"expects probabilities in [0, 1]; pass from_logits=True for logits")
        defect, background = target == 1, target == 0
        bad = ~(defect | background)
        if self.ignore_index is not None:
            bad = bad & (target != self.ignore_index)
        if bool(bad.any()):
            also = f" or ignore_index {self.ignore_index}" if self.ignore_index is not None else ""
            raise DataError(f"target must hold 0 (background) and 1 (defect){also}; found {sorted(set(target[bad][:5].tolist()))}")
        predicted = pred > self.cut
        tp = (predicted & defect).sum(1).tolist()
        fp = (predicted & background).sum(1).tolist()
        fn = (~predicted & defect).sum(1).tolist()
        tn = (~predicted & background).sum(1).tolist()
        self.tp, self.fp, self.fn, self.tn = self.tp + sum(tp), self.fp + sum(fp), self.fn + sum(fn), self.tn + sum(tn)
        if self.per_image:
            for counts in zip(tp, fp, fn, tn):
                if sum(counts) == 0:
                    continue
                self.images += 1
                for key, value in segmentation_scores(*counts[:3], self.oii).items():
                    self.image_sums[key] += value
        if len(self.kept) < self.examples:
            self._keep(predicted, target, shape, images, keys)

    def _keep(self, predicted: Any, target: Any, shape: tuple[int, ...], images: Any, keys: Any) -> None:
        """Keep the batch's first images (as NumPy) with their masks and predictions, up to ``examples``."""
        import numpy as np

        def numpy(value: Any) -> Any:
            return value.detach().cpu().numpy() if _is_tensor(value) else np.asarray(value)

        size = shape[-2:] if len(shape) >= 3 else (1, shape[-1])
        take = min(self.examples - len(self.kept), len(predicted))
        masks = numpy(target[:take]).reshape(take, *size)
        predictions = numpy(predicted[:take]).reshape(take, *size)
        pictures = None if images is None else numpy(images[:take])
        for i in range(take):
            image = None
            if pictures is not None:
                image = pictures[i]
                if image.shape[-2:] != tuple(size):
                    raise DataError(f"images of shape {tuple(pictures.shape)} do not fit masks of size {tuple(size)}")
            key = str(keys[i]) if keys is not None else f"image {len(self.kept) + 1}"
            self.kept.append({"key": key, "image": image, "mask": masks[i], "predicted": predictions[i]})

    def compute(self) -> dict[str, float]:
        """Scores and counts over every pixel seen since the last ``reset()``."""
        if self.tp + self.fp + self.fn + self.tn == 0:
            raise DataError("no pixel scored yet: call update(pred, target) with at least one pixel that is not ignored")
        result = segmentation_scores(self.tp, self.fp, self.fn, self.oii)
        result.update(tp=float(self.tp), fp=float(self.fp), fn=float(self.fn), tn=float(self.tn))
        if self.per_image:
            result.update({f"{key}_per_image": total / self.images for key, total in self.image_sums.items()})
        return result

    def details(self) -> dict[str, Any]:
        """TP, FP, FN, TN, the scores, the threshold and the keys of the images drawn, for metrics.json."""
        scores = segmentation_scores(self.tp, self.fp, self.fn, self.oii)
        return {"tp": int(self.tp), "fp": int(self.fp), "fn": int(self.fn), "tn": int(self.tn), **scores,
                "threshold": self.threshold, "examples": [example["key"] for example in self.kept]}

    def write(self, folder: Path) -> dict[str, Path]:
        """predictions.png in ``folder``: the kept images with mask and prediction overlaid ({} without any)."""
        if not self.kept:
            return {}
        from defectlab_plugins.segmentation_metrics.plots import plot_predictions

        return {"predictions": plot_predictions(self.kept, Path(folder) / "predictions.png", self.threshold)}
