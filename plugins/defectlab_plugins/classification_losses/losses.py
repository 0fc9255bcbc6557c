"""Classification losses on logits: cross-entropy with label smoothing and class weights, softmax focal loss.

Shared conventions:

* ``pred`` holds logits of shape (N, K), ``target`` class indices of shape (N,); a target equal
  to ``ignore_index`` counts nowhere (its loss is 0).
* ``class_weights`` is ``"none"``, ``"inverse_frequency"`` (w_c = N / (k·n_c) from the training
  class counts given to ``setup``, normalised to mean 1; SPEC 002 §4.2–4.4) or one weight per class.
* ``reduction="mean"`` follows PyTorch's weighted mean: the sum of the per-sample losses divided
  by the sum of the weights of the samples' true classes (their number without weights); 0 when
  no sample counts.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectlab import DataError, DefectlabError, ParameterError, Range

ClassWeights = Literal["none", "inverse_frequency"] | list[float]
WEIGHT_CHOICES = ("none", "inverse_frequency")
Reduction = Literal["mean", "sum", "none"]


# --- class weights ------------------------------------------------------------------------------

def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """w_c = N / (k·n_c) (SPEC 002 §4.2), normalised to mean 1 over the classes that have samples.

    N is the number of samples, k the number of classes and n_c the count of class c; a class
    with no sample gets weight 0. E.g. counts [90, 10] give raw weights [0.556, 5.0] and
    normalised ones [0.2, 1.8].
    """
    counts = list(counts)
    if any(isinstance(c, bool) or not float(c).is_integer() or c < 0 for c in counts):
        raise DataError(f"class counts must be whole numbers ≥ 0, got {counts}")
    present = [c for c in counts if c > 0]
    if not present:
        raise DataError(f"inverse-frequency class weights need at least one class with samples, got counts {counts}")
    total, k = sum(counts), len(counts)
    raw = [total / (k * c) if c > 0 else 0.0 for c in counts]
    mean = sum(raw) / len(present)
    return [w / mean for w in raw]


def checked_class_weights(class_weights: ClassWeights) -> str | tuple[float, ...]:
    """``"none"``, ``"inverse_frequency"`` or a tuple of weights ≥ 0, not all 0 (else a ParameterError)."""
    if isinstance(class_weights, str):
        if class_weights not in WEIGHT_CHOICES:
            raise ParameterError(f"class_weights must be one of {', '.join(map(repr, WEIGHT_CHOICES))} or a list "
                                 f"of one weight per class, got {class_weights!r}")
        return class_weights
    try:
        weights = tuple(float(w) for w in class_weights)
    except (TypeError, ValueError):
        raise ParameterError(f"class_weights must be one of {', '.join(map(repr, WEIGHT_CHOICES))} or a list of "
                             f"one weight per class, got {class_weights!r}") from None
    if not weights or any(math.isnan(w) or w < 0 or math.isinf(w) for w in weights) or not any(weights):
        raise ParameterError(f"class_weights must be finite weights ≥ 0, not all 0, one per class; got {list(weights)}")
    return weights


# --- logits and targets -------------------------------------------------------------------------

def checked_logits_and_targets(pred: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """``pred`` as float logits (N, K), ``target`` as long (N,) on its device, and which samples count.

    DataError when the shapes do not fit or a target is neither a class index in [0, K) nor
    ``ignore_index``.
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise DataError(f"pred and target must be torch tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim != 2 or not pred.is_floating_point():
        raise DataError(f"pred must hold floating-point logits of shape (N, K), got {pred.dtype} of shape "
                        f"{tuple(pred.shape)}")
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()  # half precision loses the tails of log_softmax
    n, k = pred.shape
    if tuple(target.shape) != (n,):
        raise DataError(f"target of shape {tuple(target.shape)} does not fit logits of shape {(n, k)}: expected "
                        f"class indices of shape ({n},)")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise DataError(f"target must hold integer class indices in [0, {k}), got dtype {target.dtype}")
    target = target.to(pred.device, torch.long)
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= k))
    if bool(bad.any()):
        found = torch.unique(target[bad])[:5].tolist()
        raise DataError(f"target must hold class indices in [0, {k}) for logits of {k} classes, or ignore_index "
                        f"{ignore_index}; found {found}")
    return pred, target, valid


