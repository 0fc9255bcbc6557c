"""The ``anomaly`` evaluator and its scores: AUROC, best F1, pixel AUROC and PRO against hand-worked cases."""

from __future__ import annotations

import csv
import itertools
import json

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab_plugins.anomaly_metrics.curves import area_under
from defectlab_plugins.anomaly_metrics.pixels import (
    pixel_auroc,
    pixel_curves,
    pro_score,
    region_shares,
)
from defectlab_plugins.anomaly_metrics.scores import best_f1, class_aurocs, image_auroc
from scipy import ndimage
from sklearn.metrics import roc_auc_score

HISTOGRAM_TOLERANCE = 1e-3  # what the docs promise for 10,000 bins on continuous scores


def pair_count_auroc(good, defect) -> float:
    """Brute force: the share of (defect, good) pairs where the defect scores higher, ties half."""
    wins = [1.0 if d > g else 0.5 if d == g else 0.0 for d, g in itertools.product(defect, good)]
    return sum(wins) / len(wins)


def labelled(good, defect):
    return np.array([*good, *defect], dtype=float), np.array([0] * len(good) + [1] * len(defect))


# --- image AUROC and best F1 ---------------------------------------------------------------------

@pytest.mark.parametrize("good, defect, expected", [
    ([0.1, 0.2], [0.8, 0.9], 1.0),  # perfect separation
    ([0.8, 0.9], [0.1, 0.2], 0.0),  # reversed
    ([0.5], [0.5], 0.5),  # a tie counts half
    # pairs (defect, good): (.35, .1) win, (.35, .4) loss, (.8, .1) win, (.8, .4) win -> 3/4
    ([0.1, 0.4], [0.35, 0.8], 0.75),
])
def test_image_auroc_hand_worked(good, defect, expected):
    assert image_auroc(*labelled(good, defect)) == pytest.approx(expected)


def test_image_auroc_equals_the_pair_count_and_sklearn_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    good, defect = rng.normal(0, 1, 40).round(1), rng.normal(0.7, 1, 25).round(1)  # rounding makes ties
    scores, labels = labelled(good, defect)
    assert image_auroc(scores, labels) == pytest.approx(pair_count_auroc(good, defect), abs=1e-12)
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_best_f1_and_its_threshold_hand_worked():
    # good [.1 .4 .5], defect [.5 .8 .9]; an image is a defect when score >= t, F1 = 2TP / (2TP + FP + FN):
    #   t = .9: TP 1 FP 0 FN 2 -> 2/5;  t = .8: TP 2 FN 1 -> 4/5;  t = .5: TP 3 FP 1 (the tie) -> 6/7;
    #   t = .4: TP 3 FP 2 -> 6/8;  t = .1: TP 3 FP 3 -> 6/9.  Best 6/7 at t = .5.
    f1, threshold = best_f1(*labelled([0.1, 0.4, 0.5], [0.5, 0.8, 0.9]))
    assert f1 == pytest.approx(6 / 7)
    assert threshold == 0.5


def test_best_f1_takes_the_highest_threshold_of_equal_f1():
    # t = .9: TP 1 FP 0 FN 1 -> 2/3; t = .3: TP 2 FP 2 -> 4/6 = 2/3 as well: the higher t wins
    assert best_f1(*labelled([0.5, 0.6], [0.3, 0.9])) == (pytest.approx(2 / 3), 0.9)


def test_class_aurocs_score_each_defect_class_against_all_good_images():
    scores = np.array([0.2, 0.1, 0.5, 0.9, 0.7, 0.4])
    labels = np.array([0, 0, 0, 1, 1, 1])
    classes = np.array([0, 0, 0, 1, 1, 2])
    # crack [.9 .7] beats every good score: 1; scratch [.4] beats .2 and .1 but not .5: 2/3
    assert class_aurocs(scores, labels, classes, ["good", "crack", "scratch"]) == pytest.approx(
        {"auroc/crack": 1.0, "auroc/scratch": 2 / 3})


