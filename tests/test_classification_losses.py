"""The classification losses against NumPy evaluations of their formulas, hand-worked class
weights (SPEC 002 §4.2–4.4), class probabilities as targets, logit adjustment, and their registration."""

from __future__ import annotations

import json
import subprocess
import sys

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab_plugins.classification_losses.losses import inverse_frequency_weights

IGNORE = -100


# --- NumPy references -------------------------------------------------------------------------

def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def reduce(per_sample: np.ndarray, true_weight: np.ndarray, reduction: str):
    """PyTorch's convention: 'mean' divides by the sum of the true classes' weights."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / true_weight.sum()


def cross_entropy_reference(x, y, smoothing=0.0, weights=None, reduction="mean"):
    """−Σ_c w_c q_c log softmax(x)_c with q = (1 − ε)·onehot + ε/K; ignored samples score 0."""
    k = x.shape[1]
    w = np.ones(k) if weights is None else np.asarray(weights, float)
    valid = y != IGNORE
    y_safe = np.where(valid, y, 0)
    q = (1 - smoothing) * np.eye(k)[y_safe] + smoothing / k
    per_sample = -(w * q * log_softmax(x)).sum(1) * valid
    return reduce(per_sample, w[y_safe] * valid, reduction)


def focal_reference(x, y, gamma, weights=None, reduction="mean"):
    """−α_y (1 − p_y)^γ log p_y with p = softmax(x)."""
    k = x.shape[1]
    w = np.ones(k) if weights is None else np.asarray(weights, float)
    valid = y != IGNORE
    y_safe = np.where(valid, y, 0)
    log_py = log_softmax(x)[np.arange(len(y)), y_safe]
    per_sample = -w[y_safe] * (1 - np.exp(log_py)) ** gamma * log_py * valid
    return reduce(per_sample, w[y_safe] * valid, reduction)


def batch(seed=0, n=9, k=3, scale=2.0):
    """float64 logits (n, k) and targets with one ignored sample."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (n, k))
    y = rng.integers(0, k, n)
    y[n // 2] = IGNORE
    return x, y


def loss_value(name, x, y, **params):
    loss = dl.create("loss", name, **params)
    return loss(torch.from_numpy(x), torch.from_numpy(y)).detach().numpy()


# --- cross_entropy --------------------------------------------------------------------------------

REFERENCES = {"cross_entropy": ("label_smoothing", cross_entropy_reference),
              "multiclass_focal": ("gamma", focal_reference)}


@pytest.mark.parametrize("name,setting", [("cross_entropy", 0.0), ("cross_entropy", 0.11), ("cross_entropy", 0.5),
                                          ("multiclass_focal", 0.0), ("multiclass_focal", 0.5),
                                          ("multiclass_focal", 2.0), ("multiclass_focal", 3.0)])
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0], [0.0, 1.0, 3.0]])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_numpy(name, setting, weights, reduction):
    """ε of cross_entropy, γ of multiclass_focal, with and without class weights and an ignored sample."""
    x, y = batch(seed=1, n=11)
    parameter, reference = REFERENCES[name]
    params = {parameter: setting, "reduction": reduction}
    if weights is not None:
        params["class_weights"] = weights
    expected = reference(x, y, setting, weights, reduction)
    np.testing.assert_allclose(loss_value(name, x, y, **params), expected, rtol=1e-12, atol=1e-14)


def test_cross_entropy_on_a_hand_example():
    # logits (0, ln 3): softmax (1/4, 3/4); target 1: −log(3/4) = 0.287682; ε = 0.2: q = (0.1, 0.9),
    # −0.1·log(1/4) − 0.9·log(3/4) = 0.138629 + 0.258914 = 0.397544
    x, y = np.array([[0.0, np.log(3)]]), np.array([1])
    assert loss_value("cross_entropy", x, y) == pytest.approx(0.287682, abs=1e-6)
    assert loss_value("cross_entropy", x, y, label_smoothing=0.2) == pytest.approx(0.397544, abs=1e-6)


