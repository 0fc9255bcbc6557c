"""The yolov5 backbone on ultralytics: offline build, the shared detection convention, transfer of
model.model[0:10], a frozen backbone, training by ultralytics' trainer into a defectlab run, resume, stages.

Skipped as a whole when ultralytics (the optional extra defectlab[yolo]) is not installed; the
message without it is tested by hiding the module.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason='ultralytics is not installed: pip install "defectlab[yolo]"')

torch = pytest.importorskip("torch")

BACKBONE = tuple(f"model.model.{layer}." for layer in range(10))
IMAGE = 64


def write_yolo_folder(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A YOLO layout of 64x64 grey-noise images with one dark (class 0) and one bright (class 1) square each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts = counts or {"train": 8, "val": 4, "test": 4}
    for split, count in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index in range(count):
            image = (rng.random((IMAGE, IMAGE, 3)) * 60 + 90).astype(np.uint8)
            lines = []
            for label, value in ((0, 20), (1, 235)):
                size = int(rng.integers(12, 28))
                x, y = (int(v) for v in rng.integers(0, IMAGE - size, 2))
                image[y:y + size, x:x + size] = value
                lines.append(f"{label} {(x + size / 2) / IMAGE} {(y + size / 2) / IMAGE} {size / IMAGE} {size / IMAGE}")
            Image.fromarray(image).save(root / "images" / split / f"{index}.png")
            (root / "labels" / split / f"{index}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\n" + (
        "test: images/test\n" if "test" in counts else "") + "names: [dark, bright]\n")
    return root


@pytest.fixture
def squares(tmp_path: Path) -> Path:
    return write_yolo_folder(tmp_path / "squares")


def config(data: Path, epochs: int = 1, **model) -> dict:
    return {"data": {"dataset": str(data), "image_size": IMAGE, "batch_size": 8, "augment": []},
            "model": {"name": "yolov5", **model},
            "train": {"epochs": epochs, "device": "cpu", "progress": False}}


def detector(num_classes: int = 2, seed: int = 0, **options):
    import defectlab as dl

    torch.manual_seed(seed)
    return dl.create("backbone", {"name": "yolov5", "num_classes": num_classes, **options})


def backbone_names(state: dict) -> set[str]:
    return {name for name in state if name.startswith(BACKBONE)}


# --- the environment ------------------------------------------------------------------------------------

def test_without_ultralytics_the_error_says_how_to_install(monkeypatch):
    import defectlab as dl
    from defectlab_plugins.yolov5 import environment

    monkeypatch.setattr(environment, "_prepared", False)
    for name in [n for n in sys.modules if n == "ultralytics" or n.startswith("ultralytics.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics now raises ImportError
    with pytest.raises(dl.DefectlabError, match=r'pip install "defectlab\[yolo\]"') as error:
        dl.create("backbone", {"name": "yolov5", "num_classes": 2})
    assert "AGPL-3.0" in str(error.value)


def test_builds_offline_in_a_fresh_process_without_touching_the_user_settings(tmp_path):
    """YOLO_OFFLINE and the config folder set by the plugin, Arial from matplotlib, OMP_NUM_THREADS kept
    unset, torch's threads unchanged, and not one connection tried (all of them fail here)."""
    script = textwrap.dedent("""
        import json, os, socket
        tried = []
        def refuse(*args, **kwargs):
            tried.append(repr(args[:2]))
            raise OSError("network unreachable (test)")
        socket.socket.connect = refuse
        socket.getaddrinfo = refuse
        socket.create_connection = refuse
        import torch
        threads = torch.get_num_threads()
        import defectlab as dl
        model = dl.create("backbone", {"name": "yolov5", "num_classes": 3, "size": "n"}).eval()
        out = model(torch.zeros(1, 3, 64, 64))
        folder = os.environ["YOLO_CONFIG_DIR"]
        print(json.dumps({"tried": tried, "offline": os.environ.get("YOLO_OFFLINE"), "folder": folder,
                          "fonts": sorted(os.listdir(os.path.join(folder, "Ultralytics"))),
                          "omp": os.environ.get("OMP_NUM_THREADS"), "threads": [threads, torch.get_num_threads()],
                          "outputs": len(out)}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "OMP_NUM_THREADS")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tried"] == []
    assert report["offline"] == "true"
    assert report["folder"] == str(tmp_path / "cache" / "defectlab" / "ultralytics")
    assert {"Arial.ttf", "Arial.Unicode.ttf"} <= set(report["fonts"])
    assert report["omp"] is None
    assert report["threads"][0] == report["threads"][1]
    assert report["outputs"] == 1


def test_an_unreadable_image_stays_a_defectlab_error_after_ultralytics_is_imported(tmp_path):
    """ultralytics replaces PIL.Image.open with one that tries to pip-install pi-heif on an unidentified file;
    the plugin puts Pillow's back, so a broken image is still an UnreadableImageError naming the file."""
    import defectlab as dl
    from PIL import Image

    detector()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert Image.open.__module__.startswith("PIL")
    with pytest.raises(dl.UnreadableImageError, match="broken.png"):
        dl.read_image(tmp_path / "broken.png")


def test_a_user_setting_is_kept_and_a_true_spelling_becomes_true(monkeypatch, tmp_path):
    from defectlab_plugins.yolov5.environment import offline_environment

    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    offline_environment()
    assert os.environ["YOLO_OFFLINE"] == "true"
    assert os.environ["YOLO_CONFIG_DIR"] == str(tmp_path / "mine")
    monkeypatch.setenv("YOLO_OFFLINE", "false")  # the user wants ultralytics online: left alone
    offline_environment()
    assert os.environ["YOLO_OFFLINE"] == "false"


# --- the network ----------------------------------------------------------------------------------------

def test_the_component_is_a_detect_backbone_of_five_sizes():
    import defectlab as dl

    assert dl.get_component("backbone", "yolov5").obj.tasks == ("detect",)
    with pytest.raises(dl.ParameterError, match="'n'.*'x'"):
        dl.create("backbone", {"name": "yolov5", "size": "q"})


@pytest.mark.parametrize("size, millions", [("n", 2.6), ("s", 9.1), ("m", 25.1)])
def test_sizes_are_ultralytics_v5u_networks(size, millions):
    """Parameters at 80 classes as ultralytics' YOLOv5u table gives them (yolov5nu 2.6 M, su 9.1 M, mu 25.1 M)."""
    model = detector(num_classes=80, size=size)
    assert int(sum(p.numel() for p in model.parameters()) / 1e5) / 10 == millions  # the table truncates
    assert type(model.model.model[-1]).__name__ == "Detect"  # anchor-free head (v5u), not v5's anchors


@pytest.mark.parametrize("normalize, channels, mean, std", [
    ("imagenet", 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("imagenet", 1, (0.449,), (0.226,)),
    ("none", 3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
])
def test_the_data_normalisation_is_learnt_and_undone(normalize, channels, mean, std):
    import defectlab as dl

    model = detector(in_chans=channels)
    transform = dl.ImageTransform(IMAGE, channels, normalize, task="detect")
    model.take_normalisation(transform)
    assert model.input_mean.tolist() == pytest.approx(mean, abs=1e-6)
    assert model.input_std.tolist() == pytest.approx(std, abs=1e-6)
    pixels = np.random.default_rng(0).integers(0, 256, (IMAGE, IMAGE, 3) if channels == 3 else (IMAGE, IMAGE),
                                               dtype=np.uint8)
    back = model.pixels(transform(pixels)[None])[0]
    expected = torch.tensor(pixels, dtype=torch.float32).reshape(IMAGE, IMAGE, channels).permute(2, 0, 1) / 255
    assert torch.allclose(back, expected, atol=1e-5)


def test_eval_output_follows_the_shared_convention_and_is_ultralytics_nms():
    """One dict per image (boxes xyxy in pixels within the image, scores, long labels), equal to ultralytics'
    own network and NMS (its validator's settings) on the un-normalised pixels."""
    import defectlab as dl
    from ultralytics.utils.nms import non_max_suppression

    model = detector(num_classes=3).eval()
    transform = dl.ImageTransform(IMAGE, 3, "imagenet", task="detect")
    model.take_normalisation(transform)
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) for _ in range(2)]
    images = torch.stack([transform(p) for p in pixels])
    with torch.no_grad():
        out = model(images)
        raw = torch.stack([torch.tensor(p, dtype=torch.float32).permute(2, 0, 1) / 255 for p in pixels])
        reference = non_max_suppression(model.model(raw), 0.001, 0.7, multi_label=True, max_det=300)
    assert isinstance(out, list) and len(out) == 2
    for found, rows in zip(out, reference):
        assert set(found) == {"boxes", "scores", "labels"}
        n = len(rows)
        assert n > 0
        assert found["boxes"].shape == (n, 4) and found["boxes"].dtype == torch.float32
        assert found["scores"].shape == (n,) and found["labels"].dtype == torch.long
        boxes = found["boxes"]
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert boxes.min() >= 0 and boxes.max() <= IMAGE
        assert torch.allclose(boxes, rows[:, :4].clamp(0, IMAGE), atol=1e-4)
        assert torch.allclose(found["scores"], rows[:, 4], atol=1e-6)
        assert torch.equal(found["labels"], rows[:, 5].long())
        assert ((found["labels"] >= 0) & (found["labels"] < 3)).all()


def test_targets_become_ultralytics_batches():
    """A box (10, 10, 30, 40) in a 64x64 image is centre (20, 25), size (20, 30): /64 each."""
    from defectlab_plugins.yolov5.detector import ultralytics_batch

    x = torch.zeros(2, 3, 64, 64)
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
               {"boxes": torch.tensor([[10.0, 10, 30, 40], [0, 0, 64, 32]]), "labels": torch.tensor([2, 0])}]
    batch = ultralytics_batch(x, targets)
    expected = torch.tensor([[20 / 64, 25 / 64, 20 / 64, 30 / 64], [0.5, 0.25, 1.0, 0.5]])
    assert torch.allclose(batch["bboxes"], expected)
    assert batch["cls"].flatten().tolist() == [2.0, 0.0]
    assert batch["batch_idx"].tolist() == [1.0, 1.0]


