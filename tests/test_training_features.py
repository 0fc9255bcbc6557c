"""The loop's events and the training features on them: weight average, mixup, accumulation, CPU speed."""

from __future__ import annotations

import defectlab as dl
import numpy as np
import pytest
import torch
from defectlab import ConfigError, DefectlabError, ParameterError
from defectlab.data.data_module import DataModule
from defectlab.training.checkpoints import load_checkpoint
from defectlab.training.events import EVENTS, Callback, Events
from defectlab.training.loop import Trainer, mixed_precision
from defectlab.training.mixing import BatchMixing
from defectlab.training.settings import Mixup, TrainSettings
from torch import nn


def config(data, **train):
    return {"data": {"dataset": str(data), "image_size": 16, "batch_size": 8, "augment": ["flip"]},
            "model": {"name": "tiny_cnn"},
            "train": {"epochs": 2, "lr": 0.05, "progress": False, **train}}


class Recorder(Callback):
    """Every event's name, and the trained weights after each optimiser step."""

    def __init__(self):
        self.events, self.weights = [], []

    def __getattribute__(self, name):
        if name.startswith("on_") and name[3:] in EVENTS:
            def record(trainer, *args):
                self.events.append(name[3:])
                if name == "on_batch_end" and args[0]["stepped"]:
                    self.weights.append({k: v.detach().clone() for k, v in trainer.network.state_dict().items()})
            return record
        return super().__getattribute__(name)


# --- events ------------------------------------------------------------------------------------

def test_events_fire_in_the_documented_order(tiny, two_classes, tmp_path):
    recorder = Recorder()
    dl.train(config(two_classes, epochs=2), out=tmp_path / "run", callbacks=[recorder])
    batches = 4  # 28 training images (70 % of 40) in batches of 8
    epoch = ["epoch_start", *["batch_start", "batch_end"] * batches, "evaluation_end", "checkpoint", "epoch_end"]
    assert recorder.events == ["fit_start", *epoch, *epoch, "evaluation_end", "fit_end"]


def test_a_plain_function_is_an_epoch_end_callback_and_anything_else_is_refused(tiny, two_classes, tmp_path):
    epochs = []
    dl.train(config(two_classes), out=tmp_path / "run", callbacks=[lambda trainer, record: epochs.append(record["epoch"])])
    assert epochs == [1, 2]
    with pytest.raises(DefectlabError, match="on_<event> methods"):
        Events([42])


def test_a_batch_start_callback_changes_what_the_model_trains_on(tiny, two_classes, tmp_path):
    class Blank(Callback):
        def on_batch_start(self, trainer, batch):
            batch["images"] = torch.zeros_like(batch["images"])

    run = dl.train(config(two_classes, epochs=3), out=tmp_path / "run", callbacks=[Blank()])
    assert run.scores["accuracy"] <= 0.7  # it never saw the images: bright and dark are not learnt


# --- weight average ------------------------------------------------------------------------------

def test_the_weight_average_follows_its_formula_and_is_the_run_model(tiny, two_classes, tmp_path):
    recorder = Recorder()
    run = dl.train(config(two_classes, ema={"decay": 0.9, "warmup": False}), out=tmp_path / "run",
                   callbacks=[recorder])
    average = dict(recorder.weights[0])  # the first step copies the weights
    for weights in recorder.weights[1:]:
        average = {k: 0.9 * average[k] + 0.1 * v if v.is_floating_point() else v for k, v in weights.items()}
    last = load_checkpoint(run.folder / "last.pt")
    for name, value in average.items():
        assert torch.allclose(last["model"][name].float(), value.float(), atol=1e-6), name
        assert torch.equal(last["trained_model"][name], recorder.weights[-1][name]), name
    assert last["ema_steps"] == len(recorder.weights) == 8
    assert not torch.equal(last["model"]["head.weight"], last["trained_model"]["head.weight"])


def test_the_warm_up_average_of_one_step_is_the_weights_and_the_decay_grows(tiny, two_classes, tmp_path):
    from defectlab.training.averaging import WeightAverage
    from defectlab.training.settings import Ema

    average = WeightAverage(Ema(decay=0.999, warmup=True))

    class Fake:
        network, device, restored = nn.Linear(2, 1), torch.device("cpu"), None

    average.on_fit_start(Fake())
    decays = [average.average.get_decay(t) for t in (1, 2, 8, 1000, 10**6)]
    assert decays[:3] == pytest.approx([0.0, 1 - 2 ** (-2 / 3), 1 - 8 ** (-2 / 3)])  # 0, 0.370, 0.75
    assert decays[3] == pytest.approx(0.99) and decays[4] == 0.999  # capped by decay