def test_inverse_frequency_weights_hand_examples():
    # [90, 10]: N = 100, k = 2: raw N/(k·n_c) = [100/180, 100/20] = [0.5556, 5.0], mean 2.7778 -> [0.2, 1.8]
    assert inverse_frequency_weights([90, 10]) == pytest.approx([0.2, 1.8])
    assert inverse_frequency_weights([10, 10, 10]) == pytest.approx([1.0, 1.0, 1.0])
    # [30, 0, 10]: N = 40, k = 3: raw [40/90, 0, 40/30] = [0.4444, 0, 1.3333]; mean over the two present
    # classes 0.8889 -> [0.5, 0, 1.5]: the empty class gets 0 and the rest have mean 1
    weights = inverse_frequency_weights([30, 0, 10])
    assert weights == pytest.approx([0.5, 0.0, 1.5])
    assert weights[1] == 0.0 and np.mean([weights[0], weights[2]]) == pytest.approx(1.0)


@pytest.mark.parametrize("counts,message", [
    ([0, 0], "at least one class with samples"),
    ([5, -1], "whole numbers ≥ 0"),
    ([2.5, 3], "whole numbers ≥ 0"),
])
def test_inverse_frequency_weights_refuse_bad_counts(counts, message):
    with pytest.raises(dl.DataError, match=message):
        inverse_frequency_weights(counts)


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal"])
def test_inverse_frequency_comes_from_setup(name):
    x, y = batch(seed=2, k=2)
    loss = dl.create("loss", name, class_weights="inverse_frequency")
    with pytest.raises(dl.DefectlabError, match=r"call loss.setup\(classes=\.\.\., class_counts=\.\.\.\)"):
        loss(torch.from_numpy(x), torch.from_numpy(y))
    loss.setup(classes=["ok", "ng"], class_counts=[90, 10])
    assert loss.weight.tolist() == pytest.approx([0.2, 1.8])
    explicit = loss_value(name, x, y, class_weights=[0.2, 1.8])
    assert float(loss(torch.from_numpy(x), torch.from_numpy(y))) == pytest.approx(float(explicit), rel=1e-12)


def test_inverse_frequency_weights_follow_the_logits_device_and_dtype():
    loss = dl.create("loss", "cross_entropy", class_weights="inverse_frequency")
    loss.setup(classes=["a", "b"], class_counts=[3, 1])
    value = loss(torch.zeros(2, 2, dtype=torch.float32), torch.tensor([0, 1]))
    assert value.dtype == torch.float32 and value.item() == pytest.approx(np.log(2))


def test_a_class_without_training_samples_weighs_nothing():
    loss = dl.create("loss", "cross_entropy", class_weights="inverse_frequency")
    loss.setup(classes=["a", "b", "c"], class_counts=[30, 0, 10])
    x = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    only_b = loss(x, torch.tensor([1, 1]))
    assert only_b.item() == 0.0  # every sample weighs 0: nothing counts
    # samples of a (w 0.5) and c (w 1.5) with equal losses: the weighted mean is that loss
    unweighted = dl.create("loss", "cross_entropy")(x, torch.tensor([0, 2]))
    assert loss(x, torch.tensor([0, 2])).item() == pytest.approx(unweighted.item())


