"""COCO crowd regions (iscrowd = 1) from the annotation file to the score: the reader keeps them as the
sample's ``crowd``, training targets leave them out, evaluation targets carry them as ``iscrowd``, and the
mAP of a run's evaluation equals pycocotools' COCOeval on the same JSON and detections; the writers store
them where the format can (COCO iscrowd, VOC difficult) and YOLO leaves them out with a note."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from defectlab import Box, DataModule, create, open_dataset
from defectlab.training.evaluation import evaluate_split
from defectlab_plugins.datasets.voc import Voc
from PIL import Image

SIZE = 64  # images and model input alike, so that the targets' pixels are the JSON's
LEVELS = {"a.png": 40, "b.png": 120, "c.png": 200}  # grey level of each image: how the stub model knows it

# (file name, split, annotations as (category id, [x, y, w, h], iscrowd))
ANNOTATED = [
    ("a.png", "train", [(1, [4, 4, 20, 20], 0), (2, [30, 30, 30, 30], 1)]),
    ("b.png", "val", [(1, [0, 0, 20, 20], 0), (1, [32, 0, 32, 32], 1), (2, [10, 40, 20, 20], 0)]),
    ("c.png", "val", [(2, [40, 40, 20, 20], 0), (2, [0, 0, 30, 30], 1)]),
]
# detections per val image as (category id, [x, y, w, h], score): b.png finds its dent, puts two boxes on its
# crowd region (one scored above the hit) and misses its scratch; c.png finds its scratch loosely (IoU 0.6)
# and puts one box half inside its crowd region (crowd IoU 0.5: ignored at IoU 0.5, a false positive above)
DETECTIONS = {
    "b.png": [(1, [0, 0, 20, 20], 0.8), (1, [36, 4, 20, 20], 0.95), (1, [40, 10, 10, 10], 0.5)],
    "c.png": [(2, [40, 40, 20, 12], 0.9), (2, [20, 0, 20, 20], 0.7), (1, [44, 44, 10, 10], 0.3)],
}


def write_coco(root: Path) -> Path:
    """annotations/instances_{train,val}.json and images/{train,val}/ of the images above."""
    for name, split, _ in ANNOTATED:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((SIZE, SIZE, 3), LEVELS[name], dtype=np.uint8)).save(root / "images" / split / name)
    for split in ("train", "val"):
        images, annotations = [], []
        for number, (name, image_split, found) in enumerate(ANNOTATED, start=1):
            if image_split == split:
                images.append({"id": number, "file_name": name, "width": SIZE, "height": SIZE})
                for category, bbox, crowd in found:
                    annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": category,
                                        "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": crowd})
        path = root / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "dent"}, {"id": 2, "name": "scratch"}]}))
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


def corners(bbox: list[float]) -> list[float]:
    return [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]


class KnownDetections(torch.nn.Module):
    """A stand-in detector: each image's DETECTIONS, recognised by the image's grey level."""

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            name = min(LEVELS, key=lambda n: abs(LEVELS[n] / 255 - float(image.mean())))
            found = DETECTIONS.get(name, [])
            out.append({"boxes": torch.tensor([corners(b) for _, b, _ in found], dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.tensor([s for *_, s in found], dtype=torch.float32),
                        "labels": torch.tensor([c - 1 for c, *_ in found], dtype=torch.long)})
        return out


def module(root: Path) -> DataModule:
    return DataModule(str(root), image_size=SIZE, normalize="none", augment=(), batch_size=4)


def test_the_reader_keeps_crowd_regions_apart_from_the_boxes(coco_root):
    data = open_dataset(str(coco_root))
    by_name = {Path(s.key).name: s for s in data.samples}
    assert by_name["a.png"].boxes == (Box(0, 14 / 64, 14 / 64, 20 / 64, 20 / 64),)
    assert by_name["a.png"].crowd == (Box(1, 45 / 64, 45 / 64, 30 / 64, 30 / 64),)
    assert [len(by_name[n].crowd) for n in LEVELS] == [1, 1, 1]
    assert data.class_counts() == [2, 2]  # images per class: the crowd regions are no defects
    assert module(coco_root).class_counts("val") == [1, 2]


def test_training_targets_leave_crowd_regions_out_and_evaluation_targets_mark_them(coco_root):
    data = module(coco_root)
    train = next(iter(data.loader("train")))["target"]
    assert len(train) == 1 and set(train[0]) == {"boxes", "labels"}
    assert train[0]["boxes"].tolist() == [[4, 4, 24, 24]] and train[0]["labels"].tolist() == [0]
    batch = next(iter(data.loader("val")))
    by_name = {Path(data.sample_key("val", int(i))).name: t for i, t in zip(batch["index"], batch["target"])}
    assert by_name["b.png"]["boxes"].tolist() == [[0, 0, 20, 20], [10, 40, 30, 60], [32, 0, 64, 32]]
    assert by_name["b.png"]["labels"].tolist() == [0, 1, 0]
    assert by_name["b.png"]["iscrowd"].tolist() == [False, False, True]
    assert by_name["c.png"]["iscrowd"].tolist() == [False, True]


def cocoeval_stats(annotation_file: Path, detections: list[dict]) -> np.ndarray:
    """pycocotools' COCOeval alone on an annotation file and COCO result records."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotation_file))
        run = COCOeval(truth, truth.loadRes(detections), "bbox")
        run.evaluate()
        run.accumulate()
        run.summarize()
    return run.stats


