"""Export (issue 14): every task's run as ONNX and TorchScript, parity with the run, the runtime without torch.

The runs are trained for one epoch on generated images larger than the network's input, so
that the exported graph's own resize (not Pillow's) is part of every comparison.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import defectlab as dl
from defectlab.runtime.detections import dense_detections, nms
from defectlab.workflows.export import ExportError
from defectlab.workflows.parity import TOLERANCES, check_parity

ROOT = Path(__file__).resolve().parents[1]
HAS_YOLO = importlib.util.find_spec("ultralytics") is not None

CONFIGS = {
    "classify": {"data": {"dataset": "TWO_CLASSES", "image_size": 24, "channels": 1, "batch_size": 8},
                 "model": {"name": "resnet18"}, "train": {"epochs": 1}},
    "segment": {"data": {"dataset": {"name": "synthetic_cracks", "count": 20, "size": 64}, "image_size": 48,
                         "batch_size": 8}, "model": {"name": "unet"}, "train": {"epochs": 1}},
    "fcos": {"data": {"dataset": {"name": "synthetic_defects", "count": 20, "size": 80}, "image_size": 64,
                      "channels": 1, "batch_size": 8}, "model": {"name": "fcos"}, "train": {"epochs": 1}},
    "patchcore": {"data": {"dataset": {"name": "synthetic_cracks", "count": 40, "size": 64, "defect_fraction": 0.5},
                           "image_size": 48, "channels": 1, "batch_size": 8},
                  "model": {"name": "patchcore", "coreset_ratio": 0.2}},
    "padim": {"data": {"dataset": {"name": "synthetic_cracks", "count": 40, "size": 64, "defect_fraction": 0.5},
                       "image_size": 48, "batch_size": 8}, "model": {"name": "padim", "feature_dim": 20}},
    "yolov5": {"data": {"dataset": {"name": "synthetic_defects", "count": 20, "size": 80}, "image_size": 64,
                        "batch_size": 8, "augment": []}, "model": {"name": "yolov5"}, "train": {"epochs": 1}},
}
#: Thresholds low enough that the briefly trained detectors keep boxes to compare.
THRESHOLDS = {"fcos": 0.05, "yolov5": 0.01}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained runs by name, made on first use."""
    from tests.tiny_models import write_two_class_folder

    root = tmp_path_factory.mktemp("export-runs")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            config = json.loads(json.dumps(CONFIGS[name]))
            if config["data"]["dataset"] == "TWO_CLASSES":
                config["data"]["dataset"] = str(write_two_class_folder(root / "two-classes"))
            made[name] = Path(dl.train(config, out=root / name).folder)
            if name == "yolov5":
                _spread_yolo_scores(made[name])
        return made[name]

    return get


def _spread_yolo_scores(run: Path) -> None:
    """After one epoch YOLO scores every box near 0: class biases at 0 and larger class weights spread the scores
    over (0, 1), so that hundreds of boxes go through the NMS whose runtime copy is checked."""
    state = torch.load(run / "best.pt", weights_only=False)
    spread(state["model"])
    torch.save(state, run / "best.pt")


def spread(weights: dict[str, torch.Tensor]) -> None:
    """YOLO's class convolutions (cv3.*.2) rescaled to logits of a few units around 0."""
    for name, tensor in weights.items():
        if ".cv3." in name and ".2." in name:
            tensor.zero_() if name.endswith("bias") else tensor.mul_(30)


TASK_RUNS = ["classify", "segment", "fcos", "patchcore", "padim",
             pytest.param("yolov5", marks=pytest.mark.skipif(not HAS_YOLO, reason="ultralytics not installed"))]


@pytest.mark.parametrize("name", TASK_RUNS)
def test_onnx_export_agrees_with_the_run(runs, name, tmp_path):
    run = runs(name)
    result = dl.export(run, "onnx", tmp_path / "model.onnx", threshold=THRESHOLDS.get(name))
    parity = result.parity
    assert parity.passed, parity.summary()
    assert parity.decisions > 0 and parity.images >= 3
    assert max(parity.differences.values()) <= TOLERANCES[parity.task]
    assert parity.decisions - parity.agreeing <= parity.near_ties
    assert result.exporter == "dynamo"  # every built-in model captures with dynamo; legacy is the fallback
    assert "PASSED" in result.summary()