def test_explicit_weights_of_the_wrong_length_are_a_data_error_naming_both_lengths():
    loss = dl.create("loss", "cross_entropy", class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(dl.DataError, match="class_weights has 3 values but the logits have 2 classes"):
        loss(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(dl.DataError, match="class_weights has 3 values but the data has 2 classes"):
        loss.setup(classes=["ok", "ng"], class_counts=[5, 5])


def test_setup_counts_must_fit_the_logits():
    loss = dl.create("loss", "multiclass_focal", class_weights="inverse_frequency")
    loss.setup(classes=["a", "b", "c"], class_counts=[1, 2, 3])
    with pytest.raises(dl.DataError, match="class counts of 3 classes but the logits have 2"):
        loss(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(dl.DataError, match="3 class names but 2 class counts"):
        loss.setup(classes=["a", "b", "c"], class_counts=[1, 2])


# --- multiclass_focal -------------------------------------------------------------------------------

def test_focal_on_a_hand_example():
    # softmax (1/4, 3/4), target 1, γ = 2: −(1/4)²·log(3/4) = 0.0625 · 0.287682 = 0.0179801
    x, y = np.array([[0.0, np.log(3)]]), np.array([1])
    assert loss_value("multiclass_focal", x, y) == pytest.approx(0.0179801, abs=1e-7)


@pytest.mark.parametrize("weights", ["none", [0.5, 2.0, 1.0]])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_with_gamma_zero_is_cross_entropy(weights, reduction):
    x, y = batch(seed=4, n=16)
    x32, y32 = torch.from_numpy(x).float(), torch.from_numpy(y)
    focal = dl.create("loss", "multiclass_focal", gamma=0.0, class_weights=weights, reduction=reduction)
    cross_entropy = dl.create("loss", "cross_entropy", class_weights=weights, reduction=reduction)
    assert torch.equal(focal(x32, y32), cross_entropy(x32, y32))


def test_focal_shrinks_the_loss_of_well_classified_samples():
    x = torch.tensor([[4.0, 0.0], [0.2, 0.0]])  # p_y = 0.982 and 0.550
    y = torch.tensor([0, 0])
    ce = dl.create("loss", "cross_entropy", reduction="none")(x, y)
    focal = dl.create("loss", "multiclass_focal", gamma=2.0, reduction="none")(x, y)
    ratios = (focal / ce).tolist()
    assert ratios[0] < 1e-3 < 0.19 < ratios[1] < 0.21  # (1 − p_y)²: 0.00032 and 0.2025


@pytest.mark.parametrize("name,params", [
    ("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.1, "class_weights": [1.0, 3.0, 0.5]}),
    ("multiclass_focal", {"gamma": 2.0}), ("multiclass_focal", {"gamma": 0.5, "class_weights": [1.0, 3.0, 0.5]}),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gradients_stay_finite_for_extreme_logits(name, params, dtype):
    x = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, -50.0], [50.0, -50.0, 50.0], [-50.0, -50.0, 50.0]],
                     dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 0, 2, 2])  # confidently right, confidently wrong, a tie, right
    value = dl.create("loss", name, **params)(x, y)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_saturated_focal_loss_keeps_its_tail():
    # p_y = 1 − e^−30 (up to rounding): 1 − p_y from expm1 is ~9.4e-14, not 0 from 1 − exp(log p_y)
    x = torch.tensor([[30.0, 0.0]], dtype=torch.float64)
    value = dl.create("loss", "multiclass_focal", gamma=1.0)(x, torch.tensor([0]))
    assert value.item() == pytest.approx(np.exp(-30) ** 2, rel=1e-6)  # (1 − p)·(−log p) ≈ e^−30 · e^−30


# --- shared behaviour ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal"])
def test_ignored_samples_count_nowhere(name):
    x, y = batch(seed=5)
    kept = y != IGNORE
    full = loss_value(name, x, y)
    assert full == pytest.approx(loss_value(name, x[kept], y[kept]), rel=1e-12)
    assert loss_value(name, x, y, reduction="none")[~kept].tolist() == [0.0]
    assert loss_value(name, x[kept], y[kept], ignore_index=7) == pytest.approx(full)  # 7 never occurs...
    y[y == IGNORE] = 2  # ...and a real class can be the one ignored
    assert loss_value(name, x, y, ignore_index=2) == pytest.approx(loss_value(name, x[y != 2], y[y != 2]))


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal"])
def test_every_sample_ignored_gives_zero_not_nan(name):
    x = torch.randn(3, 4, requires_grad=True)
    value = dl.create("loss", name)(x, torch.full((3,), IGNORE))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal"])
@pytest.mark.parametrize("pred,target,message", [
    (torch.zeros(4, 3), torch.tensor([0, 1, 3, 2]), r"class indices in \[0, 3\) .* ignore_index -100; found \[3\]"),
    (torch.zeros(2, 3), torch.tensor([-1, 0]), r"found \[-1\]"),
    (torch.zeros(4, 3), torch.tensor([0, 1]), r"target of shape \(2,\) does not fit .* \(4,\)"),
    (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), r"expected class indices of shape \(4,\)"),
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), r"logits of shape \(N, K\)"),
    (torch.zeros(2, 3, 5, 5), torch.zeros(2, 5, 5, dtype=torch.long), r"logits of shape \(N, K\)"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long), "floating-point"),
    (torch.zeros(2, 3), torch.zeros(2), "integer class indices"),
])
def test_bad_data_says_what_was_expected(name, pred, target, message):
    with pytest.raises(dl.DataError, match=message):
        dl.create("loss", name)(pred, target)


