"""train.tail_synthesis: virtual tail-class features on segments between real ones, their number and
classes, the settings' checks, and training that is unchanged with the option off."""

from __future__ import annotations

import json
import math

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab import ConfigError, TrainingError
from defectlab.training.checkpoints import load_checkpoint
from defectlab.training.settings import TailSynthesis, TrainSettings
from defectlab.training.tail_synthesis import TailSynthesizer, tail_classes, virtual_count
from PIL import Image

from tests.test_engine import stop_after


@pytest.fixture
def three_classes(tmp_path):
    """An image_folder of 20 bright, 20 dark and 8 mid-grey 16x16 images: 'grey' is the tail."""
    rng = np.random.default_rng(0)
    for label, mean, count in (("bright", 200, 20), ("dark", 50, 20), ("grey", 125, 8)):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True)
        for index in range(count):
            pixels = np.clip(rng.normal(mean, 20, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}_{index:02d}.png")
    return tmp_path / "data"


def config(data, model="tiny_cnn", **train):
    return {"data": {"dataset": str(data), "image_size": 16, "batch_size": 8, "augment": ["flip"]},
            "model": {"name": model},
            "train": {"epochs": 2, "lr": 0.05, "progress": False, **train}}


def real_features(per_class=(12, 10, 6, 3), dim=6):
    """Random features of four classes, shuffled, with their class indices."""
    generator = torch.Generator().manual_seed(1)
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    targets = targets[torch.randperm(len(targets), generator=generator)]
    return torch.randn(len(targets), dim, generator=generator), targets


def test_tail_classes_are_the_rarest_and_those_below_a_share_of_the_largest():
    counts = [100, 20, 5, 50]
    assert tail_classes(counts, rarest=1, below=0) == (2,)
    assert tail_classes(counts, rarest=2, below=0) == (1, 2)
    assert tail_classes(counts, rarest=0, below=0.25) == (1, 2)  # 20 and 5 below 25
    assert tail_classes(counts, rarest=1, below=0.21) == (1, 2)  # the union of both rules
    assert tail_classes([100, 1, 5], rarest=1, below=0) == (2,)  # one sample: nothing to interpolate


def test_virtual_features_lie_on_segments_between_real_features_of_their_class():
    features, targets = real_features()
    synthesizer = TailSynthesizer((2, 3), TailSynthesis(rarest=2, share=0.5, alpha=0.4, memory=64))
    synthesizer.remember(features.requires_grad_(), targets)
    virtual, labels = synthesizer.synthesize(32)
    assert not virtual.requires_grad  # they train the head, not the backbone
    for point, label in zip(virtual, labels):
        found = []
        for i in range(len(features)):
            for j in range(len(features)):
                a, b = features[i].detach(), features[j].detach()
                if i == j:
                    continue
                lam = float((point - b) @ (a - b) / ((a - b) @ (a - b)))  # point = lam·a + (1 - lam)·b
                if torch.allclose(lam * a + (1 - lam) * b, point, atol=1e-5):
                    found.append((lam, i, j))
        assert found, "a virtual feature is not on any segment between two real features"
        for lam, i, j in found:
            assert -1e-6 <= lam <= 1 + 1e-6
            assert targets[i] == targets[j] == label


def test_only_tail_classes_get_virtual_samples_and_their_number_is_the_share():
    features, targets = real_features()
    synthesizer = TailSynthesizer((2, 3), TailSynthesis(rarest=2, share=0.25))
    assert synthesizer.synthesize(32) is None  # nothing remembered yet
    synthesizer.remember(features, targets)
    assert set(synthesizer.memory) == {2, 3}
    assert torch.equal(synthesizer.memory[3], features[targets == 3])
    short = TailSynthesizer((3,), TailSynthesis(memory=2))
    short.remember(features, targets)
    assert torch.equal(short.memory[3], features[targets == 3][-2:])  # the most recent two
    virtual, labels = synthesizer.synthesize(32)
    assert len(virtual) == virtual_count(32, 0.25) == 8
    assert sorted(labels.tolist()) == [2, 2, 2, 2, 3, 3, 3, 3]  # the tail classes in turn
    assert virtual_count(5, 0.1) == 1 and virtual_count(10, 1.0) == 10


def test_the_loss_gets_real_and_virtual_logits_in_one_call():
    model = torch.nn.Sequential()
    model.forward_features = lambda images: images  # the images are the features here
    model.head = torch.nn.Linear(6, 4)
    calls = []

    def loss(logits, target):
        calls.append((tuple(logits.shape), target.tolist()))
        return torch.nn.functional.cross_entropy(logits, target)

    features, targets = real_features()
    synthesizer = TailSynthesizer((3,), TailSynthesis(share=0.5, memory=2))
    synthesizer.loss(model, loss, features[:16], targets[:16], epoch=1).backward()
    (rows, _), classes = calls[0]
    assert rows == 16 + 8 and classes[:16] == targets[:16].tolist() and set(classes[16:]) == {3}


def test_off_trains_bit_identically_and_on_changes_the_head(tiny, three_classes, tmp_path):
    absent = dl.train(config(three_classes), out=tmp_path / "absent")
    off = dl.train(config(three_classes, tail_synthesis=False), out=tmp_path / "off")
    on = dl.train(config(three_classes, tail_synthesis={"share": 0.5}), out=tmp_path / "on")
    a, b, c = (load_checkpoint(run.folder / "last.pt")["model"] for run in (absent, off, on))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train/loss"] for r in absent.metrics] == [r["train/loss"] for r in off.metrics]
    assert not torch.equal(a["head.weight"], c["head.weight"])
    saved = json.loads((on.folder / "config.json").read_text())["config"]["train"]["tail_synthesis"]
    assert saved == {"rarest": 1, "below": 0.0, "share": 0.5, "alpha": 1.0, "memory": 64}


def test_resumed_run_with_synthesis_ends_with_the_same_weights(tiny, three_classes, tmp_path):
    values = config(three_classes, epochs=3, tail_synthesis=True)
    straight = dl.train(values, out=tmp_path / "straight")
    with pytest.raises(TrainingError, match="resume"):
        dl.train(values, out=tmp_path / "killed", callbacks=[stop_after(1)])
    resumed = dl.train(resume=tmp_path / "killed")
    a, b = load_checkpoint(straight.folder / "last.pt")["model"], load_checkpoint(resumed.folder / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value, message", [
    ({"share": 2}, r"train.tail_synthesis.share: must be in \(0, 1\], got 2"),
    ({"shar": 0.5}, r"train.tail_synthesis.shar: unknown setting; did you mean 'share'\?"),
    ({"alpha": 0}, r"train.tail_synthesis.alpha: must be > 0"),
    ({"memory": 1}, r"train.tail_synthesis.memory: must be >= 2"),
    ({"rarest": 0}, r"train.tail_synthesis: rarest = 0 and below = 0 make no class a tail class"),
    ("often", r"train.tail_synthesis: expected"),
])
def test_bad_settings_name_the_key(value, message):
    with pytest.raises(dl.ParameterError, match=message):
        TrainSettings(tail_synthesis=value)


def test_bad_settings_in_a_config_are_reported_before_training(tiny, three_classes, tmp_path):
    with pytest.raises(ConfigError, match=r"train.tail_synthesis.below: must be in \[0, 1\]"):
        dl.train(config(three_classes, tail_synthesis={"below": 1.5}), out=tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_model_without_forward_features_and_head_is_refused(three_classes, tmp_path):
    data = dl.DataModule(str(three_classes), image_size=16, batch_size=8)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    loss = dl.create("loss", "cross_entropy")
    settings = TrainSettings(epochs=1, progress=False, tail_synthesis=True)
    with pytest.raises(TrainingError, match=r"train.tail_synthesis needs a classifier with forward_features"):
        dl.Trainer(model, loss, data, tmp_path / "run", settings=settings).fit()


def test_resnet18_trains_end_to_end_with_the_option_on(three_classes, tmp_path):
    values = config(three_classes, model="resnet18", epochs=1, tail_synthesis={"rarest": 1, "share": 0.5})
    run = dl.train(values, out=tmp_path / "run")
    assert run.status["status"] == "finished"
    assert math.isfinite(run.metrics[0]["train/loss"]) and "accuracy" in run.scores