@pytest.mark.parametrize("labels, kind", [([0, 0, 0], "good"), ([1, 1], "defective")])
def test_one_kind_of_image_is_a_data_error_not_nan(labels, kind):
    with pytest.raises(dl.DataError, match=f"AUROC needs both good and defective images.*are {kind}.*split that "
                                           f"holds both"):
        image_auroc(np.linspace(0, 1, len(labels)), np.array(labels))


# --- pixel AUROC ---------------------------------------------------------------------------------

def random_maps_and_masks(seed: int, n: int, size: int, decimals: int | None = None):
    """Maps whose defect pixels (blobs of the masks) score higher on average; rounded maps have ties."""
    rng = np.random.default_rng(seed)
    masks = ndimage.binary_dilation(rng.random((n, size, size)) < 0.03, structure=np.ones((1, 3, 3))).astype(np.uint8)
    maps = rng.normal(0, 1, (n, size, size)) + 1.5 * masks
    return (maps.round(decimals) if decimals is not None else maps), masks


def test_pixel_auroc_equals_sklearn_over_all_pixels_with_ties():
    maps, masks = random_maps_and_masks(1, 6, 12, decimals=1)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(list(maps), list(masks)) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_equals_the_pair_count_on_a_tiny_case():
    maps = np.array([[[0.1, 0.5], [0.5, 0.9]]])
    masks = np.array([[[0, 0], [1, 1]]])
    # defect .5 vs good (.1 win, .5 tie); defect .9 vs both wins -> (1 + .5 + 1 + 1) / 4
    assert pixel_auroc(maps, masks) == pytest.approx(pair_count_auroc([0.1, 0.5], [0.5, 0.9])) == 0.875


def test_histogram_pixel_auroc_and_pro_are_within_the_stated_tolerance():
    maps, masks = random_maps_and_masks(2, 20, 32)
    exact, binned = pixel_curves(list(maps), list(masks)), pixel_curves(list(maps), list(masks), bins=10_000)
    assert exact.bins is None and binned.bins == 10_000
    assert exact.auroc() == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert binned.auroc() == pytest.approx(exact.auroc(), abs=HISTOGRAM_TOLERANCE)
    assert binned.pro_score() == pytest.approx(exact.pro_score(), abs=HISTOGRAM_TOLERANCE)
    coarse = pixel_curves(list(maps), list(masks), bins=3)  # the bins do matter
    assert abs(coarse.auroc() - exact.auroc()) > 0.01


# --- PRO -----------------------------------------------------------------------------------------

def brute_force_pro(maps, masks, max_fpr=0.3) -> float:
    """PRO from its definition, one threshold at a time, integrated on its own."""
    regions = [ndimage.label(mask, structure=np.ones((3, 3)))[0] for mask in masks]
    good = np.concatenate([m[k == 0] for m, k in zip(maps, masks)])
    points = [(0.0, 0.0)]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        overlaps = [np.mean(m[r == i] >= t) for m, r in zip(maps, regions) for i in range(1, r.max() + 1)]
        points.append((np.mean(good >= t), np.mean(overlaps)))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut at max_fpr, y interpolated
            y1, x1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0), max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


# Two regions of different sizes and 10 good pixels (.):
#   mask     A . B B .      map   .9 .7 .3 .3 .7
#            . . B B .            .3 .3 .3 .3 .3
#            . . . . .            .3 .1 .1 .1 .1
# A (1 pixel) scores .9, B (4 pixels) .3; good: two at .7, four at .3, four at .1.
#   t = .9: A found, B not: PRO (1 + 0)/2 = .5 at FPR 0
#   t = .7: FPR 2/10 = .2, PRO .5
#   t = .3: FPR 6/10 = .6, B found: PRO 1
#   t = .1: FPR 1, PRO 1
# Area up to FPR .3: .2 · .5 = .1, then .2 -> .3 under the line from (.2, .5) to (.6, 1), which is
# at .5 + .5 · (.1/.4) = .625 at FPR .3: .1 · (.5 + .625)/2 = .05625. PRO = .15625/.3 = 25/48.
# Up to FPR 1 instead: .1 + .4 · (.5 + 1)/2 + .4 · 1 = .8. Pixel-weighted (TPR) it would be lower:
# A is 1 of 5 defect pixels.
TWO_REGIONS_MASK = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
TWO_REGIONS_MAP = np.array([[.9, .7, .3, .3, .7], [.3, .3, .3, .3, .3], [.3, .1, .1, .1, .1]])


