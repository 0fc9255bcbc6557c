"""The ``segmentation`` evaluator against hand-counted confusions, seed 003's Table 1 and the OII component."""

from __future__ import annotations

import math

import defectlab as dl
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

# A 4x4 defect mask and predicted probabilities, counted by hand (threshold 0.5, p > t is defect):
#   target          pred               outcome
#   0 0 1 1         0  0  .9 .2        TN TN TP FN
#   0 0 1 1         0  .7 .8 .6        TN FP TP TP
#   0 0 0 0         0  0  0  0         TN TN TN TN
#   1 0 0 0         .4 0  0  .3        FN TN TN TN
TARGET = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
PROBS = np.array([[0, 0, .9, .2], [0, .7, .8, .6], [0, 0, 0, 0], [.4, 0, 0, .3]])
# TP 3, FP 1, FN 2, TN 10: IoU 3/6, PA 3/4, recall 3/5, Dice 6/9;
# OII: x = FP/FN = 1/2, k = 1 - IoU/2 = 3/4, k(1 - 1/(x + 1/x - 1)) = 3/4 · (1 - 1/1.5) = 1/4.
HAND = {"tp": 3, "fp": 1, "fn": 2, "tn": 10, "iou": 0.5, "pa": 0.75, "recall": 0.6, "dice": 2 / 3, "oii": 0.25}

# Seed 003, Table 1: TP:FP:FN -> IoU, PA, OII (three decimals as printed). Counts are scaled by 10.
TABLE_1 = [
    (2, 0.5, 0.5, 0.667, 0.800, 0.000), (2, 1, 1, 0.500, 0.667, 0.000), (2, 3, 3, 0.250, 0.400, 0.000),
    (2, 5, 1, 0.250, 0.286, -0.667), (2, 4, 2, 0.250, 0.333, -0.292), (2, 2, 4, 0.250, 0.500, 0.292),
    (2, 1, 5, 0.250, 0.667, 0.667), (2, 1, 2, 0.400, 0.667, 0.267), (2, 1, 0.5, 0.571, 0.667, -0.238),
    (2, 1, 0.2, 0.625, 0.667, -0.524),
]


def logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def masks_with_counts(tp: int, fp: int, fn: int, tn: int = 7):
    """One image, flat, whose prediction has exactly these counts (prediction as 0/1 probabilities)."""
    target = [1] * tp + [0] * fp + [1] * fn + [0] * tn
    pred = [1] * tp + [1] * fp + [0] * fn + [0] * tn
    return np.array(pred, float).reshape(1, 1, 1, -1), np.array(target).reshape(1, 1, -1)


def evaluate(pred, target, **params) -> dict[str, float]:
    evaluator = dl.create("evaluator", "segmentation", **params)
    evaluator.update(pred, target)
    return evaluator.compute()


def test_hand_counted_confusion_from_probabilities():
    result = evaluate(PROBS[None], TARGET[None], from_logits=False)
    assert result == pytest.approx({**HAND, "tn": 10})


def test_hand_counted_confusion_from_logits_tensors_with_a_channel():
    pred = torch.from_numpy(logit(PROBS)).view(1, 1, 4, 4)
    result = evaluate(pred, torch.from_numpy(TARGET).view(1, 4, 4))
    assert result == pytest.approx(HAND)


def test_threshold_moves_pixels_between_classes():
    # threshold 0.35: .4 (FN -> TP) joins, as does nothing else below .5 except .2 and .3
    result = evaluate(PROBS[None], TARGET[None], from_logits=False, threshold=0.35)
    assert (result["tp"], result["fp"], result["fn"]) == (4, 1, 1)
    result = evaluate(logit(PROBS)[None], TARGET[None], threshold=0.25)  # .3 (background) too
    assert (result["tp"], result["fp"], result["fn"]) == (4, 2, 1)


