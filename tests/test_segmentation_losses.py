"""Segmentation losses (SPEC 003) against NumPy transcriptions of seed 003's equations, their degenerate cases and the α convention.

The references below are written from the paper's equations, independently of the
implementation, with the SPEC's reading of α and β: α weighs defect pixels predicted as
background (FN), β background predicted as defect (FP).
"""

from __future__ import annotations

import inspect

import defectlab as dl
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

NAMES = ["bce", "wbce", "focal", "dice", "tversky", "focal_tversky", "combo", "exp_log", "hybrid_focal",
         "dibe_dis", "dibe_reg", "dibe"]
PIXEL_WISE = ["bce", "wbce", "focal", "dibe_dis"]


# --- the paper's equations in NumPy, on flat arrays of logits x and 0/1 targets y ----------------

def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bce(x, y):  # eq. 1
    p = sigmoid(x)
    return np.where(y == 1, -np.log(p), -np.log(1 - p))


def wbce(x, y, lam):  # eq. 2
    p = sigmoid(x)
    return np.where(y == 1, -lam * np.log(p), -(1 - lam) * np.log(1 - p))


def focal(x, y, lam, gamma):  # eq. 3
    p = sigmoid(x)
    return np.where(y == 1, -lam * (1 - p) ** gamma * np.log(p), -(1 - lam) * p ** gamma * np.log(1 - p))


def dibe_dis(x, y, lam, gamma, alpha, beta):  # eq. 18, alpha on (y = 1, ŷ = 0), beta on (y = 0, ŷ = 1)
    p = sigmoid(x)
    yhat = (p > 0.5).astype(int)
    return np.select(
        [(y == 1) & (yhat == 1), (y == 1) & (yhat == 0), (y == 0) & (yhat == 0), (y == 0) & (yhat == 1)],
        [-lam * (1 - p) ** gamma * np.log(p),
         -lam * (1 - p ** (1 + alpha)) ** gamma * (1 + alpha) * np.log(p),
         -(1 - lam) * p ** gamma * np.log(1 - p),
         -(1 - lam) * (1 - (1 - p) ** (1 + beta)) ** gamma * (1 + beta) * np.log(1 - p)])


def exp_log_ce(x, y, lam, gamma_ce):  # eq. 11
    p = sigmoid(x)
    return np.where(y == 1, lam * (-np.log(p)) ** gamma_ce, (1 - lam) * (-np.log(1 - p)) ** gamma_ce)


def counts(x, y):
    p = sigmoid(x)
    return np.sum(p * y), np.sum(p * (1 - y)), np.sum((1 - p) * y)  # TP, FP, FN


def dice_coefficient(x, y, eps=1.0):  # eq. 5
    tp, fp, fn = counts(x, y)
    return (2 * tp + eps) / (2 * tp + fp + fn + eps)


def tversky_index(x, y, alpha, beta, eps=1.0):  # eq. 7, alpha on FN and beta on FP (SPEC 003)
    tp, fp, fn = counts(x, y)
    return (tp + eps) / (tp + alpha * fn + beta * fp + eps)


REFERENCES = {
    "bce": lambda x, y: bce(x, y).mean(),
    "wbce": lambda x, y: wbce(x, y, 0.25).mean(),
    "focal": lambda x, y: focal(x, y, 0.25, 2).mean(),
    "dice": lambda x, y: 1 - dice_coefficient(x, y),  # eq. 4
    "tversky": lambda x, y: 1 - tversky_index(x, y, 0.3, 0.7),  # eq. 6
    "focal_tversky": lambda x, y: (1 - tversky_index(x, y, 0.3, 0.7)) ** (1 / 0.75),  # eq. 8
    "combo": lambda x, y: 0.5 * wbce(x, y, 0.25).mean() + 0.5 * (1 - dice_coefficient(x, y)),  # eq. 9
    "exp_log": lambda x, y: 0.5 * exp_log_ce(x, y, 0.25, 1).mean() + 0.5 * (-np.log(dice_coefficient(x, y))),  # eq. 10
    "hybrid_focal": lambda x, y: (0.5 * focal(x, y, 0.25, 2).mean()
                                  + 0.5 * (1 - tversky_index(x, y, 0.3, 0.7)) ** (1 / 0.75)),  # eq. 12
    "dibe_dis": lambda x, y: dibe_dis(x, y, 0.25, 2, 0.3, 0.7).mean(),
    "dibe_reg": lambda x, y: (-np.log(tversky_index(x, y, 0.3, 0.7))) ** (1 / 1.5),  # eq. 20
    "dibe": lambda x, y: (0.5 * dibe_dis(x, y, 0.25, 2, 0.3, 0.7).mean()
                          + 0.5 * (-np.log(tversky_index(x, y, 0.3, 0.7))) ** (1 / 2)),  # eq. 21
}