def test_pro_two_regions_one_found_at_low_fpr_hand_worked():
    assert pro_score([TWO_REGIONS_MAP], [TWO_REGIONS_MASK]) == pytest.approx(25 / 48)
    assert brute_force_pro([TWO_REGIONS_MAP], [TWO_REGIONS_MASK]) == pytest.approx(25 / 48)
    curves = pixel_curves([TWO_REGIONS_MAP], [TWO_REGIONS_MASK])
    assert (curves.regions, curves.defect_pixels, curves.good_pixels) == (2, 5, 10)
    assert area_under(curves.fpr, curves.tpr, 0.3) / 0.3 < 25 / 48  # pixel-weighted: the big region dominates


def test_pro_integrates_up_to_fpr_0_3_only():
    assert pro_score([TWO_REGIONS_MAP], [TWO_REGIONS_MASK], max_fpr=1.0) == pytest.approx(0.8)
    # the defect (2 pixels at .5) is found only once 4 of 10 good pixels (.9) are above the threshold: FPR .4
    late_map = np.array([[.9, .9, .9, .9, .5, .5, .1, .1, .1, .1, .1, .1]])
    late_mask = np.array([[0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]])
    assert pro_score([late_map], [late_mask]) == 0.0
    assert pro_score([late_map], [late_mask], max_fpr=1.0) == pytest.approx(0.6)


def test_pro_is_1_when_every_defect_pixel_outranks_every_good_pixel():
    maps, masks = random_maps_and_masks(3, 4, 16)
    maps = np.where(masks == 1, 10 + maps, maps - 10)
    assert pro_score(list(maps), list(masks)) == pytest.approx(1.0)
    assert pixel_auroc(list(maps), list(masks)) == pytest.approx(1.0)


