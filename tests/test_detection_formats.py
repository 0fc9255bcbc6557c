"""The detection formats: COCO and VOC readers on hand-made files, their errors, the writers and
`defectlab convert`, round trips between yolo, coco and voc, and the detection subset that screen writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import defectlab as dl
import numpy as np
import pytest
import yaml
from defectlab import DataError, open_dataset
from defectlab_plugins.datasets.checks import shown
from defectlab_plugins.datasets.coco import Coco
from defectlab_plugins.datasets.csv_index import CsvIndex
from defectlab_plugins.datasets.voc import Voc
from defectlab_plugins.datasets.yolo import Yolo
from PIL import Image


def write_image(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width) if mode == "L" else (height, width, 3)
    Image.fromarray(np.random.default_rng(len(path.name)).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def boxes_of(data: dl.DefectDataset) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Each image's boxes by file name: class name and (centre x, centre y, width, height), rounded to 1e-9."""
    return {Path(s.key).name: [(data.classes[b.label], tuple(round(v, 9) for v in (b.x_center, b.y_center, b.width,
                                                                                  b.height))) for b in s.boxes]
            for s in data.samples}


# --- coco ----------------------------------------------------------------------------------------------

def coco_file(images: list[dict], annotations: list[dict]) -> dict:
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "scratch"}, {"id": 1, "name": "dent"}]}


@pytest.fixture
def coco_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    write_image(root / "images" / "train" / "a.png", 100, 200)
    write_image(root / "images" / "train" / "b.png", 64, 64)
    write_image(root / "images" / "val" / "c.jpg", 80, 40)
    write_json(root / "annotations" / "instances_train.json", coco_file(
        [{"id": 1, "file_name": "a.png", "width": 100, "height": 200}, {"id": 2, "file_name": "b.png"}],
        [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40]},
         {"id": 2, "image_id": 1, "category_id": 1, "bbox": [-0.8, 190, 50, 10.5]},  # within 1 px of the edges
         {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 200], "iscrowd": 1}]))
    write_json(root / "annotations" / "instances_val.json", coco_file(
        [{"id": 7, "file_name": "c.jpg", "width": 80, "height": 40}],
        [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [40, 10, 20, 20]}]))
    return root


def test_coco_boxes_classes_splits_crowds(coco_dataset):
    data = open_dataset(str(coco_dataset))
    assert isinstance(data, Coco) and data.task == "detect"
    assert data.classes == ["dent", "scratch"]  # categories in order of id: 1, 3
    # the iscrowd annotation, the whole 100x200 image, is a crowd region of a.png, not one of its boxes
    assert [s.crowd for s in data.samples] == [(dl.Box(0, 0.5, 0.5, 1.0, 1.0),), (), ()]
    assert [(Path(s.key).name, s.split) for s in data.samples] == [("a.png", "train"), ("b.png", "train"),
                                                                  ("c.jpg", "val")]
    found = boxes_of(data)
    # [10, 20, 30, 40] in 100x200: centre (25, 40) -> (0.25, 0.2), size 0.3 x 0.2
    assert found["a.png"][0] == ("scratch", (0.25, 0.2, 0.3, 0.2))
    # x -0.8..49.2 is clipped to 0..49.2, y 190..200.5 to 190..200
    assert found["a.png"][1] == ("dent", (0.246, 0.975, 0.492, 0.05))
    assert found["b.png"] == [] and found["c.jpg"] == [("dent", (0.625, 0.5, 0.25, 0.5))]
    assert data.class_counts() == [2, 1]


def test_coco_file_given_with_its_image_folder_and_coco_own_layout(coco_dataset, tmp_path):
    single = write_json(tmp_path / "one" / "labels.json", coco_file(
        [{"id": 1, "file_name": "c.jpg", "width": 80, "height": 40}], []))
    data = Coco(str(single), images=str(coco_dataset / "images" / "val"))
    assert len(data) == 1 and data.samples[0].boxes == () and data.samples[0].split is None
    with pytest.raises(DataError, match=r"the first image, 'c.jpg', is in none of .*pass images=FOLDER"):
        Coco(str(single))
    own = tmp_path / "coco2017"  # COCO's own layout: annotations/instances_val2017.json and val2017/
    write_image(own / "val2017" / "x.jpg", 20, 10)
    write_json(own / "annotations" / "instances_val2017.json", coco_file(
        [{"id": 1, "file_name": "x.jpg", "width": 20, "height": 10}],
        [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 10]}]))
    write_json(own / "annotations" / "captions_val2017.json", {"images": [], "annotations": []})  # not instances
    data = open_dataset(str(own))
    assert isinstance(data, Coco) and data.samples[0].split == "val"
    assert boxes_of(data) == {"x.jpg": [("scratch", (0.5, 0.5, 1.0, 1.0))]}