# Non-default parameters and the reference they must match.
CUSTOM = [
    ("wbce", {"lambda_": 0.8}, lambda x, y: wbce(x, y, 0.8).mean()),
    ("focal", {"lambda_": 0.6, "gamma": 1.5}, lambda x, y: focal(x, y, 0.6, 1.5).mean()),
    ("dice", {"smooth": 0.0}, lambda x, y: 1 - dice_coefficient(x, y, 0.0)),
    ("tversky", {"alpha": 0.9, "beta": 0.2, "smooth": 2.0}, lambda x, y: 1 - tversky_index(x, y, 0.9, 0.2, 2.0)),
    ("focal_tversky", {"alpha": 0.6, "beta": 0.4, "gamma": 2.0},
     lambda x, y: (1 - tversky_index(x, y, 0.6, 0.4)) ** 0.5),
    ("combo", {"lambda_": 0.7, "theta": 0.2},
     lambda x, y: 0.2 * wbce(x, y, 0.7).mean() + 0.8 * (1 - dice_coefficient(x, y))),
    ("exp_log", {"lambda_": 0.5, "theta": 0.3, "gamma_ce": 0.3, "gamma_dice": 2.0},
     lambda x, y: 0.3 * exp_log_ce(x, y, 0.5, 0.3).mean() + 0.7 * (-np.log(dice_coefficient(x, y))) ** 2.0),
    ("hybrid_focal", {"lambda_": 0.4, "theta": 0.7, "alpha": 0.8, "beta": 0.1, "gamma_focal": 1.0, "gamma_ft": 1.5},
     lambda x, y: 0.7 * focal(x, y, 0.4, 1.0).mean() + 0.3 * (1 - tversky_index(x, y, 0.8, 0.1)) ** (1 / 1.5)),
    ("dibe_dis", {"lambda_": 0.6, "gamma": 0.5, "alpha": 0.9, "beta": 0.05},
     lambda x, y: dibe_dis(x, y, 0.6, 0.5, 0.9, 0.05).mean()),
    ("dibe_reg", {"alpha": 0.8, "beta": 0.2, "gamma": 0.7},
     lambda x, y: (-np.log(tversky_index(x, y, 0.8, 0.2))) ** (1 / 0.7)),
    ("dibe", {"lambda_": 0.5, "gamma": 3.0, "alpha": 0.8, "theta": 0.25},
     lambda x, y: 0.25 * dibe_dis(x, y, 0.5, 3.0, 0.8, 0.2).mean()
     + 0.75 * (-np.log(tversky_index(x, y, 0.8, 0.2))) ** (1 / 3.0)),
]


def random_batch(seed: int = 0, shape=(2, 1, 6, 7), positive=0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2.5, size=shape)
    y = (rng.random(shape) < positive).astype(np.float64)
    return x, y


def value(name_or_spec, x, y, **params) -> float:
    loss = dl.create("loss", name_or_spec, **params)
    return loss(torch.from_numpy(x), torch.from_numpy(y)).item()


