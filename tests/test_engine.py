"""The training engine end to end on tiny data: run directory, resume, stops, transfer, staged runs."""

from __future__ import annotations

import json
import math
import re

import defectlab as dl
import pytest
import torch
from defectlab import ConfigError, DataError, TrainingError
from defectlab.training.checkpoints import load_checkpoint
from defectlab.training.loop import make_schedule
from defectlab.training.settings import TrainSettings



@pytest.fixture
def folder(two_classes):
    return two_classes


def config(data, **train):
    return {"data": {"dataset": str(data), "image_size": 16, "batch_size": 8, "augment": ["flip", "noise"]},
            "model": {"name": "tiny_cnn"},
            "train": {"epochs": 3, "lr": 0.05, "progress": False, **train}}


def test_run_directory_holds_everything_designed(tiny, folder, tmp_path):
    run = dl.train(config(folder), out=tmp_path / "run")
    files = {p.name for p in run.folder.iterdir()}
    assert {"config.json", "splits.csv", "metrics.jsonl", "last.pt", "best.pt", "run.json", "curves.png",
            "report.html", "eval"} <= files
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3]
    assert run.status["status"] == "finished"
    saved = json.loads((run.folder / "config.json").read_text())
    assert saved["seed"] == 0 and "defectlab" in saved["versions"]
    assert saved["config"]["model"]["num_classes"] == 2  # filled in from the data
    assert run.evaluation["split"] == "test" and run.evaluation["samples"] == 6  # 40 images at 70/15/15
    assert run.scores["accuracy"] >= 0.8  # dark vs bright is separable
    assert (run.folder / "eval" / "test" / "confusion_matrix.png").is_file()
    assert "curves.png" in (run.folder / "report.html").read_text()


def test_without_a_terminal_progress_is_a_line_every_interval(tiny, folder, tmp_path, monkeypatch, capsys):
    from defectlab.plugin_system import progress as progress_module

    monkeypatch.setattr(progress_module, "PROGRESS_EVERY", 0.0)  # every batch; 30 s by default
    dl.train(config(folder, epochs=2, progress=True), out=tmp_path / "run")
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if " batch " in line]
    assert len(progress) == 8  # 28 training images in batches of 8, two epochs
    assert progress[0].startswith("epoch 1/2 batch 1/4, ") and progress[-1].startswith("epoch 2/2 batch 4/4, ")
    assert re.fullmatch(r"epoch 1/2 batch 1/4, \d+ img/s, loss \d\.\d{4}, eta 0:\d\d", progress[0])
    assert progress[-1].endswith(", eta 0:00")
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY", 3600.0)
    dl.train(config(folder, epochs=2, progress=True), out=tmp_path / "quiet")
    assert not [line for line in capsys.readouterr().err.splitlines() if " batch " in line]


def stop_after(epochs):
    def callback(trainer, record):
        if record["epoch"] == epochs:
            raise KeyboardInterrupt

    return callback