def test_training_mode_returns_ultralytics_losses_per_image():
    """model(images, targets) gives box, cls and dfl losses: ultralytics' loss divided by the batch size,
    with gradients, so defectlab's engine could train the network too."""
    from defectlab_plugins.yolov5.detector import ultralytics_batch

    model = detector(num_classes=3).train()
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8, 40, 40]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 4, 60, 30]]), "labels": torch.tensor([2])}]
    losses = model(images, targets)
    assert set(losses) == {"box_loss", "cls_loss", "dfl_loss"}
    total, parts = model.model.loss(ultralytics_batch(images, targets))
    for index, name in enumerate(parts):
        assert float(losses[name].detach()) == pytest.approx(float(total[index].detach()) / 2, rel=1e-5)
    sum(losses.values()).backward()
    assert model.model.model[0].conv.weight.grad.abs().sum() > 0


# --- weights and transfer -------------------------------------------------------------------------------

def test_transfer_loads_exactly_the_backbone_tensors(tmp_path):
    """From a defectlab checkpoint and from an ultralytics .pt: the model.model[0:10] tensors, nothing else."""
    from defectlab_plugins.yolov5.training import transfer_backbone

    source = detector(num_classes=5, seed=1)
    with torch.no_grad():  # BatchNorm statistics of the source differ from a fresh network's too
        for name, buffer in source.named_buffers():
            if "running_mean" in name:
                buffer.normal_()
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "best.pt")
    torch.save(source.ultralytics_checkpoint(), tmp_path / "yolov5nu-like.pt")
    wanted = backbone_names(source.state_dict())
    assert len(wanted) > 100
    for file in ("best.pt", "yolov5nu-like.pt"):
        target = detector(num_classes=2, seed=2)
        before = {k: v.clone() for k, v in target.state_dict().items()}
        report = transfer_backbone(target, tmp_path / file)
        assert set(report.loaded) == wanted
        after = target.state_dict()
        for name, tensor in after.items():
            if name in wanted:
                assert torch.equal(tensor, source.state_dict()[name]), name
            else:
                assert torch.equal(tensor, before[name]), name
        assert not report.skipped
        assert any(".24." in name for name in report.unused)  # the source's Detect head is left behind


