"""The anomaly task in the core: the data module's good-only training split, the engine's fit step,
the hook contract, predict's scores and maps, and the errors for data that cannot be used."""

from __future__ import annotations

import csv
import json

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab.data.data_module import DataModule
from PIL import Image

CRACKS = {"name": "synthetic_cracks", "count": 60, "size": 32, "defect_ratio": 0.02, "contrast": 0.6, "seed": 1,
          "defect_fraction": 0.5}


def config(dataset=CRACKS, evaluators=(), **extra):
    return {"data": {"dataset": dataset, "image_size": 32, "batch_size": 8, "channels": 1},
            "model": {"name": "mean_image_anomaly"}, "evaluators": list(evaluators), **extra}


def good_and_defect_folder(root, good=12, defect=6, size=16):
    """An image_folder with good/ (flat grey + noise) and scratch/ (the same with a bright bar)."""
    rng = np.random.default_rng(0)
    for name, count in (("good", good), ("scratch", defect)):
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = np.clip(rng.normal(100, 5, (size, size)), 0, 255)
            if name == "scratch":
                pixels[6:9, 2:14] = 250
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{index:02d}.png")
    return root


def test_training_split_holds_good_images_only_and_defects_join_test():
    data = DataModule(CRACKS, task="anomaly", image_size=32, channels=1)
    labels = data.image_labels[id(data.datasets["train"])]
    cracked = [s.meta["crack"] for s in data.datasets["train"].samples]
    assert labels == [int(c) for c in cracked]  # masks give each unlabelled image its class: 1 with a crack
    assert data.splits["train"] and all(labels[i] == 0 for i in data.splits["train"])
    predefined_train = [i for i, s in enumerate(data.datasets["train"].samples) if s.split == "train"]
    moved = [i for i in predefined_train if cracked[i]]
    assert moved and set(moved) <= set(data.splits["test"])
    assert data.class_counts("train") == [len(data.splits["train"]), 0]
    batch = next(iter(data.loader("test")))
    target = batch["target"]
    assert set(target) == {"labels", "classes", "masks"}
    assert target["masks"].shape == (len(batch["image"]), 32, 32) and target["masks"].dtype == torch.uint8
    # an image is a defect exactly when its mask has a crack pixel
    assert target["labels"].tolist() == [int(m.any()) for m in target["masks"]]


def test_good_class_by_name_and_its_errors(tmp_path):
    root = good_and_defect_folder(tmp_path / "parts")
    data = DataModule(str(root), task="anomaly", image_size=16, split=(0.5, 0.25, 0.25))
    assert data.classes == ["good", "scratch"] and data.good == 0
    with pytest.raises(dl.DataError, match="good_class 'godo' is not a class.*did you mean 'good'"):
        DataModule(str(root), task="anomaly", good_class="godo", image_size=16)
    batch = next(iter(data.loader("test")))
    assert "masks" not in batch["target"]  # an image folder has no masks
    with pytest.raises(dl.DataError, match="the val split holds only good images"):
        DataModule(str(good_and_defect_folder(tmp_path / "few", good=12, defect=1)), task="anomaly",
                   image_size=16, split=(0.5, 0.25, 0.25))


def test_fit_step_writes_a_run_whose_fitted_state_predicts_the_same(tiny, tmp_path):
    run = dl.train(config(), out=tmp_path / "run")
    assert run.status["status"] == "finished"
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert resolved["train"]["epochs"] == 1 and resolved["data"]["task"] == "anomaly"
    assert resolved["data"]["augment"] == []
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    data = DataModule(CRACKS, task="anomaly", image_size=32, channels=1, augment=())
    assert len(record) == 1 and record[0]["train/images"] == len(data.splits["train"])
    # the fitted mean is the mean of exactly the good training images
    images = torch.cat([batch["image"] for batch in data.loader("train")])
    trained = dl.load_trained(tmp_path / "run")
    assert torch.allclose(trained.model.mean, images.mean(0), atol=1e-6)
    test = next(iter(data.loader("test")))["image"]
    expected = ((test - images.mean(0)) ** 2).mean(1).flatten(1).amax(1)
    assert torch.allclose(trained.model(test)["scores"], expected, atol=1e-5)


def test_predict_writes_score_decision_and_a_map_per_image(tiny, tmp_path):
    root = good_and_defect_folder(tmp_path / "parts")
    dl.train({"data": {"dataset": str(root), "image_size": 16, "split": [0.5, 0.25, 0.25]},
              "model": {"name": "mean_image_anomaly"}, "evaluators": []}, out=tmp_path / "run")
    with pytest.raises(dl.DataError, match="no score threshold.*--threshold"):
        dl.predict(tmp_path / "run", [root], tmp_path / "out" / "p.csv")
    result = dl.predict(tmp_path / "run", [root], tmp_path / "out" / "p.csv", threshold=1.0)
    rows = list(csv.DictReader(result.csv.open()))
    assert result.predicted == 18 and set(rows[0]) == {"path", "score", "decision", "map", "error"}
    scratch = [r for r in rows if "scratch" in r["path"]]
    good = [r for r in rows if "good" in r["path"]]
    assert all(r["decision"] == "defect" for r in scratch) and all(r["decision"] == "good" for r in good)
    grey = np.asarray(Image.open(scratch[0]["map"]))
    assert grey.shape == (16, 16) and grey[7, 8] == 255 and grey[1, 1] < 128  # the bar is hot, the rest below