@pytest.mark.parametrize("change, message", [
    ({"bbox": [90, 20, 11.5, 10]}, r"annotation 1 \(image 'a.png'\): the box \(x 90..101.5, y 20..30\) reaches "
                                   r"outside the 100x200 image"),
    ({"bbox": [10, 20, 0, 10]}, r"annotation 1 \(image 'a.png'\): a box needs a width and height > 0"),
    ({"bbox": [10, 20, 30, -4]}, r"annotation 1 \(image 'a.png'\): a box needs a width and height > 0"),
    ({"category_id": 9}, r"annotation 1 \(image 'a.png'\): category_id 9 is not one of the categories \(1, 3\)"),
    ({"image_id": 99}, r"annotation 1: image_id 99 is not among the images"),
    ({"bbox": [1, 2, 3]}, r"annotation 1 \(image 'a.png'\): bbox must be \[x, y, width, height\]"),
    ({"bbox": [True, 2, 3, 4]}, r"annotation 1 \(image 'a.png'\): bbox must be .*four finite numbers.*True"),
    ({"bbox": [1, 2, float("nan"), 4]}, r"annotation 1 \(image 'a.png'\): bbox must be .*four finite numbers"),
    ({"bbox": [1, 2, 3, float("inf")]}, r"annotation 1 \(image 'a.png'\): bbox must be .*four finite numbers"),
    ({"image_id": [1]}, r"annotation 1: image_id \[1\] is not among the images"),
    ({"image_id": True}, r"annotation 1: image_id True is not among the images"),
    ({"category_id": [3]}, r"annotation 1 \(image 'a.png'\): category_id \[3\] is not one of the categories"),
    ({"category_id": True}, r"annotation 1 \(image 'a.png'\): category_id True is not one of the categories"),
    ({"iscrowd": "no"}, r"annotation 1 \(image 'a.png'\): iscrowd must be 0 or 1, got 'no'"),
    ({"id": 2**64}, r"annotation #1: id must be a whole number from -9223372036854775807 to 9223372036854775807"),
])
def test_coco_bad_annotation_names_file_and_annotation(coco_dataset, change, message):
    path = coco_dataset / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0].update(change)
    write_json(path, data)
    with pytest.raises(DataError, match=rf"instances_train.json, {message}"):
        Coco(str(coco_dataset))


@pytest.mark.parametrize("section, change, message", [
    ("images", {"id": [1]}, r"image 1: id must be a whole number .*got \[1\]"),
    ("images", {"id": 2**63}, r"image 1: id must be a whole number from -9223372036854775807 to "),
    ("images", {"id": False}, r"image 1: id must be a whole number .*got False"),
    ("images", {"file_name": ["a.png"]}, r"image 1: needs an 'id' and a 'file_name'"),
    ("images", {"width": float("nan")}, r"image 1: width must be a whole number from 1 to 100000, got nan"),
    ("images", {"height": float("inf")}, r"image 1: height must be a whole number from 1 to 100000, got inf"),
    ("images", {"width": 0}, r"image 1: width must be a whole number from 1 to 100000, got 0"),
    ("images", {"height": 10**9}, r"image 1: height must be a whole number from 1 to 100000, got 1000000000"),
    ("images", {"width": True}, r"image 1: width must be a whole number from 1 to 100000, got True"),
    ("images", {"width": 100.5}, r"image 1: width must be a whole number from 1 to 100000, got 100.5"),
    ("categories", {"name": ["scratch"]}, r"category 1: a class name must be a non-empty string, got \['scratch'\]"),
    ("categories", {"name": "scr\natch"}, r"category 1: class name 'scr\\natch' holds a control character"),
    ("categories", {"id": True}, r"category 1: id must be a whole number .*got True"),
    ("categories", {"id": -(2**63)}, r"category 1: id must be a whole number from -9223372036854775807"),
])
def test_coco_bad_image_or_category_names_file_and_entry(coco_dataset, section, change, message):
    path = coco_dataset / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data[section][0].update(change)
    write_json(path, data)
    with pytest.raises(DataError, match=rf"instances_train.json, {message}"):
        Coco(str(coco_dataset))


