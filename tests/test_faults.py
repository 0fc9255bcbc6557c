"""The fault battery: broken data, wrong configs, kills, full disks and broken plugins.

Each test is one case of issue 10. None of them may end in "This is a bug": a user's mistake or
environment gets one line that says what is wrong and what to do, and no finished work is lost.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import defectlab as dl
import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import write_two_class_folder

ROOT = Path(__file__).resolve().parents[1]
BUG = "This is a bug"


@pytest.fixture
def data(two_classes):
    return two_classes


def tiny_config(path: Path, data: Path, epochs: int = 2, **extra: str) -> Path:
    """A TOML config training tiny_cnn on ``data``."""
    lines = [f'[data]\ndataset = "{data}"\nimage_size = 16\nbatch_size = 8',
             '[model]\nname = "tiny_cnn"', f"[train]\nepochs = {epochs}\nlr = 0.05\nprogress = false"]
    path.write_text("\n".join(lines) + "\n" + "".join(f"{k} = {v}\n" for k, v in extra.items()))
    return path


def failed(result, *words: str) -> str:
    """The error output of a command that must have failed with exit 1, one line per problem, no bug report."""
    output = result.output if hasattr(result, "output") else result.stdout + result.stderr
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == 1, output
    assert BUG not in output and "Traceback" not in output, output
    for word in words:
        assert word in output, output
    return output


# --- 1. a run directory that holds a run is never overwritten ------------------------------------------

def test_a_finished_run_is_refused_and_kept(tiny, data, tmp_path, run_cli):
    config = tiny_config(tmp_path / "base.toml", data)
    assert run_cli("train", str(config), "--out", str(tmp_path / "old")).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir() if p.is_file()}
    again = run_cli("train", str(config), "--out", str(tmp_path / "old"))
    failed(again, "already holds the output of an earlier run", "--resume", "another --out", "--overwrite")
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir() if p.is_file()} == before
    replaced = run_cli("train", str(config), "--out", str(tmp_path / "old"), "--overwrite", "--set", "train.epochs=1")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((tmp_path / "old" / "run.json").read_text())["epochs_done"] == 1


def test_every_folder_a_workflow_fills_is_protected(tiny, data, tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli("train", str(tiny_config(tmp_path / "c.toml", data)), "--out", str(run)).exit_code == 0
    assert run_cli("evaluate", str(run), "--out", str(tmp_path / "ev")).exit_code == 0
    failed(run_cli("evaluate", str(run), "--out", str(tmp_path / "ev")), "already holds", "--overwrite")
    assert run_cli("evaluate", str(run), "--out", str(tmp_path / "ev"), "--overwrite").exit_code == 0
    assert run_cli("report", str(run), str(run), "--out", str(tmp_path / "cmp")).exit_code == 0
    failed(run_cli("report", str(run), str(run), "--out", str(tmp_path / "cmp")), "already holds")
    # a folder of the user's own is never emptied, not even with --overwrite
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    failed(run_cli("report", str(run), "--out", str(tmp_path / "mine"), "--overwrite"), "holds no defectlab output")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # predictions go outside runs, and an earlier CSV is not replaced silently
    failed(run_cli("predict", str(run), str(data), "--out", str(run / "p.csv")), "lies in the run folder")
    assert run_cli("predict", str(run), str(data), "--out", str(tmp_path / "p.csv")).exit_code == 0
    failed(run_cli("predict", str(run), str(data), "--out", str(tmp_path / "p.csv")), "already exist", "--overwrite")


def test_screen_and_tune_oii_refuse_a_used_folder_before_any_work(tmp_path, run_cli):
    used = tmp_path / "used"
    used.mkdir()
    (used / "config.json").write_text("{}")
    folder = write_two_class_folder(tmp_path / "a", per_class=3)
    started = time.perf_counter()
    failed(run_cli("screen", "--target", str(folder), "--source", str(folder), "--out", str(used)), "already holds")
    assert time.perf_counter() - started < 5  # refused before any signature was computed
    config = tmp_path / "seg.toml"
    config.write_text('[data]\ndataset = {name = "synthetic_cracks", count = 16, size = 16, defect_ratio = 0.05}\nimage_size = 16\n'
                      '[model]\nname = "segnet"\n[train]\nepochs = 1\n')
    failed(run_cli("tune-oii", str(config), "--out", str(used)), "already holds")


# --- 2. per-image outputs keep the relative path ------------------------------------------------------

def test_predicted_masks_keep_folders_apart(tiny, tmp_path, run_cli):
    run = dl.train({"data": {"dataset": {"name": "synthetic_cracks", "count": 16, "size": 16, "defect_ratio": 0.05}, "image_size": 16,
                             "channels": 1, "batch_size": 8},
                    "model": {"name": "tiny_segnet"}, "train": {"epochs": 1, "progress": False}}, out=tmp_path / "seg")
    inputs = tmp_path / "test"
    for folder, value in (("crack", 40), ("good", 200)):  # MVTec repeats 000.png in every folder
        (inputs / folder).mkdir(parents=True)
        Image.fromarray(np.full((16, 16), value, np.uint8)).save(inputs / folder / "000.png")
    result = run_cli("predict", str(run.folder), str(inputs), "--out", str(tmp_path / "out" / "p.csv"))
    assert result.exit_code == 0, result.output
    assert "2 predicted, 0 failed" in result.output
    masks = sorted(p.relative_to(tmp_path / "out" / "p_masks").as_posix()
                   for p in (tmp_path / "out" / "p_masks").rglob("*.png"))
    assert masks == ["crack/000.png", "good/000.png"]
    rows = (tmp_path / "out" / "p.csv").read_text().splitlines()[1:]
    assert len({row.split(",")[3] for row in rows}) == 2  # each row points at its own mask


def test_unique_names_for_inputs_that_collide(tmp_path):
    from defectlab.runtime.writing import image_inputs

    for name in ("a/x.png", "b/x.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    one = image_inputs([tmp_path / "a", tmp_path / "a" / "x.png"])
    assert [name for _, name in one] == ["a/x.png", "x.png"]
    both = image_inputs([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])
    assert [name for _, name in both] == ["x.png", "x-2.png"]


# --- 3. channels and in_chans follow each other -------------------------------------------------------

def test_grey_data_give_a_grey_model_and_a_mismatch_is_caught_by_validate(tiny, data, tmp_path, run_cli):
    run = dl.train(tiny_config(tmp_path / "c.toml", data), overrides=["data.channels=1"], out=tmp_path / "grey")
    assert run.status["status"] == "finished"
    assert run.config["model"]["in_chans"] == 1 and run.config["data"]["channels"] == 1
    ones = dl.train(tiny_config(tmp_path / "c.toml", data), overrides=["model.in_chans=1"], out=tmp_path / "g2")
    assert ones.config["data"]["channels"] == 1
    both = run_cli("validate", str(tiny_config(tmp_path / "c.toml", data)), "--set", "data.channels=1",
                   "--set", "model.in_chans=3")
    failed(both, "model.in_chans: 3 differs from data.channels = 1")


# --- 4. an image over the pixel limit is an unreadable image like any other -----------------------------

def test_an_image_over_the_pixel_limit_is_skipped_and_reported(tiny, data, tmp_path, run_cli, monkeypatch):
    big = data / "dark" / "dark_big.png"
    Image.fromarray(np.full((64, 64), 60, np.uint8)).save(big)
    monkeypatch.setenv("DEFECTLAB_MAX_IMAGE_PIXELS", "1000")  # 16x16 images pass, 64x64 does not
    with pytest.raises(dl.UnreadableImageError, match="over the limit of 1000 pixels"):
        dl.read_image(big)
    checked = run_cli("check-data", str(data))
    assert checked.exit_code == 0 and "dark/dark_big.png" in checked.output and "over the limit" in checked.output
    run = dl.train(tiny_config(tmp_path / "c.toml", data), out=tmp_path / "run")
    assert run.status["status"] == "finished"
    predicted = run_cli("predict", str(run.folder), str(data), "--out", str(tmp_path / "p.csv"))
    assert predicted.exit_code == 0 and "40 predicted, 1 failed" in predicted.output
    gini = run_cli("imbalance", "gini", "--data", str(data), "--json")
    assert json.loads(gini.output)["counts"] == [20.0, 20.0] and json.loads(gini.output)["unreadable"] == 1
    monkeypatch.setenv("DEFECTLAB_MAX_IMAGE_PIXELS", "none")
    assert dl.read_image(big).shape == (64, 64)


# --- 5. one class, and an empty class folder ------------------------------------------------------------

def test_one_class_is_refused_before_training(tiny, tmp_path, run_cli):
    data = write_two_class_folder(tmp_path / "data")
    for image in (data / "dark").iterdir():
        image.unlink()
    (data / "dark").rmdir()
    result = run_cli("train", str(tiny_config(tmp_path / "c.toml", data)), "--out", str(tmp_path / "run"))
    failed(result, "1 class(es) (bright)", "at least two")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_empty_class_folder_is_left_out_unless_named(tmp_path, caplog):
    data = write_two_class_folder(tmp_path / "data", per_class=3)
    (data / "cracked").mkdir()
    found = dl.open_dataset(str(data))
    assert found.classes == ["bright", "dark"] and found.class_counts() == [3, 3]
    assert "class folder(s) cracked hold no image and are left out" in caplog.text
    named = dl.create("dataset", {"name": "image_folder", "root": str(data), "classes": ["bright", "cracked", "dark"]})
    assert named.classes == ["bright", "cracked", "dark"] and named.class_counts() == [3, 0, 3]


def test_a_mask_over_the_pixel_limit_is_unreadable(tmp_path, monkeypatch):
    from defectlab_plugins.datasets.masks import read_mask

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "mask.png")
    monkeypatch.setenv("DEFECTLAB_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(dl.UnreadableImageError, match="cannot read mask .* over the limit"):
        read_mask(str(tmp_path / "mask.png"))


# --- 6. a failed write is the environment, not a bug -----------------------------------------------------

def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(tiny, data, tmp_path, run_cli, monkeypatch):
    from defectlab.plugin_system import files

    real_save, calls = torch.save, []

    def save(obj, target, *args, **kwargs):  # the second epoch's last.pt meets a full disk
        calls.append(target)
        if len(calls) == 3:
            Path(target).write_bytes(b"half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(files, "_free_bytes", lambda folder: 0)
    result = run_cli("train", str(tiny_config(tmp_path / "c.toml", data, epochs=3)), "--out", str(tmp_path / "run"))
    failed(result, "cannot write", "last.pt", "the disk is full")
    assert "inline_container" not in result.output
    assert dl.TrainSettings  # the package is still whole
    assert list((tmp_path / "run").glob(".*.tmp")) == []  # the temporary file is gone
    from defectlab.training.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # the last good checkpoint
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "failed" and "disk is full" in status["message"]


def test_permission_denied_names_the_path(tiny, data, tmp_path, run_cli, monkeypatch):
    run = tmp_path / "run"
    assert run_cli("train", str(tiny_config(tmp_path / "c.toml", data)), "--out", str(run)).exit_code == 0
    real_replace = os.replace

    def replace(source, target):
        if str(target).endswith("metrics.json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    result = run_cli("evaluate", str(run), "--out", str(tmp_path / "ev"))
    failed(result, "cannot write", "metrics.json", "Permission denied")


def test_output_into_a_full_pipe_is_one_line():
    result = subprocess.run(f"{Path(sys.executable).with_name('defectlab')} list --json > /dev/full", shell=True,
                            capture_output=True, text=True, timeout=120)
    failed(result, "cannot write the output: the disk is full")


def test_leftover_temporary_files_are_cleaned_on_resume(tiny, data, tmp_path):
    from tests.test_engine import stop_after

    with pytest.raises(dl.TrainingError):
        dl.train(tiny_config(tmp_path / "c.toml", data, epochs=3), out=tmp_path / "run", callbacks=[stop_after(1)])
    leftover = tmp_path / "run" / ".last.pt.99999.tmp"
    leftover.write_bytes(b"killed mid-write")
    dl.train(resume=tmp_path / "run")
    assert not leftover.exists()


# --- 7. run.json says how every run ended ------------------------------------------------------------------

def test_an_unexpected_error_marks_the_run_failed(tiny, defectlab_plugin, data, tmp_path):
    class Exploding(torch.nn.Module):
        """Cross-entropy that raises on its third call.

        Args:
            calls: Calls before it raises.
        """

        name = "exploding"

        def __init__(self, calls: int = 3):
            super().__init__()
            self.calls = calls

        def forward(self, pred, target):
            self.calls -= 1
            if self.calls < 0:
                raise RuntimeError("a bug in a loss")
            return torch.nn.functional.cross_entropy(pred, target)

    defectlab_plugin(type("P", (), {"register_losses": dl.hookimpl(lambda self: [Exploding])})(), "exploding")
    with pytest.raises(RuntimeError, match="a bug in a loss"):
        dl.train(tiny_config(tmp_path / "c.toml", data), overrides=['loss.name="exploding"'], out=tmp_path / "run")
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "failed" and status["message"] == "RuntimeError: a bug in a loss"


TRAIN_SCRIPT = """
import sys
from tests.tiny_models import TinyModels
from defectlab.plugin_system.loading import get_loader
get_loader().add_plugin(TinyModels(), "tiny_models")
from defectlab.cli.main import main
main(sys.argv[1:])
"""


def test_sigterm_is_an_interruption_that_can_be_resumed(data, tmp_path):
    config = tiny_config(tmp_path / "c.toml", data, epochs=200)
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, "train", str(config), "--out", str(run)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and BUG not in stderr, stderr
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted" and f"defectlab train --resume {run}" in status["message"]
    assert "--resume" in stderr


# --- 8. ranges are checked with everything else, all at once ---------------------------------------------

def test_validate_reports_every_range_at_once(tiny, data, tmp_path, run_cli):
    config = tmp_path / "bad.toml"
    config.write_text(textwrap.dedent(f"""
        [data]
        dataset = "{data}"
        batch_size = 0
        image_size = 0
        split = [0.7, 0.3, 0.2]
        [model]
        name = "resnet18"
        head_dropout = 1.5
        [train]
        epochs = -2
        lr = 0
    """))
    output = failed(run_cli("validate", str(config)))
    for line in ("data.batch_size: must be >= 1, got 0", "data.image_size: must be >= 1, got 0",
                 "data.split: split needs 2 or 3 fractions >= 0 that sum to 1", "model.head_dropout: must be in [0, 1)",
                 "train.epochs: must be >= 1, got -2", "train.lr: must be > 0, got 0"):
        assert line in output
    assert "6 problem(s)" in output
    training = run_cli("train", str(config), "--out", str(tmp_path / "never"))
    failed(training, "6 problem(s)")
    assert not (tmp_path / "never").exists()


# --- 9. named weights without the network: one clear error for every backbone --------------------------------

@pytest.mark.parametrize("spec", [{"name": "resnet18", "weights": "imagenet"},
                                  {"name": "unet", "encoder": "resnet18", "weights": "imagenet"}])
def test_named_weights_offline_say_how_to_use_a_local_file(spec):
    with pytest.raises(dl.DataError, match="HF_HUB_OFFLINE.*weights='weights.pt'"):
        dl.create("backbone", spec)


def test_a_failed_download_says_how_to_use_a_local_file(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(dl.DataError, match=r"could not download weights='imagenet' for unet \(ConnectionError: "
                                           r"network down\); train without them.*download them once.*local"):
        with dl.downloading_weights("imagenet", "unet"):
            raise ConnectionError("network down")


@pytest.mark.parametrize("spec", [{"name": "resnet18", "weights": "imagenet"},
                                  {"name": "unet", "encoder": "resnet18", "weights": "imagenet"}])
def test_named_weights_without_the_network_fail_fast_naming_both_ways_out(spec, monkeypatch, tmp_path):
    from huggingface_hub import constants

    def no_network(address, timeout=None, *args, **kwargs):
        assert timeout is not None and timeout <= 2  # one short look, not the hub's retries
        raise TimeoutError("timed out")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("socket.create_connection", no_network)
    started = time.perf_counter()
    with pytest.raises(dl.DataError, match=r"huggingface.co:443 did not answer within 2 s") as raised:
        dl.create("backbone", spec)
    assert time.perf_counter() - started < 10
    assert "--set model.weights=none" in str(raised.value) and "HF_HUB_OFFLINE=1" in str(raised.value)


def test_named_weights_in_the_hub_cache_need_no_network(monkeypatch, tmp_path):
    from defectlab.training import weights
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert not weights.hub_cached("timm/resnet18.tv_in1k")
    (tmp_path / "models--timm--resnet18.tv_in1k" / "snapshots" / "0123abc").mkdir(parents=True)
    assert weights.hub_cached("timm/resnet18.tv_in1k")
    monkeypatch.setattr(weights, "hub_reachable", lambda: pytest.fail("the cache needs no network check"))
    weights.check_download("imagenet", "resnet18", "timm/resnet18.tv_in1k")  # offline too: passes


def test_a_run_that_fails_before_training_removes_only_the_folder_it_made(tiny, data, tmp_path, run_cli,
                                                                       monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "no-cache"))
    monkeypatch.chdir(tmp_path)
    train = ["train", str(tiny_config(tmp_path / "c.toml", data)), "--set", 'model.name="resnet18"',
             "--set", 'model.weights="imagenet"']  # refused while the model is built: offline, not in the cache
    failed(run_cli(*train, "--out", "fresh"), "HF_HUB_OFFLINE")
    assert not (tmp_path / "fresh").exists()
    failed(run_cli(*train), "HF_HUB_OFFLINE")
    assert list((tmp_path / "runs").iterdir()) == []  # no runs/train-<time> left behind
    (tmp_path / "mine").mkdir()
    failed(run_cli(*train, "--out", "mine"), "HF_HUB_OFFLINE")
    assert (tmp_path / "mine").is_dir()  # it was there before: never removed


# --- 10. smaller ones ----------------------------------------------------------------------------------------

def test_list_with_an_unknown_kind_or_name_is_an_error(run_cli):
    failed(run_cli("list", "nokind", "x"), "unknown kind 'nokind'")
    failed(run_cli("list", "dibee"), "no component or kind is named 'dibee'; did you mean 'dibe'")
    failed(run_cli("list", "loss", "dibee"), "no loss component is named 'dibee'; did you mean 'dibe'")
    nothing = run_cli("list", "loss", "zz*")
    assert nothing.exit_code == 0 and "no loss component matches 'zz*'" in nothing.output


def test_predict_with_nothing_readable_fails(tiny, data, tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli("train", str(tiny_config(tmp_path / "c.toml", data)), "--out", str(run)).exit_code == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not an image")
    (broken / "b.png").write_bytes(b"nor this")
    failed(run_cli("predict", str(run), str(broken), "--out", str(tmp_path / "p.csv")), "none of the 2 images")
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 3  # the CSV still lists why


def test_a_refused_checkpoint_is_one_line(tiny, data, tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli("train", str(tiny_config(tmp_path / "c.toml", data)), "--out", str(run)).exit_code == 0

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"model": Payload()}, run / "best.pt")
    result = run_cli("predict", str(run), str(data), "--out", str(tmp_path / "p.csv"))
    output = failed(result, "is not a defectlab checkpoint", "refused as unsafe")
    assert len(output.strip().splitlines()) == 1 and "this must never run" not in output
    (run / "best.pt").write_bytes((run / "last.pt").read_bytes()[:100])
    failed(run_cli("predict", str(run), str(data), "--out", str(tmp_path / "q.csv")), "truncated")


def test_tune_oii_refuses_a_classification_config_before_training(tiny, data, tmp_path, run_cli):
    result = run_cli("tune-oii", str(tiny_config(tmp_path / "c.toml", data)), "--out", str(tmp_path / "tune"))
    failed(result, "tune-oii tunes a segmentation loss", "'classify'")
    assert not (tmp_path / "tune").exists()


def test_a_missing_init_from_is_a_config_error_and_a_failed_start_can_be_rerun(tiny, data, tmp_path, run_cli):
    config = tiny_config(tmp_path / "c.toml", data)
    failed(run_cli("train", str(config), "--init-from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")),
           "train.init_from", "neither a run directory nor a weights file")
    other = tmp_path / "other.pt"
    torch.save({"unrelated.weight": torch.zeros(3)}, other)
    failed(run_cli("train", str(config), "--init-from", str(other), "--out", str(tmp_path / "run")), "fit")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    failed(run_cli("train", "--resume", str(tmp_path / "run")), "no last.pt")
    rerun = run_cli("train", str(config), "--out", str(tmp_path / "run"))  # nothing was learnt: no --overwrite needed
    assert rerun.exit_code == 0, rerun.output


def test_a_third_party_metric_that_raises_is_named(defectlab_plugin, run_cli):
    class Fragile:
        """Fails on two classes."""

        name = "fragile"
        scope = "input"

        def __call__(self, counts):
            return 1 / (len(counts) - 2)

    plugin = type("FragilePlugin", (), {"register_imbalance_metrics": dl.hookimpl(lambda self: [Fragile])})()
    plugin.__module__ = __name__
    defectlab_plugin(plugin, "fragile_metrics")
    from defectlab.plugin_system.loading import get_loader

    get_loader().registry.plugins["fragile_metrics"].module = __name__
    result = run_cli("imbalance", "fragile", "--counts", "3,4")
    assert result.exit_code == 1
    assert "plugin 'fragile_metrics' raised ZeroDivisionError" in result.output
    assert "not in your input" in result.output and "DEFECTLAB_DISABLE_PLUGINS=fragile_metrics" in result.output


# --- 11. a component that breaks its contract is named at its first use ------------------------------------

class TupleNet(torch.nn.Module):
    """Returns (logits, features): breaks the backbone contract.

    Args:
        num_classes: Logits.
        in_chans: Channels.
        weights: Unused.
    """

    name = "tuple_net"
    tasks = ("classify",)

    def __init__(self, num_classes: int = 2, in_chans: int = 3, weights: str | None = None):
        super().__init__()
        self.fc = torch.nn.Linear(in_chans, num_classes)

    def forward(self, x):
        features = x.mean((2, 3))
        return self.fc(features), features


class PerPixelLoss(torch.nn.Module):
    """Cross-entropy without reduction: breaks the loss contract."""

    name = "per_sample_ce"

    def forward(self, pred, target):
        return torch.nn.functional.cross_entropy(pred, target, reduction="none")


class TensorScores:
    """Returns a tensor from compute(): breaks the evaluator contract.

    Args:
        shape: 'tensor', 'int' or 'nested'.
    """

    name = "odd_scores"

    def __init__(self, shape: str = "tensor"):
        self.shape = shape

    def reset(self):
        pass

    def update(self, pred, target):
        pass

    def compute(self):
        return {"tensor": torch.tensor([1.0, 2.0]), "int": 3, "nested": {"a": {"b": 1.0}}}[self.shape]


class Breakers:
    @dl.hookimpl
    def register_backbones(self):
        return [TupleNet]

    @dl.hookimpl
    def register_losses(self):
        return [PerPixelLoss]

    @dl.hookimpl
    def register_evaluators(self):
        return [TensorScores]


@pytest.mark.parametrize("override, rule", [
    ('model.name="tuple_net"', "backbone 'tuple_net' of plugin 'breakers' breaks its contract: forward() must "
                               "return one tensor of logits, but returned a tuple"),
    ('loss.name="per_sample_ce"', "loss 'per_sample_ce' of plugin 'breakers' breaks its contract: forward(pred, "
                                  "target) must return a scalar tensor, but returned (8,)"),
    ('evaluators=[{name="odd_scores"}]', "evaluator 'odd_scores' of plugin 'breakers' breaks its contract: "
                                         "compute() must return a dict of score names to numbers, but returned a "
                                         "Tensor"),
    ('evaluators=[{name="odd_scores", shape="int"}]', "but returned a int"),
    ('evaluators=[{name="odd_scores", shape="nested"}]', "but 'a' is a dict"),
])
def test_a_broken_contract_names_the_plugin_and_the_rule(tiny, defectlab_plugin, data, tmp_path, run_cli,
                                                          override, rule):
    defectlab_plugin(Breakers(), "breakers")
    result = run_cli("train", str(tiny_config(tmp_path / "c.toml", data)), "--set", override,
                     "--out", str(tmp_path / "run"))
    failed(result, rule)
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "failed" and "breaks its contract" in status["message"]


# --- a kill while a checkpoint is written, then a resume -----------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys
import torch
from tests.tiny_models import TinyModels
from defectlab.plugin_system.loading import get_loader
get_loader().add_plugin(TinyModels(), "tiny_models")
real_save, calls = torch.save, []

def save(obj, target, *args, **kwargs):  # killed halfway through writing epoch 2's last.pt
    calls.append(target)
    if len(calls) == 3:
        with open(target, "wb") as handle:
            handle.write(b"PK half a zip archive")
            handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, target, *args, **kwargs)

torch.save = save
from defectlab.cli.main import main
main(sys.argv[1:])
"""


def test_sigkill_while_writing_a_checkpoint_then_resume_matches_an_uninterrupted_run(tiny, data, tmp_path):
    from defectlab.training.checkpoints import load_checkpoint

    config = tiny_config(tmp_path / "c.toml", data, epochs=3)
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, "train", str(config), "--out", str(tmp_path / "k")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list((tmp_path / "k").glob(".last.pt.*.tmp")), "the kill left its half-written file"
    assert load_checkpoint(tmp_path / "k" / "last.pt")["epoch"] == 1  # last.pt itself is whole
    resumed = dl.train(resume=tmp_path / "k")
    assert not list((tmp_path / "k").glob(".*.tmp"))
    straight = dl.train(config, out=tmp_path / "straight")
    a = load_checkpoint(straight.folder / "last.pt")["model"]
    b = load_checkpoint(resumed.folder / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
