"""The ``detection`` evaluator on hand-worked cases, and against pycocotools' COCOeval run directly.

COCO's AP (pycocotools' COCOeval.accumulate/summarize) interpolates precision on 101 recall
points r = 0, 0.01, ..., 1: the precision at r is the highest precision reached at any recall
≥ r (0 beyond the highest recall reached), and AP is the mean of the 101 values.
"""

from __future__ import annotations

import contextlib
import csv
import io

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab_plugins.detection_metrics.evaluator import f1_at
from defectlab_plugins.detection_metrics.matching import CROWD, box_iou, greedy_match

PNG = b"\x89PNG\r\n\x1a\n"


def target(boxes, labels):
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64)}


def prediction(boxes, scores, labels):
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.as_tensor(scores, dtype=torch.float32),
            "labels": torch.as_tensor(labels, dtype=torch.int64)}


def evaluator(classes=None, **params):
    made = dl.create("evaluator", "detection", **params)
    if classes is not None:
        made.setup(classes=classes, class_counts=[1] * len(classes))
    return made


def scored(preds, targets, classes=None, **params):
    made = evaluator(classes, **params)
    made.update(preds, targets)
    return made


# --- AP on hand-worked cases ---------------------------------------------------------------------

def test_perfect_boxes_score_one_everywhere():
    targets = [target([[10, 10, 30, 30], [40, 40, 100, 90]], [0, 1]), target([[5, 5, 120, 125]], [0])]
    preds = [prediction(t["boxes"], [0.9] * len(t["labels"]), t["labels"]) for t in targets]
    scores = scored(preds, targets, ["pit", "scratch"]).compute()
    assert scores["map_50"] == scores["map"] == 1.0
    assert scores["ap_50/pit"] == scores["ap_50/scratch"] == 1.0
    assert scores["map_small"] == scores["map_medium"] == scores["map_large"] == 1.0
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1.0, 1.0, 1.0)
    assert scores["f1_confidence"] == 0.0  # every threshold up to 0.9 gives F1 = 1; the first is reported


def test_false_positive_scored_above_a_true_positive():
    # Two boxes of one class; predictions by score: TP 0.95, FP 0.9 (nothing there), TP 0.8.
    #   rank 1: precision 1/1, recall 1/2;  rank 2: 1/2, 1/2;  rank 3: 2/3, 2/2.
    # Interpolated (the best precision at recall ≥ r): r = 0, 0.01, ..., 0.50 (51 points) -> 1;
    # r = 0.51, ..., 1.00 (50 points) -> 2/3.  AP = (51 · 1 + 50 · 2/3) / 101 = 0.8349835...
    targets = [target([[0, 0, 20, 20], [50, 50, 70, 70]], [0, 0])]
    preds = [prediction([[0, 0, 20, 20], [100, 100, 120, 120], [50, 50, 70, 70]], [0.95, 0.9, 0.8], [0, 0, 0])]
    scores = scored(preds, targets).compute()
    hand = (51 * 1 + 50 * 2 / 3) / 101
    assert scores["map_50"] == pytest.approx(hand, abs=1e-12)
    assert scores["ap_50/0"] == pytest.approx(hand, abs=1e-12)
    assert scores["map"] == pytest.approx(hand, abs=1e-12)  # exact boxes: the same at every IoU threshold
    # F1 = 2TP / (2TP + FP + FN): t ≤ 0.8: 4/5; 0.8 < t ≤ 0.9: 2/4; 0.9 < t ≤ 0.95: 2/3 -> 0.8, first at t = 0
    assert (scores["f1"], scores["precision"], scores["recall"]) == pytest.approx((0.8, 2 / 3, 1.0))
    assert scores["f1_confidence"] == 0.0


def test_a_single_false_positive_above_the_only_true_positive_halves_ap():
    # rank 1: precision 0, recall 0; rank 2: 1/2, 1. Every recall point reaches 1/2 later: AP = 101 · 0.5 / 101
    preds = [prediction([[60, 60, 80, 80], [0, 0, 20, 20]], [0.9, 0.8], [0, 0])]
    scores = scored(preds, [target([[0, 0, 20, 20]], [0])]).compute()
    assert scores["map_50"] == pytest.approx(0.5, abs=1e-12)