def test_regions_are_8_connected():
    # the diagonal pair is one region of 2 pixels, (1, 3) another: shares 1/2, 1/2 and 1
    mask = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]])
    shares, count = region_shares(mask)
    assert count == 2
    assert shares[mask == 1].tolist() == [0.5, 0.5, 1.0]
    # (0, 0) and (1, 3) score 1, the rest 0: PRO .75 at FPR 0, then (1, 1) at FPR 1: at FPR .3 the line is at
    # .75 + .25 · .3, area .3 · (.75 + .825)/2, PRO = .7875 (4-connectivity would give 2/3 + (1/3) · .15)
    heat = np.array([[1.0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert pro_score([heat], [mask]) == pytest.approx(0.7875)


def test_exact_pro_equals_the_brute_force_definition_on_random_maps_with_ties():
    maps, masks = random_maps_and_masks(4, 3, 10, decimals=1)
    assert pro_score(list(maps), list(masks)) == pytest.approx(brute_force_pro(maps, masks), abs=1e-12)


def test_area_under_cuts_the_curve_at_the_limit_by_linear_interpolation():
    x, y = np.array([0, 0.2, 0.6, 1.0]), np.array([0, 0.4, 0.8, 1.0])
    assert area_under(x, y) == pytest.approx(0.04 + 0.24 + 0.36)
    # at x = .3, y = .4 + .4 · (.1/.4) = .5: .04 + .1 · (.4 + .5)/2
    assert area_under(x, y, 0.3) == pytest.approx(0.085)
    assert area_under(x, y, 0.2) == pytest.approx(0.04)


# --- the evaluator ------------------------------------------------------------------------------

CLASSES = ["good", "crack", "scratch"]
SCORES = ([0.2, 0.9, 0.4], [0.1, 0.5, 0.7])
LABELS = ([0, 1, 1], [0, 0, 1])
IMAGE_CLASSES = ([0, 1, 2], [0, 0, 1])


def batches(with_masks: bool = True, seed: int = 5):
    """Two batches of three 6x6 images: (pred, target, images, keys) each, as torch tensors."""
    rng = np.random.default_rng(seed)
    for b in range(2):
        masks = np.zeros((3, 6, 6), dtype=np.uint8)
        for i, label in enumerate(LABELS[b]):
            if label:
                masks[i, 1 + i:3 + i, 2:4 + b] = 1
        maps = rng.normal(0, 1, (3, 6, 6)).round(2) + masks
        pred = {"scores": torch.tensor(SCORES[b]), "maps": torch.tensor(maps, dtype=torch.float32)}
        target = {"labels": torch.tensor(LABELS[b]), "classes": torch.tensor(IMAGE_CLASSES[b])}
        if with_masks:
            target["masks"] = torch.from_numpy(masks)
        yield pred, target, torch.randn(3, 3, 6, 6), [f"{b}-{i}.png" for i in range(3)]


def fed(with_masks: bool = True, **params):
    evaluator = dl.create("evaluator", "anomaly", **params)
    evaluator.setup(classes=CLASSES, class_counts=[3, 2, 1])
    for pred, target, images, keys in batches(with_masks):
        evaluator.update(pred, target, images=images, keys=keys)
    return evaluator


def all_pixels():
    pairs = [(p["maps"].numpy(), t["masks"].numpy()) for p, t, _, _ in batches()]
    return np.concatenate([m for m, _ in pairs]), np.concatenate([k for _, k in pairs])


def test_evaluator_scores_two_batches():
    result = fed().compute()
    assert set(result) == {"image_auroc", "f1", "threshold", "pixel_auroc", "pro", "auroc/crack", "auroc/scratch"}
    # good [.2 .1 .5], defect [.9 .4 .7]: .9 and .7 beat all three, .4 beats two -> 8/9
    assert result["image_auroc"] == pytest.approx(8 / 9)
    assert result["auroc/crack"] == pytest.approx(1.0) and result["auroc/scratch"] == pytest.approx(2 / 3)
    # t = .4: TP 3, FP 1 (.5), FN 0 -> 6/7, the best (t = .7: 4/5, t = .5: 4/6, t = .2: 6/8)
    assert result["f1"] == pytest.approx(6 / 7) and result["threshold"] == pytest.approx(0.4)
    maps, masks = all_pixels()
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert result["pro"] == pytest.approx(brute_force_pro(maps, masks), abs=1e-9)
    assert all(type(value) is float for value in result.values())


def test_evaluator_details():
    details = fed(examples=2).details()
    assert (details["images"], details["good"], details["defective"]) == (6, 3, 3)
    assert details["at_threshold"] == {"tp": 3, "fp": 1, "fn": 0, "tn": 2}
    assert details["per_class"] == [
        {"class": "good", "images": 3, "defective": 0, "auroc": None},
        {"class": "crack", "images": 2, "defective": 2, "auroc": pytest.approx(1.0)},
        {"class": "scratch", "images": 1, "defective": 1, "auroc": pytest.approx(2 / 3)}]
    assert details["examples"] == {"defect": ["0-1.png", "1-2.png"], "good": ["1-1.png", "0-0.png"]}
    pixels = details["pixels"]
    assert (pixels["regions"], pixels["connectivity"], pixels["thresholds"]) == (3, 8, "exact")
    assert pixels["defect_pixels"] == 4 + 4 + 6 and pixels["good_pixels"] == 6 * 36 - 14
    assert max(pixels["pro_curve"]["fpr"]) <= 0.3 and pixels["roc"]["fpr"][-1] == 1.0
    assert "pixel_note" not in details
    assert json.loads(json.dumps(details))["f1"] == pytest.approx(6 / 7)  # JSON-ready


def test_evaluator_writes_plots_scores_and_overlays(tmp_path):
    written = fed(examples=2).write(tmp_path)
    assert set(written) == {"roc", "score_histogram", "scores", "overlay/defect-01", "overlay/defect-02",
                            "overlay/good-01", "overlay/good-02"}
    assert written["roc"] == tmp_path / "roc.png" and written["overlay/good-01"] == tmp_path / "overlays/good-01.png"
    for path in written.values():
        assert path.is_file() and path.stat().st_size > 0
    rows = list(csv.reader((tmp_path / "scores.csv").open()))
    assert rows[0] == ["key", "class", "label", "score"]
    assert rows[1:] == [["0-0.png", "good", "0", "0.2"], ["0-1.png", "crack", "1", "0.9"],
                        ["0-2.png", "scratch", "1", "0.4"], ["1-0.png", "good", "0", "0.1"],
                        ["1-1.png", "good", "0", "0.5"], ["1-2.png", "crack", "1", "0.7"]]


def test_without_masks_pixel_scores_are_left_out_and_details_say_so(tmp_path):
    evaluator = fed(with_masks=False, examples=1)
    result = evaluator.compute()
    assert set(result) == {"image_auroc", "f1", "threshold", "auroc/crack", "auroc/scratch"}
    details = evaluator.details()
    assert details["pixel_note"] == "pixel metrics skipped: the data have no masks" and "pixels" not in details
    assert set(evaluator.write(tmp_path)) == {"roc", "score_histogram", "scores", "overlay/defect-01",
                                              "overlay/good-01"}


def test_masks_without_a_defect_pixel_skip_the_pixel_scores():
    evaluator = dl.create("evaluator", "anomaly")
    for pred, target, _, _ in batches():
        evaluator.update(pred, {**target, "masks": torch.zeros_like(target["masks"])})
    assert "pixel_auroc" not in evaluator.compute() and "pro" not in evaluator.compute()
    assert evaluator.details()["pixel_note"] == "pixel metrics skipped: the masks hold no defect pixel"


def test_beyond_exact_pixels_the_histogram_is_used_within_tolerance():
    exact, binned = fed().compute(), fed(exact_pixels=100).compute()
    assert fed(exact_pixels=100).details()["pixels"]["thresholds"] == "histogram of 10000 bins"
    for key in ("pixel_auroc", "pro"):
        assert binned[key] == pytest.approx(exact[key], abs=HISTOGRAM_TOLERANCE)


def test_one_kind_of_image_raises_a_data_error_that_says_what_to_do():
    evaluator = dl.create("evaluator", "anomaly")
    pred, target, _, _ = next(batches())
    evaluator.update(pred, {**target, "labels": torch.zeros(3, dtype=torch.long)})
    with pytest.raises(dl.DataError, match="AUROC needs both good and defective images, but all 3 images evaluated "
                                           "are good.*evaluate on a split that holds both"):
        evaluator.compute()
    evaluator.reset()
    with pytest.raises(dl.DataError, match="no image was evaluated"):
        evaluator.compute()


def test_update_rejects_what_it_cannot_score():
    evaluator = dl.create("evaluator", "anomaly")
    pred, target, _, _ = next(batches())
    with pytest.raises(dl.DataError, match="do not fit"):
        evaluator.update({**pred, "maps": pred["maps"][:, 0]}, target)
    with pytest.raises(dl.DataError, match="masks must hold 0"):
        evaluator.update(pred, {**target, "masks": target["masks"] * 255})
    evaluator.update(pred, target)
    with pytest.raises(dl.DataError, match="some batches have masks and others do not"):
        evaluator.update(pred, {key: value for key, value in target.items() if key != "masks"})