@pytest.mark.parametrize("name,params,message", [
    ("cross_entropy", {"label_smoothing": 1.0}, r"loss.label_smoothing: must be in \[0, 1\), got 1"),
    ("cross_entropy", {"label_smoothing": -0.1}, r"loss.label_smoothing: must be in \[0, 1\)"),
    ("cross_entropy", {"class_weights": "balanced"}, r"expected 'none' \| 'inverse_frequency' \| list\[float\]"),
    ("multiclass_focal", {"class_weights": [1.0, -2.0]}, "weights ≥ 0"),
    ("multiclass_focal", {"class_weights": [0.0, 0.0]}, "not all 0"),
    ("multiclass_focal", {"gamma": -1.0}, r"loss.gamma: must be >= 0, got -1"),
    ("cross_entropy", {"reduction": "avg"}, r"expected 'mean' \| 'sum' \| 'none', got 'avg'"),
    ("logit_adjusted", {"tau": -1.0}, r"loss.tau: must be >= 0, got -1"),
    ("logit_adjusted", {"label_smoothing": 1.0}, r"loss.label_smoothing: must be in \[0, 1\), got 1"),
])
def test_bad_parameters_say_what_is_allowed(name, params, message):
    with pytest.raises(dl.ParameterError, match=message):
        dl.create("loss", name, **params)


def test_built_directly_the_constructor_checks_its_choices():
    from defectlab_plugins.classification_losses.losses import (
        CrossEntropy,
        MulticlassFocal,
    )

    with pytest.raises(dl.ParameterError, match="class_weights must be one of 'none', 'inverse_frequency' or a list"):
        CrossEntropy(class_weights="balanced")
    with pytest.raises(dl.ParameterError, match="reduction must be one of 'mean', 'sum', 'none'"):
        MulticlassFocal(reduction="avg")


def test_command_line_strings_become_weights():
    assert dl.create("loss", "cross_entropy", class_weights="0.5,2").class_weights == [0.5, 2.0]
    assert dl.create("loss", "cross_entropy", class_weights="inverse_frequency").class_weights == "inverse_frequency"
    assert dl.create("loss", "multiclass_focal", gamma="0").gamma == 0.0


def test_reduction_none_gives_one_loss_per_sample():
    x, y = batch(seed=6, n=7)
    assert loss_value("cross_entropy", x, y, reduction="none").shape == (7,)
    assert loss_value("multiclass_focal", x, y, reduction="none").shape == (7,)


# --- class probabilities as targets -----------------------------------------------------------------

def soft_reference(x, t, focus, smoothing=0.0, weights=None, reduction="mean"):
    """−Σ_c w_c t'_c f(p_c) log p_c with t' = (1 − ε)·t + ε/K; 'mean' divides by Σ_i Σ_c w_c t_ic."""
    k = x.shape[1]
    w = np.ones(k) if weights is None else np.asarray(weights, float)
    log_p = log_softmax(x)
    smoothed = (1 - smoothing) * t + smoothing / k
    per_sample = -(w * smoothed * focus(np.exp(log_p)) * log_p).sum(1)
    return reduce(per_sample, t @ w, reduction)


def soft_batch(seed=0, n=9, k=3, scale=2.0):
    """float64 logits (n, k) and rows of class probabilities: random ones, a one-hot row, an even one."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (n, k))
    t = rng.dirichlet(np.ones(k), n)
    t[0], t[1] = np.eye(k)[1], np.full(k, 1 / k)
    return x, t


def prepared(name, **params):
    """The loss ``name`` after the engine's setup with counts [3, 1, 2] (logit_adjusted needs one)."""
    loss = dl.create("loss", name, **params)
    loss.setup(classes=["a", "b", "c"], class_counts=[3, 1, 2])
    return loss


