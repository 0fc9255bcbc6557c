"""Post-hoc logit adjustment (train.logit_adjustment): the offsets −τ·log π, and their use by the engine's
evaluation, evaluate, predict and the exported graph; and the tasks and checkpoints that refuse it."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

import defectlab as dl
from defectlab.plugin_system.errors import ConfigError, ParameterError
from defectlab.training.adjustment import adjusted, logit_offsets


def test_offsets_are_minus_tau_log_of_the_class_shares():
    offsets = logit_offsets(1.0, [3, 1], ["a", "b"])
    assert offsets.tolist() == pytest.approx([-math.log(0.75), -math.log(0.25)])  # 0.2877, 1.3863
    logits = torch.tensor([[1.0, 0.0]])
    assert adjusted(logits, offsets).tolist()[0] == pytest.approx([1.2877, 1.3863], abs=1e-4)
    assert adjusted(logits, offsets).argmax(1).item() == 1  # the rare class wins a case the common one won
    half = logit_offsets(0.5, [3, 1], ["a", "b"])
    assert half.tolist() == pytest.approx([0.5 * -math.log(0.75), 0.5 * -math.log(0.25)])
    assert logit_offsets(0.0, None, ["a", "b"]) is None and adjusted(logits, None) is logits


def test_balanced_priors_change_no_decision():
    offsets = logit_offsets(0.7, [5, 5, 5], ["a", "b", "c"])
    logits = torch.randn(4, 3)
    assert torch.allclose(adjusted(logits, offsets).softmax(1), logits.softmax(1), atol=1e-6)


@pytest.mark.parametrize("tau, counts, message", [
    (1.0, [4, 0], "no images of 'b'"),
    (1.0, None, "holds no training class counts"),
    (-0.5, [1, 1], "finite number ≥ 0"),
    (float("nan"), [1, 1], "finite number ≥ 0"),
    (1.0, [1, 1, 1], "3 class counts for 2 classes"),
])
def test_offsets_refuse_what_has_no_prior(tau, counts, message):
    with pytest.raises(ParameterError, match=message):
        logit_offsets(tau, counts, ["a", "b"])


def test_adjusting_logits_of_another_shape_is_refused():
    with pytest.raises(ParameterError, match="one logit per class"):
        adjusted(torch.zeros(2, 3), logit_offsets(1.0, [1, 3], ["a", "b"]))


def write_cells(root, counts=(18, 6), size=16):
    """Grey images of two classes in the shares of ``counts``: 'common' brighter than 'rare', with overlap."""
    rng = np.random.default_rng(0)
    for label, count, mean in (("common", counts[0], 140), ("rare", counts[1], 110)):
        (root / label).mkdir(parents=True)
        for index in range(count):
            pixels = np.clip(rng.normal(mean, 30, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index:02d}.png")
    return root


@pytest.fixture
def run(tmp_path):
    """A resnet18 run on imbalanced grey images, trained with train.logit_adjustment = 1."""
    data = write_cells(tmp_path / "data")
    return dl.train({"data": {"dataset": str(data), "image_size": 16, "batch_size": 8, "channels": 1},
                     "model": {"name": "resnet18", "in_chans": 1},
                     "train": {"epochs": 1, "progress": False, "logit_adjustment": 1.0}},
                    out=tmp_path / "run").folder


def _probabilities(path):
    rows = sorted(csv.DictReader(open(path)), key=lambda row: row["path"])
    return np.array([[float(row[key]) for key in row if key.startswith("p_")] for row in rows])


def _shares(run):
    counts = torch.load(run / "best.pt", weights_only=False)["class_counts"]
    return np.array(counts, dtype=float) / sum(counts)


def test_predict_divides_the_probabilities_by_the_prior_to_the_power_tau(run, tmp_path, run_cli):
    data = tmp_path / "data"
    plain = _probabilities(dl.predict(run, [data], tmp_path / "plain.csv", logit_adjustment=0).csv)
    own = _probabilities(dl.predict(run, [data], tmp_path / "own.csv").csv)  # the run's τ = 1
    result = run_cli("predict", str(run), str(data), "--logit-adjustment", "0.5", "--out", str(tmp_path / "half.csv"))
    assert result.exit_code == 0, result.output
    half = _probabilities(tmp_path / "half.csv")
    shares = _shares(run)
    for tau, got in ((1.0, own), (0.5, half)):
        expected = plain * shares ** -tau  # p_c · π_c^(−τ), normalised: softmax(f − τ log π)
        assert np.allclose(got, expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert not np.allclose(own, plain, atol=1e-3)


def test_the_engine_and_evaluate_score_the_adjusted_predictions(run, tmp_path):
    import json

    data = tmp_path / "data"
    rows = list(csv.DictReader(open(dl.predict(run, [data], tmp_path / "p.csv").csv)))
    scores = dl.evaluate_run(run, str(data), out=tmp_path / "ev")
    nll = [-np.log(float(row[f"p_{row['path'].split('/')[-2]}"])) for row in rows]
    assert scores["scores"]["loss"] == pytest.approx(np.mean(nll), rel=1e-4)
    plain = dl.evaluate_run(run, str(data), out=tmp_path / "ev0", logit_adjustment=0)
    assert plain["logit_offsets"] is None and scores["logit_offsets"] == pytest.approx(list(-np.log(_shares(run))))
    assert plain["scores"]["loss"] != pytest.approx(scores["scores"]["loss"], rel=1e-4)
    test = json.loads((run / "eval" / "test" / "metrics.json").read_text())  # the run's own final test
    assert test["logit_offsets"] == pytest.approx(scores["logit_offsets"])


def test_export_computes_the_adjustment_in_the_graph(run, tmp_path, run_cli):
    exported = dl.export(run, "onnx", tmp_path / "model.onnx")
    assert exported.parity.passed, exported.parity.summary()
    assert exported.metadata["logit_adjustment"] == 1.0
    image = tmp_path / "one.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)).save(image)
    theirs = dl.predict(tmp_path / "model.onnx", [image], tmp_path / "onnx.csv")
    ours = dl.predict(run, [image], tmp_path / "run.csv")
    assert np.allclose(_probabilities(theirs.csv), _probabilities(ours.csv), atol=1e-3)
    other = run_cli("predict", str(tmp_path / "model.onnx"), str(image), "--logit-adjustment", "0", "--out",
                    str(tmp_path / "b.csv"))
    assert other.exit_code == 1 and "computes the logit adjustment τ = 1 in its graph" in other.output


def test_other_tasks_and_old_checkpoints_refuse_it(tiny, tmp_path, run):
    with pytest.raises(ConfigError, match="logit adjustment is for classifiers only"):
        dl.train({"data": {"dataset": {"name": "synthetic_cracks", "count": 16, "size": 20, "defect_ratio": 0.05},
                           "image_size": 16, "channels": 1, "batch_size": 8},
                  "model": {"name": "tiny_segnet"}, "train": {"epochs": 1, "logit_adjustment": 0.5}},
                 out=tmp_path / "seg")
    state = torch.load(run / "best.pt", weights_only=False)
    del state["class_counts"]  # as a checkpoint from before the counts were stored
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ParameterError, match="holds no training class counts"):
        dl.load_trained(tmp_path / "old.pt")
    assert dl.load_trained(tmp_path / "old.pt", logit_adjustment=0).offsets is None