def test_coco_deeply_nested_or_oversized_json_is_a_data_error(coco_dataset):
    path = coco_dataset / "annotations" / "instances_train.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + ', "annotations": [], "categories": []}')
    with pytest.raises(DataError, match=r"instances_train.json' is nested too deeply to be a COCO annotation"):
        Coco(str(coco_dataset))
    path.write_text('{"images": [], "annotations": [], "categories": [{"id": ' + "7" * 5000 + ', "name": "x"}]}')
    with pytest.raises(DataError, match=r"instances_train.json' is not usable JSON: Exceeds the limit"):
        Coco(str(coco_dataset))
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(coco_file([], [])).encode())  # a BOM is fine
    assert Coco(str(path)).classes == ["dent", "scratch"]


def test_coco_unreadable_files(coco_dataset):
    (coco_dataset / "images" / "val" / "c.jpg").unlink()
    with pytest.raises(DataError, match=r"instances_val.json: the first image, 'c.jpg', is in none of"):
        Coco(str(coco_dataset))
    write_image(coco_dataset / "images" / "val" / "c.jpg", 80, 40)
    (coco_dataset / "images" / "train" / "b.png").unlink()
    with pytest.raises(DataError, match=r"instances_train.json, image 2: 'b.png' not found in '.*images.train'"):
        Coco(str(coco_dataset))
    (coco_dataset / "annotations" / "instances_train.json").write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"instances_train.json, line 2: not valid JSON"):
        Coco(str(coco_dataset))
    write_json(coco_dataset / "annotations" / "instances_train.json", {"images": []})
    with pytest.raises(DataError, match="is not a COCO annotation file: it has no 'annotations', 'categories' list"):
        Coco(str(coco_dataset))


# --- voc -----------------------------------------------------------------------------------------------

VOC_XML = """<annotation>
  <filename>{name}</filename>
  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
{objects}</annotation>
"""
VOC_OBJECT = """  <object>
    <name>{name}</name>
    <difficult>{difficult}</difficult>
    <bndbox>
      <xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>
    </bndbox>
  </object>
"""


def voc_annotation(root: Path, stem: str, size: tuple[int, int], objects: list[tuple[str, tuple]], name=None):
    text = "".join(VOC_OBJECT.format(name=n, box=b, difficult=int(n == "dent")) for n, b in objects)
    path = root / "Annotations" / f"{stem}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(VOC_XML.format(name=name or f"{stem}.jpg", width=size[0], height=size[1], objects=text))
    return path


@pytest.fixture
def voc_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2007"
    for stem, size in (("a", (100, 200)), ("b", (64, 64)), ("c", (80, 40))):
        write_image(root / "JPEGImages" / f"{stem}.jpg", *size)
    voc_annotation(root, "a", (100, 200), [("scratch", (11, 21, 40, 60)), ("dent", (1, 1, 100, 200))])
    voc_annotation(root, "b", (64, 64), [])
    voc_annotation(root, "c", (80, 40), [("dent", (41, 11, 60, 30))])
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("c\n")
    (root / "ImageSets" / "Main" / "dent_train.txt").write_text("a  1\nb -1\n")  # per-class lists are ignored
    return root


def test_voc_boxes_classes_and_splits(voc_dataset):
    data = open_dataset(str(voc_dataset))
    assert isinstance(data, Voc) and data.task == "detect" and data.classes == ["dent", "scratch"]
    assert [(Path(s.key).name, s.split) for s in data.samples] == [("a.jpg", "train"), ("b.jpg", "train"),
                                                                  ("c.jpg", "val")]
    # every dent is <difficult>: a region that evaluation ignores (the sample's crowd), not a box, unless kept
    assert boxes_of(data) == {"a.jpg": [("scratch", (0.25, 0.2, 0.3, 0.2))], "b.jpg": [], "c.jpg": []}
    assert [s.crowd for s in data.samples] == [(dl.Box(0, 0.5, 0.5, 1.0, 1.0),), (), (dl.Box(0, 0.625, 0.5, 0.25, 0.5),)]
    assert data.class_counts() == [0, 1]
    found = boxes_of(Voc(str(voc_dataset), difficult="object"))
    # pixels 11..40 and 21..60 (1-based, inclusive) span x 10..40, y 20..60: centre (25, 40), size 30 x 40
    assert found["a.jpg"] == [("scratch", (0.25, 0.2, 0.3, 0.2)), ("dent", (0.5, 0.5, 1.0, 1.0))]
    assert found["b.jpg"] == [] and found["c.jpg"] == [("dent", (0.625, 0.5, 0.25, 0.5))]
    ordered = Voc(str(voc_dataset), classes=["scratch", "dent", "hole"], difficult="object")
    assert ordered.classes == ["scratch", "dent", "hole"] and ordered.class_counts() == [1, 2, 0]
    (voc_dataset / "ImageSets" / "Main" / "val.txt").unlink()
    assert [s.split for s in Voc(str(voc_dataset)).samples] == ["train", "train", None]