def reduce_samples(loss: Tensor, true_weight: Tensor, reduction: str) -> Tensor:
    """'none': the loss per sample; 'sum'; 'mean': the sum over Σ true_weight (PyTorch's weighted mean), or 0."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    total = true_weight.sum()
    return loss.sum() / torch.where(total > 0, total, torch.ones_like(total))


# --- loss modules -------------------------------------------------------------------------------

class ClassificationLoss(nn.Module):
    """Base of the losses here: checks the logits and targets, resolves the class weights, reduces."""

    name: str

    def __init__(self, class_weights: ClassWeights = "none", ignore_index: int = -100, reduction: Reduction = "mean"):
        super().__init__()
        self.class_weights = class_weights if isinstance(class_weights, str) else list(class_weights)
        if reduction not in typing.get_args(Reduction):
            raise ParameterError(f"reduction must be one of {', '.join(map(repr, typing.get_args(Reduction)))}, "
                                 f"got {reduction!r}")
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.classes: list[str] | None = None
        weights = checked_class_weights(class_weights)
        explicit = None if isinstance(weights, str) else torch.tensor(weights, dtype=torch.float64)
        self.register_buffer("weight", explicit, persistent=False)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in inspect.signature(type(self)).parameters)

    def setup(self, *, classes: list[str], class_counts: list[int]) -> None:
        """Learn the class names and, with ``class_weights="inverse_frequency"``, the weights from the counts."""
        if len(classes) != len(class_counts):
            raise DataError(f"setup got {len(classes)} class names but {len(class_counts)} class counts")
        self.classes = list(classes)
        if self.class_weights == "inverse_frequency":
            self.weight = torch.tensor(inverse_frequency_weights(class_counts), dtype=torch.float64)
        elif self.weight is not None and len(self.weight) != len(classes):
            raise DataError(f"class_weights has {len(self.weight)} values but the data has {len(classes)} classes "
                            f"({', '.join(map(str, classes))}); give one weight per class")

    def class_weight(self, pred: Tensor) -> Tensor | None:
        """One weight per class on ``pred``'s device and dtype, or None when every class weighs 1."""
        if self.class_weights == "inverse_frequency" and self.weight is None:
            raise DefectlabError(f"{self.name}(class_weights='inverse_frequency') needs the training class counts: "
                                 f"call loss.setup(classes=..., class_counts=...) before the first forward (the "
                                 f"training engine does this)")
        if self.weight is None:
            return None
        if len(self.weight) != pred.shape[1]:
            given = (f"class_weights has {len(self.weight)} values" if self.class_weights != "inverse_frequency"
                     else f"setup gave class counts of {len(self.weight)} classes")
            raise DataError(f"{given} but the logits have {pred.shape[1]} classes (shape {tuple(pred.shape)})")
        return self.weight.to(device=pred.device, dtype=pred.dtype)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target, valid = checked_logits_and_targets(pred, target, self.ignore_index)
        weight = self.class_weight(pred)
        safe_target = target.masked_fill(~valid, 0)
        true_weight = valid.to(pred.dtype) if weight is None else weight[safe_target] * valid
        return reduce_samples(self.per_sample(pred, target, safe_target, valid, weight), true_weight, self.reduction)

    def per_sample(self, pred: Tensor, target: Tensor, safe_target: Tensor, valid: Tensor,
                   weight: Tensor | None) -> Tensor:
        """The loss of each sample, 0 where ``valid`` is False (``safe_target`` holds 0 there)."""
        raise NotImplementedError


