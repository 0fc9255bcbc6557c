"""Screening: the score of eq. 21, the selection rule, its flags, subsets and balancing plans."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import defectlab as dl
import pytest
from defectlab import Box, DefectDataset, Sample, hookimpl
from defectlab.data.subsets import class_totals
from defectlab.workflows.screen import FLAG_NO_SHARED, FLAG_ZERO_IMBALANCE, SourceScore


class ToyDataset(DefectDataset):
    """A dataset from class names and per-class sample counts; its 'colour' is a single number."""

    def __init__(self, root: str, classes: list[str], counts: list[int], colour: float = 0.0):
        super().__init__()
        self.root, self.classes, self.colour = root, list(classes), colour
        self.samples = [Sample(key=f"{root}/{c}/{i}", path=f"/data/{root}/{c}/{i}.png", label=ci)
                        for ci, c in enumerate(classes) for i in range(counts[ci])]


class ColourGap:
    """Distance between toy datasets: the gap between their colours."""

    name = "colour_gap"

    def represent(self, dataset):
        return dataset.colour

    def __call__(self, a, b):
        return abs(a - b)


@pytest.fixture
def toy_distance(defectlab_plugin):
    defectlab_plugin(SimpleNamespace(register_distance_metrics=hookimpl(lambda: [ColourGap])), name="toy_distance")


def score(source, value, samples):
    return SourceScore(source, 0.0, 0.0, ["a"], samples, value)


def test_discrepancy_score_is_eq_21():
    assert dl.discrepancy_score(0.5, 0.2, 2, epsilon=1e-6) == pytest.approx(0.1 / 2.000001)
    assert dl.discrepancy_score(0.5, 0.2, 0, epsilon=0.1) == pytest.approx(1.0)
    with pytest.raises(dl.DataError, match="epsilon must be > 0"):
        dl.discrepancy_score(0.5, 0.2, 0, epsilon=0)


def test_selection_takes_the_largest_of_the_three_lowest_scores():
    scores = [score("a", 0.1, 10), score("b", 0.2, 50), score("c", 0.3, 40), score("d", 0.4, 1000)]
    assert dl.select_source(scores).source == "b"
    assert [s.rank for s in scores] == [1, 2, 3, 4]
    assert dl.select_source([score("a", 0.1, 10), score("b", 0.2, 50)], top=1).source == "a"


def test_selection_ties_prefer_the_lower_score_then_the_name():
    scores = [score("b", 0.2, 50), score("a", 0.2, 50), score("c", 0.1, 50)]
    assert dl.select_source(scores).source == "c"
    scores = [score("b", 0.2, 50), score("a", 0.2, 50)]
    assert dl.select_source(scores).source == "a"


def test_unselectable_sources_are_skipped():
    scores = [SourceScore("x", 0.0, 0.0, [], 100, None), score("y", 0.5, 1)]
    assert dl.select_source(scores).source == "y" and scores[0].rank is None
    assert dl.select_source([SourceScore("x", 0.0, 0.0, [], 100, None)]) is None


def test_screen_reports_parts_flags_and_choice(toy_distance, tmp_path):
    target = ToyDataset("target", ["crack", "scratch"], [10, 10], colour=0.0)
    near = ToyDataset("near", ["crack", "scratch", "dent"], [30, 10, 5], colour=0.1)
    far = ToyDataset("far", ["crack", "scratch"], [20, 5], colour=0.9)
    even = ToyDataset("even", ["crack", "scratch"], [7, 7], colour=0.8)  # gini 0 -> score 0
    alien = ToyDataset("alien", ["hole"], [50], colour=0.0)
    result = dl.screen(target, [near, far, even, alien], distance="colour_gap", imbalance="gini")
    parts = {s.source: s for s in result.scores}
    gini_near = dl.create("imbalance", "gini")([30, 10])  # over the target's label set only
    assert parts["near"].imbalance == pytest.approx(gini_near)
    assert parts["near"].score == pytest.approx(0.1 * gini_near / (2 + 1e-6))
    assert parts["near"].samples == 40 and parts["near"].shared_classes == ["crack", "scratch"]
    assert parts["even"].score == 0 and FLAG_ZERO_IMBALANCE in parts["even"].flags
    assert parts["alien"].score is None and FLAG_NO_SHARED in parts["alien"].flags
    assert [parts[n].rank for n in ("even", "near", "far")] == [1, 2, 3]
    assert result.best.source == "near"  # the largest of the three lowest
    marked = [line for line in result.table().splitlines() if line.startswith("*")]
    assert len(marked) == 1 and " near " in marked[0]
    data = json.loads(result.to_json())
    assert data["best"] == "near" and data["target_classes"] == ["crack", "scratch"]

    written = result.save(tmp_path, balance="uniform")
    with open(written["subset"]) as handle:
        rows = list(csv.DictReader(handle))
    assert {r["label"] for r in rows} == {"crack", "scratch"} and len(rows) == 40
    totals = {}
    for r in rows:
        totals[r["label"]] = totals.get(r["label"], 0) + int(r["repeat"])
    assert totals == {"crack": 20, "scratch": 20}
    assert json.loads(written["json"].read_text())["best"] == "near"


def test_all_pairs_scores_every_dataset_against_every_other(toy_distance, tmp_path):
    a = ToyDataset("a", ["x", "y"], [5, 10], 0.0)
    b = ToyDataset("b", ["x", "y"], [10, 2], 0.5)
    result = dl.screen(a, [b], distance="colour_gap", all_pairs=True)
    gini = dl.create("imbalance", "gini")
    assert result.pairs["a"]["a"] is None
    assert result.pairs["a"]["b"] == pytest.approx(0.5 * gini([10, 2]) / (2 + 1e-6))
    assert result.pairs["b"]["a"] == pytest.approx(0.5 * gini([5, 10]) / (2 + 1e-6))
    assert result.save(tmp_path)["heatmap"].stat().st_size > 1000


def test_screen_rejects_output_scope_imbalance_and_empty_sources(toy_distance):
    target = ToyDataset("t", ["x"], [1])
    with pytest.raises(dl.DataError, match="output-scope"):
        dl.screen(target, [ToyDataset("s", ["x"], [1])], distance="colour_gap", imbalance="oii")
    with pytest.raises(dl.DataError, match="no source dataset"):
        dl.screen(target, [], distance="colour_gap")


def test_detection_subset_drops_foreign_boxes_and_emptied_images():
    source = DefectDataset()
    source.classes = ["crack", "dirt"]
    source.samples = [
        Sample("both", "/i/both.png", boxes=(Box(0, .5, .5, .1, .1), Box(1, .2, .2, .1, .1))),
        Sample("dirt_only", "/i/dirt.png", boxes=(Box(1, .5, .5, .2, .2),)),
        Sample("clean", "/i/clean.png", boxes=()),
    ]
    rows = dl.source_subset(source, ["crack", "scratch"])
    assert [r.key for r in rows] == ["both", "clean"]
    assert rows[0].boxes == (("crack", .5, .5, .1, .1),) and rows[1].boxes == ()


def test_balancing_plan_matches_target_proportions_deterministically():
    source = ToyDataset("s", ["a", "b"], [90, 10])
    rows = dl.source_subset(source, ["a", "b"])
    planned = dl.balancing_plan(rows, "target", {"a": 1, "b": 3}, seed=1)
    assert class_totals(planned) == {"a": 25, "b": 75}
    assert planned == dl.balancing_plan(rows, "target", {"a": 1, "b": 3}, seed=1)
    assert sum(r.repeat == 0 for r in planned if r.label == "a") == 65  # undersampled
    assert {r.repeat for r in planned if r.label == "b"} == {7, 8}     # oversampled 7.5x


def test_unselectable_source_has_no_imbalance_and_valid_json(toy_distance):
    target = ToyDataset("target", ["crack"], [3])
    result = dl.screen(target, [ToyDataset("alien", ["hole"], [5], 0.5)], distance="colour_gap")
    assert result.scores[0].imbalance is None
    assert json.loads(result.to_json(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