@pytest.mark.parametrize("objects, message", [
    ([("scratch", (11, 21, 102, 60))], r"a.xml, line 7: the box \(x 10..102, y 20..60\) reaches outside the "
                                       r"100x200 image"),
    ([("scratch", (40, 21, 38, 60))], r"a.xml, line 7: a box needs a width and height > 0"),
    ([("scratch", (11, 21, 40, 60)), ("hole", (1, 1, 5, 5))], r"a.xml, line 12: class 'hole' is not one of the "
                                                              r"classes \(scratch, dent\)"),
])
def test_voc_bad_object_names_file_and_line(voc_dataset, objects, message):
    voc_annotation(voc_dataset, "a", (100, 200), objects)
    with pytest.raises(DataError, match=message):
        Voc(str(voc_dataset), classes=["scratch", "dent"])


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE annotation [
  <!ENTITY lol "lol">
""" + "".join(f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n' for i in range(1, 6)) + """]>
<annotation><filename>a.jpg</filename><object><name>&lol5;</name></object></annotation>
"""


def test_voc_refuses_doctype_and_entities_at_once(voc_dataset, tmp_path, run_cli):
    import time

    path = voc_dataset / "Annotations" / "a.xml"
    path.write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"a.xml, line 2: a <!DOCTYPE> or <!ENTITY> declaration is refused"):
        Voc(str(voc_dataset))
    assert time.perf_counter() - started < 2  # refused before anything is expanded
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    path.write_text(f'<!DOCTYPE a [<!ENTITY x SYSTEM "{secret.as_uri()}">]>\n<annotation><filename>a.jpg</filename>'
                    f"<object><name>&x;</name></object></annotation>")
    with pytest.raises(DataError, match=r"a.xml, line 1: a <!DOCTYPE> or <!ENTITY> declaration is refused") as caught:
        Voc(str(voc_dataset))
    assert "do not read" not in str(caught.value)
    path.write_text(BILLION_LAUGHS)
    for args in (["check-data", str(voc_dataset)], ["convert", str(voc_dataset), "--to", "yolo",
                                                     "--out", str(tmp_path / "out")]):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        assert "a <!DOCTYPE> or <!ENTITY> declaration is refused" in result.output and "bug" not in result.output


@pytest.mark.parametrize("size, objects, message", [
    (("nan", 200), [], r"a.xml, line 3: <size> width must be a whole number from 1 to 100000, got nan"),
    ((100, 0), [], r"a.xml, line 3: <size> height must be a whole number from 1 to 100000, got 0"),
    (("inf", 200), [], r"a.xml, line 3: <size> width must be a whole number from 1 to 100000, got inf"),
    ((100, 1e9), [], r"a.xml, line 3: <size> height must be a whole number from 1 to 100000"),
    ((100, 200), [("scratch", ("nan", 21, 40, 60))], r"a.xml, line 7: a box's coordinates must be finite numbers"),
    ((100, 200), [("scratch", (11, 21, "inf", 60))], r"a.xml, line 7: a box's coordinates must be finite numbers"),
    ((100, 200), [("scr\natch", (11, 21, 40, 60))], r"a.xml, line 5: class name 'scr\\natch' holds a control"),
    ((100, 200), [("scr&#9;atch", (11, 21, 40, 60))], r"a.xml, line 5: class name 'scr\\tatch' holds a control"),
])
def test_voc_non_finite_or_absurd_values_name_file_and_line(voc_dataset, size, objects, message):
    voc_annotation(voc_dataset, "a", size, objects)
    with pytest.raises(DataError, match=message):
        Voc(str(voc_dataset))


def test_voc_unreadable_files(voc_dataset):
    (voc_dataset / "Annotations" / "b.xml").write_text("<annotation>\n  <filename>b.jpg</filename>\n  <size>\n"
                                                      "</annotation>\n")
    with pytest.raises(DataError, match=r"b.xml, line 4: not valid XML \(mismatched tag\)"):
        Voc(str(voc_dataset))
    voc_annotation(voc_dataset, "b", (64, 64), [], name="gone.jpg")
    (voc_dataset / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"b.xml, line 2: image 'gone.jpg' not found in"):
        Voc(str(voc_dataset))
    (voc_dataset / "Annotations" / "b.xml").unlink()
    with pytest.raises(DataError, match=r"train.txt, line 2: 'b' has no annotation .*Annotations.b.xml"):
        Voc(str(voc_dataset))


def test_voc_difficult_must_be_0_or_1(voc_dataset):
    path = voc_dataset / "Annotations" / "a.xml"
    path.write_text(path.read_text().replace("<difficult>1</difficult>", "<difficult>yes</difficult>"))
    with pytest.raises(DataError, match=r"a.xml, line 13: <difficult> must be 0 or 1, got 'yes'"):
        Voc(str(voc_dataset))


# --- image names that leave the dataset ----------------------------------------------------------------

@pytest.mark.parametrize("name, problem", [
    ("../outside.png", "leads out of the image folder with '..'"),
    ("train/../../../outside.png", "leads out of the image folder with '..'"),
    ("..\\outside.png", "leads out of the image folder with '..'"),
    ("{outside}", "is an absolute path"),
    ("C:\\data\\outside.png", "is an absolute path"),
])
def test_coco_and_voc_refuse_image_names_that_leave_the_image_folder(coco_dataset, voc_dataset, tmp_path, name,
                                                                     problem):
    outside = write_image(tmp_path / "outside.png", 100, 200)  # exists: it is the name that is refused
    name = name.format(outside=outside)
    path = coco_dataset / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = name
    write_json(path, data)
    with pytest.raises(DataError, match=rf"instances_train.json, image 2: file_name {re.escape(shown(name))} "
                                        rf"{problem}; images must lie in the image folder: make the name relative"):
        Coco(str(coco_dataset))
    voc_annotation(voc_dataset, "b", (64, 64), [], name=name)
    with pytest.raises(DataError, match=rf"b.xml, line 2: <filename> {re.escape(shown(name))} {problem}; images "
                                        rf"must lie in '.*JPEGImages': make the name relative to it"):
        Voc(str(voc_dataset))


def test_coco_and_voc_image_names_may_name_subfolders(coco_dataset, voc_dataset):
    write_image(coco_dataset / "images" / "train" / "more" / "d.png", 10, 10)
    path = coco_dataset / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = "more/./d.png"
    write_json(path, data)
    assert Path(Coco(str(coco_dataset)).samples[1].path) == coco_dataset / "images" / "train" / "more" / "d.png"
    write_image(voc_dataset / "JPEGImages" / "more" / "b.jpg", 64, 64)
    voc_annotation(voc_dataset, "b", (64, 64), [], name="more/../more/b.jpg")  # '..' that stays inside is fine
    assert Path(Voc(str(voc_dataset)).samples[1].path).resolve() == voc_dataset / "JPEGImages" / "more" / "b.jpg"


def test_yolo_data_yaml_and_csv_index_may_name_images_anywhere(tmp_path):
    """Unlike an annotation file, data.yaml and a CSV index are written by the user, like a config: Roboflow's
    data.yaml says train: ../train/images, ultralytics' an absolute path, and screen's subset.csv names
    images of other datasets."""
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere / "train" / "images" / "a.png", 10, 10)
    write_image(elsewhere / "valid" / "images" / "b.png", 10, 10)
    (elsewhere / "train" / "labels").mkdir()
    (elsewhere / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    config = tmp_path / "project" / "data.yaml"
    config.parent.mkdir()
    config.write_text(f"train: ../elsewhere/train/images\nval: {elsewhere / 'valid' / 'images'}\nnames: [dent]\n")
    data = Yolo(str(config))
    assert [(Path(s.path).name, s.split, len(s.boxes)) for s in data.samples] == [("a.png", "train", 1),
                                                                                 ("b.png", "val", 0)]
    index = tmp_path / "project" / "index.csv"
    index.write_text(f"path,label\n../elsewhere/train/images/a.png,dent\n{elsewhere}/valid/images/b.png,ok\n")
    data = CsvIndex(str(index))
    assert [data.load_image(i).shape for i in range(2)] == [(10, 10, 3), (10, 10, 3)]


# --- yolo and csv boxes reaching outside the image -------------------------------------------------

def test_yolo_box_reaching_outside_the_image(tmp_path):
    root = tmp_path / "yolo"
    write_image(root / "images" / "a.png", 10, 10)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.95 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"a.txt, line 2: the box \(x 0.85..1.05, y 0.4..0.6\) reaches outside "
                                        r"the image \(0..1\)"):
        Yolo(str(root))
    (root / "labels" / "a.txt").write_text("0 0.9 0.5 0.2008 0.2\n")  # 0.0004 over: clipped to 0.7996..1
    box = Yolo(str(root)).samples[0].boxes[0]
    assert (box.x_center, box.width) == pytest.approx((0.8998, 0.2004))


def test_csv_boxes_are_a_detection_dataset(tmp_path):
    write_image(tmp_path / "a.png", 8, 8)
    index = tmp_path / "index.csv"
    index.write_text("path,label,split,boxes\na.png,,train,pitted surface 0.5 0.5 0.2 0.4;crack 0.25 0.25 0.1 0.1\n"
                     "a.png,,val,\n")
    data = open_dataset(str(index))
    assert isinstance(data, CsvIndex) and data.task == "detect" and data.classes == ["crack", "pitted surface"]
    assert [s.boxes for s in data.samples] == [(dl.Box(1, 0.5, 0.5, 0.2, 0.4), dl.Box(0, 0.25, 0.25, 0.1, 0.1)), ()]
    assert [s.split for s in data.samples] == ["train", "val"] and data.samples[0].label is None
    index.write_text("path,boxes\na.png,crack 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match=r"index.csv', line 2: expected boxes 'class x_center y_center width height'"):
        open_dataset(str(index))
    index.write_text("path,boxes\na.png,crack 0.05 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"index.csv', line 2: the box \(x -0.05..0.15, y 0.4..0.6\) reaches outside"):
        open_dataset(str(index))


def test_format_detection(coco_dataset, voc_dataset, tmp_path):
    detected = lambda path: [c.name for c in dl.list_components("dataset") if c.obj.detect(path)]  # noqa: E731
    assert detected(coco_dataset) == ["coco"]
    assert detected(coco_dataset / "annotations" / "instances_val.json") == ["coco"]
    assert detected(voc_dataset) == ["voc"]
    roboflow = tmp_path / "roboflow"
    write_image(roboflow / "valid" / "x.jpg", 20, 10)
    write_json(roboflow / "valid" / "_annotations.coco.json", coco_file(
        [{"id": 0, "file_name": "x.jpg", "width": 20, "height": 10}], []))
    assert detected(roboflow) == ["coco"] and open_dataset(str(roboflow)).samples[0].split == "val"


# --- writers, convert and round trips ------------------------------------------------------------------

@pytest.fixture
def yolo_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    for split, stem, size in (("train", "a", (97, 61)), ("train", "b", (64, 64)), ("val", "c", (120, 90)),
                              ("test", "d", (33, 77))):
        write_image(root / "images" / split / f"{stem}.png", *size)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.3131 0.7 0.1 0.1\n2 0.9 0.1 0.2 0.2\n")
    (root / "labels" / "val" / "c.txt").write_text("1 0.1 0.1 0.2 0.2\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\ntest: images/test\n"
                                    "names: [scratch, dent, pitted surface]\n")
    return root


def pixel_corners(data: dl.DefectDataset) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Each image's boxes by file stem: class name and corners in pixels."""
    found = {}
    for sample in data.samples:
        with Image.open(sample.path) as image:
            width, height = image.size
        found[Path(sample.key).stem] = sorted(
            (data.classes[b.label], np.array([(b.x_center - b.width / 2) * width, (b.y_center - b.height / 2) * height,
                                              (b.x_center + b.width / 2) * width, (b.y_center + b.height / 2) * height]))
            for b in sample.boxes)
    return found