def test_resume_continues_to_the_same_weights(tiny, folder, tmp_path):
    straight = dl.train(config(folder, epochs=4), out=tmp_path / "straight")
    with pytest.raises(TrainingError, match="resume"):
        dl.train(config(folder, epochs=4), out=tmp_path / "killed", callbacks=[stop_after(2)])
    killed = tmp_path / "killed"
    assert json.loads((killed / "run.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(killed / "last.pt")["epoch"] == 2
    resumed = dl.train(resume=killed)
    a, b = load_checkpoint(straight.folder / "last.pt")["model"], load_checkpoint(resumed.folder / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3, 4]
    assert [r["train/loss"] for r in resumed.metrics] == [r["train/loss"] for r in straight.metrics]


class NanAfter(torch.nn.Module):
    """Cross-entropy that turns NaN after a number of calls (tests only).

    Args:
        calls: Calls before the loss is NaN.
    """

    name = "nan_after"

    def __init__(self, calls: int = 5):
        super().__init__()
        self.calls, self.seen = calls, 0

    def forward(self, pred, target):
        self.seen += 1
        loss = torch.nn.functional.cross_entropy(pred, target)
        return loss * math.nan if self.seen > self.calls else loss


class NanLosses:
    @dl.hookimpl
    def register_losses(self):
        return [NanAfter]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, defectlab_plugin, folder, tmp_path):
    defectlab_plugin(NanLosses(), "nan_losses")
    values = config(folder, epochs=3)
    # epoch 1: 4 training steps (28 images / 8) and 1 validation batch; call 7 is epoch 2's second step
    values["loss"] = {"name": "nan_after", "calls": 6}
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 2.*last.pt keeps epoch 1"):
        dl.train(values, out=tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_corrupted_image_trains_to_the_end_and_is_reported(tiny, folder, tmp_path):
    (folder / "dark" / "dark_03.png").write_bytes(b"not a png")
    run = dl.train(config(folder, epochs=2), out=tmp_path / "run")
    assert run.status["status"] == "finished"
    assert run.status["skipped_images"] == ["dark/dark_03.png"]
    assert "dark/dark_03.png" in (run.folder / "report.html").read_text()


def test_config_errors_name_the_key_before_training(tiny, folder, tmp_path):
    values = config(folder, lr_typo=0.1)
    values["train"]["epochs"] = "many"
    with pytest.raises(ConfigError) as error:
        dl.train(values, out=tmp_path / "run")
    problems = "\n".join(error.value.problems)
    assert "train.lr_typo: unknown setting" in problems and "train.epochs" in problems
    assert not (tmp_path / "run").exists()


def test_config_error_from_the_cli_is_one_message(tiny, folder, tmp_path, run_cli):
    path = tmp_path / "bad.toml"
    path.write_text(f'[data]\ndataset = "{folder}"\n[model]\nname = "tiny_cnn"\nwidht = 4\n')
    result = run_cli("train", str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "model.widht" in result.output and "width" in result.output and "Traceback" not in result.output


def test_classify_backbone_on_segmentation_data_is_refused(tiny, tmp_path):
    values = {"data": {"dataset": {"name": "synthetic_cracks", "count": 20, "size": 64}, "image_size": 32},
              "model": {"name": "tiny_cnn"}, "train": {"progress": False}}
    with pytest.raises(ConfigError, match="for 'segment'"):
        dl.train(values, out=tmp_path / "run")


def test_init_from_loads_backbone_only_and_reports_misfits(tiny, folder, tmp_path):
    source = dl.train(config(folder, epochs=1), out=tmp_path / "source")
    trained = load_checkpoint(source.folder / "best.pt")["model"]
    target = dl.train(config(folder, epochs=1, lr=1e-12), out=tmp_path / "target", init_from=source.folder)
    transfer = target.status["transfer"]
    assert sorted(transfer["loaded"]) == sorted(k for k in trained if not k.startswith("head."))
    assert "head.weight" in transfer["unused"] and "head.weight" in transfer["missing"]
    # another input width: the first convolution does not fit and is named
    grey = config(folder, epochs=1)
    grey["model"]["in_chans"] = 1
    other = dl.train(grey, out=tmp_path / "grey", init_from=source.folder / "best.pt")
    assert other.status["transfer"]["skipped"] == {"features.0.weight": {"source": [8, 3, 3, 3], "model": [8, 1, 3, 3]}}


def test_init_from_another_architecture_says_nothing_fits(tiny, folder, tmp_path):
    source = dl.train(config(folder, epochs=1), out=tmp_path / "source")
    wide = config(folder, epochs=1)
    wide["model"]["width"] = 5
    with pytest.raises(DataError, match="none of the .* tensors .* fit this model"):
        dl.train(wide, out=tmp_path / "wide", init_from=source.folder)


def test_linear_probe_keeps_the_backbone_bit_identical(tiny, folder, tmp_path):
    source = dl.train(config(folder, epochs=1), out=tmp_path / "source")
    probe = dl.train(config(folder, epochs=2), out=tmp_path / "probe", init_from=source.folder, linear_probe=True)
    before, after = load_checkpoint(source.folder / "best.pt")["model"], load_checkpoint(probe.folder / "last.pt")["model"]
    for name, tensor in before.items():
        if not name.startswith("head."):
            assert torch.equal(tensor, after[name]), name  # weights and BatchNorm statistics
    assert probe.status["frozen_parameters"] == 4  # conv weight and bias, BatchNorm weight and bias


def test_early_stopping_stops_after_patience(tiny, folder, tmp_path):
    run = dl.train(config(folder, epochs=6, lr=1e-12, patience=1, min_delta=1.0), out=tmp_path / "run")
    assert run.status["epochs_done"] == 2 and run.status["best"]["epoch"] == 1


def test_unknown_monitor_names_the_metrics(tiny, folder, tmp_path):
    with pytest.raises(TrainingError, match="val/accuracy"):
        dl.train(config(folder, monitor="val/acuracy"), out=tmp_path / "run")


def test_staged_transfer_chains_backbones(tiny, folder, tmp_path):
    values = config(folder, epochs=1)
    values["stages"] = [{"name": "source"}, {"name": "target", "train": {"epochs": 2}}]
    top = dl.train(values, out=tmp_path / "staged")
    assert [s.name for s in top.stages] == ["source", "target"]
    target = top.stages[1]
    assert target.status["transfer"]["source"].endswith("source/best.pt")
    assert len(target.metrics) == 2
    assert (top.folder / "report.html").is_file() and (top.folder / "comparison.json").is_file()


def test_schedule_warms_up_then_follows_the_cosine():
    parameter = torch.nn.Parameter(torch.zeros(1))
    settings = TrainSettings(epochs=6, lr=1.0, warmup_epochs=2, min_lr=0.0)
    optimizer = torch.optim.SGD([parameter], lr=settings.lr)
    schedule = make_schedule(optimizer, settings)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # warm-up 0.1 -> 0.55 (linear over 2 epochs), then cosine over the 4 remaining epochs: cos(pi*t/3)
    expected = [0.1, 0.55, 1.0, 0.5 * (1 + math.cos(math.pi / 3)), 0.5 * (1 + math.cos(2 * math.pi / 3)), 0.0]
    assert rates == pytest.approx(expected, abs=1e-9)


def test_bad_settings_say_what_is_allowed():
    with pytest.raises(dl.ParameterError, match=r"train.warmup_epochs: must be below epochs = 2"):
        TrainSettings(epochs=2, warmup_epochs=2)