def test_anomaly_config_errors(tiny, tmp_path):
    with pytest.raises(dl.ConfigError, match="train.epochs: 'mean_image_anomaly' is fitted in one pass"):
        dl.train(config(train={"epochs": 3}), out=tmp_path / "a")
    with pytest.raises(dl.ConfigError, match="loss: 'mean_image_anomaly' is fitted, not trained by a loss"):
        dl.train(config(loss={"name": "cross_entropy"}), out=tmp_path / "b")


class WrongShape(torch.nn.Module):
    """An anomaly model that breaks its contract: one score for the whole batch.

    Args:
        num_classes: Unused.
        in_chans: Unused.
        weights: Unused.
    """

    name = "wrong_shape_anomaly"
    tasks = ("anomaly",)

    def __init__(self, num_classes: int = 1, in_chans: int = 3, weights: str | None = None):
        super().__init__()

    def fit(self, batches):
        return {"images": sum(len(b) for b in batches)}

    def forward(self, x):
        return {"scores": x.mean().reshape(1), "maps": x.mean(1)}


class WrongShapePlugin:
    @dl.hookimpl
    def register_backbones(self):
        return [WrongShape]


def test_a_model_breaking_the_contract_is_named(defectlab_plugin, tmp_path):
    defectlab_plugin(WrongShapePlugin(), "wrong_shape")
    cfg = config(evaluators=[])
    cfg["model"] = {"name": "wrong_shape_anomaly"}
    with pytest.raises(dl.PluginError, match=r"backbone 'wrong_shape_anomaly' of plugin 'wrong_shape' breaks its "
                                             r"contract: an anomaly model's forward\(images\) must return"):
        dl.train(cfg, out=tmp_path / "run")


def test_cli_predict_takes_an_anomaly_threshold_above_one_and_refuses_it_for_a_classifier(tiny, tmp_path, run_cli):
    root = good_and_defect_folder(tmp_path / "parts")
    dl.train({"data": {"dataset": str(root), "image_size": 16, "split": [0.5, 0.25, 0.25]},
              "model": {"name": "mean_image_anomaly"}, "evaluators": []}, out=tmp_path / "anomaly")
    result = run_cli("predict", str(tmp_path / "anomaly"), str(root), "--out", str(tmp_path / "p" / "a.csv"),
                     "--threshold", "3")
    assert result.exit_code == 0, result.output
    assert "18 predicted" in result.output and "a_maps" in result.output
    dl.train({"data": {"dataset": str(root), "image_size": 16}, "model": {"name": "tiny_cnn"},
              "train": {"epochs": 1, "progress": False}}, out=tmp_path / "classifier")
    result = run_cli("predict", str(tmp_path / "classifier"), str(root), "--out", str(tmp_path / "p" / "c.csv"),
                     "--threshold", "3")
    assert result.exit_code == 1 and "0 < threshold < 1; got 3" in result.output


def mvtec_category(root, good_train=10, good_test=4, defects=4, size=16):
    """An MVTec AD category: flat grey good images, 'scratch' images with a bright bar and its mask."""
    rng = np.random.default_rng(1)

    def save(path, pixels):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(path)

    for folder, count in (("train/good", good_train), ("test/good", good_test)):
        for index in range(count):
            save(root / folder / f"{index:03d}.png", np.clip(rng.normal(100, 5, (size, size)), 0, 255))
    for index in range(defects):
        pixels = np.clip(rng.normal(100, 5, (size, size)), 0, 255)
        mask = np.zeros((size, size))
        mask[4 + index:7 + index, 2:12] = 255
        pixels[mask > 0] = 240
        save(root / "test/scratch" / f"{index:03d}.png", pixels)
        save(root / "ground_truth/scratch" / f"{index:03d}_mask.png", mask)
    return root


def test_an_mvtec_category_is_fitted_on_train_good_and_scored_with_its_masks(tiny, tmp_path):
    root = mvtec_category(tmp_path / "cable")
    run = dl.train({"data": {"dataset": str(root), "image_size": 16, "channels": 1},
                    "model": {"name": "mean_image_anomaly", "in_chans": 1}}, out=tmp_path / "run")
    scores = run.scores
    assert run.status["data"]["splits"]["train"]["size"] == 10  # train/good only; no val split: test it is
    # every bar is brighter than any good pixel's noise: perfect separation, image and pixel
    assert scores["image_auroc"] == 1.0 and scores["auroc/scratch"] == 1.0
    assert scores["pixel_auroc"] > 0.99 and scores["pro"] > 0.9
    assert (tmp_path / "run" / "eval" / "test" / "score_histogram.png").is_file()


def test_a_good_set_without_images_is_one_clear_message(tiny, tmp_path):
    root = good_and_defect_folder(tmp_path / "parts")
    rows = [f"{p.relative_to(root).as_posix()},scratch" for p in sorted((root / "scratch").glob("*.png"))]
    (root / "index.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    dataset = {"name": "csv_index", "root": str(root / "index.csv"), "classes": ["good", "scratch"]}
    with pytest.raises(dl.DataError, match="training split .* is empty.*fitted on the good images, class 'good'"):
        dl.train({"data": {"dataset": dataset, "image_size": 16}, "model": {"name": "mean_image_anomaly"}},
                 out=tmp_path / "run")
    assert not (tmp_path / "run" / "best.pt").exists()


def test_tail_synthesis_is_refused_for_a_task_without_a_classifier_head(tiny, tmp_path):
    with pytest.raises(dl.ConfigError, match="train.tail_synthesis: makes virtual features for a classifier's head; "
                                             "the data are for 'anomaly'"):
        dl.train(config(train={"tail_synthesis": True}), out=tmp_path / "run")