def test_round_trip_yolo_coco_voc_yolo_keeps_boxes_classes_splits(yolo_dataset, tmp_path):
    source = open_dataset(str(yolo_dataset))
    coco = dl.convert_dataset(source, "coco", tmp_path / "coco")
    assert sorted(p.name for p in (coco / "annotations").iterdir()) == ["instances_test.json", "instances_train.json",
                                                                       "instances_val.json"]
    voc = dl.convert_dataset(str(coco), "voc", tmp_path / "voc")
    back = dl.convert_dataset(str(voc), "yolo", tmp_path / "back")
    assert (back / "images" / "train" / "a.png").stat().st_ino == (yolo_dataset / "images" / "train" / "a.png").stat().st_ino
    before, after = pixel_corners(source), pixel_corners(open_dataset(str(back)))
    assert sorted(before) == sorted(after) == ["a", "b", "c", "d"]
    for stem in before:
        assert [name for name, _ in before[stem]] == [name for name, _ in after[stem]]
        for (_, x), (_, y) in zip(before[stem], after[stem]):
            assert np.abs(x - y).max() <= 1.0
    result = open_dataset(str(back))
    assert result.classes == ["scratch", "dent", "pitted surface"]  # voc's classes.txt keeps the order
    assert {Path(s.key).stem: s.split for s in result.samples} == {"a": "train", "b": "train", "c": "val", "d": "test"}