# --- formulas --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_default_loss_matches_the_papers_equation(name, seed):
    x, y = random_batch(seed)
    assert value(name, x, y) == pytest.approx(REFERENCES[name](x.ravel(), y.ravel()), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name,params,reference", CUSTOM, ids=[c[0] for c in CUSTOM])
def test_loss_with_other_parameters_matches_the_papers_equation(name, params, reference):
    x, y = random_batch(2)
    assert value(name, x, y, **params) == pytest.approx(reference(x.ravel(), y.ravel()), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_float32_agrees_with_float64(name):
    x, y = random_batch(3)
    loss = dl.create("loss", name)
    single = loss(torch.from_numpy(x).float(), torch.from_numpy(y).float()).item()
    assert single == pytest.approx(REFERENCES[name](x.ravel(), y.ravel()), rel=1e-5)


def test_dibe_dis_reweights_only_misclassified_pixels():
    # One pixel per case of eq. 18: a defect hit, a defect missed, background right, background wrong.
    x = np.array([2.0, -1.5, -0.7, 0.4])
    y = np.array([1.0, 1.0, 0.0, 0.0])
    loss = dl.create("loss", "dibe_dis", lambda_=0.25, gamma=2, alpha=0.3, beta=0.7, reduction="none")
    got = loss(torch.from_numpy(x).view(1, 1, 1, 4), torch.from_numpy(y).view(1, 1, 4)).view(4).numpy()
    p = sigmoid(x)
    expected = [-0.25 * (1 - p[0]) ** 2 * np.log(p[0]),
                -0.25 * (1 - p[1] ** 1.3) ** 2 * 1.3 * np.log(p[1]),
                -0.75 * p[2] ** 2 * np.log(1 - p[2]),
                -0.75 * (1 - (1 - p[3]) ** 1.7) ** 2 * 1.7 * np.log(1 - p[3])]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_logit_of_exactly_zero_is_predicted_background():
    # ŷ = [p̂ > 0.5]: at p̂ = 0.5 a defect counts as missed (α applies) and background as right.
    loss = dl.create("loss", "dibe_dis", alpha=1.0, beta=1.0, gamma=0.0, lambda_=0.5, reduction="none")
    got = loss(torch.zeros(1, 1, 1, 2, dtype=torch.float64), torch.tensor([[[1.0, 0.0]]], dtype=torch.float64))
    np.testing.assert_allclose(got.view(2).numpy(), [0.5 * 2 * np.log(2) * (1 - 0.25) ** 0, 0.5 * np.log(2)])


# --- degenerate cases --------------------------------------------------------------------------

@pytest.mark.parametrize("first,second", [
    ({"name": "dibe_dis", "alpha": 0.0, "beta": 0.0, "gamma": 1.7, "lambda_": 0.4},
     {"name": "focal", "gamma": 1.7, "lambda_": 0.4}),
    ({"name": "focal", "gamma": 0.0, "lambda_": 0.35}, {"name": "wbce", "lambda_": 0.35}),
    ({"name": "tversky", "alpha": 0.5, "beta": 0.5, "smooth": 0.5}, {"name": "dice", "smooth": 1.0}),
    ({"name": "tversky", "alpha": 0.5, "beta": 0.5, "smooth": 0.0}, {"name": "dice", "smooth": 0.0}),
    ({"name": "focal_tversky", "gamma": 1.0, "alpha": 0.2, "beta": 0.9}, {"name": "tversky", "alpha": 0.2, "beta": 0.9}),
    ({"name": "dibe", "theta": 1.0, "alpha": 0.6, "lambda_": 0.3, "gamma": 1.2},
     {"name": "dibe_dis", "alpha": 0.6, "beta": 0.4, "lambda_": 0.3, "gamma": 1.2}),
    ({"name": "dibe", "theta": 0.0, "alpha": 0.6, "gamma": 1.2}, {"name": "dibe_reg", "alpha": 0.6, "beta": 0.4, "gamma": 1.2}),
    ({"name": "hybrid_focal", "theta": 1.0, "gamma_focal": 3.0}, {"name": "focal", "gamma": 3.0}),
    ({"name": "exp_log", "theta": 0.0, "gamma_dice": 1.0}, {"name": "dice_log"}),
])
def test_degenerate_cases_coincide(first, second):
    x, y = random_batch(4)
    if second["name"] == "dice_log":  # −log Dc: no loss of its own, compare with the formula
        expected = -np.log(dice_coefficient(x.ravel(), y.ravel()))
    else:
        expected = value(second, x, y)
    assert value(first, x, y) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_bce_is_twice_wbce_with_even_weights():
    x, y = random_batch(5)
    assert value("bce", x, y) == pytest.approx(2 * value("wbce", x, y, lambda_=0.5), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), alpha=st.floats(0, 2), beta=st.floats(0, 2), gamma=st.floats(0, 4))
def test_dibe_dis_is_focal_plus_a_penalty_that_grows_with_alpha_and_beta(seed, alpha, beta, gamma):
    x, y = random_batch(seed, shape=(1, 1, 5, 5))
    focal_entries = value({"name": "focal", "gamma": gamma}, x, y)
    dis = value({"name": "dibe_dis", "gamma": gamma, "alpha": alpha, "beta": beta}, x, y)
    more = value({"name": "dibe_dis", "gamma": gamma, "alpha": alpha + 0.5, "beta": beta + 0.5}, x, y)
    assert focal_entries <= dis * (1 + 1e-12) and dis <= more * (1 + 1e-12)


# --- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("magnitude", [30.0, 100.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_stay_finite_at_saturated_probabilities(name, magnitude, dtype):
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]], dtype=dtype)
    cases = {
        "all right": torch.tensor([[[[1, 1, -1, -1]]]], dtype=dtype),
        "all wrong": torch.tensor([[[[-1, -1, 1, 1]]]], dtype=dtype),
        "mixed": torch.tensor([[[[1, -1, -1, 1]]]], dtype=dtype),
    }
    has_gamma = "gamma" in inspect.signature(dl.get_component("loss", name).obj).parameters
    for params in [{}] + ([{"gamma": 0.5}, {"gamma": 3.0}] if has_gamma else []):
        loss = dl.create("loss", name, **params)
        for case, sign in cases.items():
            logits = (sign * magnitude).requires_grad_()
            value_ = loss(logits, target)
            value_.backward()
            assert torch.isfinite(value_), (name, params, case)
            assert torch.isfinite(logits.grad).all(), (name, params, case, logits.grad)