def test_validation_scores_the_average_and_a_resumed_run_averages_on(tiny, two_classes, tmp_path):
    settings = {"ema": {"decay": 0.8, "warmup": False}}
    straight = dl.train(config(two_classes, epochs=3, **settings), out=tmp_path / "straight")

    def stop(trainer, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(dl.TrainingError):
        dl.train(config(two_classes, epochs=3, **settings), out=tmp_path / "killed", callbacks=[stop])
    resumed = dl.train(resume=tmp_path / "killed")
    a, b = load_checkpoint(straight.folder / "last.pt"), load_checkpoint(resumed.folder / "last.pt")
    for entry in ("model", "trained_model"):
        assert all(torch.equal(a[entry][k], b[entry][k]) for k in a[entry]), entry
    assert [r["val/loss"] for r in straight.metrics] == [r["val/loss"] for r in resumed.metrics]


def test_the_average_is_refused_for_a_fitted_model(tiny, two_classes, tmp_path):
    values = config(two_classes, ema=True)
    values["model"] = {"name": "mean_image_anomaly"}
    values["train"].pop("epochs")
    with pytest.raises(ConfigError, match="train.ema"):
        dl.train(values, out=tmp_path / "run")


# --- mixup -------------------------------------------------------------------------------------

def test_mixup_mixes_images_and_targets_alike():
    np.random.seed(0)
    mixing = BatchMixing(Mixup(mixup_alpha=0.4, cutmix_alpha=0.0), num_classes=3)
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 4, 4).clone()
    targets = torch.tensor([0, 1, 2, 0, 1])
    batch = {"images": images, "targets": targets}
    mixing.on_batch_start(None, batch)
    soft, mixed = batch["targets"], batch["images"]
    # the even part (4 images) is mixed with itself reversed: 0 with 3 (both class 0), 1 (class 1) with 2 (class 2)
    lam = float(soft[1, 1])
    assert 0 < lam < 1 and soft[1].tolist() == pytest.approx([0, lam, 1 - lam])
    assert torch.allclose(mixed[1], lam * images[1] + (1 - lam) * images[2])
    assert torch.allclose(mixed[0], lam * images[0] + (1 - lam) * images[3]) and soft[0].tolist() == [1, 0, 0]
    assert soft[4].tolist() == [0, 1, 0] and torch.equal(mixed[4], images[4])  # odd batch: the last one as it is
    assert torch.allclose(soft.sum(1), torch.ones(5))


def test_cutmix_pastes_a_box_and_its_share_is_the_target():
    np.random.seed(1)
    mixing = BatchMixing(Mixup(mixup_alpha=0.0, cutmix_alpha=1.0), num_classes=2)
    images = torch.cat([torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)])
    batch = {"images": images, "targets": torch.tensor([0, 1])}
    mixing.on_batch_start(None, batch)
    pasted = float(batch["images"][0].mean())  # the share of image 1 pasted into image 0
    assert batch["targets"][0].tolist() == pytest.approx([1 - pasted, pasted])


def test_mixup_trains_from_a_config_and_is_checked_first(tiny, two_classes, tmp_path):
    run = dl.train(config(two_classes, epochs=4, mixup={"mixup_alpha": 0.2, "cutmix_alpha": 0.0}),
                   out=tmp_path / "run")
    assert run.scores["accuracy"] >= 0.8
    with pytest.raises(ParameterError, match="mix nothing"):
        TrainSettings(mixup={"mixup_alpha": 0, "cutmix_alpha": 0})
    with pytest.raises(ParameterError, match="use one of them"):
        TrainSettings(mixup=True, tail_synthesis=True)