def test_yolo_writer_data_yaml_for_ultralytics(tmp_path):
    data = open_dataset({"name": "synthetic_defects", "count": 16, "size": 64})  # 0-13 train, 14-15 val
    out = dl.convert_dataset(data, "yolo", tmp_path / "out")
    config = yaml.safe_load((out / "data.yaml").read_text())
    assert config == {"path": str(out.absolute()), "train": "images/train", "val": "images/val", "nc": 6,
                      "names": dict(enumerate(data.classes))}
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [f"{i:05d}.png" for i in range(14)]
    assert sorted(p.name for p in (out / "labels" / "val").iterdir()) == ["00014.txt", "00015.txt"]
    assert np.array_equal(np.asarray(Image.open(out / "images" / "train" / "00003.png")), data.load_image(3))
    lines = (out / "labels" / "train" / "00003.txt").read_text().splitlines()
    written = np.array([[float(v) for v in line.split()] for line in lines])
    expected = np.array([[b.label, b.x_center, b.y_center, b.width, b.height] for b in data.samples[3].boxes])
    assert written.shape == expected.shape and np.abs(written - expected).max() <= 5.001e-7  # 6 decimals
    record = json.loads((out / "convert.json").read_text())
    assert record["status"] == "done" and record["images"] == 16 and record["classes"] == data.classes
    assert record["boxes"] == sum(len(s.boxes) for s in data.samples)