def test_gradient_matches_finite_differences():
    x, y = random_batch(6, shape=(1, 1, 3, 3))
    for name in NAMES:
        logits = torch.from_numpy(x).requires_grad_()
        loss = dl.create("loss", name)
        # ŷ is piecewise constant: gradcheck is valid away from logit 0, which random_batch avoids
        assert torch.autograd.gradcheck(lambda z: loss(z, torch.from_numpy(y)), (logits,), eps=1e-6, atol=1e-7), name


# --- the α convention: α weighs missed defects (FN), β false alarms (FP) -------------------------

def single_pixel_gradient(spec: dict, target: float, logit: float) -> float:
    x = torch.tensor([[[[logit]]]], dtype=torch.float64, requires_grad=True)
    dl.create("loss", spec)(x, torch.tensor([[[target]]], dtype=torch.float64)).backward()
    return abs(x.grad.item())


ALPHA_LOSSES = ["tversky", "focal_tversky", "dibe_dis", "dibe_reg", "dibe", "hybrid_focal"]


@pytest.mark.parametrize("name", ALPHA_LOSSES)
def test_raising_alpha_penalises_a_missed_defect_more(name):
    # A defect pixel predicted as background (y = 1, ŷ = 0): a false negative.
    low = single_pixel_gradient({"name": name, "alpha": 0.3}, target=1.0, logit=-1.0)
    high = single_pixel_gradient({"name": name, "alpha": 0.7}, target=1.0, logit=-1.0)
    assert high > low > 0