def test_a_missed_box():
    # Two boxes, one found (score 0.9): precision 1 up to recall 1/2, nothing beyond.
    # r = 0, ..., 0.50 (51 points) -> 1; r = 0.51, ..., 1 -> 0.  AP = 51 / 101 = 0.5049505...
    targets = [target([[0, 0, 20, 20]], [0]), target([[30, 30, 60, 60]], [0])]
    preds = [prediction([[0, 0, 20, 20]], [0.9], [0]), prediction([], [], [])]
    scores = scored(preds, targets).compute()
    assert scores["recall"] == 0.5
    assert scores["precision"] == 1.0
    assert scores["f1"] == pytest.approx(2 / 3)  # 2·1 / (2·1 + 0 + 1)
    assert scores["map_50"] == pytest.approx(51 / 101, abs=1e-12)


def test_a_box_found_loosely_counts_only_below_its_iou():
    # The prediction covers [0, 0, 20, 20] and the box is [0, 0, 20, 25]: IoU 400/500 = 0.8, matched at
    # IoU thresholds 0.5, ..., 0.8 (7 of 10): AP@0.5 = 1, AP@[.5:.95] = 7/10.
    scores = scored([prediction([[0, 0, 20, 20]], [0.7], [0])], [target([[0, 0, 20, 25]], [0])]).compute()
    assert scores["map_50"] == 1.0
    assert scores["map"] == pytest.approx(0.7, abs=1e-12)


# --- precision, recall and F1 at the best confidence --------------------------------------------

def test_precision_recall_f1_at_the_best_confidence():
    # Class "pit": 3 boxes. Predictions: TP 0.9, TP 0.7, a duplicate of the first box 0.3 (FP: one
    # prediction per box), FP 0.2 on nothing.
    #   t ≤ 0.2: TP 2, FP 2, FN 1 -> F1 4/7;  0.2 < t ≤ 0.3: 2, 1, 1 -> 4/6;  0.3 < t ≤ 0.7: 2, 0, 1 -> 4/5;
    #   0.7 < t ≤ 0.9: 1, 0, 2 -> 2/4;  t > 0.9: 0.
    # Class "scratch": 1 box, TP 0.6: F1 1 for t ≤ 0.6, else 0.
    # Mean F1 over both: highest (4/5 + 1) / 2 = 0.9 for 0.3 < t ≤ 0.6, first on the grid at t = 0.301;
    # precision (1 + 1) / 2 = 1, recall (2/3 + 1) / 2 = 5/6.
    targets = [target([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 0]),
               target([[5, 5, 40, 40]], [1])]
    preds = [prediction([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [60, 0, 70, 10]],
                        [0.9, 0.7, 0.3, 0.2], [0, 0, 0, 0]),
             prediction([[5, 5, 40, 40]], [0.6], [1])]
    made = scored(preds, targets, ["pit", "scratch"])
    scores = made.compute()
    assert scores["f1"] == pytest.approx(0.9)
    assert scores["f1_confidence"] == pytest.approx(0.301)
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(5 / 6)
    assert made.details()["f1_best_text"] == "0.90@0.301"


def test_f1_at_prints_like_yolo():
    assert f1_at(0.6712, 0.2561) == "0.67@0.256"


def test_greedy_matching_goes_by_score_not_by_overlap():
    # One box; p0 (score 0.9) overlaps it by IoU 0.6, p1 (score 0.8) by IoU 0.9: p0 takes it, p1 is left.
    iou = np.array([[0.6], [0.9]])
    assert greedy_match(iou, np.array([0.9, 0.8]), 0.5).tolist() == [0, -1]
    # Two boxes: p0 takes the one it overlaps most, p1 the other one if it reaches the threshold.
    iou = np.array([[0.7, 0.8], [0.1, 0.9]])
    assert greedy_match(iou, np.array([0.9, 0.8]), 0.5).tolist() == [1, -1]
    assert greedy_match(np.array([[0.7, 0.8], [0.6, 0.9]]), np.array([0.9, 0.8]), 0.5).tolist() == [1, 0]