@pytest.mark.parametrize("name", ["classify", "segment", "fcos", "padim"])
def test_torchscript_export_agrees_with_the_run(runs, name, tmp_path):
    result = dl.export(runs(name), "torchscript", tmp_path / "model.torchscript", threshold=THRESHOLDS.get(name))
    assert result.parity.passed and result.parity.decisions > 0, result.parity.summary()
    assert dl.load_exported(result.path).metadata["exporter"] == "torchscript"


def test_the_legacy_exporter_gives_the_same_answers(runs, tmp_path):
    result = dl.export(runs("classify"), "onnx", tmp_path / "legacy.onnx", exporter="legacy")
    assert result.exporter == "legacy" and result.parity.passed
    assert dl.load_exported(result.path).metadata["exporter"] == "legacy"


def test_metadata_is_in_the_file(runs, tmp_path):
    import onnx

    from defectlab.workflows.predict import run_confidence

    run = runs("fcos")
    confidence = run_confidence(run / "best.pt")  # the run's best-F1 confidence, what predict keeps boxes at
    path = dl.export(run, "onnx", tmp_path / "det.onnx", check=False).path
    entry = {p.key: p.value for p in onnx.load(str(path)).metadata_props}["defectlab"]
    metadata = json.loads(entry)
    assert metadata["task"] == "detect"
    assert metadata["classes"] == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert metadata["threshold"] == pytest.approx(confidence) and 0 < confidence < 1
    assert metadata["defectlab_version"] == dl.__version__
    assert metadata["image_size"] == [64, 64] and metadata["opset"] == 18
    # FCOS on a 64-pixel input: P3-P7 grids of 8x8, 4x4, 2x2, 1x1 and 1x1 anchor points
    assert metadata["postprocess"]["levels"] == [64, 16, 4, 1, 1]
    model = dl.load_exported(path)
    assert model.task == "detect" and model.threshold == pytest.approx(confidence) and model.image_size == (64, 64)


def test_anomaly_threshold_is_the_runs(runs, tmp_path):
    from defectlab.workflows.predict_anomaly import run_threshold

    run = runs("patchcore")
    model = dl.load_exported(dl.export(run, "onnx", tmp_path / "a.onnx", check=False).path)
    assert model.threshold == pytest.approx(run_threshold(run / "best.pt"))
    image = np.zeros((50, 70), np.uint8)
    raw = model.run(image[None, :, :, None])
    assert raw["defect"][0] == (raw["scores"][0] >= model.threshold)


def test_dynamic_batch_and_sizes_give_the_same_answers(runs, tmp_path):
    model = dl.load_exported(dl.export(runs("classify"), "onnx", tmp_path / "c.onnx", check=False).path)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (7, 30, 20, 1), dtype=np.uint8)
    together = model.run(batch)["probabilities"]
    assert together.shape == (7, 2)
    one_by_one = np.concatenate([model.run(image[None])["probabilities"] for image in batch])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)
    # images of several sizes and both channel counts in one call: grouped by shape
    mixed = [batch[0], rng.integers(0, 256, (40, 44, 3), dtype=np.uint8), batch[1, :, :, 0]]
    results = model.predict(mixed)
    assert [r["label"] for r in results][0::2] == [model.classes[i] for i in together[:2].argmax(1)]
    assert len(results) == 3


def test_rgb_input_to_a_grey_model_is_converted_by_luminance(runs, tmp_path):
    model = dl.load_exported(dl.export(runs("classify"), "onnx", tmp_path / "c.onnx", check=False).path)
    grey = np.random.default_rng(1).integers(0, 256, (24, 24), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)  # a grey image stored as RGB has luminance = grey
    np.testing.assert_allclose(model.run(rgb[None])["probabilities"], model.run(grey[None, :, :, None])["probabilities"],
                               atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((20, 20, 4), np.uint8), "4 channels"),
    (np.zeros((1, 3, 20, 20), np.uint8), "channels first"),
    (np.zeros((20, 20), np.float32), "uint8"),
    (np.zeros((1, 20), np.uint8), "at least 2x2"),
    (np.zeros((2, 2, 2, 2, 2), np.uint8), "axes"),
])
def test_wrong_images_get_a_clear_message(runs, tmp_path, bad, message):
    model = dl.load_exported(dl.export(runs("classify"), "onnx", tmp_path / "c.onnx", check=False).path)
    with pytest.raises(dl.DataError, match=message):
        model.predict(bad)