@pytest.mark.parametrize("name", ["tversky", "focal_tversky", "dibe_dis", "dibe_reg", "hybrid_focal"])
def test_raising_beta_penalises_a_false_alarm_more_and_alpha_does_not(name):
    # Background predicted as defect (y = 0, ŷ = 1): a false positive.
    low = single_pixel_gradient({"name": name, "beta": 0.3}, target=0.0, logit=1.0)
    high = single_pixel_gradient({"name": name, "beta": 0.7}, target=0.0, logit=1.0)
    assert high > low > 0
    assert single_pixel_gradient({"name": name, "alpha": 0.9}, target=0.0, logit=1.0) == pytest.approx(
        single_pixel_gradient({"name": name, "alpha": 0.1}, target=0.0, logit=1.0))


def test_dibe_trades_false_alarms_for_missed_defects_through_alpha():
    # β = 1 − α: a larger α weighs a false alarm less.
    low = single_pixel_gradient({"name": "dibe", "alpha": 0.3}, target=0.0, logit=1.0)
    high = single_pixel_gradient({"name": "dibe", "alpha": 0.7}, target=0.0, logit=1.0)
    assert low > high > 0


def fit_and_measure_oii(spec: dict, steps: int = 150) -> float:
    """Fit logit = a·f + b to overlapping 1-D classes with ``spec`` and return the OII of the fit."""
    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(1, 1, 40, 40, generator=gen) < 0.15).double()
    feature = torch.randn(1, 1, 40, 40, generator=gen, dtype=torch.float64) + 2.0 * y
    weights = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.1)
    loss = dl.create("loss", spec)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(weights[0] * feature + weights[1], y).backward()
        optimizer.step()
    evaluator = dl.create("evaluator", "segmentation")
    evaluator.update(weights[0].detach() * feature + weights[1].detach(), y)
    return evaluator.compute()["oii"]


@pytest.mark.parametrize("spec", [
    {"name": "tversky"}, {"name": "dibe_reg", "gamma": 1.0}, {"name": "dibe", "lambda_": 0.5},
])
def test_raising_alpha_lowers_the_oii_of_a_trained_model(spec):
    low_alpha = fit_and_measure_oii({**spec, "alpha": 0.1, **({"beta": 0.9} if spec["name"] != "dibe" else {})})
    high_alpha = fit_and_measure_oii({**spec, "alpha": 0.9, **({"beta": 0.1} if spec["name"] != "dibe" else {})})
    assert low_alpha > 0 > high_alpha  # few FP and many FN at α = 0.1, the reverse at α = 0.9


def test_every_docstring_states_the_alpha_convention():
    for component in dl.list_components("loss"):
        names = {p.name: p.doc for p in component.parameters}
        if "alpha" in names:
            assert "predicted as background" in names["alpha"], component.name
            assert "OII" in names["alpha"], component.name
        if "beta" in names:
            assert "predicted as defect" in names["beta"], component.name
        assert component.summary and all(p.doc for p in component.parameters), component.name


# --- shapes, classes, ignored pixels, reductions ------------------------------------------------