@pytest.mark.parametrize("name,setting", [("cross_entropy", 0.0), ("cross_entropy", 0.2),
                                          ("multiclass_focal", 0.0), ("multiclass_focal", 0.5),
                                          ("multiclass_focal", 2.0)])
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0], [0.0, 1.0, 3.0]])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_probabilities_match_numpy(name, setting, weights, reduction):
    x, t = soft_batch(seed=7, n=10)
    if name == "cross_entropy":
        params, focus, smoothing = {"label_smoothing": setting}, (lambda p: 1.0), setting
    else:
        params, focus, smoothing = {"gamma": setting}, (lambda p: (1 - p) ** setting), 0.0
    if weights is not None:
        params["class_weights"] = weights
    expected = soft_reference(x, t, focus, smoothing, weights, reduction)
    np.testing.assert_allclose(loss_value(name, x, t, reduction=reduction, **params), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,params", [
    ("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.11, "class_weights": [0.5, 2.0, 1.0]}),
    ("cross_entropy", {"class_weights": "inverse_frequency"}),
    ("multiclass_focal", {"gamma": 2.0}), ("multiclass_focal", {"gamma": 0.5, "class_weights": [0.0, 1.0, 3.0]}),
    ("logit_adjusted", {}), ("logit_adjusted", {"tau": 0.5, "label_smoothing": 0.2, "class_weights": [0.5, 2.0, 1.0]}),
])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_one_hot_probabilities_are_the_class_indices(name, params, reduction):
    x, y = batch(seed=8, n=12)
    y[y == IGNORE] = 1
    loss = prepared(name, reduction=reduction, **params)
    hard = loss(torch.from_numpy(x), torch.from_numpy(y))
    soft = loss(torch.from_numpy(x), torch.from_numpy(np.eye(3)[y]))
    torch.testing.assert_close(soft, hard, rtol=1e-12, atol=1e-14)


def test_an_even_split_of_two_classes_on_a_hand_example():
    # logits (2, 0), target (½, ½): −½ log σ(2) − ½ log σ(−2) = logsumexp(2, 0) − (2 + 0)/2 = log(e² + 1) − 1
    x, t = np.array([[2.0, 0.0]]), np.array([[0.5, 0.5]])
    assert loss_value("cross_entropy", x, t) == pytest.approx(np.log(np.e ** 2 + 1) - 1, abs=1e-12)  # 1.126928
    # focal, γ = 2: p = (0.880797, 0.119203): −½ (0.119203² log 0.880797 + 0.880797² log 0.119203) = 0.825941
    assert loss_value("multiclass_focal", x, t) == pytest.approx(0.825941, abs=1e-6)
    # smoothing changes nothing here: (1 − ε)·½ + ε/2 = ½
    assert loss_value("cross_entropy", x, t, label_smoothing=0.3) == pytest.approx(np.log(np.e ** 2 + 1) - 1)


