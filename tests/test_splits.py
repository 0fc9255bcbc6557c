"""Stratified splits by largest remainder, nested label-fraction subsets, and the splits CSV."""

from __future__ import annotations

from collections import Counter

import defectlab as dl
import pytest
from defectlab import DataError, ParameterError
from defectlab.data.splits import read_split_csv, write_split_csv

# Classes of 10, 5 and 3 samples at 70/15/15 (quotas n * f):
#   class 0: 7.0, 1.5, 1.5    -> floors 7, 1, 1, one left over (remainders 0, .5, .5)
#   class 1: 3.5, .75, .75    -> floors 3, 0, 0, two left over (.5, .75, .75)
#   class 2: 2.1, .45, .45    -> floors 2, 0, 0, one left over (.1, .45, .45)
# Overall 18 * (.7, .15, .15) = 12.6, 2.7, 2.7 -> 12, 3, 3 by largest remainder; the floors give
# 12, 1, 1, so val and test are each 2 short. Leftovers by largest remainder: class 1 -> val and
# test (.75), class 0 -> val (.5; test's tie loses, class 0 has nothing left), class 2 -> test
# (.45; val is full). Result 7/2/1, 3/1/1, 2/0/1 = 12/3/3 (plain per-class ties would give 12/4/2).
LABELS = [0] * 10 + [1] * 5 + [2] * 3
EXPECTED = {"train": [7, 3, 2], "val": [2, 1, 0], "test": [1, 1, 1]}


def per_class(names: list[str], labels: list[int | None]) -> dict[str, list[int]]:
    counts = Counter(zip(names, labels))
    return {split: [counts[split, c] for c in range(3)] for split in ("train", "val", "test")}


def test_largest_remainder_counts_worked_by_hand():
    names = dl.stratified_split(LABELS, [0.7, 0.15, 0.15], seed=0)
    assert per_class(names, LABELS) == EXPECTED
    assert Counter(names) == {"train": 12, "val": 3, "test": 3}


def test_every_sample_gets_exactly_one_split_and_counts_do_not_depend_on_the_seed():
    for seed in range(5):
        names = dl.stratified_split(LABELS, [0.7, 0.15, 0.15], seed=seed)
        assert len(names) == len(LABELS) and set(names) == {"train", "val", "test"}
        assert per_class(names, LABELS) == EXPECTED


def test_deterministic_per_seed_and_different_across_seeds():
    labels = [i % 4 for i in range(200)]
    first = dl.stratified_split(labels, [0.7, 0.15, 0.15], seed=3)
    assert dl.stratified_split(labels, [0.7, 0.15, 0.15], seed=3) == first
    assert dl.stratified_split(labels, [0.7, 0.15, 0.15], seed=4) != first


def test_a_class_is_split_the_same_wherever_it_and_the_other_classes_appear():
    forward = dl.stratified_split([0] * 10 + [1] * 5, [0.6, 0.2, 0.2], seed=1)
    backward = dl.stratified_split([1] * 5 + [0] * 10, [0.6, 0.2, 0.2], seed=1)
    assert forward[:10] == backward[5:] and forward[10:] == backward[:5]


def test_two_fractions_are_train_and_test_75_25():
    # 8 * (.75, .25) = 6, 2 and 4 * (.75, .25) = 3, 1: exact, no remainders.
    labels = [0] * 8 + [1] * 4
    names = dl.stratified_split(labels, [0.75, 0.25], seed=0)
    assert Counter(zip(names, labels)) == {("train", 0): 6, ("test", 0): 2, ("train", 1): 3, ("test", 1): 1}


def test_unlabelled_samples_form_one_stratum():
    names = dl.stratified_split([None] * 20, [0.7, 0.15, 0.15], seed=0)
    assert Counter(names) == {"train": 14, "val": 3, "test": 3}


@pytest.mark.parametrize("fractions", [[0.7, 0.2], [0.5, 0.25, 0.25, 0.0], [1.2, -0.2], [1.0]])
def test_fractions_must_be_two_or_three_summing_to_one(fractions):
    with pytest.raises(ParameterError, match="2 or 3 fractions"):
        dl.stratified_split([0, 1], fractions)


# Label fractions on classes of 200, 50 and 7 (round half up, at least one):
#   1 %: 2, 0.5 -> 1, 0.07 -> 0 -> 1      5 %: 10, 2.5 -> 3, 0.35 -> 0 -> 1
#   10 %: 20, 5, 0.7 -> 1                 20 %: 40, 10, 1.4 -> 1
FRACTION_LABELS = [0] * 200 + [1] * 50 + [2] * 7
FRACTION_COUNTS = {0.01: [2, 1, 1], 0.05: [10, 3, 1], 0.1: [20, 5, 1], 0.2: [40, 10, 1], 1.0: [200, 50, 7]}


def test_label_fraction_counts_and_at_least_one_per_class():
    train = list(range(len(FRACTION_LABELS)))
    for fraction, expected in FRACTION_COUNTS.items():
        kept = dl.label_fraction_subset(train, FRACTION_LABELS, fraction, seed=0)
        counts = Counter(FRACTION_LABELS[i] for i in kept)
        assert [counts[c] for c in range(3)] == expected, fraction


def test_label_fraction_subsets_are_nested_for_one_seed():
    train = [i for i in range(len(FRACTION_LABELS)) if i % 5]  # a training split: not every index
    subsets = [set(dl.label_fraction_subset(train, FRACTION_LABELS, f, seed=2)) for f in (0.01, 0.05, 0.1, 0.2)]
    assert all(small < large for small, large in zip(subsets, subsets[1:]))
    assert subsets[-1] <= set(train)
    assert set(dl.label_fraction_subset(train, FRACTION_LABELS, 0.2, seed=3)) != subsets[-1]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_label_fraction_must_be_in_0_1(fraction):
    with pytest.raises(ParameterError, match=r"\(0, 1\]"):
        dl.label_fraction_subset([0], [0], fraction)


def test_split_csv_round_trip_is_atomic(tmp_path):
    path = write_split_csv(tmp_path / "runs" / "splits.csv", [("a.png", "train", "ok"), ("b,1.png", "test", None)])
    assert read_split_csv(path) == {"a.png": "train", "b,1.png": "test"}
    assert path.read_text().splitlines()[0] == "key,split,label"
    assert [p.name for p in path.parent.iterdir()] == ["splits.csv"]


def test_split_csv_with_wrong_columns_or_split_names(tmp_path):
    (tmp_path / "a.csv").write_text("path,part\nx,train\n")
    with pytest.raises(DataError, match="needs the columns key,split"):
        read_split_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("key,split,label\nx,valid,\n")
    with pytest.raises(DataError, match=r"split names \['valid'\]"):
        read_split_csv(tmp_path / "b.csv")
