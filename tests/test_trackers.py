"""The tensorboard callback: its event files read back hold metrics.jsonl's numbers, the predicted images and
the config as hyperparameters; without the tensorboard package it says what to install."""

from __future__ import annotations

import sys

import defectlab as dl
import pytest
from defectlab import ConfigError, DefectlabError

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def config(data, **tracker):
    return {"data": {"dataset": str(data), "image_size": 16, "batch_size": 8},
            "model": {"name": "tiny_cnn"}, "train": {"epochs": 2, "lr": 0.05, "progress": False},
            "callbacks": [{"name": "tensorboard", **tracker}]}


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_the_event_files_hold_the_runs_numbers_images_and_config(tiny, two_classes, tmp_path):
    run = dl.train(config(two_classes, images=3), out=tmp_path / "run")
    events = read_events(run.folder / "tensorboard")
    for key in ("train/loss", "val/loss", "val/accuracy", "lr", "images_per_s"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in run.metrics], key
    assert [e.value for e in events.Scalars("lr")] == [pytest.approx(0.05), 0.0]  # a cosine over 2 epochs
    for tag, steps in (("val/predictions", [1, 2]), ("test/predictions_best", [2])):
        images = events.Images(tag)
        assert [e.step for e in images] == steps
        assert all((e.width, e.height) == (3 * 96, 96 + 26) for e in images)  # three 96-pixel panels, captioned
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.lr"].number_value == 0.05 and start.hparams["model.name"].string_value == "tiny_cnn"
    assert start.hparams["callbacks"].string_value == "[{'name': 'tensorboard', 'images': 3}]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "test/accuracy" in {m.name.tag for m in experiment.metric_infos}
    assert [e.value for e in events.Scalars("test/accuracy")] == [pytest.approx(run.scores["accuracy"])]


def test_log_dir_and_no_images(tiny, two_classes, tmp_path):
    run = dl.train(config(two_classes, log_dir=str(tmp_path / "tb"), images=0), out=tmp_path / "run")
    assert not (run.folder / "tensorboard").exists()
    events = read_events(tmp_path / "tb")
    assert events.Tags()["images"] == [] and len(events.Scalars("train/loss")) == 2


def test_without_the_tensorboard_package_it_says_what_to_install(tiny, two_classes, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails as without the package
    with pytest.raises(DefectlabError, match=r"needs the tensorboard package .*pip install 'defectlab\[tensorboard\]'"):
        dl.create("callback", "tensorboard")
    with pytest.raises(DefectlabError, match="needs the tensorboard package"):
        dl.train(config(two_classes), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder was started


def test_its_parameters_are_checked(tiny, two_classes, tmp_path):
    with pytest.raises(ConfigError, match=r"callbacks\.0\.images: .*>= 0"):
        dl.train(config(two_classes, images=-1), out=tmp_path / "run")
