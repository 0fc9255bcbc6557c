"""Classification losses on logits: cross-entropy with label smoothing and class weights, softmax focal
loss, logit-adjusted cross-entropy.

Shared conventions:

* ``pred`` holds logits of shape (N, K). ``target`` holds either class indices of shape (N,),
  where a target equal to ``ignore_index`` counts nowhere (its loss is 0), or class
  probabilities of shape (N, K) in floating point, each row ≥ 0 and summing to 1 (what mixup and
  CutMix make); ``ignore_index`` does not apply to probabilities.
* Label smoothing ε turns a target row t (the one-hot row of a class index, or the given
  probabilities) into t' = (1 − ε)·t + ε/K, as torch.nn.functional.cross_entropy does.
* ``class_weights`` is ``"none"``, ``"inverse_frequency"`` (w_c = N / (k·n_c) from the training
  class counts given to ``setup``, normalised to mean 1; Hemmingsson and Olsson 2026 §4.2–4.4) or one weight per class.
  With probabilities a sample scores −Σ_c w_c t'_c log p_c (cross-entropy).
* ``reduction="mean"`` follows PyTorch's weighted mean: the sum of the per-sample losses divided
  by the sum of the weights of the samples' true classes (their number without weights); 0 when
  no sample counts. With probabilities the divisor is Σ_i Σ_c w_c t_ic (t before smoothing): N
  without weights, and the rule for class indices when the rows are one-hot.
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
EMPTY_CLASS_COUNT = 0.5  # the count a class without training samples gets in the class priors


# --- class weights and priors -------------------------------------------------------------------

def checked_counts(counts: Sequence[int]) -> list[int]:
    """``counts`` as a list; DataError unless every count is a whole number ≥ 0."""
    counts = list(counts)
    if any(isinstance(c, bool) or not float(c).is_integer() or c < 0 for c in counts):
        raise DataError(f"class counts must be whole numbers ≥ 0, got {counts}")
    return counts


def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """w_c = N / (k·n_c) (Hemmingsson and Olsson 2026 §4.2), normalised to mean 1 over the classes that have samples.

    N is the number of samples, k the number of classes and n_c the count of class c; a class
    with no sample gets weight 0. E.g. counts [90, 10] give raw weights [0.556, 5.0] and
    normalised ones [0.2, 1.8].
    """
    counts = checked_counts(counts)
    present = [c for c in counts if c > 0]
    if not present:
        raise DataError(f"inverse-frequency class weights need at least one class with samples, got counts {counts}")
    total, k = sum(counts), len(counts)
    raw = [total / (k * c) if c > 0 else 0.0 for c in counts]
    mean = sum(raw) / len(present)
    return [w / mean for w in raw]


def log_class_priors(counts: Sequence[int]) -> list[float]:
    """log π_c with π_c = n_c / N, the training class priors of ``counts``.

    A class without samples counts as half a sample (π_c = 0.5 / N): its log prior stays finite
    and lies below that of any class with one sample. E.g. counts [3, 1] give π = [0.75, 0.25]
    and [4, 0] give [1, 0.125].
    """
    counts = checked_counts(counts)
    total = sum(counts)
    if not total:
        raise DataError(f"class priors need at least one class with samples, got counts {counts}")
    return [math.log(max(c, EMPTY_CLASS_COUNT) / total) for c in counts]


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

def checked_logits_and_targets(pred: Tensor, target: Tensor,
                               ignore_index: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """``pred`` as float logits (N, K), ``target`` on its device, and which samples count.

    Class indices come back as long (N,) with the mask of the samples that are not
    ``ignore_index``; class probabilities (a floating-point target) as (N, K) in ``pred``'s
    dtype, with None for the mask (every sample counts). DataError when the shapes do not fit, a
    class index is neither in [0, K) nor ``ignore_index``, or a row of probabilities is no
    distribution.
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise DataError(f"pred and target must be torch tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim != 2 or not pred.is_floating_point():
        raise DataError(f"pred must hold floating-point logits of shape (N, K), got {pred.dtype} of shape "
                        f"{tuple(pred.shape)}")
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()  # half precision loses the tails of log_softmax
    n, k = pred.shape
    if target.is_floating_point():
        return pred, checked_probabilities(target, (n, k)).to(pred.device, pred.dtype), None
    if tuple(target.shape) != (n,):
        raise DataError(f"target of shape {tuple(target.shape)} does not fit logits of shape {(n, k)}: expected "
                        f"class indices of shape ({n},)")
    if target.is_complex() or target.dtype == torch.bool:
        raise DataError(f"target must hold integer class indices in [0, {k}) or floating-point class "
                        f"probabilities, got dtype {target.dtype}")
    target = target.to(pred.device, torch.long)
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= k))
    if bool(bad.any()):
        found = torch.unique(target[bad])[:5].tolist()
        raise DataError(f"target must hold class indices in [0, {k}) for logits of {k} classes, or ignore_index "
                        f"{ignore_index}; found {found}")
    return pred, target, valid


