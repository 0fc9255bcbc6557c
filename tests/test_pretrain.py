"""`defectlab pretrain` through the training engine, with a small third-party objective registered by the
`defectlab_plugin` fixture: run directory, resume to the same weights, export, and `train --init-from`."""

from __future__ import annotations

import json

import defectlab as dl
import pytest
import torch
from torch import nn

from tests.tiny_models import write_two_class_folder


class Brightness(nn.Module):
    """Predict each image's mean brightness from the encoder's embedding (a toy objective).

    Args:
        encoder: the backbone being pretrained (given by the workflow).
        noise: standard deviation of the noise added to each view.
    """

    name = "brightness"
    kill_at = 0  # a test sets it: raise KeyboardInterrupt at this loss call, as a kill mid-epoch would

    def __init__(self, encoder: nn.Module, noise: float = 0.1):
        super().__init__()
        self.encoder, self.noise, self.calls = encoder, noise, 0
        self.head = nn.Linear(encoder.head.in_features, 1)
        self.progress_seen: list[float] = []

    def views(self, images):
        return images + self.noise * torch.randn_like(images), images.mean(dim=(1, 2, 3))

    def loss(self, views):
        self.calls += 1
        if self.calls == Brightness.kill_at:
            raise KeyboardInterrupt
        noisy, target = views
        return nn.functional.mse_loss(self.head(self.encoder.forward_features(noisy)).squeeze(1), target)

    def param_groups(self):
        return [{"params": list(self.encoder.parameters()) + list(self.head.parameters())}]

    def after_step(self, progress, optimizer):
        self.progress_seen.append(progress)

    def epoch_metrics(self):
        return {"calls": self.calls}

    def export_encoder(self):
        return self.encoder


class BrightnessPlugin:
    @dl.hookimpl
    def register_ssl_objectives(self):
        return [Brightness]


@pytest.fixture
def objective(tiny, defectlab_plugin):
    defectlab_plugin(BrightnessPlugin(), "brightness_ssl")


def config(data, **ssl):
    return {"data": {"dataset": str(data), "image_size": 16, "batch_size": 8},
            "model": {"name": "tiny_cnn"}, "ssl": {"name": "brightness", **ssl},
            "train": {"epochs": 3, "lr": 0.01, "progress": False}}


def test_a_third_party_objective_pretrains_through_the_engine(objective, tmp_path):
    data = write_two_class_folder(tmp_path / "data")
    run = dl.pretrain(config(data), out=tmp_path / "run")
    assert run.status["status"] == "finished"
    assert {"config.json", "metrics.jsonl", "last.pt", "best.pt", "encoder.pt", "report.html"} <= {
        p.name for p in run.folder.iterdir()}
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3]
    assert all("train/calls" in r and "weight_decay" in r for r in run.metrics)
    assert run.config["ssl"] == {"name": "brightness"} and run.config["data"]["task"] == "pretrain"
    encoder = torch.load(run.folder / "encoder.pt", weights_only=True)["model"]
    assert set(encoder) == set(dl.create("backbone", "tiny_cnn").state_dict())  # the objective's head is left behind


def test_progress_runs_over_every_step_once(objective, tmp_path):
    from defectlab.training.objective import ObjectiveModel

    data = write_two_class_folder(tmp_path / "data")
    seen = []
    dl.pretrain(config(data), out=tmp_path / "run",
                callbacks=[lambda trainer, record: seen.extend(trainer.model.objective.progress_seen)])
    steps = 3 * 4  # 40 images at 70 % train = 28 -> 4 batches of 8 per epoch
    assert isinstance(ObjectiveModel(nn.Identity()), nn.Module)
    assert sorted(set(seen)) == pytest.approx([k / steps for k in range(1, steps + 1)])