def test_init_from_a_run_directory_goes_through_the_core(tmp_path):
    """defectlab.init_backbone_from reads a run's best.pt and loads only the backbone_prefixes."""
    import defectlab as dl

    source = detector(num_classes=2, seed=3)
    (tmp_path / "run").mkdir()
    torch.save({"model": source.state_dict()}, tmp_path / "run" / "best.pt")
    target = detector(num_classes=2, seed=4)
    report = dl.init_backbone_from(target, tmp_path / "run")
    assert set(report.loaded) == backbone_names(source.state_dict())
    assert len(report.unused) == len(source.state_dict()) - len(report.loaded)


def test_weights_file_loads_what_fits_and_reports_the_head(tmp_path):
    """weights= an ultralytics .pt of 80 classes into 2 classes: everything loads but the class branch of the
    Detect head (its hidden width follows the class count: 80 there, 64 here), which is reported as skipped."""
    source = detector(num_classes=80, seed=5)
    torch.save(source.ultralytics_checkpoint(), tmp_path / "coco.pt")
    model = detector(num_classes=2, seed=6, weights=str(tmp_path / "coco.pt"))
    report = model.weights_report
    assert report.skipped and all(name.startswith("model.model.24.cv3.") for name in report.skipped)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    fitting = {f"model.{name}" for name, tensor in source.model.state_dict().items()
               if shapes.get(f"model.{name}") == tuple(tensor.shape)}
    assert set(report.loaded) == fitting
    assert backbone_names(source.state_dict()) <= fitting
    for name in report.loaded:
        assert torch.equal(model.state_dict()[name], source.state_dict()[name])
    assert set(report.missing) == {"input_mean", "input_std"}  # all else was loaded or skipped