def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(dl.DataError, match="cannot load"):
        dl.load_exported(broken)
    with pytest.raises(dl.DataError, match="not an exported model"):
        dl.load_exported(tmp_path / "model.pt")
    with pytest.raises(dl.DataError, match="does not exist"):
        dl.load_exported(tmp_path / "missing.onnx")


def test_export_refuses_bad_requests(runs, tmp_path):
    run = runs("classify")
    with pytest.raises(dl.ParameterError, match="unknown export format"):
        dl.export(run, "tflite")
    with pytest.raises(dl.ParameterError, match="opset 17 is too old"):
        dl.export(run, "onnx", tmp_path / "a.onnx", opset=17)
    with pytest.raises(dl.ParameterError, match="should end in .onnx"):
        dl.export(run, "onnx", tmp_path / "a.bin")
    (tmp_path / "b.onnx").write_bytes(b"earlier")
    with pytest.raises(dl.DataError, match="already exists"):
        dl.export(run, "onnx", tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx").read_bytes() == b"earlier"


def test_a_file_that_disagrees_is_set_aside(runs, tmp_path):
    """At a tolerance below float rounding, the graph's resize (one grey level from Pillow's) must fail the check."""
    with pytest.raises(ExportError, match="disagrees with the run") as caught:
        dl.export(runs("classify"), "onnx", tmp_path / "c.onnx", tolerance=1e-9)
    assert "FAILED" in str(caught.value)
    assert not (tmp_path / "c.onnx").exists() and (tmp_path / "c.onnx.failed").exists()


class _Fixed:
    """A predictor returning given outputs."""

    def __init__(self, task, outputs):
        self.task, self.classes, self.image_size, self._outputs = task, ["a", "b"], (10, 10), outputs

    def outputs(self, images):
        return self._outputs[:len(images)]


def test_parity_counts_differences_near_ties_and_real_disagreements():
    images = [np.zeros((4, 4), np.uint8)] * 3
    ours = [{"probabilities": np.array(p)} for p in ([0.9, 0.1], [0.502, 0.498], [0.7, 0.3])]
    theirs = [{"probabilities": np.array(p)} for p in ([0.895, 0.105], [0.497, 0.503], [0.7, 0.3])]
    parity = check_parity(_Fixed("classify", ours), _Fixed("classify", theirs), images, None, tolerance=0.01)
    # the largest difference is 0.005; the second image flips, but its run-side gap (0.004 / 2) is a near-tie
    assert parity.differences["probabilities"] == pytest.approx(0.005)
    assert (parity.decisions, parity.agreeing, parity.near_ties, parity.passed) == (3, 2, 1, True)
    theirs[2] = {"probabilities": np.array([0.3, 0.7])}  # a confident answer turned around
    parity = check_parity(_Fixed("classify", ours), _Fixed("classify", theirs), images, None, tolerance=0.01)
    assert parity.differences["probabilities"] == pytest.approx(0.4) and not parity.passed


def test_parity_of_boxes_matches_by_class_and_iou():
    images = [np.zeros((4, 4), np.uint8)]
    ours = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), "scores": np.array([0.9, 0.3]),
             "labels": np.array([0, 1])}]
    theirs = [{"boxes": np.array([[0, 0, 10, 10.5], [20, 20, 30, 30]], np.float32), "scores": np.array([0.89, 0.29]),
               "labels": np.array([0, 1])}]
    parity = check_parity(_Fixed("detect", ours), _Fixed("detect", theirs), images, 0.295, tolerance=0.02)
    # box 1 matches (0.5 px on a 10 px side: 0.05 of the input); box 2 is kept by one side only, 0.005 from the
    # threshold: a near-tie
    assert parity.differences == {"scores": pytest.approx(0.01), "boxes": pytest.approx(0.05)}
    assert (parity.decisions, parity.agreeing, parity.near_ties) == (2, 1, 1)
    assert not parity.passed  # the box corner moved beyond the tolerance


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 5], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # IoU(0, 1) = 81 / 119 = 0.68: dropped at 0.5, kept at 0.7; IoU(0, 2) = 50 / 100 = 0.5: kept (not above)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]
    # boxes clipped to nothing have an undefined IoU (0 / 0), which suppresses nothing, as in torchvision
    empty = np.array([[72, 5, 72, 9], [72, 6, 72, 9]], np.float32)
    assert nms(empty, np.array([0.5, 0.4], np.float32), 0.5).tolist() == [0, 1]