def test_the_weighted_mean_of_probabilities_on_a_hand_example():
    # even logits: −log p_c = log 2 for both classes. Weights (1, 3), targets (1, 0) and (½, ½):
    # the losses are 1·log 2 and (½·1 + ½·3)·log 2 = 2 log 2; the mean divides 3 log 2 by 1 + 2 = 3
    x, t = np.zeros((2, 2)), np.array([[1.0, 0.0], [0.5, 0.5]])
    losses = loss_value("cross_entropy", x, t, class_weights=[1.0, 3.0], reduction="none")
    assert losses.tolist() == pytest.approx([np.log(2), 2 * np.log(2)])
    assert loss_value("cross_entropy", x, t, class_weights=[1.0, 3.0]) == pytest.approx(np.log(2))
    # without weights the mean divides by N = 2
    assert loss_value("cross_entropy", x, t) == pytest.approx(np.log(2))


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal", "logit_adjusted"])
def test_ignore_index_does_not_apply_to_probabilities(name):
    x, t = soft_batch(seed=9)
    loss = prepared(name)
    other = prepared(name, ignore_index=0)
    assert torch.equal(loss(torch.from_numpy(x), torch.from_numpy(t)), other(torch.from_numpy(x), torch.from_numpy(t)))
    assert loss(torch.from_numpy(x), torch.from_numpy(t)) > 0


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal", "logit_adjusted"])
def test_probabilities_in_another_dtype_follow_the_logits(name):
    x = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float16)
    t = torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.float16)
    value = prepared(name)(x, t)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(prepared(name)(x.double(), t.double()).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal", "logit_adjusted"])
@pytest.mark.parametrize("target,message", [
    (torch.full((4, 2), 0.5), r"shape \(4, 2\) does not fit logits of shape \(4, 3\): .* class probabilities of "
                              r"shape \(4, 3\)"),
    (torch.full((4, 3, 1), 1 / 3), r"shape \(4, 3, 1\) does not fit"),
    (torch.full((4,), 1.0), r"integer class indices of shape \(4,\) or class probabilities"),
    (torch.tensor([[0.5, 0.5, 0.0]] * 3 + [[1.2, -0.2, 0.0]]), r"must be ≥ 0; found -0.2 in row 3"),
    (torch.tensor([[0.5, 0.4, 0.0]] + [[0.5, 0.5, 0.0]] * 3), r"must sum to 1 \(within 0.0001\); 1 of 4 rows do "
                                                              r"not \(e.g. row 0 sums to 0.9\)"),
    (torch.tensor([[1.0, 1.0, 0.0]] * 4), r"4 of 4 rows do not \(e.g. row 0 sums to 2\)"),
    (torch.tensor([[0.5, 0.5, 0.0]] * 2 + [[float("nan"), 0.5, 0.5]] * 2), r"must be finite; 2 of 4 rows hold NaN "
                                                                          r"or infinite values \(e.g. row 2\)"),
    (torch.tensor([[float("inf"), 0.0, 0.0]] * 4), "must be finite"),
])
def test_bad_probabilities_say_what_is_wrong(name, target, message):
    with pytest.raises(dl.DataError, match=message):
        prepared(name)(torch.zeros(4, 3), target)


def test_half_precision_probabilities_may_miss_one_by_their_rounding():
    # 1/3 in float16 is 0.33325: a row sums to 0.99976, further from 1 than 1e-4 but within 4 eps = 0.0039
    t = torch.full((2, 3), 1 / 3, dtype=torch.float16)
    assert dl.create("loss", "cross_entropy")(torch.zeros(2, 3), t).item() == pytest.approx(np.log(3), rel=1e-3)
    with pytest.raises(dl.DataError, match=r"within 0.0039"):
        dl.create("loss", "cross_entropy")(torch.zeros(2, 3), torch.full((2, 3), 0.3, dtype=torch.float16))


@pytest.mark.parametrize("name,params", [
    ("cross_entropy", {"label_smoothing": 0.1, "class_weights": [1.0, 3.0, 0.5]}),
    ("multiclass_focal", {"gamma": 2.0}), ("multiclass_focal", {"gamma": 0.5, "class_weights": [1.0, 3.0, 0.5]}),
    ("logit_adjusted", {"tau": 1.0, "label_smoothing": 0.1}),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gradients_flow_from_probabilities(name, params, dtype):
    x = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, -50.0], [0.3, -0.2, 0.1], [-50.0, -50.0, 50.0]],
                     dtype=dtype, requires_grad=True)
    t = torch.tensor([[0.7, 0.3, 0.0], [0.5, 0.0, 0.5], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])  # mixup-like rows
    value = prepared(name, **params)(x, t)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(x.grad).all() and (x.grad[:3].abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", ["cross_entropy", "multiclass_focal", "logit_adjusted"])
@pytest.mark.parametrize("target", [torch.zeros(0, dtype=torch.long), torch.zeros(0, 3)], ids=["indices", "probs"])
def test_an_empty_batch_gives_zero_not_nan(name, target):
    x = torch.zeros(0, 3, requires_grad=True)
    value = prepared(name, class_weights=[1.0, 3.0, 0.5])(x, target)
    value.backward()
    assert value.item() == 0.0 and prepared(name)(x, target).item() == 0.0


def test_cross_entropy_gradient_of_probabilities_is_softmax_minus_target():
    # d/dz of −Σ t_c log softmax(z)_c is (softmax(z) − t) / N under the mean
    x = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]], dtype=torch.float64)
    dl.create("loss", "cross_entropy")(x, t).backward()
    torch.testing.assert_close(x.grad, (x.detach().softmax(1) - t) / 2)


def test_every_loss_here_takes_probabilities():
    from defectlab_plugins.classification_losses.losses import LOSSES

    assert [loss.name for loss in LOSSES] == ["cross_entropy", "multiclass_focal", "logit_adjusted"]
    assert all(loss.soft_targets is True for loss in LOSSES)


# --- logit_adjusted ---------------------------------------------------------------------------------