def test_a_file_that_is_no_weights_is_one_clear_error(tmp_path):
    import defectlab as dl

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(dl.DataError, match="notes.pt"):
        detector(weights=str(tmp_path / "notes.pt"))


# --- ultralytics' train() arguments ---------------------------------------------------------------------

def arguments_for(tmp_path, model=None, **settings):
    import defectlab as dl
    from defectlab_plugins.yolov5.training import UltralyticsTraining

    data = SimpleNamespace(transform=dl.ImageTransform(IMAGE, 3), batch_size=4, workers=0)
    training = UltralyticsTraining(model or detector(), tmp_path, data, dl.TrainSettings(**settings), {})
    return training._arguments(tmp_path / "data.yaml")


def test_train_settings_become_ultralytics_arguments(tmp_path):
    arguments = arguments_for(tmp_path, epochs=7, lr=0.02, min_lr=0.001, optimizer="sgd", device="cpu",
                              warmup_epochs=2, seed=5, linear_probe=True)
    assert arguments["epochs"] == 7 and arguments["imgsz"] == IMAGE and arguments["batch"] == 4
    assert arguments["optimizer"] == "SGD" and arguments["lr0"] == 0.02
    assert arguments["cos_lr"] is True and arguments["lrf"] == pytest.approx(0.05)  # 0.001 / 0.02
    assert arguments["amp"] is False and arguments["device"] == "cpu"
    assert arguments["freeze"] == 10  # linear probing freezes model.model[0:10]
    assert arguments["patience"] == 0  # defectlab stops early by train.monitor, not ultralytics
    assert Path(arguments["project"]).is_absolute() and arguments["name"] == "ultralytics"
    assert arguments_for(tmp_path, schedule="constant", device="cpu")["lrf"] == 1.0
    # one optimiser step per train.accumulate batches, not per ultralytics' nominal 64 images
    assert arguments["nbs"] == 4 and arguments_for(tmp_path, accumulate=3, device="cpu")["nbs"] == 12