def test_fcos_selection_in_numpy_equals_torchvisions():
    model = dl.create("backbone", {"name": "fcos", "num_classes": 3, "in_chans": 1, "score_thresh": 0.2,
                                   "detections_per_img": 20}).eval()
    torch.nn.init.normal_(model.head.classification_head.cls_logits.weight, std=0.05)  # scores spread around
    torch.nn.init.zeros_(model.head.classification_head.cls_logits.bias)  # 0.5, none saturated (no ties)
    model.topk_candidates = 30  # per level, fewer than the pairs above the threshold: the cut is exercised
    for ours, found in _both_selections(model, torch.randn(2, 1, 72, 72)):
        assert len(found["boxes"]) == 20
        _assert_same_detections(ours, found)


@pytest.mark.skipif(not HAS_YOLO, reason="ultralytics not installed")
def test_yolo_selection_in_numpy_equals_ultralytics():
    model = dl.create("backbone", {"name": "yolov5", "num_classes": 3, "in_chans": 1, "conf": 0.3,
                                   "max_det": 50}).eval()
    spread(model.state_dict())
    for ours, found in _both_selections(model, torch.randn(2, 1, 64, 64)):
        assert len(found["boxes"]) > 10
        _assert_same_detections(ours, found)


def _both_selections(model, images):
    """Per image: the runtime's selection from the model's dense outputs, and the model's own detections."""
    size = tuple(images.shape[-2:])
    with torch.no_grad():
        expected, dense = model(images), model.export_outputs(images)
    settings = model.export_postprocess(size)
    return [(dense_detections(dense["boxes"][index].numpy(), dense["scores"][index].numpy(), settings, size), found)
            for index, found in enumerate(expected)]


def _assert_same_detections(ours, found):
    """The same boxes, scores and labels; equal scores (saturated sigmoids) may come in either order."""
    def rows(boxes, scores, labels):
        table = np.column_stack([np.round(scores, 5), labels, np.round(boxes, 3)])
        return table[np.lexsort(table.T[::-1])]

    np.testing.assert_allclose(rows(ours["boxes"], ours["scores"], ours["labels"]),
                               rows(found["boxes"].numpy(), found["scores"].numpy(), found["labels"].numpy()),
                               atol=2e-3)


def _folder_of_images(folder: Path, count: int = 4, size: tuple[int, int] = (70, 90)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"no image")
    return folder


RUNTIME_ONLY = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # importing any of them now fails: this install has only the runtime's packages
from defectlab.cli.main import main
try:
    main({args!r})
finally:
    print("loaded:", sorted({{m.split(".")[0] for m, module in sys.modules.items() if module is not None}}
                            & set({blocked!r})))