def test_logit_adjusted_on_a_hand_example():
    # counts [3, 1]: π = (0.75, 0.25); logits (0, 0) become (log 0.75, log 0.25), softmax (0.75, 0.25):
    # the loss is −log 0.25 = 1.386294 for class 1 and −log 0.75 = 0.287682 for class 0
    loss = dl.create("loss", "logit_adjusted", reduction="none")
    loss.setup(classes=["ok", "ng"], class_counts=[3, 1])
    losses = loss(torch.zeros(2, 2, dtype=torch.float64), torch.tensor([1, 0]))
    assert losses.tolist() == pytest.approx([1.386294, 0.287682], abs=1e-6)
    # τ = ½: softmax ∝ (√0.75, √0.25) = (0.866025, 0.5), p_1 = 0.5 / 1.366025 = 0.366025, −log p_1 = 1.005053
    half = dl.create("loss", "logit_adjusted", tau=0.5)
    half.setup(classes=["ok", "ng"], class_counts=[3, 1])
    assert half(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1])).item() == pytest.approx(1.005053, abs=1e-6)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("params", [{}, {"label_smoothing": 0.11, "class_weights": [0.5, 2.0, 1.0]},
                                    {"class_weights": "inverse_frequency", "reduction": "sum"}])
def test_logit_adjusted_is_cross_entropy_of_the_shifted_logits(tau, params):
    x, y = batch(seed=10, n=13)
    pred, target = torch.from_numpy(x), torch.from_numpy(y)
    loss = prepared("logit_adjusted", tau=tau, **params)
    cross_entropy = prepared("cross_entropy", **params)
    shifted = pred + tau * torch.log(torch.tensor([3, 1, 2], dtype=torch.float64) / 6)
    torch.testing.assert_close(loss(pred, target), cross_entropy(shifted, target), rtol=1e-12, atol=1e-14)
    reference = torch.nn.functional.cross_entropy(shifted, target, weight=cross_entropy.class_weight(pred),
                                                  label_smoothing=params.get("label_smoothing", 0.0),
                                                  reduction=params.get("reduction", "mean"))
    torch.testing.assert_close(loss(pred, target), reference, rtol=1e-12, atol=1e-14)
    assert torch.equal(pred, torch.from_numpy(x))  # the logits themselves are left as they are


@pytest.mark.parametrize("params", [{}, {"label_smoothing": 0.2, "class_weights": [0.5, 2.0, 1.0],
                                         "reduction": "none"}])
def test_logit_adjusted_with_tau_zero_is_cross_entropy_exactly(params):
    x, y = batch(seed=11, n=10)
    _, t = soft_batch(seed=11, n=10)
    loss, cross_entropy = prepared("logit_adjusted", tau=0.0, **params), prepared("cross_entropy", **params)
    for target in (torch.from_numpy(y), torch.from_numpy(t)):
        assert torch.equal(loss(torch.from_numpy(x), target), cross_entropy(torch.from_numpy(x), target))


def test_logit_adjusted_takes_probabilities_on_the_shifted_logits():
    x, t = soft_batch(seed=12)
    pred, target = torch.from_numpy(x), torch.from_numpy(t)
    shifted = pred + torch.log(torch.tensor([3, 1, 2], dtype=torch.float64) / 6)
    loss = prepared("logit_adjusted", label_smoothing=0.1, class_weights=[0.5, 2.0, 1.0])
    expected = prepared("cross_entropy", label_smoothing=0.1, class_weights=[0.5, 2.0, 1.0])(shifted, target)
    torch.testing.assert_close(loss(pred, target), expected, rtol=1e-12, atol=1e-14)


def test_a_class_without_training_samples_counts_as_half_a_sample():
    from defectlab_plugins.classification_losses.losses import log_class_priors

    assert np.exp(log_class_priors([3, 1])).tolist() == pytest.approx([0.75, 0.25])
    # [4, 0]: N = 4, π = (4/4, 0.5/4) = (1, 0.125); logits (0, 0): p = (1, 0.125) / 1.125
    assert np.exp(log_class_priors([4, 0])).tolist() == pytest.approx([1.0, 0.125])
    loss = dl.create("loss", "logit_adjusted", reduction="none")
    loss.setup(classes=["ok", "ng"], class_counts=[4, 0])
    losses = loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert losses.tolist() == pytest.approx([np.log(1.125), np.log(9)], rel=1e-6)  # 0.117783 and 2.197225


@pytest.mark.parametrize("counts,message", [([0, 0], "at least one class with samples"),
                                            ([3, -1], "whole numbers ≥ 0"), ([1.5, 2], "whole numbers ≥ 0")])
