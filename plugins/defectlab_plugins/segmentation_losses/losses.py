"""Segmentation losses of seed 003 on logits: the baselines (eq. 1-12) and DIBE (eq. 18, 20, 21).

Shared conventions (Yi et al. 2022):

* ``pred`` holds logits of shape (N, C, *spatial); C = 1 for a binary defect mask. With C > 1
  every class is scored one-vs-rest (a sigmoid per class) and the losses are averaged over
  classes. Probabilities come from ``logsigmoid`` of the logits, never ``log(sigmoid)``.
* ``target`` is a 0/1 mask (N, *spatial) or (N, 1, *spatial) when C = 1; with C > 1 it holds
  integer class indices (N, *spatial) or 0/1 masks shaped like ``pred``. Pixels equal to
  ``ignore_index`` count nowhere.
* **alpha weights defect pixels predicted as background** (y = 1, ŷ = 0: false negatives) and
  **beta background predicted as defect** (y = 0, ŷ = 1: false positives), in every loss. Raising
  alpha makes missed defects cost more, so FN falls and the OII (> 0 when FN > FP) goes down.
  The paper's loss equations call these regions the other way round; its results (Fig. 10,
  App. C) hold with the reading used here.
* Region terms (Dice, Tversky) use soft counts TP = Σ y·p̂, FP = Σ (1 − y)·p̂, FN = Σ y·(1 − p̂)
  summed over the whole batch, one per class. With ε = 0 a class with TP = FP = FN = 0 (an empty
  mask predicted empty, or no pixel that counts) scores 0, as in segmentation-models-pytorch.
* ``reduction="mean"`` of an empty batch, or of one whose pixels are all ignored, is 0.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectlab import DataError, ParameterError, Range

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")

# The bounds of the hyperparameters, checked by the registry before a loss is built.
Share = Annotated[float, Range(0, 1)]  # λ, θ, and DIBE's α: a share of a whole
NonNegative = Annotated[float, Range(0)]  # α, β as weights, γ as a focusing exponent, ε
Positive = Annotated[float, Range(0, low_open=True)]  # γ of the 1/γ powers


# --- parameters ------------------------------------------------------------------------------

def checked_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ParameterError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")
    return reduction


# --- logits and targets as one-vs-rest binary problems -------------------------------------------

class OneVsRest:
    """Logits and 0/1 targets of one shape (N, C, *spatial), the entries that count, and the
    true class's probabilities, computed once and shared by the terms of a compound loss."""

    def __init__(self, logits: Tensor, target: Tensor, valid: Tensor | None):
        self.logits, self.target = logits, target
        self.valid = valid  # bool, broadcastable to ``logits``; None when nothing is ignored

    @property
    def class_dims(self) -> tuple[int, ...]:
        """Every dimension but the class one: the batch and the pixels."""
        return (0, *range(2, self.logits.ndim))

    @cached_property
    def true_logit(self) -> Tensor:
        """z: the logit on defect entries (y = 1), minus the logit on background ones (y = 0)."""
        with torch.no_grad():
            sign = self.target.mul(2).sub_(1)
        return self.logits * sign

    @cached_property
    def log_p_true(self) -> Tensor:
        """log p_t = logsigmoid(z): log p̂ on defect entries, log(1 − p̂) on background ones."""
        return F.logsigmoid(self.true_logit)

    @cached_property
    def p_miss(self) -> Tensor:
        """1 − p_t = sigmoid(−z): 1 − p̂ on defect entries, p̂ on background ones; exact as p_t → 1."""
        return torch.sigmoid(-self.true_logit)


def _expected_target(pred: Tensor) -> str:
    n, c, spatial = pred.shape[0], pred.shape[1], tuple(pred.shape[2:])
    if c == 1:
        return f"a 0/1 mask of shape {(n, *spatial)} or {tuple(pred.shape)}"
    return (f"class indices in [0, {c}) of shape {(n, *spatial)}, or 0/1 masks of shape {tuple(pred.shape)}")