"""
#: What a runtime-only install lacks: everything of the [train] extra.
NOT_IN_RUNTIME = ["torch", "torchvision", "timm", "segmentation_models_pytorch", "torchmetrics", "scipy", "sklearn",
                  "matplotlib", "ot", "onnx", "onnxscript", "ultralytics", "yaml", "tqdm", "pycocotools"]


@pytest.mark.parametrize("name", ["classify", "fcos", "patchcore"])
def test_predict_from_the_file_without_torch_writes_what_the_run_writes(runs, name, tmp_path):
    run = runs(name)
    exported = dl.export(run, "onnx", tmp_path / "model.onnx", check=False).path
    images = _folder_of_images(tmp_path / "images")
    args = ["predict", str(exported), str(images), "--out", str(tmp_path / "file" / "p.csv")]
    done = subprocess.run([sys.executable, "-c", RUNTIME_ONLY.format(blocked=NOT_IN_RUNTIME, args=args)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4 predicted, 1 failed" in done.stdout and "loaded: []" in done.stdout
    dl.predict(run, [images], tmp_path / "run" / "p.csv")
    rows = {side: list(csv.DictReader((tmp_path / side / "p.csv").open())) for side in ("file", "run")}
    assert [list(r) for r in rows["file"]] == [list(r) for r in rows["run"]]  # same columns, same rows
    key = {"classify": "predicted", "fcos": "class", "patchcore": "decision"}[name]
    assert [r[key] for r in rows["file"]] == [r[key] for r in rows["run"]]
    assert [r["path"] for r in rows["file"]] == [r["path"] for r in rows["run"]]
    pictures = {"fcos": "p_boxes", "patchcore": "p_maps"}.get(name)
    if pictures:
        assert sorted(p.name for p in (tmp_path / "file" / pictures).iterdir()) == \
            sorted(p.name for p in (tmp_path / "run" / pictures).iterdir())


def test_the_runtime_extra_needs_only_numpy_pillow_and_onnxruntime():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {spec.split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for spec in project["dependencies"] + project["optional-dependencies"]["runtime"]}
    # click and pluggy: the command line and its plugin registry, pure Python without dependencies of their own
    assert names == {"numpy", "pillow", "onnxruntime", "click", "pluggy"}
    assert not set(NOT_IN_RUNTIME) & names


def test_training_without_the_training_stack_says_what_to_install(tmp_path):
    code = RUNTIME_ONLY.format(blocked=["torch"], args=["train", str(ROOT / "examples" / "elpv-resnet18-gem.toml"),
                                                         "--out", str(tmp_path / "run")])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "needs torch" in done.stderr and "pip install 'defectlab[train]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_slices_of_a_large_image_give_the_same_boxes_from_the_file(runs, tmp_path):
    from defectlab.runtime.predicting import detect_images
    from defectlab.workflows.predict import TorchPredictor, load_trained

    run = runs("fcos")
    model = dl.load_exported(dl.export(run, "onnx", tmp_path / "d.onnx", check=False).path)
    image = dl.open_dataset({"name": "synthetic_defects", "count": 1, "size": 224}).load_image(0)[:, :200]
    ours = detect_images(TorchPredictor(load_trained(run)), [image], 8, 0.05, slice_size=96, overlap=0.25)[0]
    theirs = model.predict(image, threshold=0.05, slice_size=96, overlap=0.25)[0]["boxes"]
    # hundreds of boxes above 0.05: boxes whose scores differ by float rounding between the runtimes may swap
    # places, so the same boxes are compared regardless of order
    assert len(ours) > 0 and sorted(b[0] for b in theirs) == sorted(b[0] for b in ours)
    np.testing.assert_allclose([b[1:] for b in sorted(theirs)], [b[1:] for b in sorted(ours)], atol=0.05)


def test_export_and_predict_from_the_command_line(runs, run_cli, tmp_path):
    run = runs("segment")
    result = run_cli("export", str(run), "--format", "onnx", "--out", str(tmp_path / "seg.onnx"), "--images", "4")
    assert result.exit_code == 0, result.output
    assert "dynamo exporter" in result.output and "parity on 3 validation images" in result.output
    again = run_cli("export", str(run), "--out", str(tmp_path / "seg.onnx"))
    assert again.exit_code == 1 and "--overwrite" in again.output
    images = _folder_of_images(tmp_path / "images", count=2)
    predicted = run_cli("predict", str(tmp_path / "seg.onnx"), str(images), "--out", str(tmp_path / "out" / "p.csv"))
    assert predicted.exit_code == 0, predicted.output
    masks = sorted((tmp_path / "out" / "p_masks").iterdir())
    assert [m.name for m in masks] == ["0.png", "1.png"]
    assert Image.open(masks[0]).size == (90, 70)  # the mask has the image's own size


def test_torch_is_not_imported_by_loading_the_runtime():
    code = ("import sys\nimport defectlab.runtime.exported, defectlab.runtime.predicting\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'torchvision'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.stdout.strip() == "[]"


def test_a_config_exports_its_run_when_training_ends(tmp_path):
    config = json.loads(json.dumps(CONFIGS["segment"]))
    config["export"] = {"formats": ["onnx", "torchscript"], "images": 4}
    run = dl.train(config, out=tmp_path / "run")
    for name in ("best.onnx", "best.torchscript"):
        model = dl.load_exported(run.folder / name)
        assert model.task == "segment" and model.threshold == 0.5
    with pytest.raises(dl.ConfigError, match="export.formats"):
        dl.train({**config, "export": {"formats": ["tflite"]}}, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before anything was trained