def test_box_iou_by_hand():
    a = np.array([[0.0, 0, 10, 10]])
    b = np.array([[5.0, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
    # overlap 25, union 100 + 100 - 25 = 175
    assert box_iou(a, b) == pytest.approx(np.array([[25 / 175, 1.0, 0.0]]))


# --- the confusion matrix ------------------------------------------------------------------------

def test_confusion_matrix_with_background():
    # Image 1: boxes a [0,0,20,20] and b [40,40,60,60]; predictions b on the a box (0.9, wrong class),
    # b on the b box (0.8), a on nothing (0.7). Image 2: box a, no prediction (missed).
    # Per class F1 (same-class matching): a never right -> 0; b 2/3 for t ≤ 0.8. Mean 1/3 first at t = 0,
    # so every prediction counts. Class-agnostic matching: (a, b), (b, b), (background, a), (a, background).
    targets = [target([[0, 0, 20, 20], [40, 40, 60, 60]], [0, 1]), target([[0, 0, 30, 30]], [0])]
    preds = [prediction([[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 90, 90]], [0.9, 0.8, 0.7], [1, 1, 0]),
             prediction([], [], [])]
    details = scored(preds, targets, ["a", "b"]).details()
    assert details["f1_confidence"] == 0.0
    assert details["confusion_labels"] == ["a", "b", "background"]
    #                                  predicted a  b  background
    assert details["confusion_matrix"] == [[0, 1, 1],   # true a
                                           [0, 1, 0],   # true b
                                           [1, 0, 0]]   # background


def test_confusion_matrix_leaves_out_predictions_below_the_best_confidence():
    # One box; TP 0.9 and a false alarm elsewhere at 0.2: F1 is 1 only above 0.2 (first at 0.201),
    # so the false alarm is not in the matrix.
    preds = [prediction([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.2], [0, 0])]
    details = scored(preds, [target([[0, 0, 10, 10]], [0])]).details()
    assert details["f1_confidence"] == pytest.approx(0.201)
    assert details["confusion_matrix"] == [[1, 0], [0, 0]]


# --- box sizes ----------------------------------------------------------------------------------

def test_small_medium_and_large_are_split_by_area():
    # COCO: small < 32² = 1024, medium 32²..96² = 9216, large > 96² pixels.
    # small 20x20 = 400 found exactly -> 1; medium 50x50 = 2500 missed -> 0;
    # large 120x120 found, but a large false alarm (120x120) scores above it -> 0.5 (see the FP test).
    # The small false alarm (10x10 at 0.99) matches nothing and lies outside the medium and large
    # ranges, so COCO ignores it there; it does count for "all" areas.
    targets = [target([[0, 0, 20, 20], [100, 100, 150, 150], [200, 0, 320, 120]], [0, 0, 0])]
    preds = [prediction([[0, 0, 20, 20], [200, 0, 320, 120], [0, 200, 120, 320], [400, 400, 410, 410]],
                        [0.9, 0.8, 0.85, 0.99], [0, 0, 0, 0])]
    scores = scored(preds, targets).compute()
    # small: the 10x10 false alarm (0.99) ranks above the small hit (0.9): precision 1/2 at recall 1 -> 0.5
    assert scores["map_small"] == pytest.approx(0.5, abs=1e-12)
    assert scores["map_medium"] == 0.0
    assert scores["map_large"] == pytest.approx(0.5, abs=1e-12)


def test_a_size_without_boxes_is_missing_not_zero():
    made = scored([prediction([[0, 0, 10, 10]], [0.9], [0])], [target([[0, 0, 10, 10]], [0])])
    scores = made.compute()
    assert scores["map_small"] == 1.0
    assert "map_medium" not in scores and "map_large" not in scores
    assert set(made.details()["missing"]) == {"map_medium", "map_large"}


# --- equality with pycocotools' COCOeval run directly -------------------------------------------

def generated_case(seed=0, images=6, classes=3):
    """Boxes of every size on 256 px images, and predictions that jitter, miss, relabel and add boxes."""
    rng = np.random.default_rng(seed)
    targets, preds = [], []
    for _ in range(images):
        m = int(rng.integers(0, 6))
        size = rng.choice([12, 40, 110], m) * rng.uniform(0.7, 1.3, m)
        x, y = rng.uniform(0, 140, m), rng.uniform(0, 140, m)
        boxes = np.stack([x, y, x + size, y + size * rng.uniform(0.6, 1.4, m)], 1)
        labels = rng.integers(0, classes, m)
        keep = rng.random(m) > 0.2
        jitter = rng.normal(0, 0.08, (m, 4)) * size[:, None]
        p_boxes = boxes[keep] + jitter[keep]
        p_boxes[:, 2:] = np.maximum(p_boxes[:, 2:], p_boxes[:, :2] + 1)
        p_labels = np.where(rng.random(m) < 0.15, rng.integers(0, classes, m), labels)[keep]
        extra = int(rng.integers(0, 4))
        e_xy = rng.uniform(0, 200, (extra, 2))
        e_boxes = np.concatenate([e_xy, e_xy + rng.uniform(5, 60, (extra, 2))], 1)
        p_boxes = np.concatenate([p_boxes, e_boxes])
        p_labels = np.concatenate([p_labels, rng.integers(0, classes, extra)])
        p_scores = rng.uniform(0.05, 1.0, len(p_labels))
        targets.append({"boxes": boxes.reshape(-1, 4), "labels": labels})
        preds.append({"boxes": p_boxes.reshape(-1, 4), "scores": p_scores, "labels": p_labels})
    return preds, targets


def cocoeval(preds, targets, categories, category=None):
    """COCOeval's stats (12 numbers), run on the boxes as COCO json with pycocotools alone."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    annotations, detections = [], []
    for image, (p, t) in enumerate(zip(preds, targets)):
        for box, label, crowd in zip(t["boxes"], t["labels"], t.get("iscrowd", np.zeros(len(t["labels"])))):
            w, h = xywh(box)[2:]
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(label),
                                "bbox": xywh(box), "area": w * h, "iscrowd": int(crowd)})
        for box, score, label in zip(p["boxes"], p["scores"], p["labels"]):
            detections.append({"image_id": image, "category_id": int(label), "bbox": xywh(box),
                               "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": [{"id": i} for i in range(len(targets))], "annotations": annotations,
                         "categories": [{"id": c} for c in categories]}
        truth.createIndex()
        found = truth.loadRes(detections)
        run = COCOeval(truth, found, "bbox")
        if category is not None:
            run.params.catIds = [category]
        run.evaluate()
        run.accumulate()
        run.summarize()
    return run.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_pycocotools_cocoeval(seed):
    preds, targets = generated_case(seed)
    made = evaluator(["crazing", "inclusion", "patches"])
    made.update(preds[:3], targets[:3])  # two batches: scores must not depend on the batching
    made.update(preds[3:], targets[3:])
    scores = made.compute()
    stats = cocoeval(preds, targets, [0, 1, 2])
    assert scores["map"] == pytest.approx(stats[0], abs=1e-6)
    assert scores["map_50"] == pytest.approx(stats[1], abs=1e-6)
    for key, index in (("map_small", 3), ("map_medium", 4), ("map_large", 5)):
        if stats[index] < 0:
            assert key not in scores
        else:
            assert scores[key] == pytest.approx(stats[index], abs=1e-6)
    per_class = {row["class"]: row for row in made.details()["per_class"]}
    for c, name in enumerate(["crazing", "inclusion", "patches"]):
        one = cocoeval(preds, targets, [0, 1, 2], category=c)
        assert scores[f"ap_50/{name}"] == pytest.approx(one[1], abs=1e-6)
        assert per_class[name]["ap"] == pytest.approx(one[0], abs=1e-6)
    assert 0 < scores["map"] < scores["map_50"] < 1  # the case is neither trivial nor hopeless


# --- crowd regions (iscrowd = 1): COCO's ignore regions ------------------------------------------

def crowd_target(boxes, labels, iscrowd):
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.asarray(labels),
            "iscrowd": np.asarray(iscrowd)}


def numpy_prediction(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "scores": np.asarray(scores, dtype=float),
            "labels": np.asarray(labels)}


CROWD_CASES = {
    # a crowd region that nobody finds, beside a box that is found: COCO gives 1.0 (0.505 if the crowd counted)
    "crowd box left unfound": ([numpy_prediction([[0, 0, 20, 20]], [0.9], [0])],
                               [crowd_target([[0, 0, 20, 20], [100, 100, 200, 200]], [0, 0], [0, 1])]),
    # detections on a crowd region only, scored above the hit, in an image of their own and beside a box
    "detections on a crowd region only": (
        [numpy_prediction([[110, 110, 130, 130], [150, 150, 190, 170]], [0.95, 0.7], [0, 0]),
         numpy_prediction([[0, 0, 20, 20], [60, 60, 80, 80]], [0.8, 0.9], [0, 0])],
        [crowd_target([[100, 100, 200, 200]], [0], [True]), crowd_target([[0, 0, 20, 20], [50, 50, 90, 90]], [0, 0],
                                                                          [False, True])]),
    # detections overlapping an ordinary box A (IoU 0.82 and 0.74) inside a crowd region: the first takes A
    # up to IoU 0.8, the second falls to the crowd region, and above 0.8 both do (A is missed, nothing is FP)
    "detection overlapping both": (
        [numpy_prediction([[60, 60, 80, 80], [2, 0, 22, 20], [0, 3, 20, 23], [140, 140, 160, 160]],
                          [0.95, 0.9, 0.85, 0.8], [0, 0, 0, 0])],
        [crowd_target([[0, 0, 20, 20], [0, 0, 40, 40], [140, 140, 160, 160]], [0, 0, 0], [0, 1, 0])]),
    # two classes: a crowd region of class 1 does not excuse a class-0 detection; iscrowd as int32; a
    # detection half inside the crowd region is ignored at IoU 0.5 and a false positive above
    "two classes and partial cover": (
        [numpy_prediction([[0, 0, 10, 10], [30, 0, 50, 20], [45, 0, 65, 20], [30, 30, 40, 40], [30, 30, 40, 40]],
                          [0.9, 0.8, 0.75, 0.7, 0.6], [0, 1, 1, 0, 1])],
        [crowd_target([[0, 0, 10, 10], [30, 30, 40, 40], [30, 0, 55, 20], [30, 0, 55, 20]], [0, 1, 1, 0],
                      np.array([0, 0, 1, 0], dtype=np.int32))]),
}


# (mAP, mAP@0.5) by hand: 101-point AP per IoU threshold, e.g. "detection overlapping both": IoU 0.5..0.8
# FP, TP, -, TP -> 2/3; 0.85..0.95 FP, -, -, TP with A missed -> 51 · 0.5 / 101
CROWD_BY_HAND = {"crowd box left unfound": (1.0, 1.0), "detections on a crowd region only": (1.0, 1.0),
                 "detection overlapping both": ((7 * 2 / 3 + 3 * 51 * 0.5 / 101) / 10, 2 / 3),
                 "two classes and partial cover": ((51 / 101 + (1 + 9 * 0.5) / 10) / 2, (51 / 101 + 1) / 2)}


@pytest.mark.parametrize("case", list(CROWD_CASES))
def test_crowd_regions_score_as_in_pycocotools_cocoeval(case):
    preds, targets = CROWD_CASES[case]
    scores = scored(preds, targets).compute()
    stats = cocoeval(preds, targets, sorted({int(c) for t in targets for c in t["labels"]}))
    assert scores["map"] == pytest.approx(stats[0], abs=1e-6)
    assert scores["map_50"] == pytest.approx(stats[1], abs=1e-6)
    assert (scores["map"], scores["map_50"]) == pytest.approx(CROWD_BY_HAND[case], abs=1e-12)
    ordinary = [{k: v for k, v in t.items() if k != "iscrowd"} for t in targets]
    assert scored(preds, ordinary).compute()["map"] != pytest.approx(stats[0], abs=1e-6)  # crowd matters


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_case_with_crowd_regions_equal_to_cocoeval(seed):
    preds, targets = generated_case(seed)
    rng = np.random.default_rng(10 + seed)
    for t in targets:
        t["iscrowd"] = rng.random(len(t["labels"])) < 0.3
    scores = scored(preds, targets).compute()
    stats = cocoeval(preds, targets, [0, 1, 2])
    assert scores["map"] == pytest.approx(stats[0], abs=1e-6)
    assert scores["map_50"] == pytest.approx(stats[1], abs=1e-6)


def test_crowd_region_on_a_hand_example():
    # A = [0, 0, 20, 20] ordinary, C = [100, 0, 200, 100] a crowd region, both class 0. By score:
    #   0.95 on nothing: FP.   0.9 inside C (crowd IoU 1): ignored at every IoU threshold.
    #   0.85 = [190, 0, 210, 20]: 200 of its 400 px² inside C, crowd IoU 0.5: ignored at 0.5, FP above.
    #   0.8 on A: TP.
    # IoU 0.5: FP, TP -> precision 1/2 at recall 1: AP50 = 101 · 0.5 / 101 = 0.5.
    # IoU 0.55..0.95 (9 thresholds): FP, FP, TP -> 1/3. mAP = (0.5 + 9 / 3) / 10 = 0.35.
    # As an ordinary box C would be missed and both detections on it FPs: AP50 = 51 · (1/4) / 101.
    preds = [numpy_prediction([[50, 50, 70, 70], [120, 20, 140, 40], [190, 0, 210, 20], [0, 0, 20, 20]],
                              [0.95, 0.9, 0.85, 0.8], [0, 0, 0, 0])]
    targets = [crowd_target([[0, 0, 20, 20], [100, 0, 200, 100]], [0, 0], [0, 1])]
    made = scored(preds, targets, ["pit"])
    scores = made.compute()
    assert scores["map_50"] == pytest.approx(0.5, abs=1e-12)
    assert scores["map"] == pytest.approx(0.35, abs=1e-12)
    # F1 at IoU 0.5 counts the FP and the TP only: confidence ≤ 0.8 gives P 1/2, R 1, F1 2/3
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    details = made.details()
    assert details["per_class"][0]["boxes"] == 1
    assert details["confusion_matrix"] == [[1, 0], [1, 0]]  # the crowd region is no miss, its detections no alarm
    drawn = made.results.outcomes(0)  # what predictions.png shows: the FP and the TP, no missed box
    assert drawn["scores"].tolist() == [0.95, 0.8] and drawn["correct"].tolist() == [False, True]
    assert drawn["missed"].tolist() == [False, False]
    ordinary = scored(preds, [crowd_target(targets[0]["boxes"], [0, 0], [0, 0])]).compute()
    assert ordinary["map_50"] == pytest.approx(51 * 0.25 / 101, abs=1e-12)


def test_crowd_iou_and_matching_by_hand():
    a = np.array([[0.0, 0, 10, 10]])
    b = np.array([[5.0, 0, 25, 10], [5.0, 0, 25, 10]])
    assert box_iou(a, b, np.array([False, True])) == pytest.approx(np.array([[50 / 250, 50 / 100]]))
    # two predictions on one ordinary box and a crowd region: the first takes the box, the second is ignored
    iou = np.array([[0.9, 0.7], [0.8, 0.9], [0.1, 0.2]])
    assert greedy_match(iou, np.array([0.9, 0.8, 0.7]), 0.5, np.array([False, True])).tolist() == [0, CROWD, -1]
    # an ordinary box is preferred to a crowd region that overlaps more
    assert greedy_match(iou[1:2], np.array([0.8]), 0.5, np.array([False, True])).tolist() == [0]


def test_an_image_with_only_crowd_regions_has_nothing_to_find():
    made = scored([numpy_prediction([[0, 0, 10, 10]], [0.9], [0])], [crowd_target([[0, 0, 10, 10]], [0], [1])])
    with pytest.raises(dl.DataError, match="none of the 1 images evaluated has a ground-truth box"):
        made.compute()


def test_empty_labels_of_any_dtype_and_whole_float_labels_are_accepted():
    expected = scored([prediction([[0, 0, 10, 10]], [0.9], [1])], [target([[0, 0, 10, 10]], [1])]).compute()
    empty_pred = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}  # float32
    empty_truth = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.float32),
                   "iscrowd": torch.zeros(0, dtype=torch.float32)}
    made = evaluator()
    made.update([empty_pred, prediction([[0, 0, 10, 10]], [0.9], [1])], [empty_truth, target([[0, 0, 10, 10]], [1])])
    assert made.compute() == expected
    floats = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1.0])}
    whole = {**floats, "scores": torch.tensor([0.9])}
    assert scored([whole], [floats]).compute() == expected


def test_precision_recall_at_a_confidence_agree_with_a_count_by_hand_on_the_generated_case():
    preds, targets = generated_case(3)
    made = scored(preds, targets, ["a", "b", "c"])
    scores = made.compute()
    t = scores["f1_confidence"]
    # Count TP/FP/FN per class at t with a plain loop, one prediction at a time by descending score.
    f1s, ps, rs = [], [], []
    for c in range(3):
        tp = fp = boxes = 0
        for p, g in zip(preds, targets):
            gt = g["boxes"][g["labels"] == c]
            boxes += len(gt)
            taken = set()
            keep = (p["labels"] == c) & (p["scores"] >= t)
            for i in np.argsort(-p["scores"][keep], kind="stable"):
                ious = box_iou(p["boxes"][keep][i:i + 1], gt)[0] if len(gt) else np.array([])
                options = [(iou, j) for j, iou in enumerate(ious) if iou >= 0.5 and j not in taken]
                if options:
                    taken.add(max(options)[1])
                    tp += 1
                else:
                    fp += 1
        if boxes:
            fn = boxes - tp
            f1s.append(2 * tp / (2 * tp + fp + fn))
            ps.append(tp / (tp + fp) if tp + fp else 0.0)
            rs.append(tp / boxes)
    assert scores["f1"] == pytest.approx(np.mean(f1s))
    assert scores["precision"] == pytest.approx(np.mean(ps))
    assert scores["recall"] == pytest.approx(np.mean(rs))


# --- edge cases ---------------------------------------------------------------------------------

def test_no_predictions_at_all():
    targets = [target([[0, 0, 10, 10]], [0]), target([], [])]
    scores = scored([prediction([], [], []), prediction([], [], [])], targets).compute()
    assert scores == {"map_50": 0.0, "map": 0.0, "map_small": 0.0, "ap_50/0": 0.0, "precision": 0.0,
                      "recall": 0.0, "f1": 0.0, "f1_confidence": 0.0}


def test_images_without_boxes_hold_false_alarms():
    # Image 2 has no defect but a prediction at 0.5: a false alarm, left out above 0.5 (first at 0.501).
    targets = [target([[0, 0, 10, 10]], [0]), target([], [])]
    preds = [prediction([[0, 0, 10, 10]], [0.9], [0]), prediction([[0, 0, 10, 10]], [0.5], [0])]
    scores = scored(preds, targets).compute()
    assert scores["map_50"] == 1.0  # the false alarm ranks below the only hit
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1.0, 1.0, 1.0)
    assert scores["f1_confidence"] == pytest.approx(0.501)


def test_a_class_without_ground_truth_is_missing_not_averaged_in():
    # "pit" has a perfect hit; "scratch" has no box (COCO's AP is -1), only a false alarm; "dent" nothing.
    targets = [target([[0, 0, 10, 10]], [0])]
    preds = [prediction([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.8], [0, 1])]
    made = scored(preds, targets, ["pit", "scratch", "dent"])
    scores = made.compute()
    assert scores["map_50"] == scores["map"] == 1.0
    assert scores["ap_50/pit"] == 1.0
    assert "ap_50/scratch" not in scores and "ap_50/dent" not in scores
    rows = {row["class"]: row for row in made.details()["per_class"]}
    assert rows["scratch"] == {"class": "scratch", "boxes": 0, "predictions": 1, "ap_50": None, "ap": None}
    assert set(made.details()["missing"]) >= {"ap_50/scratch", "ap_50/dent"}


def test_nothing_evaluated_says_so():
    with pytest.raises(dl.DataError, match="no images were evaluated"):
        evaluator().compute()
    made = scored([prediction([], [], [])], [target([], [])])
    with pytest.raises(dl.DataError, match="none of the 1 images evaluated has a ground-truth box"):
        made.compute()


def test_reset_forgets():
    made = scored([prediction([[0, 0, 10, 10]], [0.9], [0])], [target([[0, 0, 10, 10]], [0])])
    assert made.compute()["map"] == 1.0
    made.reset()
    made.update([prediction([], [], [])], [target([[0, 0, 10, 10]], [0])])
    assert made.compute()["map"] == 0.0


@pytest.mark.parametrize("pred,truth,message", [
    ([prediction([[0, 0, 10, 10]], [0.9], [0])], [], "predictions for 1 images but targets for 0"),
    ([prediction([[10, 0, 0, 10]], [0.9], [0])], [target([], [])], r"box 0 \[10.0, 0.0, 0.0, 10.0\] has x2 < x1"),
    ([prediction([[0, 0, 10, 10]], [1.5], [0])], [target([], [])], r"confidences in \[0, 1\]"),
    ([prediction([[0, 0, 10, 10]], [0.5], [0])], [target([[0, 0, 5, 5]], [4])], r"class indices in \[0, 2\)"),
    ([{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.long)}], [target([], [])], "scores"),
    ([prediction([[0, 0, 10, 10]], [0.5], [0])], [{"boxes": torch.zeros(2, 4), "labels": torch.zeros(1)}],
     r"labels of shape \(1,\) do not fit 2 boxes"),
    ([{**prediction([[0, 0, 10, 10]], [0.5], [0]), "labels": torch.tensor([0.5])}], [target([], [])],
     r"labels must be integer class indices, got float32 values such as 0.5"),
    ([prediction([], [], [])], [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([1.0001], dtype=torch.float64)}],
     r"labels must be integer class indices, got float64 values such as 1.0001"),
    ([prediction([], [], [])], [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([True])}],
     r"labels must be integer class indices, got bool"),
    ([prediction([], [], [])], [{**target([[0, 0, 5, 5]], [0]), "iscrowd": torch.tensor([2])}],
     r"iscrowd must hold 0 \(an object\) or 1 \(a crowd region\), got int64 values \[2\]"),
    ([prediction([], [], [])], [{**target([[0, 0, 5, 5]], [0]), "iscrowd": torch.tensor([0, 1])}],
     r"iscrowd of shape \(2,\) does not fit 1 boxes"),
])
def test_what_cannot_be_scored_is_a_data_error(pred, truth, message):
    with pytest.raises(dl.DataError, match=message):
        evaluator(["a", "b"]).update(pred, truth)


def test_errors_name_the_image():
    made = evaluator()
    made.update([prediction([], [], [])], [target([], [])])
    with pytest.raises(dl.DataError, match=r"the target of image 2 \(b.png\)"):
        made.update([prediction([], [], [])] * 2, [target([], []), target([[5, 5, 0, 0]], [0])],
                    keys=["a.png", "b.png"])


# --- details and files --------------------------------------------------------------------------

def test_write_draws_the_plots_and_the_examples(tmp_path):
    targets = [target([[8, 8, 30, 30]], [0]), target([[30, 30, 60, 50]], [1]), target([], [])]
    preds = [prediction([[8, 8, 30, 30]], [0.9], [0]), prediction([[0, 0, 20, 20]], [0.6], [1]),
             prediction([[10, 10, 20, 20]], [0.4], [0])]
    made = evaluator(["crazing", "scratches"], examples=2)
    made.update(preds, targets, images=torch.randn(3, 3, 64, 64), keys=["a.png", "b.png", "c.png"])
    files = made.write(tmp_path)
    assert set(files) == {"pr_curves", "f1_curve", "confusion_matrix", "per_class", "predictions"}
    for label in ("pr_curves", "f1_curve", "confusion_matrix", "predictions"):
        assert files[label].read_bytes().startswith(PNG)
    from PIL import Image

    assert Image.open(files["predictions"]).size[0] == 2 * (256 + 4)  # two examples side by side
    with files["per_class"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["class"], row["boxes"], row["ap_50"]) for row in rows] == [("crazing", "1", "1"),
                                                                            ("scratches", "1", "0")]
    details = made.details()
    assert details["examples"] == ["a.png", "b.png"]
    assert details["pr_curves"]["crazing"]["precision"] == [1.0] * 101
    assert list(tmp_path.glob(".*.tmp")) == []


def test_write_without_images_draws_no_examples(tmp_path):
    made = scored([prediction([[0, 0, 10, 10]], [0.9], [0])], [target([[0, 0, 10, 10]], [0])])
    assert "predictions" not in made.write(tmp_path)


def test_tensors_on_the_model_device_and_numpy_arrays_score_alike():
    preds, targets = generated_case(2)
    as_tensors = [{k: torch.as_tensor(v) for k, v in p.items()} for p in preds]
    as_targets = [{k: torch.as_tensor(v) for k, v in t.items()} for t in targets]
    assert scored(as_tensors, as_targets).compute() == scored(preds, targets).compute()