def test_given_splits_and_images_without_one(yolo_dataset, tmp_path):
    source = open_dataset(str(yolo_dataset))
    out = dl.convert_dataset(source, "yolo", tmp_path / "resplit", splits={"train": [3], "val": [0, 2]})
    back = open_dataset(str(out))
    assert {Path(s.key).stem: s.split for s in back.samples} == {"a": "val", "c": "val", "d": "train"}
    unsplit = Yolo(str(yolo_dataset))
    unsplit.samples = [s.__class__(key=s.key, path=s.path, boxes=s.boxes) if s.key.endswith("b.png") else s
                       for s in unsplit.samples]
    out = dl.convert_dataset(unsplit, "yolo", tmp_path / "mixed")
    assert not (out / "data.yaml").exists() and (out / "classes.txt").read_text().splitlines() == unsplit.classes
    back = open_dataset(str(out))
    assert {Path(s.key).stem: s.split for s in back.samples} == {"a": "train", "b": None, "c": "val", "d": "test"}
    with pytest.raises(DataError, match=r"sample 0 \('images/train/a.png'\) is in both splits 'train' and 'val'"):
        dl.convert_dataset(source, "yolo", tmp_path / "twice", splits={"train": [0], "val": [0]})


def test_convert_refuses_what_it_cannot_do(yolo_dataset, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="is not empty and holds no defectlab output"):
        dl.convert_dataset(str(yolo_dataset), "coco", tmp_path / "mine")
    dl.convert_dataset(str(yolo_dataset), "coco", tmp_path / "out")
    with pytest.raises(DataError, match=r"already holds the output of an earlier run \(convert.json\).*--overwrite"):
        dl.convert_dataset(str(yolo_dataset), "voc", tmp_path / "out")
    dl.convert_dataset(str(yolo_dataset), "voc", tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "annotations").exists() and (tmp_path / "out" / "Annotations").is_dir()
    with pytest.raises(DataError, match="cannot write a dataset; formats that can: coco, voc, yolo"):
        dl.convert_dataset(str(yolo_dataset), "csv_index", tmp_path / "csv")
    with pytest.raises(dl.UnknownComponentError, match="did you mean 'coco'"):
        dl.convert_dataset(str(yolo_dataset), "coc", tmp_path / "typo")
    with pytest.raises(DataError, match="is a 'segment' dataset; convert writes detection formats"):
        dl.convert_dataset({"name": "synthetic_cracks", "count": 2, "size": 64, "defect_ratio": 0.01}, "yolo",
                           tmp_path / "cracks")
    assert not (tmp_path / "csv").exists() and not (tmp_path / "cracks").exists()