class CrossEntropy(ClassificationLoss):
    """Cross-entropy on logits with label smoothing and class weights (torch.nn.functional.cross_entropy).

    With smoothing ε the target distribution is q = (1 − ε)·onehot(y) + ε/K and a sample scores
    −Σ_c w_c q_c log softmax(z)_c; the mean divides the sum by Σ w_y over the samples (PyTorch's
    convention). ``class_weights="inverse_frequency"`` uses w_c = N / (k·n_c) from the training
    split's class counts (given to ``setup`` by the engine), normalised to mean 1 over the classes
    with samples; a class without training samples weighs 0 (SPEC 002 §4.2–4.4).

    Args:
        label_smoothing: ε in [0, 1): the share of the target spread evenly over all classes
            (0.11 in SPEC 001's best cable classifier).
        class_weights: 'none' (every class weighs 1), 'inverse_frequency' (w_c = N / (k·n_c)
            from the training class counts, mean 1), or a list of one weight ≥ 0 per class.
        ignore_index: target value whose samples count nowhere.
        reduction: 'mean' (sum of the losses over the sum of the true classes' weights, as
            PyTorch does; 0 when no sample counts), 'sum', or 'none' (one loss per sample,
            ignored ones 0).
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: Annotated[float, Range(0, 1, high_open=True)] = 0.0,
                 class_weights: ClassWeights = "none", ignore_index: int = -100, reduction: Reduction = "mean"):
        super().__init__(class_weights, ignore_index, reduction)
        self.label_smoothing = float(label_smoothing)

    def per_sample(self, pred: Tensor, target: Tensor, safe_target: Tensor, valid: Tensor,
                   weight: Tensor | None) -> Tensor:
        return F.cross_entropy(pred, target, weight=weight, ignore_index=self.ignore_index, reduction="none",
                               label_smoothing=self.label_smoothing)


class MulticlassFocal(ClassificationLoss):
    """Softmax focal loss (Lin et al. 2017): −α_y (1 − p_y)^γ log p_y, p = softmax of the logits.

    log p_y comes from log_softmax and 1 − p_y from −expm1(log p_y), so the loss and its
    gradient stay finite and exact for saturated logits. α_y is the true class's weight; γ = 0
    without weights is cross-entropy exactly, and with weights it is weighted cross-entropy with
    the same weighted mean.

    Args:
        gamma: focusing exponent γ ≥ 0; larger values shrink the loss of well-classified
            samples (γ = 0 gives cross-entropy).
        class_weights: α per class: 'none' (every class weighs 1), 'inverse_frequency'
            (w_c = N / (k·n_c) from the training class counts, mean 1), or a list of one weight
            ≥ 0 per class.
        ignore_index: target value whose samples count nowhere.
        reduction: 'mean' (sum of the losses over the sum of the true classes' weights, as
            PyTorch's cross-entropy does; 0 when no sample counts), 'sum', or 'none' (one loss
            per sample, ignored ones 0).
    """

    name = "multiclass_focal"

    def __init__(self, gamma: Annotated[float, Range(0)] = 2.0, class_weights: ClassWeights = "none",
                 ignore_index: int = -100, reduction: Reduction = "mean"):
        super().__init__(class_weights, ignore_index, reduction)
        self.gamma = float(gamma)

    def per_sample(self, pred: Tensor, target: Tensor, safe_target: Tensor, valid: Tensor,
                   weight: Tensor | None) -> Tensor:
        log_pt = F.log_softmax(pred, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
        loss = -log_pt
        if self.gamma:
            miss = -torch.expm1(log_pt)  # 1 − p_y, exact as p_y → 1
            if self.gamma < 1:  # keep the gradient of miss^γ finite where miss = 0
                miss = miss.clamp_min(torch.finfo(miss.dtype).tiny)
            loss = loss * miss.pow(self.gamma)
        if weight is not None:
            loss = loss * weight[safe_target]
        return loss.masked_fill(~valid, 0.0)


LOSSES = (CrossEntropy, MulticlassFocal)
