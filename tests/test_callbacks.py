"""The `callback` kind: a third-party callback through `[[callbacks]]` in train, pretrain, sweep and tune-oii,
its validation, listing, ranks, and a failing plugin callback that keeps the run."""

from __future__ import annotations

import json
import types
from pathlib import Path

import defectlab as dl
import pytest
from defectlab import ConfigError, PluginError
from defectlab.training.checkpoints import load_checkpoint
from defectlab.training.events import EVENTS, Events

from tests.test_pretrain import BrightnessPlugin


class EventLog(dl.Callback):
    """Writes the name of every event it hears into a file of the run folder (tests only).

    Args:
        file: the file's name in the run folder.
        fail_at: an event whose call raises ZeroDivisionError ('' for none).
    """

    name = "event_log"

    def __init__(self, file: str = "events.txt", fail_at: str = ""):
        self.file, self.fail_at = file, fail_at

    def __getattribute__(self, name):
        if name.startswith("on_") and name[3:] in EVENTS:
            def record(trainer, *args):
                with (trainer.folder / self.file).open("a") as handle:
                    handle.write(name[3:] + "\n")
                if name[3:] == self.fail_at:
                    1 / 0
            return record
        return super().__getattribute__(name)


class EventLogPlugin:
    @dl.hookimpl
    def register_callbacks(self):
        return [EventLog]


@pytest.fixture
def event_log(tiny, defectlab_plugin):
    defectlab_plugin(EventLogPlugin(), "event_log_plugin")


def config(data, **train):
    return {"data": {"dataset": str(data), "image_size": 16, "batch_size": 8},
            "model": {"name": "tiny_cnn"}, "train": {"epochs": 2, "lr": 0.05, "progress": False, **train},
            "callbacks": [{"name": "event_log", "file": "heard.txt"}]}


def heard(folder, file="heard.txt"):
    return (folder / file).read_text().split()


def test_a_plugin_callback_in_a_config_hears_every_event_in_order(event_log, two_classes, tmp_path):
    run = dl.train(config(two_classes), out=tmp_path / "run")
    epoch = ["epoch_start", *["batch_start", "batch_end"] * 4, "evaluation_end", "checkpoint", "epoch_end"]
    assert heard(run.folder) == ["fit_start", *epoch, *epoch, "evaluation_end", "fit_end"]
    assert run.config["callbacks"] == [{"name": "event_log", "file": "heard.txt"}]  # resolved: a resume keeps it


def test_a_callback_is_built_listed_and_shown_like_every_kind(event_log, run_cli):
    assert isinstance(dl.create("callback", {"name": "event_log", "fail_at": "fit_end"}), dl.Callback)
    assert [c.name for c in dl.list_components("callback")] == ["event_log", "mlflow", "tensorboard"]
    assert dl.describe("callback", "event_log")["plugin"] == "event_log_plugin"
    listed = run_cli("list", "callback")
    assert listed.exit_code == 0 and "event_log_plugin" in listed.output and "tensorboard" in listed.output
    shown = run_cli("show", "callback", "event_log", "--json")
    assert [p["name"] for p in json.loads(shown.output)["parameters"]] == ["file", "fail_at"]


def test_callback_specs_are_checked_before_training(event_log, two_classes, tmp_path):
    values = config(two_classes)
    values["callbacks"] = [{"name": "event_logg"}, {"name": "tensorboard", "imgs": 2}, {"name": "event_log", "file": 3}]
    with pytest.raises(ConfigError) as error:
        dl.train(values, out=tmp_path / "run")
    assert error.value.problems == [
        "callbacks.0: unknown callback 'event_logg'; did you mean 'event_log'? (see `defectlab list callback`)",
        "callbacks.1.imgs: unknown parameter; did you mean 'images'?",
        "callbacks.2.file: expected str, got 3",
    ]
    assert not (tmp_path / "run").exists()


def test_a_failing_plugin_callback_is_named_and_the_run_is_kept(event_log, two_classes, tmp_path):
    values = config(two_classes, epochs=3)
    values["callbacks"][0]["fail_at"] = "epoch_end"  # the first epoch_end: epoch 1 is checkpointed
    with pytest.raises(PluginError) as error:
        dl.train(values, out=tmp_path / "run")
    message = str(error.value)
    assert message.startswith("callback 'event_log' of plugin 'event_log_plugin' failed in on_epoch_end: "
                              "ZeroDivisionError: division by zero. The training stopped; last.pt is kept")
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "failed" and status["message"] == message and status["epochs_done"] == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    with pytest.raises(PluginError, match="failed in on_epoch_end"):  # a resumed run keeps its [[callbacks]]
        dl.train(resume=tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    assert heard(tmp_path / "run").count("fit_start") == 2


def test_main_process_only_callbacks_hear_nothing_on_other_ranks():
    class Counter(dl.Callback):
        def __init__(self):
            self.calls = 0

        def on_epoch_end(self, trainer, record):
            self.calls += 1

    everywhere, rank_zero = Counter(), Counter()
    rank_zero.main_process_only = True
    events = Events([everywhere, rank_zero])
    for is_main in (True, False, False):  # rank 0 and two others
        events.fire("epoch_end", types.SimpleNamespace(world=types.SimpleNamespace(is_main=is_main)), {})
    assert (everywhere.calls, rank_zero.calls) == (3, 1)


def test_sweep_pretrain_and_tune_oii_pass_callbacks_through(event_log, defectlab_plugin, two_classes, tmp_path):
    base = {**config(two_classes), "train": {"epochs": 1, "lr": 0.05, "progress": False}}
    swept = dl.sweep(base, {"train.lr": [0.05, 0.1]}, out=tmp_path / "sweep")
    assert [heard(run.folder)[-1] for run in swept.runs] == ["fit_end", "fit_end"]

    defectlab_plugin(BrightnessPlugin(), "brightness_ssl")
    pretrained = dl.pretrain({**base, "ssl": {"name": "brightness"}}, out=tmp_path / "pretrain")
    assert heard(pretrained.folder).count("epoch_end") == 1 and (pretrained.folder / "encoder.pt").is_file()

    cracks = {"data": {"dataset": {"name": "synthetic_cracks", "count": 16, "size": 16, "defect_ratio": 0.05},
                       "image_size": 16, "channels": 1, "batch_size": 8, "augment": []},
              "model": {"name": "tiny_segnet", "in_chans": 1}, "loss": {"name": "tversky"},
              "train": {"epochs": 1, "progress": False, "monitor": "val/iou"}, "callbacks": base["callbacks"]}
    tuned = dl.tune_oii(cracks, max_trials=1, out=tmp_path / "tune")
    assert heard(Path(tuned.trials[0].folder))[-1] == "fit_end"