def test_class_priors_refuse_bad_counts(counts, message):
    loss = dl.create("loss", "logit_adjusted")
    with pytest.raises(dl.DataError, match=message):
        loss.setup(classes=["a", "b"], class_counts=counts)


def test_logit_adjusted_needs_setup_and_counts_that_fit():
    loss = dl.create("loss", "logit_adjusted")
    with pytest.raises(dl.DefectlabError, match=r"logit_adjusted needs the training class counts .* call "
                                                r"loss.setup\(classes=\.\.\., class_counts=\.\.\.\)"):
        loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    loss.setup(classes=["a", "b", "c"], class_counts=[1, 2, 3])
    with pytest.raises(dl.DataError, match=r"setup gave class counts of 3 classes but the logits have 2 classes"):
        loss(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_logit_adjusted_priors_follow_the_logits_dtype_and_move_with_the_module():
    loss = dl.create("loss", "logit_adjusted")
    loss.setup(classes=["a", "b"], class_counts=[3, 1])
    value = loss.to(torch.device("cpu"))(torch.zeros(2, 2, dtype=torch.float32), torch.tensor([0, 1]))
    # the mean of −log 0.75 and −log 0.25
    assert value.dtype == torch.float32 and value.item() == pytest.approx((np.log(4 / 3) + np.log(4)) / 2)
    assert "log_prior" not in loss.state_dict()  # set by setup from the data, not saved with a checkpoint


def test_logit_adjusted_pushes_a_rare_class_harder_at_equal_logits():
    # counts [9, 1]: the gradient is softmax(z + log π) − onehot = (0.9, 0.1) − (0, 1) = (0.9, −0.9),
    # where plain cross-entropy gives (0.5, −0.5)
    x = torch.zeros(1, 2, requires_grad=True)
    loss = dl.create("loss", "logit_adjusted")
    loss.setup(classes=["ok", "ng"], class_counts=[9, 1])
    loss(x, torch.tensor([1])).backward()
    assert x.grad.tolist() == [pytest.approx([0.9, -0.9])]


# --- the registry and the command line ---------------------------------------------------------------

def test_registered_with_their_defaults():
    defaults = {name: {p.name: p.default for p in dl.get_component("loss", name).parameters}
                for name in ("cross_entropy", "multiclass_focal", "logit_adjusted")}
    assert defaults == {
        "cross_entropy": {"label_smoothing": 0.0, "class_weights": "none", "ignore_index": -100, "reduction": "mean"},
        "multiclass_focal": {"gamma": 2.0, "class_weights": "none", "ignore_index": -100, "reduction": "mean"},
        "logit_adjusted": {"tau": 1.0, "label_smoothing": 0.0, "class_weights": "none", "ignore_index": -100,
                           "reduction": "mean"},
    }
    for name in defaults:
        assert all(p.doc for p in dl.get_component("loss", name).parameters), f"{name} has undocumented parameters"


def test_list_and_show_on_the_command_line(run_cli):
    result = run_cli("list", "loss", "--json")
    listed = {c["name"]: c for c in json.loads(result.output)}
    assert {listed[name]["plugin"] for name in ("cross_entropy", "multiclass_focal", "logit_adjusted")} == {
        "classification_losses"}
    result = run_cli("show", "loss", "cross_entropy")
    assert result.exit_code == 0
    for text in ("label_smoothing", "class_weights", "'none' | 'inverse_frequency' | list[float]", "N / (k·n_c)",
                 "ignore_index", "-100"):
        assert text in result.output
    info = json.loads(run_cli("show", "loss", "multiclass_focal", "--json").output)
    assert [p["name"] for p in info["parameters"]] == ["gamma", "class_weights", "ignore_index", "reduction"]
    result = run_cli("show", "loss", "logit_adjusted")
    assert result.exit_code == 0
    for text in ("tau", "float >= 0", "1.0", "label_smoothing", "float in [0, 1)", "balanced softmax", "raw logits z"):
        assert text in result.output


def test_loading_the_plugin_modules_does_not_import_torch():
    code = ("import sys, defectlab_plugins.classification_losses, defectlab_plugins.classification_metrics; "
            "print(sorted(m for m in ('torch', 'torchmetrics', 'sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
