"""Test-time augmentation (train.tta): the views, the mean of the probabilities, and its use by the engine's
evaluation, evaluate, predict and export (whose graph computes it too), and the tasks that refuse it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import defectlab as dl
from defectlab.training.tta import tta_logits, unview, view, views
from defectlab.workflows.predict import TorchPredictor



class Corners(nn.Module):
    """A classifier whose two logits are the top-left pixel of channel 0 and the pixel to its right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0, 0, 0], x[:, 0, 0, 1]], 1)


class Channels(nn.Module):
    """A segmenter whose logits are its input's first ``count`` channels: the mask is the image itself."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :self.count]


# --- the views and the mean ------------------------------------------------------------------------

def test_dihedral_views_are_the_8_symmetries_and_their_inverses_restore_the_image():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)  # every pixel different
    seen = [view(image, *which) for which in views("dihedral", 4, 4)]
    assert len({tuple(v.flatten().tolist()) for v in seen}) == 8
    for which, viewed in zip(views("dihedral", 4, 4), seen):
        assert torch.equal(unview(viewed, *which), image)
    flips = [view(image, *which) for which in views("flips", 4, 4)]
    expected = [image, image.flip(-1), image.flip(-2), image.flip(-2, -1)]
    assert all(torch.equal(a, b) for a, b in zip(flips, expected))
    turns = {tuple(torch.rot90(image, k, (-2, -1)).flatten().tolist()) for k in range(4)}
    assert turns <= {tuple(v.flatten().tolist()) for v in seen}  # the quarter turns are among them
    assert views("dihedral", 4, 6) == views("flips", 4, 6)  # an oblong image is only flipped
    assert len(views("none", 4, 4)) == 1


def test_tta_of_a_flip_and_turn_invariant_model_is_the_model():
    classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    pixelwise = nn.Conv2d(3, 3, 1).eval()
    binary = nn.Conv2d(3, 1, 1).eval()
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for tta in ("flips", "dihedral"):
            assert torch.allclose(tta_logits(classifier, images, tta).softmax(1), classifier(images).softmax(1),
                                  atol=1e-6)
            assert torch.allclose(tta_logits(pixelwise, images, tta).softmax(1), pixelwise(images).softmax(1),
                                  atol=1e-6)
            assert torch.allclose(tta_logits(binary, images, tta), binary(images), atol=1e-5)


def test_tta_is_the_mean_of_the_views_probabilities():
    a = torch.tensor(np.random.default_rng(0).normal(0, 2, (3, 3)), dtype=torch.float32)
    images = a.view(1, 1, 3, 3)
    # (the view's top-left pixel, its right neighbour) in the image: the flips, then the turns and transposes
    flips = [(a[0, 0], a[0, 1]), (a[0, 2], a[0, 1]), (a[2, 0], a[2, 1]), (a[2, 2], a[2, 1])]
    turns = [(a[0, 0], a[1, 0]), (a[2, 2], a[1, 2]), (a[0, 2], a[1, 2]), (a[2, 0], a[1, 0])]
    for tta, pairs in (("flips", flips), ("dihedral", flips + turns)):
        expected = torch.stack([torch.stack(pair).softmax(0) for pair in pairs]).mean(0)
        logits = tta_logits(Corners(), images, tta)
        assert torch.allclose(logits.exp()[0], expected, atol=1e-6)  # the logits are log p̄ ...
        assert torch.allclose(logits.softmax(1)[0], expected, atol=1e-6)  # ... so softmax gives p̄ back
    one_logit = tta_logits(lambda x: Corners()(x)[:, :1], images, "dihedral")
    expected = torch.stack([torch.sigmoid(pair[0]) for pair in flips + turns]).mean()
    assert torch.allclose(torch.sigmoid(one_logit), expected, atol=1e-6)


@pytest.mark.parametrize("size", [(6, 6), (6, 9)])
def test_segmentation_views_are_mapped_back_to_the_image(size):
    images = torch.randn(2, 3, *size)
    for tta in ("flips", "dihedral"):
        assert torch.allclose(tta_logits(Channels(1), images, tta), images[:, :1], atol=1e-5)
        assert torch.allclose(tta_logits(Channels(3), images, tta).softmax(1), images.softmax(1), atol=1e-6)
    shifted = tta_logits(lambda x: torch.roll(x[:, :1], 1, -1), images, "flips")  # a model that moves the mask
    assert not torch.allclose(shifted, images[:, :1], atol=1e-3)  # does not give the image back


# --- evaluate and predict on a tiny run --------------------------------------------------------------

class QuarterNet(nn.Module):
    """A classifier that sees the top-left quarter of its input only, so that each view shows it other pixels.

    Args:
        num_classes: Number of logits.
        in_chans: Input channels.
        weights: Unused (random initialisation only).
    """

    name = "quarter_net"
    tasks = ("classify",)

    def __init__(self, num_classes: int = 2, in_chans: int = 3, weights: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return self.head(torch.relu(self.conv(x[..., :height // 2, :width // 2])).mean((-2, -1)))


class QuarterPlugin:
    @dl.hookimpl
    def register_backbones(self):
        return [QuarterNet]


def write_ramps(root, per_class=12, size=16):
    """Bright and dark 16 x 16 images, each with a ramp across it: each quarter of an image has its own brightness."""
    rng, ramp = np.random.default_rng(0), np.linspace(-50, 50, size)
    for label, mean in (("bright", 170), ("dark", 80)):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = mean + ramp[None, :] * (1 if index % 2 else -1) + ramp[:, None] * (index % 3 - 1)
            pixels = np.clip(pixels + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index:02d}.png")
    return root


@pytest.fixture
def run(defectlab_plugin, tmp_path):
    """A quarter_net run on 16 x 16 grey images with ramps, trained with train.tta = 'flips'."""
    defectlab_plugin(QuarterPlugin(), "quarter_net")
    data = write_ramps(tmp_path / "data")
    return dl.train({"data": {"dataset": str(data), "image_size": 16, "batch_size": 8, "channels": 1},
                     "model": {"name": "quarter_net"}, "train": {"epochs": 1, "lr": 0.05, "progress": False,
                                                              "tta": "flips"}},
                    out=tmp_path / "run").folder


def _probabilities(csv_path):
    """The p_<class> columns of a predict CSV, its rows in the order of the file names."""
    rows = sorted(csv.DictReader(open(csv_path)), key=lambda row: row["path"])
    return np.array([[float(row[key]) for key in row if key.startswith("p_")] for row in rows])


def random_image(size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def test_predict_with_tta_is_the_mean_over_the_flipped_and_turned_images(run, tmp_path, run_cli):
    image = random_image()
    symmetries = [image, image[:, ::-1], image[::-1], image[::-1, ::-1],
                  np.rot90(image, 1), np.rot90(image, 3), np.rot90(image[:, ::-1], 1), np.rot90(image[:, ::-1], 3)]
    folder = tmp_path / "views"
    folder.mkdir()
    for index, pixels in enumerate(symmetries):
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"{index}.png")
    plain = dl.predict(run, [folder], tmp_path / "plain.csv", tta="none")
    each = _probabilities(plain.csv)  # 0.png ... 7.png
    assert not np.allclose(each[0], each[1], atol=1e-4)  # the model is not flip-invariant, so TTA matters
    for tta, count in (("flips", 4), ("dihedral", 8)):
        out = tmp_path / f"{tta}.csv"
        result = run_cli("predict", str(run), str(folder / "0.png"), "--tta", tta, "--out", str(out))
        assert result.exit_code == 0, result.output
        assert np.allclose(_probabilities(out)[0], each[:count].mean(0), atol=1e-5)
    default = dl.predict(run, [folder / "0.png"], tmp_path / "default.csv")  # the run's train.tta: flips
    assert np.allclose(_probabilities(default.csv)[0], each[:4].mean(0), atol=1e-5)


def test_evaluate_uses_the_runs_tta_and_scores_the_mean_probabilities(run, tmp_path, run_cli):
    data = tmp_path / "data"
    rows = []
    for tta in ("flips", "none"):
        predicted = dl.predict(run, [data], tmp_path / f"p-{tta}.csv", tta=tta)
        rows.append(list(csv.DictReader(open(predicted.csv))))
    result = run_cli("evaluate", str(run), "--data", str(data), "--json", "--out", str(tmp_path / "ev"))
    assert result.exit_code == 0, result.output
    flips = json.loads(result.output)
    plain = dl.evaluate_run(run, str(data), out=tmp_path / "ev-none", tta="none")
    assert flips["tta"] == "flips" and plain["tta"] == "none"
    for scores, predicted in ((flips["scores"], rows[0]), (plain["scores"], rows[1])):
        # cross-entropy of the mean probabilities the predictor gave, image by image
        nll = [-np.log(float(row[f"p_{Path(row['path']).parent.name}"])) for row in predicted]
        assert scores["loss"] == pytest.approx(np.mean(nll), rel=1e-4)
    assert flips["scores"]["loss"] != pytest.approx(plain["scores"]["loss"], rel=1e-4)


def test_the_engine_validates_and_tests_with_the_runs_tta(run):
    from defectlab.data.data_module import DataModule
    from defectlab.plugin_system.components import create
    from defectlab.training.evaluation import evaluate_split

    trained = dl.load_trained(run)  # one epoch: best.pt holds the weights the validation saw
    data = DataModule(**{**dl.Run(run).config["data"], "splits_csv": str(run / "splits.csv")})
    loss = create("loss", "cross_entropy")
    flips = evaluate_split(trained.model, loss, data, "val", [], torch.device("cpu"), tta="flips")["loss"]
    assert dl.Run(run).metrics[-1]["val/loss"] == pytest.approx(flips, rel=1e-5)
    assert json.loads((run / "eval" / "test" / "metrics.json").read_text())["tta"] == "flips"


def test_the_engines_evaluation_takes_tta(run):
    from defectlab.data.data_module import DataModule
    from defectlab.plugin_system.components import create
    from defectlab.training.evaluation import evaluate_split

    trained = dl.load_trained(run)
    data = DataModule(**{**dl.Run(run).config["data"], "splits_csv": str(run / "splits.csv")})
    loss = create("loss", "cross_entropy")
    scores = {tta: evaluate_split(trained.model, loss, data, "val", [], torch.device("cpu"), tta=tta)["loss"]
              for tta in ("none", "flips")}
    expected = []
    for batch in data.loader("val"):
        logits = tta_logits(trained.model, batch["image"], "flips")
        expected += torch.nn.functional.cross_entropy(logits, batch["target"], reduction="none").tolist()
    assert scores["flips"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert scores["flips"] != pytest.approx(scores["none"], rel=1e-4)


# --- export --------------------------------------------------------------------------------------

@pytest.mark.parametrize("file_format", ["onnx", "torchscript"])
def test_export_computes_the_runs_tta_in_the_graph(run, tmp_path, file_format):
    exported = dl.export(run, file_format, tmp_path / f"model.{file_format}")
    assert exported.parity.passed and exported.parity.decisions > 0, exported.parity.summary()
    assert exported.metadata["tta"] == "flips" and "test-time augmentation 'flips'" in exported.summary()
    model = dl.load_exported(exported.path)
    assert model.tta == "flips"
    image = random_image(20)  # resized by the graph to 16 x 16
    ours = TorchPredictor(dl.load_trained(run)).outputs([image])[0]["probabilities"]
    plain = TorchPredictor(dl.load_trained(run, tta="none")).outputs([image])[0]["probabilities"]
    theirs = model.outputs([image])[0]["probabilities"]
    assert np.allclose(theirs, ours, atol=1e-3) and not np.allclose(theirs, plain, atol=1e-4)


def test_export_tta_option_and_predicting_a_file_with_another_tta(run, tmp_path, run_cli):
    result = run_cli("export", str(run), "--tta", "dihedral", "--out", str(tmp_path / "d.onnx"))
    assert result.exit_code == 0 and "PASSED" in result.output, result.output
    assert dl.load_exported(tmp_path / "d.onnx").metadata["tta"] == "dihedral"
    image = tmp_path / "one.png"
    Image.fromarray(random_image()).save(image)
    same = run_cli("predict", str(tmp_path / "d.onnx"), str(image), "--tta", "dihedral", "--out",
                   str(tmp_path / "a.csv"))
    assert same.exit_code == 0, same.output
    other = run_cli("predict", str(tmp_path / "d.onnx"), str(image), "--tta", "none", "--out", str(tmp_path / "b.csv"))
    assert other.exit_code == 1 and "computes the test-time augmentation 'dihedral' in its graph" in other.output
    ours = dl.predict(run, [image], tmp_path / "run.csv", tta="dihedral")
    assert np.allclose(_probabilities(tmp_path / "a.csv"), _probabilities(ours.csv), atol=1e-3)


def test_a_segmentation_run_exports_with_tta(tiny, tmp_path):
    run = dl.train({"data": {"dataset": {"name": "synthetic_cracks", "count": 16, "size": 20, "defect_ratio": 0.05},
                             "image_size": 16, "channels": 1, "batch_size": 8},
                    "model": {"name": "tiny_segnet"}, "train": {"epochs": 1, "progress": False, "tta": "dihedral"}},
                   out=tmp_path / "seg").folder
    for exporter in ("dynamo", "legacy"):  # the views are flips and transposes, which both exporters translate
        exported = dl.export(run, "onnx", tmp_path / f"{exporter}.onnx", exporter=exporter)
        assert exported.parity.passed and exported.parity.decisions > 0, exported.parity.summary()
        assert exported.exporter == exporter and exported.metadata["tta"] == "dihedral"
    scores = dl.evaluate_run(run, split="val", out=tmp_path / "ev")
    assert scores["tta"] == "dihedral" and "iou" in scores["scores"]


# --- tasks that refuse it ------------------------------------------------------------------------

def test_detection_anomaly_and_pretraining_refuse_tta(tiny, tmp_path, run_cli):
    from defectlab.training.checkpoints import save_checkpoint

    anomaly = {"data": {"dataset": {"name": "synthetic_cracks", "count": 20, "size": 16, "defect_ratio": 0.05,
                                    "defect_fraction": 0.5},
                        "image_size": 16, "channels": 1, "batch_size": 8},
               "model": {"name": "mean_image_anomaly"}, "evaluators": []}
    with pytest.raises(dl.ConfigError, match=r"train.tta: test-time augmentation is for classification and "
                                             r"segmentation only; the data are for 'anomaly'"):
        dl.train({**anomaly, "train": {"tta": "flips"}}, out=tmp_path / "refused")
    detection = {"data": {"dataset": {"name": "synthetic_defects", "count": 8, "size": 32}, "image_size": 32},
                 "model": {"name": "fcos"}, "train": {"tta": "dihedral"}}
    with pytest.raises(dl.ConfigError, match=r"train.tta: .* the data are for 'detect'"):
        dl.train(detection, out=tmp_path / "refused-detector")
    pretraining = {"data": {"dataset": str(write_ramps(tmp_path / "ramps")), "image_size": 16, "batch_size": 8},
                   "model": {"name": "tiny_cnn"}, "ssl": {"name": "dino"}, "train": {"tta": "flips"}}
    with pytest.raises(dl.ConfigError, match=r"train.tta: .* the data are for 'pretrain'"):
        dl.pretrain(pretraining, out=tmp_path / "refused-pretraining")
    run = dl.train(anomaly, out=tmp_path / "anomaly").folder
    image = tmp_path / "one.png"
    Image.fromarray(random_image()).save(image)
    message = "test-time augmentation (tta 'flips') is for classification and segmentation only; this model's " \
              "task is 'anomaly'"
    for args in (["predict", str(run), str(image), "--out", str(tmp_path / "p.csv")], ["evaluate", str(run)],
                 ["export", str(run), "--out", str(tmp_path / "a.onnx")]):
        result = run_cli(*args, "--tta", "flips")
        assert result.exit_code == 1 and message in result.output, result.output
    detector = tmp_path / "detector.pt"  # refused before the model is built: only its task is read
    save_checkpoint(detector, {"model": {}, "model_spec": {"name": "fcos"}, "task": "detect", "classes": ["a"],
                               "transform": {"image_size": 16}})
    with pytest.raises(dl.ParameterError, match="tta 'dihedral'.* this model's task is 'detect'"):
        dl.predict(detector, [image], tmp_path / "d.csv", tta="dihedral")
    with pytest.raises(dl.ParameterError, match="unknown test-time augmentation 'rotate'"):
        dl.load_trained(run, tta="rotate")
