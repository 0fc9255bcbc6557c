"""Tests of the defectlab-hello plugin, through defectlab's public API as a user would call it."""

from __future__ import annotations

import math

import defectlab
import defectlab_hello
import pytest


@pytest.fixture
def balance(defectlab_plugin):
    """A ``balance`` builder; registers this module for the test when it is not pip-installed.

    ``defectlab_plugin`` comes with defectlab (a pytest plugin): it registers a plugin object
    for one test and removes it afterwards.
    """
    if "balance" not in {c.name for c in defectlab.list_components("imbalance")}:
        defectlab_plugin(defectlab_hello, name="hello")
    return lambda **params: defectlab.create("imbalance", "balance", **params)


def test_balanced_counts_give_one(balance):
    assert balance()([1, 1]) == 1.0
    assert balance()([7, 7, 7, 7]) == pytest.approx(1.0)


def test_one_class_holding_everything_gives_zero(balance):
    assert balance()([5, 0]) == 0.0
    assert balance()([0, 9, 0]) == 0.0


def test_hand_worked_three_classes(balance):
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2, evenness = 1.5 ln 2 / ln 3
    assert balance()([2, 1, 1]) == pytest.approx(1.5 * math.log(2) / math.log(3))
    assert balance()([2, 1, 1]) == pytest.approx(0.94639, abs=1e-5)


def test_ignore_empty_drops_zero_count_classes(balance):
    assert balance(ignore_empty=True)([5, 0]) == 1.0  # one class left: nothing to be unequal to
    assert balance(ignore_empty=True)([2, 0, 1, 1]) == pytest.approx(balance()([2, 1, 1]))
    assert balance()([2, 0, 1, 1]) == pytest.approx(1.5 * math.log(2) / math.log(4))


def test_parameter_comes_from_the_signature_and_docstring(balance):
    balance()  # make sure the plugin is registered
    info = defectlab.describe("imbalance", "balance")
    assert info["scope"] == "input"
    (param,) = info["parameters"]
    assert (param["name"], param["type"], param["default"]) == ("ignore_empty", "bool", False)
    assert param["doc"].startswith("Leave out classes whose count is zero")
    # command-line strings are coerced to the annotated type
    assert balance(ignore_empty="true").ignore_empty is True


@pytest.mark.parametrize("counts", [[], [1, -1], [0, 0], [1, float("nan")]])
def test_unusable_counts_are_data_errors(balance, counts):
    with pytest.raises(defectlab.DataError):
        balance()(counts)


def test_unknown_parameter_names_the_close_match(balance):
    with pytest.raises(defectlab.ParameterError, match="ignore_empty"):
        balance(ignore_emtpy=True)