def test_evaluation_with_crowd_regions_equals_cocoeval_on_the_same_json(coco_root):
    data = module(coco_root)
    evaluator = create("evaluator", "detection")
    evaluator.setup(classes=data.classes, class_counts=data.class_counts())
    scores = evaluate_split(KnownDetections(), None, data, "val", [evaluator], torch.device("cpu"))
    annotation_file = coco_root / "annotations" / "instances_val.json"
    ids = {image["file_name"]: image["id"] for image in json.loads(annotation_file.read_text())["images"]}
    stats = cocoeval_stats(annotation_file, [{"image_id": ids[name], "category_id": category, "bbox": bbox,
                                              "score": score}
                                             for name, found in DETECTIONS.items() for category, bbox, score in found])
    assert scores["map"] == pytest.approx(stats[0], abs=1e-9) and scores["map_50"] == pytest.approx(stats[1], abs=1e-9)
    # by hand at IoU 0.5: dent 1 hit of 1 box, with only ignored detections above it: AP 1; scratch 1 hit of 2
    # boxes first, the half-inside box ignored: precision 1 up to recall 0.5, 51 of COCO's 101 recall points
    assert scores["map_50"] == pytest.approx((1 + 51 / 101) / 2)
    ordinary = create("evaluator", "detection")  # the same boxes with the crowd regions taken for objects
    for pred, target in zip(KnownDetections().eval()(next(iter(data.loader("val")))["image"]),
                            next(iter(data.loader("val")))["target"]):
        ordinary.update([pred], [{"boxes": target["boxes"], "labels": target["labels"]}])
    assert ordinary.compute()["map_50"] < scores["map_50"] - 0.1


def test_convert_keeps_crowd_regions_as_iscrowd_and_difficult_and_yolo_drops_them(coco_root, tmp_path, caplog):
    from defectlab import convert_dataset

    source = open_dataset(str(coco_root))
    crowd = {Path(s.key).name: s.crowd for s in source.samples}
    coco = convert_dataset(source, "coco", tmp_path / "as-coco")
    written = json.loads((coco / "annotations" / "instances_val.json").read_text())["annotations"]
    assert [a["iscrowd"] for a in written] == [0, 0, 1, 0, 1]
    voc = convert_dataset(source, "voc", tmp_path / "as-voc")
    assert "<difficult>1</difficult>" in (voc / "Annotations" / "a.xml").read_text()
    for again in (open_dataset(str(coco)), Voc(str(voc))):
        assert {Path(s.key).name: s.crowd for s in again.samples} == crowd
    assert [len(s.boxes) for s in Voc(str(voc), difficult="object").samples] == [2, 3, 2]
    yolo = convert_dataset(source, "yolo", tmp_path / "as-yolo")
    assert "YOLO labels have no crowd flag" in caplog.text and "leaves out 3 crowd region(s)" in caplog.text
    assert (yolo / "labels" / "val" / "b.txt").read_text().count("\n") == 2  # the two objects alone
    assert json.loads((yolo / "convert.json").read_text())["boxes"] == 4