def one_vs_rest(pred: Tensor, target: Tensor, ignore_index: int | None = None) -> OneVsRest:
    """Check ``pred``/``target`` and turn them into per-class binary problems (DataError if they do not fit)."""
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise DataError(f"pred and target must be torch tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim < 2 or not pred.is_floating_point():
        raise DataError(f"pred must hold floating-point logits of shape (N, C, *spatial) with C = 1 for a binary "
                        f"mask, got {pred.dtype} of shape {tuple(pred.shape)}")
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()  # half precision loses the tails of logsigmoid
    n, c = pred.shape[0], pred.shape[1]
    target = target.to(pred.device)
    per_pixel = target.shape == (n, *pred.shape[2:])
    if not (target.shape == pred.shape or per_pixel):
        raise DataError(f"target of shape {tuple(target.shape)} does not fit logits of shape {tuple(pred.shape)}: "
                        f"expected {_expected_target(pred)}")
    ignored = None if ignore_index is None else target == ignore_index
    if c == 1 or not per_pixel:  # 0/1 masks
        bad = (target != 0) & (target != 1)
        expected = "0 (background) and 1 (defect)"
    else:  # class indices
        if target.is_floating_point() or target.dtype == torch.bool:
            raise DataError(f"target for {c}-class logits must hold integer class indices in [0, {c}), "
                            f"got dtype {target.dtype}")
        bad = (target < 0) | (target >= c)
        expected = f"class indices in [0, {c})"
    if ignored is not None:
        bad &= ~ignored
    if bool(bad.any()):
        found = torch.unique(target[bad])[:5].tolist()
        also = f" or ignore_index {ignore_index}" if ignore_index is not None else ""
        raise DataError(f"target must hold {expected}{also}; found {found}")
    if ignored is not None:
        target = target.masked_fill(ignored, 0)
    if c > 1 and per_pixel:
        target = F.one_hot(target.long(), c).movedim(-1, 1)
        ignored = None if ignored is None else ignored.unsqueeze(1)
    elif per_pixel:
        target = target.unsqueeze(1)
        ignored = None if ignored is None else ignored.unsqueeze(1)
    return OneVsRest(pred, target.to(pred.dtype), None if ignored is None else ~ignored)


# --- terms ------------------------------------------------------------------------------------

def power(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent``, exactly 0 with gradient 0 where base ≤ 0 when 0 < exponent < 1."""
    if 0 < exponent < 1:
        positive = base > 0
        return torch.where(positive, torch.where(positive, base, 1).pow(exponent), 0)
    return base.pow(exponent)


def ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with 0 / 0 = 0 (no errors and nothing to find: a perfect empty mask); finite gradient there."""
    return num / torch.where((num == 0) & (den == 0), 1, den)


def class_weights(b: OneVsRest, lambda_: float) -> Tensor:
    """λ on defect entries, 1 − λ on background ones (eq. 2); no gradient."""
    return b.target.mul(2 * lambda_ - 1).add_(1 - lambda_)


def focal_terms(b: OneVsRest, lambda_: float, gamma: float, alpha: float = 0.0, beta: float = 0.0) -> Tensor:
    """Eq. 18 entry by entry: −w_y (1 − p_t^s)^γ · s · log p_t.

    s = 1 + α on defects predicted as background, 1 + β on background predicted as defect and
    1 elsewhere, with ŷ = [p̂ > 0.5] taken without gradient; s·log p_t = log(p_t^s). α = β = 0
    is Focal (eq. 3), and γ = 0 as well is WBCE (eq. 2).
    """
    log_pt, reweighted = b.log_p_true, bool(alpha or beta)
    with torch.no_grad():
        minus_weight = class_weights(b, lambda_).neg_()
        if reweighted:
            wrong = ((b.logits > 0) != (b.target > 0)).to(log_pt.dtype)  # ŷ ≠ y
            scale = b.target.mul(alpha - beta).add_(beta).mul_(wrong).add_(1)
    if reweighted:
        log_pt = log_pt * scale
    loss = log_pt * minus_weight
    if gamma:
        # 1 − p_t^s; with s = 1 everywhere the exact 1 − p_t. Elsewhere 1 − exp() rounds only
        # where p_t^s is within 1e-7 of 1, terms too small to matter in a sum.
        loss = loss * power(1 - torch.exp(log_pt) if reweighted else b.p_miss, gamma)
    return loss


def reduce_entries(loss: Tensor, b: OneVsRest, reduction: str) -> Tensor:
    """'none': the loss per entry (ignored ones 0); 'sum'; 'mean' over the entries that count (0 if none)."""
    if b.valid is not None:
        loss = torch.where(b.valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    count = max(loss.numel(), 1) if b.valid is None else b.valid.expand_as(loss).sum().clamp_min(1)
    return loss.sum() / count


@dataclass(frozen=True)
class SoftCounts:
    """Soft TP, FP, FN per class, summed over the batch (eq. 5, 7)."""

    tp: Tensor
    fp: Tensor
    fn: Tensor


def soft_counts(b: OneVsRest) -> SoftCounts:
    """TP = Σ y·p̂, FP = Σ (1 − y)·p̂, FN = Σ y·(1 − p̂) per class, over the batch.

    From the exact 1 − p_t: FN = Σ y(1 − p_t), FP = Σ(1 − p_t) − FN, TP = Σ y − FN, whose
    rounding is relative to the sums, which is what the ratios built on them see.
    """
    miss, y = b.p_miss, b.target
    if b.valid is not None:
        miss, y = miss * b.valid, y * b.valid
    fn = (miss * y).sum(b.class_dims)
    return SoftCounts(tp=y.sum(b.class_dims) - fn, fp=miss.sum(b.class_dims) - fn, fn=fn)


def tversky_errors(c: SoftCounts, alpha: float, beta: float) -> Tensor:
    """α·FN + β·FP: α on missed defects, β on false alarms (Yi et al. 2022 reading of eq. 7)."""
    return alpha * c.fn + beta * c.fp


def one_minus_tversky(c: SoftCounts, alpha: float, beta: float, smooth: float) -> Tensor:
    """1 − Tv with Tv = (TP + ε)/(TP + α·FN + β·FP + ε), written without the cancelling difference; 0 at 0/0."""
    errors = tversky_errors(c, alpha, beta)
    return ratio(errors, c.tp + errors + smooth)


def minus_log_tversky(c: SoftCounts, alpha: float, beta: float, smooth: float) -> Tensor:
    """−log Tv = log1p((α·FN + β·FP)/(TP + ε)); 0 at 0/0, +inf when only TP + ε is 0."""
    return torch.log1p(ratio(tversky_errors(c, alpha, beta), c.tp + smooth))


# --- loss modules ------------------------------------------------------------------------------

class SegmentationLoss(nn.Module):
    """Base of the losses here: checks and converts ``pred``/``target``, then scores them."""

    def __init__(self, ignore_index: int | None = None, **hyperparameters: float | str):
        super().__init__()
        self.ignore_index = ignore_index
        self.hyperparameters = {**hyperparameters, "ignore_index": ignore_index}

    def extra_repr(self) -> str:
        order = list(inspect.signature(type(self)).parameters)
        keys = sorted(self.hyperparameters, key=lambda k: order.index(k) if k in order else len(order))
        return ", ".join(f"{key}={self.hyperparameters[key]!r}" for key in keys)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        b = one_vs_rest(pred, target, self.ignore_index)
        return self.score(b)

    def score(self, b: OneVsRest) -> Tensor:
        raise NotImplementedError


class PixelLoss(SegmentationLoss):
    """A distribution-based loss: one term per pixel and class, reduced by ``reduction``."""

    def __init__(self, ignore_index: int | None = None, reduction: str = "mean", **hyperparameters: float):
        super().__init__(ignore_index, **hyperparameters, reduction=checked_reduction(reduction))
        self.reduction = reduction

    def terms(self, b: OneVsRest) -> Tensor:
        raise NotImplementedError

    def score(self, b: OneVsRest) -> Tensor:
        return reduce_entries(self.terms(b), b, self.reduction)


class RegionLoss(SegmentationLoss):
    """A region-based loss: one value per class from the batch's soft counts, averaged over classes."""

    def per_class(self, counts: SoftCounts) -> Tensor:
        raise NotImplementedError

    def score(self, b: OneVsRest) -> Tensor:
        return self.per_class(soft_counts(b)).mean()


class CompoundLoss(SegmentationLoss):
    """θ · mean(pixel loss) + (1 − θ) · region loss (eq. 9, 10, 12, 21), from one pass over the logits."""

    def __init__(self, pixel: PixelLoss, region: RegionLoss, theta: float, ignore_index: int | None,
                 **hyperparameters: float):
        super().__init__(ignore_index, **hyperparameters, theta=theta)
        self.theta = theta
        self.pixel, self.region = pixel, region

    def score(self, b: OneVsRest) -> Tensor:
        pixel = reduce_entries(self.pixel.terms(b), b, "mean")
        return self.theta * pixel + (1 - self.theta) * self.region.score(b)


class BCE(PixelLoss):
    """Binary cross-entropy on logits (eq. 1): −y·log p̂ − (1 − y)·log(1 − p̂).

    Args:
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
        reduction: 'mean' over the pixels and classes that count, 'sum', or 'none' (a loss per
            entry, shaped like the logits, ignored entries 0).
    """

    name = "bce"

    def __init__(self, ignore_index: int | None = None, reduction: Reduction = "mean"):
        super().__init__(ignore_index, reduction)

    def terms(self, b: OneVsRest) -> Tensor:
        return -b.log_p_true


class WBCE(PixelLoss):
    """Weighted binary cross-entropy (eq. 2): −λ·y·log p̂ − (1 − λ)(1 − y)·log(1 − p̂).

    Args:
        lambda_: weight λ of the defect term, 1 − λ weighs the background term (the class
            weight for input imbalance; raising it makes defect pixels count more).
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
        reduction: 'mean' over the pixels and classes that count, 'sum', or 'none' (a loss per
            entry, shaped like the logits, ignored entries 0).
    """

    name = "wbce"

    def __init__(self, lambda_: Share = 0.25, ignore_index: int | None = None, reduction: Reduction = "mean"):
        super().__init__(ignore_index, reduction, lambda_=lambda_)
        self.lambda_ = lambda_

    def terms(self, b: OneVsRest) -> Tensor:
        return focal_terms(b, self.lambda_, gamma=0.0)


class Focal(PixelLoss):
    """Focal loss (eq. 3): −λ(1 − p̂)^γ log p̂ on defects, −(1 − λ)p̂^γ log(1 − p̂) on background.

    Args:
        lambda_: weight λ of the defect term, 1 − λ weighs the background term.
        gamma: focusing exponent γ; larger values shrink the loss of well-classified pixels
            (γ = 0 gives WBCE).
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
        reduction: 'mean' over the pixels and classes that count, 'sum', or 'none' (a loss per
            entry, shaped like the logits, ignored entries 0).
    """

    name = "focal"

    def __init__(self, lambda_: Share = 0.25, gamma: NonNegative = 2.0, ignore_index: int | None = None,
                 reduction: Reduction = "mean"):
        super().__init__(ignore_index, reduction, lambda_=lambda_, gamma=gamma)
        self.lambda_, self.gamma = lambda_, gamma

    def terms(self, b: OneVsRest) -> Tensor:
        return focal_terms(b, self.lambda_, self.gamma)


class DIBEDis(PixelLoss):
    """DIBE_Dis (eq. 18): Focal loss whose misclassified pixels are reweighted by α and β.

    Defects predicted as background (y = 1, ŷ = 0) score −λ(1 − p̂^(1+α))^γ (1 + α) log p̂ and
    background predicted as defect (y = 0, ŷ = 1) −(1 − λ)(1 − (1 − p̂)^(1+β))^γ (1 + β) log(1 − p̂);
    correctly classified pixels score as in Focal. ŷ = [p̂ > 0.5] carries no gradient.
    α = β = 0 is Focal exactly.

    Args:
        lambda_: weight λ of defect pixels, 1 − λ weighs background pixels (input imbalance).
        gamma: focusing exponent γ of the Focal part.
        alpha: extra weight of defect pixels predicted as background (false negatives). Raising
            it makes missed defects cost more, so FN falls and the OII goes down.
        beta: extra weight of background pixels predicted as defect (false positives). Raising
            it makes false alarms cost more, so FP falls and the OII goes up.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
        reduction: 'mean' over the pixels and classes that count, 'sum', or 'none' (a loss per
            entry, shaped like the logits, ignored entries 0).
    """

    name = "dibe_dis"

    def __init__(self, lambda_: Share = 0.25, gamma: NonNegative = 2.0, alpha: NonNegative = 0.3,
                 beta: NonNegative = 0.7, ignore_index: int | None = None, reduction: Reduction = "mean"):
        super().__init__(ignore_index, reduction, lambda_=lambda_, gamma=gamma, alpha=alpha, beta=beta)
        self.lambda_, self.gamma = lambda_, gamma
        self.alpha, self.beta = alpha, beta

    def terms(self, b: OneVsRest) -> Tensor:
        return focal_terms(b, self.lambda_, self.gamma, self.alpha, self.beta)


class ExpLogCE(PixelLoss):
    """The cross-entropy part of EL (eq. 11): λ(−log p̂)^γ on defects, (1 − λ)(−log(1 − p̂))^γ on background."""

    def __init__(self, lambda_: float, gamma: float):
        super().__init__(lambda_=lambda_, gamma=gamma)
        self.lambda_, self.gamma = lambda_, gamma

    def terms(self, b: OneVsRest) -> Tensor:
        return class_weights(b, self.lambda_) * power(-b.log_p_true, self.gamma)


class Dice(RegionLoss):
    """Dice loss (eq. 4-5): 1 − (2TP + ε)/(2TP + FP + FN + ε), over the batch, averaged over classes.

    Equal to Tversky with α = β = 0.5 and smoothing ε/2.

    Args:
        smooth: ε, added to numerator and denominator. An empty mask predicted empty
            (TP = FP = FN = 0) scores 0 for every ε, 0 included.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "dice"

    def __init__(self, smooth: NonNegative = 1.0, ignore_index: int | None = None):
        super().__init__(ignore_index, smooth=smooth)
        self.smooth = smooth

    def per_class(self, counts: SoftCounts) -> Tensor:
        return one_minus_tversky(counts, 0.5, 0.5, self.smooth / 2)


class Tversky(RegionLoss):
    """Tversky loss (eq. 6-7): 1 − Tv, Tv = (TP + ε)/(TP + α·FN + β·FP + ε), over the batch.

    α weighs missed defects and β false alarms (Yi et al. 2022's reading; the paper's eq. 7 names
    them the other way round). α = β = 0.5 is Dice with smoothing 2ε.

    Args:
        alpha: weight of FN, defect pixels predicted as background. Raising it makes missed
            defects cost more, so FN falls and the OII goes down.
        beta: weight of FP, background pixels predicted as defect. Raising it makes false alarms
            cost more, so FP falls and the OII goes up.
        smooth: ε, added to numerator and denominator of Tv (1 in the paper). An empty mask
            predicted empty (TP = FP = FN = 0) scores 0 for every ε, 0 included.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "tversky"

    def __init__(self, alpha: NonNegative = 0.3, beta: NonNegative = 0.7, smooth: NonNegative = 1.0,
                 ignore_index: int | None = None):
        super().__init__(ignore_index, alpha=alpha, beta=beta, smooth=smooth)
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def per_class(self, counts: SoftCounts) -> Tensor:
        return one_minus_tversky(counts, self.alpha, self.beta, self.smooth)


class TverskyPower(Tversky):
    """A Tversky term raised to 1/γ: ``base`` is 1 − Tv here (Focal Tversky), −log Tv in DIBE_Reg."""

    def __init__(self, alpha: float, beta: float, gamma: float, smooth: float, ignore_index: int | None):
        super().__init__(alpha, beta, smooth, ignore_index)
        self.gamma = gamma
        self.hyperparameters["gamma"] = gamma

    def base(self, counts: SoftCounts) -> Tensor:
        return one_minus_tversky(counts, self.alpha, self.beta, self.smooth)

    def per_class(self, counts: SoftCounts) -> Tensor:
        return power(self.base(counts), 1 / self.gamma)


class FocalTversky(TverskyPower):
    """Focal Tversky loss (eq. 8): (1 − Tv)^(1/γ), Tv as in Tversky (α on FN, β on FP).

    Args:
        alpha: weight of FN, defect pixels predicted as background. Raising it makes missed
            defects cost more, so FN falls and the OII goes down.
        beta: weight of FP, background pixels predicted as defect. Raising it makes false alarms
            cost more, so FP falls and the OII goes up.
        gamma: γ > 0; γ < 1 raises the loss of hard cases, γ = 1 is Tversky (0.75 in the paper).
        smooth: ε, added to numerator and denominator of Tv (1 in the paper). An empty mask
            predicted empty (TP = FP = FN = 0) scores 0 for every ε, 0 included.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "focal_tversky"

    def __init__(self, alpha: NonNegative = 0.3, beta: NonNegative = 0.7, gamma: Positive = 0.75,
                 smooth: NonNegative = 1.0, ignore_index: int | None = None):
        super().__init__(alpha, beta, gamma, smooth, ignore_index)


class DIBEReg(TverskyPower):
    """DIBE_Reg (eq. 20): (−log Tv)^(1/γ), Tv as in Tversky (α on FN, β on FP).

    Unlike Focal Tversky its gradient does not vanish as Tv → 1 and is large when Tv is near 0,
    which suits tiny defects (App. B).

    Args:
        alpha: weight of FN, defect pixels predicted as background. Raising it makes missed
            defects cost more, so FN falls and the OII goes down.
        beta: weight of FP, background pixels predicted as defect. Raising it makes false alarms
            cost more, so FP falls and the OII goes up.
        gamma: γ > 0, the input-imbalance exponent (1.5 in the paper).
        smooth: ε, added to numerator and denominator of Tv (1 in the paper). An empty mask
            predicted empty (TP = FP = FN = 0) scores 0 for every ε, 0 included.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "dibe_reg"

    def __init__(self, alpha: NonNegative = 0.3, beta: NonNegative = 0.7, gamma: Positive = 1.5,
                 smooth: NonNegative = 1.0, ignore_index: int | None = None):
        super().__init__(alpha, beta, gamma, smooth, ignore_index)

    def base(self, counts: SoftCounts) -> Tensor:
        return minus_log_tversky(counts, self.alpha, self.beta, self.smooth)


class ExpLogDice(RegionLoss):
    """The Dice part of EL (eq. 10): (−log Dc)^γ."""

    def __init__(self, gamma: float, smooth: float):
        super().__init__(gamma=gamma, smooth=smooth)
        self.gamma, self.smooth = gamma, smooth

    def per_class(self, counts: SoftCounts) -> Tensor:
        return power(minus_log_tversky(counts, 0.5, 0.5, self.smooth / 2), self.gamma)


class Combo(CompoundLoss):
    """Combo loss (eq. 9): θ·mean(WBCE) + (1 − θ)·Dice.

    Args:
        lambda_: weight λ of defect pixels in WBCE, 1 − λ weighs background pixels.
        theta: θ in [0, 1], the share of the pixel-wise term.
        smooth: ε of the Dice coefficient.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "combo"

    def __init__(self, lambda_: Share = 0.25, theta: Share = 0.5, smooth: NonNegative = 1.0,
                 ignore_index: int | None = None):
        super().__init__(WBCE(lambda_), Dice(smooth), theta, ignore_index, lambda_=lambda_, smooth=smooth)


class ExpLog(CompoundLoss):
    """Exponential logarithmic loss (eq. 10-11): θ·mean(λ_y(−log p_t)^γ_ce) + (1 − θ)(−log Dc)^γ_dice.

    Args:
        lambda_: weight λ of defect pixels in the cross-entropy term, 1 − λ weighs background.
        theta: θ in [0, 1], the share of the pixel-wise term.
        gamma_ce: exponent of −log p_t; above 1 it stresses badly classified pixels.
        gamma_dice: exponent of −log Dc.
        smooth: ε of the Dice coefficient.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "exp_log"

    def __init__(self, lambda_: Share = 0.25, theta: Share = 0.5, gamma_ce: NonNegative = 1.0,
                 gamma_dice: NonNegative = 1.0, smooth: NonNegative = 1.0, ignore_index: int | None = None):
        super().__init__(ExpLogCE(lambda_, gamma_ce), ExpLogDice(gamma_dice, smooth), theta, ignore_index,
                         lambda_=lambda_, gamma_ce=gamma_ce, gamma_dice=gamma_dice, smooth=smooth)


class HybridFocal(CompoundLoss):
    """Hybrid Focal loss (eq. 12): θ·mean(Focal) + (1 − θ)·Focal Tversky, each with its own γ.

    Args:
        lambda_: weight λ of defect pixels in Focal, 1 − λ weighs background pixels.
        theta: θ in [0, 1], the share of the pixel-wise term.
        alpha: Tversky weight of FN, defect pixels predicted as background. Raising it makes
            missed defects cost more, so FN falls and the OII goes down.
        beta: Tversky weight of FP, background pixels predicted as defect. Raising it makes
            false alarms cost more, so FP falls and the OII goes up.
        gamma_focal: focusing exponent of the Focal term (2 in the paper).
        gamma_ft: γ of the Focal Tversky term, exponent 1/γ (0.75 in the paper).
        smooth: ε of the Tversky index.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "hybrid_focal"

    def __init__(self, lambda_: Share = 0.25, theta: Share = 0.5, alpha: NonNegative = 0.3,
                 beta: NonNegative = 0.7, gamma_focal: NonNegative = 2.0, gamma_ft: Positive = 0.75,
                 smooth: NonNegative = 1.0, ignore_index: int | None = None):
        super().__init__(Focal(lambda_, gamma_focal), FocalTversky(alpha, beta, gamma_ft, smooth), theta,
                         ignore_index, lambda_=lambda_, alpha=alpha, beta=beta, gamma_focal=gamma_focal,
                         gamma_ft=gamma_ft, smooth=smooth)


class DIBE(CompoundLoss):
    """DIBE loss (eq. 21): θ·mean(DIBE_Dis) + (1 − θ)·DIBE_Reg with one shared λ, γ and α, β = 1 − α.

    Args:
        lambda_: weight λ of defect pixels in DIBE_Dis, 1 − λ weighs background pixels.
        gamma: γ of both parts: the focusing exponent of DIBE_Dis and the 1/γ exponent of
            DIBE_Reg (2 in the paper).
        alpha: α in [0, 1], the weight of defect pixels predicted as background (false
            negatives) in both parts; false positives get β = 1 − α. Raising α makes missed
            defects cost more and false alarms less, so FN falls and the OII goes down.
        theta: θ in [0, 1], the share of DIBE_Dis.
        smooth: ε of the Tversky index.
        ignore_index: target value whose pixels count nowhere (None: every pixel counts).
    """

    name = "dibe"

    def __init__(self, lambda_: Share = 0.25, gamma: Positive = 2.0, alpha: Share = 0.3, theta: Share = 0.5,
                 smooth: NonNegative = 1.0, ignore_index: int | None = None):
        beta = 1 - alpha
        super().__init__(DIBEDis(lambda_, gamma, alpha, beta), DIBEReg(alpha, beta, gamma, smooth), theta,
                         ignore_index, lambda_=lambda_, gamma=gamma, alpha=alpha, smooth=smooth)


LOSSES = (BCE, WBCE, Focal, Dice, Tversky, FocalTversky, Combo, ExpLog, HybridFocal, DIBEDis, DIBEReg, DIBE)