@pytest.mark.parametrize("tp,fp,fn,iou,pa,oii", TABLE_1)
def test_table_1_rows_from_counts(tp, fp, fn, iou, pa, oii):
    counts = (round(tp * 10), round(fp * 10), round(fn * 10))
    result = evaluate(*masks_with_counts(*counts), from_logits=False)
    assert (result["tp"], result["fp"], result["fn"]) == counts
    assert result["iou"] == pytest.approx(iou, abs=5e-4)
    assert result["pa"] == pytest.approx(pa, abs=5e-4)
    assert result["oii"] == pytest.approx(oii, abs=5e-4)
    assert result["oii"] == dl.create("imbalance", "oii")(*counts)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), threshold=st.floats(0.05, 0.95))
def test_counts_and_scores_agree_with_a_direct_count(seed, threshold):
    rng = np.random.default_rng(seed)
    probs = rng.random((3, 1, 6, 5))
    target = (rng.random((3, 6, 5)) < 0.3).astype(np.int64)
    result = evaluate(probs, target, from_logits=False, threshold=threshold)
    predicted = probs[:, 0] > threshold
    tp = int(np.sum(predicted & (target == 1)))
    fp = int(np.sum(predicted & (target == 0)))
    fn = int(np.sum(~predicted & (target == 1)))
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (tp, fp, fn, target.size - tp - fp - fn)
    if tp + fp + fn:
        assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert result["oii"] == dl.create("imbalance", "oii")(tp, fp, fn)


def test_batches_accumulate_over_the_dataset_and_reset_forgets_them():
    rng = np.random.default_rng(1)
    probs, target = rng.random((4, 8, 8)), (rng.random((4, 8, 8)) < 0.2).astype(int)
    evaluator = dl.create("evaluator", "segmentation", from_logits=False)
    evaluator.update(probs[:1], target[:1])
    evaluator.update(torch.from_numpy(probs[1:]), torch.from_numpy(target[1:]))
    assert evaluator.compute() == evaluate(probs, target, from_logits=False)
    evaluator.reset()
    evaluator.update(PROBS[None], TARGET[None])
    assert evaluator.compute() == pytest.approx(HAND)