def test_a_pretraining_killed_mid_epoch_resumes_to_the_same_weights(objective, tmp_path):
    from defectlab.training.checkpoints import load_checkpoint
    from defectlab.training.transfer import init_backbone_from

    data = write_two_class_folder(tmp_path / "data")
    straight = dl.pretrain(config(data), out=tmp_path / "straight")
    Brightness.kill_at = 7  # epoch 1: 4 steps and 1 validation batch; then the 2nd step of epoch 2
    try:
        with pytest.raises(dl.TrainingError, match="resume"):
            dl.pretrain(config(data), out=tmp_path / "killed")
    finally:
        Brightness.kill_at = 0
    assert json.loads((tmp_path / "killed" / "run.json").read_text())["epochs_done"] == 1
    assert json.loads((tmp_path / "killed" / "run.json").read_text())["status"] == "interrupted"
    # before it is resumed, the killed run initialises a classifier from the encoder in its best.pt
    best = load_checkpoint(tmp_path / "killed" / "best.pt")["model"]
    classifier = dl.create("backbone", "tiny_cnn")
    report = init_backbone_from(classifier, tmp_path / "killed")
    assert report.loaded and all(torch.equal(classifier.state_dict()[k], best[f"objective.encoder.{k}"])
                                 for k in report.loaded)
    assert sorted(report.loaded) == sorted(k for k in classifier.state_dict() if not k.startswith("head."))
    resumed = dl.pretrain(resume=tmp_path / "killed")
    a = load_checkpoint(straight.folder / "last.pt")["model"]
    b = load_checkpoint(resumed.folder / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_encoder_initialises_a_classifier_and_a_linear_probe_trains(objective, tmp_path, run_cli):
    data = write_two_class_folder(tmp_path / "data")
    pretrained = dl.pretrain(config(data), out=tmp_path / "pre")
    target = tmp_path / "target.toml"
    target.write_text(f'[data]\ndataset = "{data}"\nimage_size = 16\nbatch_size = 8\n[model]\nname = "tiny_cnn"\n'
                      f'[train]\nepochs = 2\nlr = 0.05\nprogress = false\n')
    result = run_cli("train", str(target), "--init-from", str(pretrained.folder), "--linear-probe",
                     "--out", str(tmp_path / "probe"))
    assert result.exit_code == 0, result.output
    transfer = json.loads((tmp_path / "probe" / "run.json").read_text())["transfer"]
    encoder = torch.load(pretrained.folder / "encoder.pt", weights_only=True)["model"]
    assert transfer["source"].endswith("encoder.pt")
    assert sorted(transfer["loaded"]) == sorted(k for k in encoder if not k.startswith("head."))
    assert transfer["skipped"] == {}
    assert json.loads((tmp_path / "probe" / "run.json").read_text())["frozen_parameters"] > 0


def test_a_plain_folder_of_images_pretrains(objective, tmp_path):
    data = write_two_class_folder(tmp_path / "data")
    run = dl.pretrain({**config(data), "data": {"dataset": str(data / "dark"), "image_size": 16, "batch_size": 4}},
                      out=tmp_path / "run", overrides=["train.epochs=1"])
    assert run.status["status"] == "finished" and run.config["data"]["dataset"]["name"] == "images"


def test_bad_pretraining_input_is_one_clear_message(objective, tmp_path, run_cli):
    data = write_two_class_folder(tmp_path / "data", per_class=2)
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\ndataset = "{data}"\nimage_size = 16\nbatch_size = 8\n[model]\nname = "tiny_cnn"\n'
                    f'[ssl]\nname = "brightness"\n[train]\nepochs = 1\nprogress = false\n')
    few = run_cli("pretrain", str(path), "--out", str(tmp_path / "a"))
    assert few.exit_code == 1 and "fewer than one batch of 8" in few.output
    unknown = run_cli("pretrain", str(path), "--set", 'ssl.name="dinoo"', "--out", str(tmp_path / "b"))
    assert unknown.exit_code == 1 and "unknown ssl 'dinoo'" in unknown.output
    encoder = run_cli("pretrain", str(path), "--set", 'ssl.encoder="x"', "--out", str(tmp_path / "c"))
    assert encoder.exit_code == 1 and "ssl.encoder: set by the workflow" in encoder.output
    with_loss = run_cli("pretrain", str(path), "--set", 'loss.name="dibe"', "--out", str(tmp_path / "d"))
    assert with_loss.exit_code == 1 and "loss: a pretraining has no loss" in with_loss.output
    no_ssl = tmp_path / "no_ssl.toml"
    no_ssl.write_text(path.read_text().replace('[ssl]\nname = "brightness"\n', ""))
    missing = run_cli("pretrain", str(no_ssl), "--out", str(tmp_path / "e"))
    assert missing.exit_code == 1 and "ssl: required" in missing.output


def test_a_pretraining_run_is_not_a_classifier_to_predict_with(objective, tmp_path, run_cli):
    data = write_two_class_folder(tmp_path / "data")
    run = dl.pretrain(config(data), out=tmp_path / "run", overrides=["train.epochs=1"])
    result = run_cli("predict", str(run.folder), str(data), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 1 and "is a pretraining run's" in result.output and "--init-from" in result.output