def test_mixup_needs_a_loss_that_takes_soft_targets(tiny, two_classes, tmp_path, defectlab_plugin):
    from defectlab import hookimpl

    class HardOnly(nn.Module):
        """Cross-entropy that takes class indices only (tests)."""

        name = "hard_only"

        def forward(self, pred, target):
            return nn.functional.cross_entropy(pred, target)

    class Plugin:
        @hookimpl
        def register_losses(self):
            return [HardOnly]

    defectlab_plugin(Plugin(), "hard_only")
    values = {**config(two_classes, mixup=True), "loss": {"name": "hard_only"}}
    with pytest.raises(ConfigError, match="soft targets"):
        dl.train(values, out=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# --- accumulation ----------------------------------------------------------------------------------

class Linear(nn.Module):
    """A linear classifier of the mean pixel (no batch statistics, so batches can be split exactly)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(x.mean(dim=(2, 3)))


def trained(data_folder, tmp_path, name, batch_size, **settings):
    torch.manual_seed(0)
    model = Linear()
    data = DataModule(str(data_folder), image_size=8, batch_size=batch_size, augment=())
    values = dict(epochs=2, optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0, progress=False, amp=False,
                  **settings)
    Trainer(model, nn.CrossEntropyLoss(), data, tmp_path / name, settings=TrainSettings(**values)).fit()
    return model.head.weight.detach().clone()


def test_accumulated_batches_step_as_one_batch_of_their_size(two_classes, tmp_path):
    whole = trained(two_classes, tmp_path, "whole", batch_size=14)  # 28 training images: 2 steps per epoch
    accumulated = trained(two_classes, tmp_path, "accumulated", batch_size=7, accumulate=2)
    single = trained(two_classes, tmp_path, "single", batch_size=7)
    assert torch.allclose(whole, accumulated, atol=1e-6)
    assert not torch.allclose(whole, single, atol=1e-4)  # four steps of 7 are not two of 14


def test_a_last_short_group_steps_on_its_own_mean(two_classes, tmp_path):
    recorder = Recorder()
    torch.manual_seed(0)
    data = DataModule(str(two_classes), image_size=8, batch_size=8, augment=())  # 4 batches: 8, 8, 8, 4
    Trainer(Linear(), nn.CrossEntropyLoss(), data, tmp_path / "run", callbacks=[recorder],
            settings=TrainSettings(epochs=1, accumulate=3, progress=False)).fit()
    assert len(recorder.weights) == 2  # batches 1-3, then batch 4 alone


# --- CPU speed ---------------------------------------------------------------------------------------

def test_amp_means_bfloat16_on_a_cpu_that_has_it_and_float16_on_a_gpu():
    assert mixed_precision(torch.device("cuda")) == torch.float16
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert mixed_precision(torch.device("cpu")) == (torch.bfloat16 if native else None)


def test_the_step_runs_under_the_autocast_that_amp_names(two_classes, tmp_path):
    seen = []

    class Probe(Linear):
        def forward(self, x):
            out = super().forward(x)
            seen.append(out.dtype)
            return out

    data = DataModule(str(two_classes), image_size=8, batch_size=14, augment=())
    for amp in (True, False):
        seen.clear()
        trainer = Trainer(Probe(), nn.CrossEntropyLoss(), data, tmp_path / f"amp-{amp}",
                          settings=TrainSettings(epochs=1, amp=amp, progress=False))
        trainer.fit()
        expected = trainer.amp_dtype if amp and trainer.amp_dtype is not None else torch.float32
        assert seen[0] == expected and seen[-1] == torch.float32  # training batches, then float32 evaluation


def test_channels_last_trains_to_the_same_weights(tiny, two_classes, tmp_path):
    plain = dl.train(config(two_classes, amp=False, channels_last=False), out=tmp_path / "plain")
    last = dl.train(config(two_classes, amp=False, channels_last=True), out=tmp_path / "last")
    a, b = load_checkpoint(plain.folder / "last.pt")["model"], load_checkpoint(last.folder / "last.pt")["model"]
    # the convolution's bias before batch norm has a gradient of rounding noise, which AdamW scales up to lr-sized
    # steps (and the running mean follows it); every other tensor agrees up to the kernels' rounding
    noise = {"features.0.bias", "features.1.running_mean"}
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a if k not in noise)
    assert [r["train/loss"] for r in plain.metrics] == pytest.approx([r["train/loss"] for r in last.metrics], rel=1e-3)
    assert b["features.0.weight"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_a_compiled_model_trains_and_saves_plain_weights(tiny, two_classes, tmp_path):
    run = dl.train(config(two_classes, amp=False, compile=True), out=tmp_path / "run")
    state = load_checkpoint(run.folder / "best.pt")["model"]
    assert not any(k.startswith("_orig_mod") for k in state)  # predict and export load it into a plain model
    assert run.scores["accuracy"] >= 0.8


# --- defectlab show ----------------------------------------------------------------------------------

def test_show_lists_a_sections_settings_and_its_tables(run_cli):
    result = run_cli("show", "train")
    assert result.exit_code == 0, result.output
    for name in ("ema", "mixup", "accumulate", "channels_last", "compile", "tta"):
        assert f"\n{name} " in result.output
    table = run_cli("show", "train", "ema", "--json")
    info = __import__("json").loads(table.output)
    assert info["name"] == "train.ema" and [p["name"] for p in info["parameters"]] == ["decay", "warmup"]
    assert info["parameters"][0]["default"] == 0.999
    wrong = run_cli("show", "trian")
    assert wrong.exit_code == 1 and "did you mean 'train'" in wrong.output
    assert "did you mean 'ema'" in run_cli("show", "train", "emma").output
    assert run_cli("show", "loss").exit_code == 2  # a kind needs a component's name