def test_binary_target_with_or_without_channel_and_any_dtype():
    x, y = random_batch(7)
    logits = torch.from_numpy(x)
    expected = value("dibe", x, y)
    for target in (torch.from_numpy(y), torch.from_numpy(y)[:, 0], torch.from_numpy(y).long()[:, 0],
                   torch.from_numpy(y).bool(), torch.from_numpy(y).to(torch.uint8)):
        assert dl.create("loss", "dibe")(logits, target).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_multiclass_is_one_vs_rest_averaged_over_classes(name):
    rng = np.random.default_rng(8)
    x = rng.normal(0, 2, size=(2, 3, 5, 4))
    t = rng.integers(0, 3, size=(2, 5, 4))
    per_class = [REFERENCES[name](x[:, c].ravel(), (t == c).astype(float).ravel()) for c in range(3)]
    got = dl.create("loss", name)(torch.from_numpy(x), torch.from_numpy(t)).item()
    assert got == pytest.approx(np.mean(per_class), rel=1e-10)
    one_hot = torch.from_numpy(np.stack([(t == c) for c in range(3)], axis=1).astype(np.float64))
    assert dl.create("loss", name)(torch.from_numpy(x), one_hot).item() == pytest.approx(got, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_ignored_pixels_count_nowhere(name):
    x, y = random_batch(9, shape=(2, 1, 5, 5))
    ignored = np.random.default_rng(9).random(y.shape) < 0.3
    target = torch.from_numpy(np.where(ignored, 255, y).astype(np.int64))
    logits = torch.from_numpy(x).requires_grad_()
    loss = dl.create("loss", name, ignore_index=255)(logits, target)
    assert loss.item() == pytest.approx(REFERENCES[name](x[~ignored], y[~ignored]), rel=1e-10)
    loss.backward()
    assert torch.all(logits.grad[torch.from_numpy(ignored)] == 0)


def test_ignore_index_in_multiclass_targets():
    rng = np.random.default_rng(10)
    x = rng.normal(0, 2, size=(1, 3, 4, 4))
    t = rng.integers(0, 3, size=(1, 4, 4))
    t[0, :2, :2] = -1
    valid = t != -1
    expected = np.mean([REFERENCES["dibe"](x[:, c][valid], (t[valid] == c).astype(float)) for c in range(3)])
    got = dl.create("loss", "dibe", ignore_index=-1)(torch.from_numpy(x), torch.from_numpy(t)).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_every_pixel_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 1, 2, 2, requires_grad=True)
    loss = dl.create("loss", "focal", ignore_index=7)(logits, torch.full((1, 2, 2), 7))
    loss.backward()
    assert loss.item() == 0 and torch.all(logits.grad == 0)


def unsmoothed(name: str) -> list[dict]:
    """The default parameters, and smooth = 0 too where the loss has a smoothing ε."""
    has_smooth = "smooth" in inspect.signature(dl.get_component("loss", name).obj).parameters
    return [{}] + ([{"smooth": 0.0}] if has_smooth else [])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_empty_mask_predicted_empty_scores_zero(name, classes, dtype):
    # p̂ = 0 exactly off the mask (and 1 on it): TP = FP = FN = 0 for every empty class, 0/0 with ε = 0
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    sign = torch.full((2, classes, 3, 3), -1.0, dtype=dtype)
    sign[:, 0] = 1.0 if classes > 1 else -1.0  # with 3 classes: all background, classes 1 and 2 empty
    for params in unsmoothed(name):
        logits = (sign * 1e4).requires_grad_()
        value_ = dl.create("loss", name, **params)(logits, target)
        value_.backward()
        assert value_.item() == 0.0, (name, params)
        assert torch.isfinite(logits.grad).all(), (name, params)


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_batch_scores_zero(name):
    for params in unsmoothed(name):
        for classes, target in [(1, torch.zeros(0, 4, 4)), (3, torch.zeros(0, 4, 4, dtype=torch.long))]:
            logits = torch.zeros(0, classes, 4, 4, requires_grad=True)
            value_ = dl.create("loss", name, **params)(logits, target)
            value_.backward()
            assert value_.item() == 0.0, (name, params, classes)
            assert logits.grad.shape == logits.shape


@pytest.mark.parametrize("name", PIXEL_WISE)
def test_an_empty_batch_sums_to_zero_and_has_no_entries(name):
    logits, target = torch.zeros(0, 1, 4, 4), torch.zeros(0, 4, 4)
    assert dl.create("loss", name, reduction="sum")(logits, target).item() == 0.0
    assert dl.create("loss", name, reduction="none")(logits, target).shape == logits.shape


@pytest.mark.parametrize("name", PIXEL_WISE)
def test_reductions(name):
    x, y = random_batch(11)
    logits, target = torch.from_numpy(x), torch.from_numpy(y)
    entries = dl.create("loss", name, reduction="none")(logits, target)
    assert entries.shape == logits.shape
    assert dl.create("loss", name, reduction="sum")(logits, target).item() == pytest.approx(entries.sum().item())
    assert dl.create("loss", name)(logits, target).item() == pytest.approx(entries.mean().item())