def checked_probabilities(target: Tensor, shape: tuple[int, int]) -> Tensor:
    """``target`` unchanged if it holds class probabilities of ``shape``: finite, ≥ 0, rows summing to 1.

    A row may miss 1 by 1e-4, or by 4 eps of the target's dtype where that is more (half
    precision: 0.0039); else a DataError says what is wrong.
    """
    n, k = shape
    if tuple(target.shape) != (n, k):
        raise DataError(f"target of dtype {target.dtype} and shape {tuple(target.shape)} does not fit logits of "
                        f"shape {(n, k)}: expected integer class indices of shape ({n},) or class probabilities "
                        f"of shape ({n}, {k})")
    rows = target.detach().double()
    sums = rows.sum(1)
    tolerance = max(1e-4, 4 * torch.finfo(target.dtype).eps)
    if bool(torch.isfinite(rows).all() & (rows >= 0).all() & ((sums - 1).abs() <= tolerance).all()):
        return target
    finite = torch.isfinite(rows).all(1)
    if not bool(finite.all()):
        raise DataError(f"target class probabilities must be finite; {int((~finite).sum())} of {n} rows hold NaN "
                        f"or infinite values (e.g. row {int((~finite).nonzero()[0])})")
    if bool((rows < 0).any()):
        raise DataError(f"target class probabilities must be ≥ 0; found {rows.min().item():.4g} in row "
                        f"{int((rows < 0).any(1).nonzero()[0])}")
    far = (sums - 1).abs() > tolerance
    first = int(far.nonzero()[0])
    raise DataError(f"each row of target class probabilities must sum to 1 (within {tolerance:.2g}); {int(far.sum())} "
                    f"of {n} rows do not (e.g. row {first} sums to {sums[first].item():.6g})")


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
    """Base of the losses here: checks the logits and targets, resolves the class weights, reduces.

    ``soft_targets = True`` tells the training engine that the loss takes class probabilities
    (N, K) too, so batches may be mixed (mixup, CutMix) for it.
    """

    name: str
    soft_targets = True

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
        if valid is None:
            true_weight = pred.new_ones(len(pred)) if weight is None else target @ weight
            return reduce_samples(self.soft_per_sample(pred, target, weight), true_weight, self.reduction)
        safe_target = target.masked_fill(~valid, 0)
        true_weight = valid.to(pred.dtype) if weight is None else weight[safe_target] * valid
        return reduce_samples(self.per_sample(pred, target, safe_target, valid, weight), true_weight, self.reduction)

    def per_sample(self, pred: Tensor, target: Tensor, safe_target: Tensor, valid: Tensor,
                   weight: Tensor | None) -> Tensor:
        """The loss of each sample, 0 where ``valid`` is False (``safe_target`` holds 0 there)."""
        raise NotImplementedError

    def soft_per_sample(self, pred: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        """The loss of each sample for class probabilities ``target`` (N, K)."""
        raise NotImplementedError


class CrossEntropy(ClassificationLoss):
    """Cross-entropy on logits with label smoothing and class weights (torch.nn.functional.cross_entropy).

    With smoothing ε the target distribution is q = (1 − ε)·onehot(y) + ε/K and a sample scores
    −Σ_c w_c q_c log softmax(z)_c; the mean divides the sum by Σ w_y over the samples (PyTorch's
    convention). Class probabilities t are smoothed the same way, t' = (1 − ε)·t + ε/K.
    ``class_weights="inverse_frequency"`` uses w_c = N / (k·n_c) from the training
    split's class counts (given to ``setup`` by the engine), normalised to mean 1 over the classes
    with samples; a class without training samples weighs 0 (Hemmingsson and Olsson 2026 §4.2–4.4).

    Args:
        label_smoothing: ε in [0, 1): the share of the target spread evenly over all classes
            (0.11 in the ResNet-18 cable notes's best cable classifier).
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

    def soft_per_sample(self, pred: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        return F.cross_entropy(pred, target, weight=weight, reduction="none", label_smoothing=self.label_smoothing)


class MulticlassFocal(ClassificationLoss):
    """Softmax focal loss (Lin et al. 2017): −α_y (1 − p_y)^γ log p_y, p = softmax of the logits.

    log p_y comes from log_softmax and 1 − p_y from −expm1(log p_y), so the loss and its
    gradient stay finite and exact for saturated logits. α_y is the true class's weight; γ = 0
    without weights is cross-entropy exactly, and with weights it is weighted cross-entropy with
    the same weighted mean. Class probabilities t (N, K) score −Σ_c α_c t_c (1 − p_c)^γ log p_c
    (there is no label smoothing here).

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
        loss = self.focused(log_pt)
        if weight is not None:
            loss = loss * weight[safe_target]
        return loss.masked_fill(~valid, 0.0)

    def soft_per_sample(self, pred: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        loss = self.focused(F.log_softmax(pred, dim=1)) * target
        if weight is not None:
            loss = loss * weight
        return loss.sum(1)

    def focused(self, log_p: Tensor) -> Tensor:
        """−(1 − p)^γ log p, elementwise, from log p."""
        loss = -log_p
        if self.gamma:
            miss = -torch.expm1(log_p)  # 1 − p, exact as p → 1
            if self.gamma < 1:  # keep the gradient of miss^γ finite where miss = 0
                miss = miss.clamp_min(torch.finfo(miss.dtype).tiny)
            loss = loss * miss.pow(self.gamma)
        return loss


class LogitAdjusted(CrossEntropy):
    """Logit-adjusted cross-entropy (Menon et al. 2021): CE(z + τ·log π, y), π the training class priors.

    Adding τ·log π_c to the logits inside the loss raises the bar for frequent classes, so the
    model learns logits that do not favour them; τ = 1 is the balanced softmax of Ren et al.
    (2020). The adjustment lives in the loss only: predict from the raw logits z, as the engine
    and exported models do. π_c = n_c / N comes from the training class counts the engine gives
    to ``setup``; a class without training samples counts as half a sample (π_c = 0.5 / N), so
    its adjusted logits stay finite. Label smoothing, class weights, class probabilities as
    targets and the mean are those of ``cross_entropy``, on the adjusted logits.

    Args:
        tau: τ ≥ 0, the strength of the adjustment (1: balanced softmax; 0: cross-entropy).
        label_smoothing: ε in [0, 1): the share of the target spread evenly over all classes.
        class_weights: 'none' (every class weighs 1), 'inverse_frequency' (w_c = N / (k·n_c)
            from the training class counts, mean 1), or a list of one weight ≥ 0 per class.
        ignore_index: target value whose samples count nowhere.
        reduction: 'mean' (sum of the losses over the sum of the true classes' weights, as
            PyTorch does; 0 when no sample counts), 'sum', or 'none' (one loss per sample,
            ignored ones 0).
    """

    name = "logit_adjusted"

    def __init__(self, tau: Annotated[float, Range(0)] = 1.0,
                 label_smoothing: Annotated[float, Range(0, 1, high_open=True)] = 0.0,
                 class_weights: ClassWeights = "none", ignore_index: int = -100, reduction: Reduction = "mean"):
        super().__init__(label_smoothing, class_weights, ignore_index, reduction)
        self.tau = float(tau)
        self.register_buffer("log_prior", None, persistent=False)

    def setup(self, *, classes: list[str], class_counts: list[int]) -> None:
        """Learn the class names, the class priors and, with ``class_weights="inverse_frequency"``, the weights."""
        super().setup(classes=classes, class_counts=class_counts)
        self.log_prior = torch.tensor(log_class_priors(class_counts), dtype=torch.float64)

    def adjusted(self, pred: Tensor) -> Tensor:
        """z + τ·log π on ``pred``'s device and dtype."""
        if self.log_prior is None:
            raise DefectlabError(f"{self.name} needs the training class counts for its class priors: call "
                                 f"loss.setup(classes=..., class_counts=...) before the first forward (the training "
                                 f"engine does this)")
        if len(self.log_prior) != pred.shape[1]:
            raise DataError(f"setup gave class counts of {len(self.log_prior)} classes but the logits have "
                            f"{pred.shape[1]} classes (shape {tuple(pred.shape)})")
        return pred + (self.tau * self.log_prior).to(device=pred.device, dtype=pred.dtype)

    def per_sample(self, pred: Tensor, target: Tensor, safe_target: Tensor, valid: Tensor,
                   weight: Tensor | None) -> Tensor:
        return super().per_sample(self.adjusted(pred), target, safe_target, valid, weight)

    def soft_per_sample(self, pred: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        return super().soft_per_sample(self.adjusted(pred), target, weight)


LOSSES = (CrossEntropy, MulticlassFocal, LogitAdjusted)