def test_train_args_are_checked(tmp_path):
    import defectlab as dl

    assert arguments_for(tmp_path, model=detector(train_args={"mosaic": 0.0}), device="cpu")["mosaic"] == 0.0
    with pytest.raises(dl.DataError, match="did you mean 'mosaic'"):
        arguments_for(tmp_path, model=detector(train_args={"mosiac": 0.0}), device="cpu")
    with pytest.raises(dl.DataError, match=r"train_args\.epochs: defectlab sets it"):
        arguments_for(tmp_path, model=detector(train_args={"epochs": 3}), device="cpu")
    with pytest.raises(dl.DataError, match="no step schedule"):
        arguments_for(tmp_path, schedule="step", device="cpu")
    with pytest.raises(dl.DataError, match=r"train_args\.nbs: defectlab sets it.*train\.accumulate"):
        arguments_for(tmp_path, model=detector(train_args={"nbs": 64}), device="cpu")


def test_mixed_precision_never_needs_a_download(monkeypatch, tmp_path):
    """CPU: off. GPU: float16 only when ultralytics' AMP check finds yolo26n.pt locally, else bfloat16 where the
    GPU has it, else off."""
    from defectlab_plugins.yolov5.training import mixed_precision
    from ultralytics.utils import SETTINGS

    assert mixed_precision(True, "cpu") is False
    assert mixed_precision(False, "0") is False
    monkeypatch.setitem(SETTINGS, "weights_dir", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert mixed_precision(True, "0") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert mixed_precision(True, "0") is False
    (tmp_path / "yolo26n.pt").write_bytes(b"")
    assert mixed_precision(True, "0") is True


def test_files_at_the_image_size_are_linked_others_written_resized(tmp_path):
    """A grey or RGB file already at the data module's size is ultralytics' input as it is; any other size,
    a 16-bit image or an EXIF rotation is written again at the size."""
    from PIL import Image

    from defectlab_plugins.yolov5.training import is_model_image

    Image.new("L", (64, 64)).save(tmp_path / "grey.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "wide.png")
    Image.new("I;16", (64, 64)).save(tmp_path / "deep.png")
    rotated = Image.new("RGB", (64, 64))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    (tmp_path / "broken.png").write_bytes(b"no image")
    assert is_model_image(str(tmp_path / "grey.png"), 64, 64)
    assert not is_model_image(str(tmp_path / "wide.png"), 64, 64)
    assert not is_model_image(str(tmp_path / "deep.png"), 64, 64)
    assert not is_model_image(str(tmp_path / "rotated.jpg"), 64, 64)
    assert not is_model_image(str(tmp_path / "broken.png"), 64, 64)
    assert not is_model_image(None, 64, 64)


def test_results_csv_becomes_metric_records(tmp_path):
    """Names as defectlab's, loss sums, epoch seconds from the cumulative time (which restarts on resume)."""
    from defectlab_plugins.yolov5.training import results_records

    columns = ["epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
               "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
               "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2"]
    rows = [[1, 2.0, 1.0, 2.0, 0.5, 0.25, 0.5, 0.4, 0.2, 1.5, 2.5, 0.5, 0.01, 0.01, 0.01],
            [2, 5.0, 0.9, 1.8, 0.4, 0.5, 0.6, 0.5, 0.3, 1.4, 2.4, 0.4, 0.009, 0.009, 0.009],
            [2, 4.0, 0.8, 1.7, 0.3, 0.5, 0.7, 0.6, 0.35, 1.3, 2.3, 0.3, 0.008, 0.008, 0.008]]  # resumed: epoch 2 again
    with (tmp_path / "results.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([columns, *rows])
    records = results_records(tmp_path / "results.csv", train_images=8)
    assert [r["epoch"] for r in records] == [1, 2, 2]
    first = records[0]
    assert first["train/loss"] == pytest.approx(3.5) and first["val/loss"] == pytest.approx(4.5)
    assert (first["val/precision"], first["val/recall"], first["val/map_50"], first["val/map"]) == (0.25, 0.5, 0.4, 0.2)
    assert first["lr"] == 0.01 and first["seconds"] == 2.0 and first["images_per_s"] == 4.0
    assert records[1]["seconds"] == 3.0
    assert records[2]["seconds"] == 4.0  # the clock restarted


# --- training by ultralytics into a defectlab run -------------------------------------------------------

def refuse_network(monkeypatch) -> list[str]:
    """Every socket connection fails and is recorded."""
    import socket

    tried: list[str] = []

    def refuse(*args, **kwargs):
        tried.append(repr(args[:2]))
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return tried


def test_one_epoch_writes_the_run_directory_offline(squares, tmp_path, monkeypatch):
    import defectlab as dl

    (squares / "images" / "train" / "broken.png").write_bytes(b"not an image")  # left out, named in run.json
    tried = refuse_network(monkeypatch)
    run = dl.train(config(squares), out=tmp_path / "run")
    folder = run.folder
    assert tried == []
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "run.json", "report.html", "splits.csv",
                 "eval/test/metrics.json", "ultralytics/weights/last.pt", "ultralytics/results.csv",
                 "yolo-data/data.yaml"):
        assert (folder / name).is_file(), name
    status = run.status
    assert status["status"] == "finished" and status["epochs_done"] == 1
    assert status["skipped_images"] == ["images/train/broken.png"]
    assert status["best"]["monitor"] == "val/map_50"
    assert status["evaluation"]["split"] == "test"
    assert {"map_50", "map"} <= set(status["evaluation"]["scores"])
    [record] = run.metrics
    with (folder / "ultralytics" / "results.csv").open() as handle:
        [row] = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(handle)]
    assert record["val/map_50"] == row["metrics/mAP50(B)"] and record["val/map"] == row["metrics/mAP50-95(B)"]
    assert record["train/loss"] == pytest.approx(row["train/box_loss"] + row["train/cls_loss"] + row["train/dfl_loss"])
    assert record["best"] is True
    # the data ultralytics trained on: the data module's splits at its image size
    from PIL import Image

    images = sorted((folder / "yolo-data" / "images").glob("*/*.png"))
    assert len(images) == 16 and all(Image.open(p).size == (IMAGE, IMAGE) for p in images)
    assert (folder / "yolo-data" / "images" / "train" / "0.png").samefile(squares / "images" / "train" / "0.png")
    # best.pt rebuilds the model for evaluate and predict
    trained = dl.load_trained(folder)
    assert trained.task == "detect" and trained.classes == ["dark", "bright"]
    assert trained.model.input_mean.tolist() == pytest.approx([0.485, 0.456, 0.406])
    state = torch.load(folder / "best.pt", weights_only=True)
    assert all(v.dtype != torch.float16 for v in state["model"].values())  # float32, unlike ultralytics' own files
    assert "pr_curves" in run.evaluation["files"] and "predictions" in run.evaluation["files"]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ultralytics_steps_once_per_accumulate_batches(squares, tmp_path, monkeypatch, accumulate):
    """8 images in batches of 2 for one epoch are 4 optimiser steps (2 with train.accumulate = 2) in
    ultralytics' own trainer: its nominal batch of 64 images would make them 1, too few to learn in a
    short run (issue 20: YOLOv5n at 6 mAP@0.5 where FCOS reached 28)."""
    import defectlab as dl
    from defectlab_plugins.yolov5.training import UltralyticsTraining

    seen = {}
    start = UltralyticsTraining._on_train_start

    def on_train_start(self, trainer):
        start(self, trainer)
        step = trainer.optimizer_step
        seen.update(steps=0, accumulate=trainer.accumulate, nbs=trainer.args.nbs)

        def counted():
            seen["steps"] += 1
            step()
        trainer.optimizer_step = counted

    monkeypatch.setattr(UltralyticsTraining, "_on_train_start", on_train_start)
    settings = config(squares)
    settings["data"]["batch_size"] = 2
    settings["train"]["accumulate"] = accumulate
    dl.train(settings, out=tmp_path / "run")
    assert seen == {"steps": 4 // accumulate, "accumulate": accumulate, "nbs": 2 * accumulate}


def test_a_frozen_backbone_stays_bit_identical(squares, tmp_path):
    """model.freeze: ultralytics' freeze=10; the saved backbone equals the starting weights bit for bit,
    while the head moved."""
    import defectlab as dl

    start = detector(num_classes=2, seed=7)
    torch.save({"model": start.state_dict()}, tmp_path / "start.pt")
    run = dl.train(config(squares, freeze=True, weights=str(tmp_path / "start.pt")), out=tmp_path / "run")
    trained = torch.load(run.folder / "last.pt", weights_only=True)["model"]
    initial = start.state_dict()
    for name in backbone_names(initial):
        assert torch.equal(trained[name], initial[name]), name
    head = [n for n in initial if n.startswith("model.model.") and n not in backbone_names(initial)
            and initial[n].is_floating_point() and ".dfl." not in n]
    assert any(not torch.equal(trained[n], initial[n]) for n in head)
    assert run.status["frozen_parameters"] > 0


def test_early_stopping_follows_train_monitor(squares, tmp_path):
    """patience 1 and min_delta 0.5 on val/map_50 (no tiny epoch raises a mAP by 0.5): epoch 1 is the best,
    epoch 2 does not improve on it, and defectlab stops ultralytics' trainer after it, one epoch early."""
    import defectlab as dl

    settings = config(squares, epochs=3)
    settings["train"].update(patience=1, monitor="val/map_50", min_delta=0.5)
    run = dl.train(settings, out=tmp_path / "run")
    assert [r["epoch"] for r in run.metrics] == [1, 2]
    assert [r["best"] for r in run.metrics] == [True, False]
    assert run.status["status"] == "finished" and run.status["best"]["epoch"] == 1


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(squares, tmp_path, monkeypatch):
    import defectlab as dl
    from defectlab_plugins.yolov5.training import UltralyticsTraining

    original = UltralyticsTraining._after_epoch

    def stop_after_first(self, trainer):
        original(self, trainer)
        if int(trainer.epoch) == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(UltralyticsTraining, "_after_epoch", stop_after_first)
    with pytest.raises(dl.TrainingError, match="--resume"):
        dl.train(config(squares, epochs=2), out=tmp_path / "run")
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "interrupted" and status["epochs_done"] == 1
    monkeypatch.setattr(UltralyticsTraining, "_after_epoch", original)
    with pytest.raises(dl.DataError, match="resumes a training to the 2 epochs"):
        dl.train(resume=tmp_path / "run", overrides=["train.epochs=3"])
    run = dl.train(resume=tmp_path / "run")
    assert run.status["status"] == "finished"
    assert [r["epoch"] for r in run.metrics] == [1, 2]
    assert torch.load(run.folder / "last.pt", weights_only=True)["epoch"] == 2


@pytest.mark.slow
def test_three_stages_chain_the_backbone(tmp_path):
    """SPEC 000 §8 with YOLO: source data, a subset, the target; each later stage starts from the backbone of
    the stage before, and the comparison report covers the three."""
    import defectlab as dl

    source = write_yolo_folder(tmp_path / "source", seed=1)
    subset = write_yolo_folder(tmp_path / "subset", {"train": 8, "val": 4}, seed=2)
    target = write_yolo_folder(tmp_path / "target", seed=3)
    staged = {**config(source), "stages": [{"name": "source"}, {"name": "subset", "data": {"dataset": str(subset)}},
                                           {"name": "target", "data": {"dataset": str(target)}}]}
    run = dl.train(staged, out=tmp_path / "staged")
    assert [stage.name for stage in run.stages] == ["source", "subset", "target"]
    assert run.stages[0].status["transfer"] is None
    previous = None
    for stage in run.stages:
        assert stage.status["status"] == "finished"
        if previous is not None:
            transfer = stage.status["transfer"]
            assert transfer["source"] == str(previous.folder / "best.pt")
            assert set(transfer["loaded"]) == backbone_names(torch.load(previous.folder / "best.pt",
                                                                        weights_only=True)["model"])
        previous = stage
    assert (tmp_path / "staged" / "report.html").is_file()