@pytest.mark.parametrize("pred_shape,target,message", [
    ((2, 1, 4, 4), torch.zeros(2, 5, 5), r"target of shape \(2, 5, 5\) does not fit.*\(2, 4, 4\)"),
    ((2, 1, 4, 4), torch.zeros(3, 1, 4, 4), r"expected a 0/1 mask of shape \(2, 4, 4\) or \(2, 1, 4, 4\)"),
    ((2, 3, 4, 4), torch.zeros(2, 1, 4, 4), r"class indices in \[0, 3\) of shape \(2, 4, 4\)"),
    ((2, 1, 4, 4), torch.full((2, 4, 4), 2.0), r"0 \(background\) and 1 \(defect\); found \[2.0\]"),
    ((2, 1, 4, 4), torch.full((2, 4, 4), 0.5), r"0 \(background\) and 1 \(defect\)"),
    ((2, 3, 4, 4), torch.full((2, 4, 4), 3), r"class indices in \[0, 3\); found \[3\]"),
    ((2, 3, 4, 4), torch.full((2, 4, 4), -1), r"class indices in \[0, 3\); found \[-1\]"),
    ((2, 3, 4, 4), torch.zeros(2, 4, 4), r"integer class indices.*float32"),
    ((4,), torch.zeros(4), r"\(N, C, \*spatial\)"),
])
def test_wrong_shapes_and_values_say_what_was_expected(pred_shape, target, message):
    with pytest.raises(dl.DataError, match=message):
        dl.create("loss", "dibe")(torch.zeros(pred_shape), target)


def test_integer_logits_are_refused():
    with pytest.raises(dl.DataError, match="floating-point logits"):
        dl.create("loss", "bce")(torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2))


def test_ignore_index_is_named_in_the_value_error():
    with pytest.raises(dl.DataError, match="or ignore_index 255; found \\[3\\]"):
        dl.create("loss", "dice", ignore_index=255)(torch.zeros(1, 1, 2, 2), torch.tensor([[[0, 255], [3, 1]]]))


# --- the registry -------------------------------------------------------------------------------

def test_every_loss_is_registered_with_paper_defaults():
    assert {c.name for c in dl.list_components("loss")} >= set(NAMES)
    defaults = {name: {p.name: p.default for p in dl.get_component("loss", name).parameters} for name in NAMES}
    assert defaults["focal"] == {"lambda_": 0.25, "gamma": 2.0, "ignore_index": None, "reduction": "mean"}
    assert defaults["focal_tversky"]["gamma"] == 0.75 and defaults["dibe_reg"]["gamma"] == 1.5
    assert defaults["dibe_dis"]["gamma"] == defaults["dibe"]["gamma"] == 2.0
    assert (defaults["tversky"]["alpha"], defaults["tversky"]["beta"]) == (0.3, 0.7)
    assert defaults["dibe"]["alpha"] == 0.3 and defaults["dibe"]["theta"] == 0.5


def test_create_from_a_spec_and_a_misspelt_parameter():
    loss = dl.create("loss", {"name": "dibe", "alpha": 0.7})
    assert loss.pixel.alpha == loss.region.alpha == 0.7
    assert loss.pixel.beta == loss.region.beta == pytest.approx(0.3)
    with pytest.raises(dl.ParameterError, match="alpah.*did you mean 'alpha'"):
        dl.create("loss", "dibe", alpah=0.7)


@pytest.mark.parametrize("name,params,message", [
    ("dibe", {"alpha": 1.5}, r"loss.alpha: must be in \[0, 1\], got 1.5"),
    ("focal", {"lambda_": -0.1}, r"loss.lambda_: must be in \[0, 1\], got -0.1"),
    ("dibe_reg", {"gamma": 0.0}, r"loss.gamma: must be > 0, got 0"),
    ("combo", {"theta": 2.0}, r"loss.theta: must be in \[0, 1\], got 2"),
    ("bce", {"reduction": "avg"}, r"reduction"),
])
def test_out_of_range_parameters_are_refused(name, params, message):
    with pytest.raises(dl.ParameterError, match=message):
        dl.create("loss", name, **params)


def test_loading_the_plugin_module_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, defectlab_plugins.segmentation_losses, defectlab_plugins.segmentation_metrics; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