def test_per_image_means():
    empty_pred, empty_target = np.zeros((1, 4, 4)), np.zeros((1, 4, 4), int)  # nothing to find, nothing found
    pred = np.concatenate([PROBS[None], empty_pred])
    target = np.concatenate([TARGET[None], empty_target])
    result = evaluate(pred, target, from_logits=False, per_image=True)
    assert result["iou"] == pytest.approx(0.5)  # the dataset-level score sees the same pixels
    assert result["iou_per_image"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["pa_per_image"] == pytest.approx((0.75 + 1.0) / 2)
    assert result["recall_per_image"] == pytest.approx((0.6 + 1.0) / 2)
    assert result["dice_per_image"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert result["oii_per_image"] == pytest.approx((0.25 + 0.0) / 2)
    assert "iou_per_image" not in evaluate(pred, target, from_logits=False)


@pytest.mark.parametrize("pred,target,expected", [
    # nothing to find and nothing found: a perfect empty prediction
    (np.zeros((1, 3, 3)), np.zeros((1, 3, 3), int), {"iou": 1.0, "pa": 1.0, "recall": 1.0, "dice": 1.0, "oii": 0.0}),
    # defects present, nothing predicted: PA is 0 (not 0/0), OII = +k = 1
    (np.zeros((1, 3, 3)), np.eye(3, dtype=int)[None], {"iou": 0.0, "pa": 0.0, "recall": 0.0, "dice": 0.0, "oii": 1.0}),
    # no defect, false alarms only: recall is 0, OII = -k = -1
    (np.eye(3)[None], np.zeros((1, 3, 3), int), {"iou": 0.0, "pa": 0.0, "recall": 0.0, "dice": 0.0, "oii": -1.0}),
])
def test_zero_count_conventions(pred, target, expected):
    result = evaluate(pred, target, from_logits=False)
    assert {key: result[key] for key in expected} == expected


def test_ignored_pixels_are_not_scored():
    target = TARGET.copy()
    target[1, 1] = 255  # the false positive
    target[3, 0] = 255  # one false negative
    result = evaluate(PROBS[None], target[None], from_logits=False, ignore_index=255)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (3, 0, 1, 10)
    assert result["oii"] == pytest.approx(dl.create("imbalance", "oii")(3, 0, 1))


@pytest.mark.parametrize("pred,target,params,message", [
    (np.zeros((2, 4, 4)), np.zeros((2, 5, 5)), {}, r"\(2, 4, 4\).*\(2, 5, 5\) do not fit"),
    (np.zeros((2, 3, 4, 4)), np.zeros((2, 4, 4)), {}, r"\(N, H, W\) or \(N, 1, H, W\)"),
    (np.zeros((1, 2, 2)), np.array([[[0, 2], [1, 0]]]), {}, r"0 \(background\) and 1 \(defect\); found \[2\]"),
    (np.full((1, 2, 2), 3.0), np.zeros((1, 2, 2)), {"from_logits": False}, r"probabilities in \[0, 1\].*from_logits=True"),
    (np.full((1, 2, 2), math.nan), np.zeros((1, 2, 2)), {}, r"NaN"),
])
def test_bad_inputs_say_what_was_expected(pred, target, params, message):
    evaluator = dl.create("evaluator", "segmentation", **params)
    with pytest.raises(dl.DataError, match=message):
        evaluator.update(pred, target)


def test_compute_before_update_is_an_error():
    with pytest.raises(dl.DataError, match="call update"):
        dl.create("evaluator", "segmentation").compute()


@pytest.mark.parametrize("params,message", [
    ({"threshold": 1.0}, r"evaluator.threshold: must be in \(0, 1\), got 1"),
    ({"ignore_index": 1}, r"ignore_index 1 is a class"),
    ({"treshold": 0.3}, r"did you mean 'threshold'"),
])
def test_bad_parameters(params, message):
    with pytest.raises(dl.ParameterError, match=message):
        dl.create("evaluator", "segmentation", **params)


def test_registered_with_documented_parameters():
    component = dl.get_component("evaluator", "segmentation")
    assert [p.name for p in component.parameters] == ["threshold", "from_logits", "per_image", "ignore_index", "examples"]
    assert all(p.doc for p in component.parameters)
    assert "0/0" in component.to_dict()["doc"]


def test_a_probability_equal_to_the_threshold_is_background():
    # ŷ = [p̂ > 0.5], as in DIBE_Dis (eq. 18)
    result = evaluate(np.full((1, 1, 2), 0.5), np.array([[[1, 0]]]), from_logits=False)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 0, 1)
    assert evaluate(np.zeros((1, 1, 2)), np.array([[[1, 0]]]))["fn"] == 1  # logit 0 is p̂ = 0.5


def test_images_whose_pixels_are_all_ignored_are_left_out_of_per_image_means():
    target = np.concatenate([TARGET[None], np.full((1, 4, 4), 255)])
    pred = np.concatenate([PROBS[None], np.ones((1, 4, 4))])
    result = evaluate(pred, target, from_logits=False, per_image=True, ignore_index=255)
    assert result["iou_per_image"] == result["iou"] == pytest.approx(0.5)


def test_the_oii_comes_from_the_oii_plugin_and_its_absence_is_named():
    import os
    import subprocess
    import sys

    assert type(dl.create("evaluator", "segmentation").oii) is type(dl.create("imbalance", "oii"))
    code = ("import defectlab as dl\n"
            "try:\n    dl.create('evaluator', 'segmentation')\nexcept dl.PluginError as exc:\n    print(exc)")
    env = {**os.environ, "DEFECTLAB_DISABLE_PLUGINS": "oii"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "imbalance 'oii' of the plugin 'oii', which is not loaded" in out
