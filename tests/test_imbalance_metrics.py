"""Gini, imbalance ratio and OII against hand-worked values, the paper's Table 1 and their properties."""

from __future__ import annotations

import json

import defectlab as dl
import pytest
from hypothesis import given
from hypothesis import strategies as st

# Seed 003, Table 1: TP, FP, FN -> OII (three decimals as printed).
TABLE_1 = [
    (2, 0.5, 0.5, 0.000), (2, 1, 1, 0.000), (2, 3, 3, 0.000), (2, 5, 1, -0.667), (2, 4, 2, -0.292),
    (2, 2, 4, 0.292), (2, 1, 5, 0.667), (2, 1, 2, 0.267), (2, 1, 0.5, -0.238), (2, 1, 0.2, -0.524),
]


def oii_eq15(tp: float, fp: float, fn: float) -> float:
    """Eq. 15-17 of seed 003 written out literally, for fp, fn > 0."""
    x = fp / fn
    k = 1 - (tp / (tp + fp + fn)) / 2
    r = 1 / (x + 1 / x - 1)
    return k * (1 - r) if x <= 1 else k * (r - 1)


@pytest.fixture(scope="module")
def oii():
    return dl.create("imbalance", "oii")


@pytest.mark.parametrize("tp,fp,fn,expected", TABLE_1)
def test_oii_reproduces_table_1(oii, tp, fp, fn, expected):
    assert oii(tp, fp, fn) == pytest.approx(expected, abs=5e-4)


@given(st.integers(0, 10**6), st.integers(1, 10**6), st.integers(1, 10**6))
def test_oii_matches_eq15_is_antisymmetric_and_bounded(oii, tp, fp, fn):
    value = oii(tp, fp, fn)
    assert value == pytest.approx(oii_eq15(tp, fp, fn), abs=1e-12)
    assert oii(tp, fn, fp) == -value
    assert -1 < value < 1


@pytest.mark.parametrize("tp,fp,fn,expected", [
    (3, 0, 1, 1 - 0.75 / 2),    # FP = 0 -> +k, IoU = 3/4
    (3, 1, 0, -(1 - 0.75 / 2)),  # FN = 0 -> -k
    (5, 0, 0, 0.0),              # FP = FN = 0 -> 0
    (0, 0, 0, 0.0),              # nothing at all
    (0, 0, 7, 1.0),              # every defect missed, no TP: k = 1
])
def test_oii_limit_cases(oii, tp, fp, fn, expected):
    assert oii(tp, fp, fn) == pytest.approx(expected)


def test_oii_approaches_its_limit_continuously(oii):
    assert oii(3, 1e-9, 1) == pytest.approx(oii(3, 0, 1), abs=1e-6)


@pytest.mark.parametrize("counts,expected", [
    ([10, 10, 10, 10], 0.0),                 # balanced
    ([5], 0.0),                              # a single class is balanced
    ([0, 0, 0, 100], 0.75),                  # one class holds all: 1 - 1/k
    ([1, 3], 0.25),                          # C = 1/4, 1: B = (1/4 + 5/4)/4 = 3/8, Gini = 1 - 2B
])
def test_gini_hand_worked(counts, expected):
    assert dl.create("imbalance", {"name": "gini"})(counts) == pytest.approx(expected)


def test_gini_three_classes_written_out():
    # sorted 62, 250, 349 of 661: C = 62/661, 312/661, 1
    c1, c2, c3 = 62 / 661, 312 / 661, 1.0
    b = ((c1 + 0) + (c2 + c1) + (c3 + c2)) / 6
    assert dl.create("imbalance", "gini")([349, 62, 250]) == pytest.approx(1 - 2 * b)
    assert dl.create("imbalance", "gini")([349, 62, 250]) == pytest.approx(0.28946, abs=1e-5)


def test_gini_one_class_holding_nearly_all_is_near_its_maximum():
    value = dl.create("imbalance", "gini")([1] * 99 + [10**6])
    assert value == pytest.approx(1 - 1 / 100, abs=1e-3)


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=20).filter(lambda c: sum(c) > 0))
def test_gini_is_bounded_and_order_free(counts):
    gini = dl.create("imbalance", "gini")
    value = gini(counts)
    assert 0 <= value <= 1 - 1 / len(counts) + 1e-12
    assert gini(list(reversed(counts))) == pytest.approx(value)


def test_imbalance_ratio_ignores_empty_classes():
    ratio = dl.create("imbalance", "imbalance_ratio")
    assert ratio([349, 62, 250, 0]) == pytest.approx(349 / 62)
    assert ratio([4, 4]) == 1.0


@pytest.mark.parametrize("counts,message", [([], "no class counts"), ([1, -1], "non-negative"), ([0, 0], "empty")])
def test_bad_counts_are_clear_errors(counts, message):
    with pytest.raises(dl.DataError, match=message):
        dl.create("imbalance", "gini")(counts)


def test_cli_gini_and_oii(run_cli):
    result = run_cli("imbalance", "gini", "--counts", "349,62,250")
    assert result.exit_code == 0 and "gini = 0.2895" in result.output
    result = run_cli("imbalance", "oii", "--tp", "2", "--fp", "5", "--fn", "1", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["value"] == pytest.approx(-0.6667, abs=1e-4)


def test_cli_scope_mismatch_is_a_usage_error(run_cli):
    result = run_cli("imbalance", "oii", "--counts", "1,2")
    assert result.exit_code == 2 and "output-scope" in result.output
    result = run_cli("imbalance", "gini", "--tp", "1")
    assert result.exit_code == 2 and "--counts" in result.output


def test_cli_bad_counts_and_negative_values(run_cli):
    result = run_cli("imbalance", "gini", "--counts", "1,x")
    assert result.exit_code == 2 and "comma-separated" in result.output
    result = run_cli("imbalance", "oii", "--tp", "1", "--fp", "-1", "--fn", "1")
    assert result.exit_code == 1 and "FP must be" in result.output and "Traceback" not in result.output