def test_convert_command(run_cli, yolo_dataset, tmp_path):
    result = run_cli("convert", "synthetic_defects", "--set", "count=4", "--set", "size=64", "--to", "voc",
                     "--out", str(tmp_path / "voc"))
    assert result.exit_code == 0, result.output
    assert "split  images  boxes" in result.output and f"written as voc: {tmp_path / 'voc'}" in result.output
    assert len(open_dataset(str(tmp_path / "voc"))) == 4
    spec = f'{{name = "yolo", root = "{yolo_dataset}", classes = ["s", "d", "p"]}}'
    result = run_cli("convert", spec, "--to", "coco", "--out", str(tmp_path / "coco"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["classes"] == ["s", "d", "p"]
    result = run_cli("convert", str(yolo_dataset), "--set", "classes=[1]", "--to", "coco", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "--set needs DATASET by name" in result.output
    result = run_cli("convert", str(yolo_dataset), "--to", "coco", "--out", str(tmp_path / "coco"))
    assert result.exit_code == 1 and "already holds the output of an earlier run" in result.output


# --- the subset screen writes for a detection source ---------------------------------------------------

def test_detection_subset_reads_back_with_its_boxes(yolo_dataset, tmp_path):
    source = open_dataset(str(yolo_dataset))
    rows = dl.source_subset(source, ["dent", "pitted surface"])
    path = dl.write_subset_csv(rows, tmp_path / "subset.csv")
    subset = open_dataset(str(path))
    assert isinstance(subset, CsvIndex) and subset.task == "detect" and subset.classes == ["dent", "pitted surface"]
    assert {Path(s.key).stem: (s.split, s.boxes) for s in subset.samples} == {
        "a": ("train", (dl.Box(0, 0.3131, 0.7, 0.1, 0.1), dl.Box(1, 0.9, 0.1, 0.2, 0.2))),
        "b": ("train", ()), "c": ("val", (dl.Box(0, 0.1, 0.1, 0.2, 0.2),)), "d": ("test", ())}
    pytest.importorskip("torch")
    data = dl.DataModule(str(path), image_size=32, batch_size=4)
    assert data.task == "detect" and [len(data.splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    batch = next(iter(data.loader("val")))
    assert batch["target"][0]["labels"].tolist() == [0]
    assert batch["target"][0]["boxes"].tolist() == [pytest.approx([0.0, 0.0, 6.4, 6.4])]  # 0..0.2 of 32 px


def test_screen_saves_the_images_of_a_generated_detection_source(tmp_path):
    target = {"name": "synthetic_defects", "count": 6, "size": 64, "classes": ["scratches", "patches"], "seed": 1}
    source = {"name": "synthetic_defects", "count": 8, "size": 64, "seed": 2}
    distance = {"name": "emd", "k": 2, "pixels_per_image": 64, "cache": False}
    result = dl.screen(target, [source], distance=distance)
    written = result.save(tmp_path / "screen")
    subset = open_dataset(str(written["subset"]))
    generated = open_dataset(source)
    kept = {s.key: s for s in generated.samples if not s.boxes or {generated.classes[b.label] for b in s.boxes} &
            {"scratches", "patches"}}
    assert subset.task == "detect" and subset.classes == ["patches", "scratches"] and len(subset) == len(kept)
    for index, sample in enumerate(subset.samples):
        original = kept[sample.meta["key"]]
        assert Path(sample.path).parent == tmp_path / "screen" / "subset-images"
        assert np.array_equal(subset.load_image(index), generated.load_image(generated.samples.index(original)))
        assert [subset.classes[b.label] for b in sample.boxes] == [
            generated.classes[b.label] for b in original.boxes if generated.classes[b.label] in subset.classes]
