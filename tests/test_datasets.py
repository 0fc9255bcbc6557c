"""The built-in dataset formats: classes, counts, labels, boxes, splits, masks and format detection."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import defectlab as dl
import numpy as np
import pytest
from defectlab import DataError, DefectlabError, open_dataset
from defectlab_plugins.datasets.csv_index import CsvIndex
from defectlab_plugins.datasets.image_folder import ImageFolder
from defectlab_plugins.datasets.image_mask import ImageMask
from defectlab_plugins.datasets.mvtec import MVTecAD
from defectlab_plugins.datasets.yolo import Yolo
from PIL import Image

RNG = np.random.default_rng(7)


def write_image(path: Path, size: tuple[int, int] = (8, 6), mode: str = "L", values: np.ndarray | None = None) -> Path:
    """A small random image (or ``values``) of ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if values is None:
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        values = RNG.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = (8, 6), on: int = 255) -> np.ndarray:
    """A mask with a rectangle of ``on`` pixels; returns where the rectangle is."""
    values = np.zeros((size[1], size[0]), dtype=np.uint8)
    values[1:3, 2:5] = on
    write_image(path, values=values)
    return values > 0


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def detected(path: Path) -> list[str]:
    return [c.name for c in dl.list_components("dataset") if c.obj.detect(path)]


# --- image_folder ------------------------------------------------------------------------------------

@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "folders"
    for name, n in (("ok", 3), ("defect10", 2), ("defect2", 1)):
        for i in range(n):
            write_image(root / name / f"{i}.png")
    write_image(root / "defect10" / "nested" / "deep.png", mode="RGB")
    write_image(root / ".cache" / "skip.png")
    write_text(root / "ok" / "notes.txt", "not an image")
    return root


def test_image_folder_classes_in_natural_order_and_counts(image_folder):
    data = open_dataset(str(image_folder))
    assert isinstance(data, ImageFolder) and data.task == "classify"
    assert data.classes == ["defect2", "defect10", "ok"]
    assert data.class_counts() == [1, 3, 3]
    by_key = {s.key: s for s in data.samples}
    assert by_key["defect10/nested/deep.png"].label == 1 and by_key["ok/2.png"].label == 2
    index = data.samples.index(by_key["defect10/nested/deep.png"])
    assert data.load_image(index).shape == (6, 8, 3)
    assert data.load_image(0).shape == (6, 8)


def test_image_folder_chosen_classes_fix_the_indices(image_folder):
    data = dl.create("dataset", "image_folder", root=str(image_folder), classes="ok,defect2")
    assert data.classes == ["ok", "defect2"] and data.class_counts() == [3, 1]
    with pytest.raises(DataError, match="no class folder scratch"):
        ImageFolder(str(image_folder), classes=["ok", "scratch"])


def test_unreadable_image_is_skipped_once(image_folder):
    (image_folder / "ok" / "broken.png").write_bytes(b"these bytes are not an image")
    data = open_dataset(str(image_folder))
    assert len(data) == 8
    loaded = [data.samples[i].key for i, _ in data.iter_images()]
    assert "ok/broken.png" not in loaded and len(loaded) == 7
    assert list(data.unreadable) == ["ok/broken.png"]


def test_folder_names_with_digit_like_characters_and_a_broken_png_chunk(image_folder):
    write_image(image_folder / "x²" / "0.png")  # '²' passes str.isdigit() but is no number
    assert open_dataset(str(image_folder)).classes == ["defect2", "defect10", "ok", "x²"]
    png = write_image(image_folder / "ok" / "0.png", values=np.full((6, 8, 3), 128)).read_bytes()
    start = png.index(b"IDAT") + 6
    (image_folder / "ok" / "0.png").write_bytes(png[:start] + b"[" * 40 + png[start:])  # Pillow: SyntaxError
    data = open_dataset(str(image_folder))
    with pytest.raises(dl.UnreadableImageError, match=r"cannot read image '.*ok.0\.png'"):
        data.load_image([s.key for s in data.samples].index("ok/0.png"))


# --- csv_index ---------------------------------------------------------------------------------------

@pytest.fixture
def csv_dataset(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png", "c.png", "sub/d.png"):
        write_image(tmp_path / "imgs" / name)
    return write_text(tmp_path / "index.csv",
                      "Path,Label,Split,operator\n"
                      "imgs/a.png,scratch,train,ann\n"
                      "imgs/b.png,ok,valid,bob\n"
                      "\n"
                      "imgs/c.png,dent,,ann\n"
                      f"{tmp_path / 'imgs' / 'sub' / 'd.png'},ok,test,bob\n")


def test_csv_index_labels_splits_and_meta(csv_dataset):
    data = open_dataset(str(csv_dataset))
    assert isinstance(data, CsvIndex)
    assert data.classes == ["dent", "ok", "scratch"] and data.class_counts() == [1, 2, 1]
    assert [s.label for s in data.samples] == [2, 1, 0, 1]
    assert [s.split for s in data.samples] == ["train", "val", None, "test"]
    assert data.samples[1].meta == {"operator": "bob"}
    assert data.samples[0].key == "imgs/a.png" and data.load_image(3).shape == (6, 8)


def test_csv_index_with_given_classes(csv_dataset):
    data = CsvIndex(str(csv_dataset), classes=["ok", "dent", "scratch", "crack"])
    assert data.class_counts() == [2, 1, 1, 0]
    with pytest.raises(DataError, match="labels dent, scratch that are not among the classes ok"):
        CsvIndex(str(csv_dataset), classes=["ok"])


def test_csv_index_names_the_columns_it_found(tmp_path):
    index = write_text(tmp_path / "bad.csv", "file,class\nx.png,ok\n")
    with pytest.raises(DefectlabError, match=r"no path or label column.*found: file, class"):
        open_dataset(str(index))
    semicolons = write_text(tmp_path / "semi.csv", "path;label\nx.png;ok\n")
    assert CsvIndex(str(semicolons)).classes == ["ok"]


def test_csv_index_missing_file_is_unreadable_when_loaded(csv_dataset):
    with open(csv_dataset, "a") as handle:
        handle.write("imgs/gone.png,dent,train,ann\n")
    data = open_dataset(str(csv_dataset))
    assert len(data) == 5
    with pytest.raises(dl.UnreadableImageError, match=r"gone.png', listed in .*index.csv' line 7, does not exist"):
        data.load_image(4)
    assert len(list(data.iter_images())) == 4 and list(data.unreadable) == ["imgs/gone.png"]


# --- yolo ----------------------------------------------------------------------------------------------

@pytest.fixture
def yolo_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c")):
        write_image(root / "images" / split / f"{stem}.jpg", mode="RGB")
    write_text(root / "labels" / "train" / "a.txt", "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.1\n0 0.1 0.1 0.3 0.3 0.2 0.5\n")
    write_text(root / "labels" / "val" / "c.txt", "\n")
    write_text(root / "data.yaml", "path: .\ntrain: images/train\nval: images/val\n"
                                   "names:\n  0: scratch\n  1: dent\n")
    return root


def test_yolo_boxes_splits_and_defect_free_images(yolo_dataset):
    data = open_dataset(str(yolo_dataset))
    assert isinstance(data, Yolo) and data.task == "detect"
    assert data.classes == ["scratch", "dent"]
    by_key = {s.key: s for s in data.samples}
    assert sorted(by_key) == ["images/train/a.jpg", "images/train/b.jpg", "images/val/c.jpg"]
    boxes = by_key["images/train/a.jpg"].boxes
    assert boxes[:2] == (dl.Box(0, 0.5, 0.5, 0.2, 0.4), dl.Box(1, 0.25, 0.75, 0.1, 0.1))
    assert astuple(boxes[2]) == pytest.approx((0, 0.2, 0.3, 0.2, 0.4))  # polygon (0.1,0.1) (0.3,0.3) (0.2,0.5)
    assert by_key["images/train/b.jpg"].boxes == () and by_key["images/val/c.jpg"].boxes == ()
    assert [by_key[k].split for k in sorted(by_key)] == ["train", "train", "val"]
    assert data.class_counts() == [1, 1]
    assert open_dataset(str(yolo_dataset / "data.yaml")).classes == ["scratch", "dent"]


def test_yolo_names_list_and_layout_without_yaml(yolo_dataset):
    (yolo_dataset / "data.yaml").write_text("train: images/train\nval: [images/val]\nnames: [s, d]\nnc: 2\n")
    assert Yolo(str(yolo_dataset)).classes == ["s", "d"]
    (yolo_dataset / "data.yaml").unlink()
    data = open_dataset(str(yolo_dataset))
    assert data.classes == ["0", "1"] and {s.split for s in data.samples} == {"train", "val"}
    write_text(yolo_dataset / "classes.txt", "scratch\ndent\nhole\n")
    assert Yolo(str(yolo_dataset)).class_counts() == [1, 1, 0]


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "expected 'class x_center y_center width height'"),
    ("zero 0.5 0.5 0.2 0.2", "expected 'class x_center y_center width height'"),
    ("2 0.5 0.5 0.2 0.2", "class '2' is not one of the classes"),
    ("0 0.5 1.5 0.2 0.2", "coordinates must be normalised to 0..1"),
    ("0 0.5 0.5 0 0.2", "a box needs a width and height > 0"),
    ("0 0.5 0.5 0.2 0.2 0.3", "expected 'class x_center y_center width height'"),
    ("0 nan 0.5 0.2 0.2", r"numbers must be finite \(no nan or inf\), got '0 nan 0.5 0.2 0.2'"),
    ("0 0.5 0.5 inf 0.2", r"numbers must be finite \(no nan or inf\)"),
    ("nan 0.5 0.5 0.2 0.2", r"numbers must be finite \(no nan or inf\)"),
    ("1.5 0.5 0.5 0.2 0.2", r"the class must be an integer index, got '1.5'"),
    ("1e300 0.5 0.5 0.2 0.2", r"class '1e300' is not one of the classes \(0..1\)"),
])
def test_yolo_malformed_line_names_file_and_line(yolo_dataset, line, message):
    with open(yolo_dataset / "labels" / "train" / "a.txt", "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(DataError, match=rf"labels.train.a\.txt, line 4: {message}"):
        Yolo(str(yolo_dataset))


def test_yolo_label_files_a_folder_a_bom_or_not_utf8(yolo_dataset):
    (yolo_dataset / "labels" / "train" / "b.txt").mkdir()
    with pytest.raises(DataError, match=r"labels.train.b\.txt' is a folder where a file is expected"):
        Yolo(str(yolo_dataset))
    (yolo_dataset / "labels" / "train" / "b.txt").rmdir()
    (yolo_dataset / "labels" / "train" / "b.txt").write_bytes(b"\xef\xbb\xbf1 0.5 0.5 0.2 0.4\r\n")  # Windows tools
    boxes = {s.key: s.boxes for s in Yolo(str(yolo_dataset)).samples}
    assert boxes["images/train/b.jpg"] == (dl.Box(1, 0.5, 0.5, 0.2, 0.4),)
    (yolo_dataset / "labels" / "train" / "b.txt").write_bytes(b"0 0.5 0.5 \xff 0.4\n")
    with pytest.raises(DataError, match=r"labels.train.b\.txt' is not UTF-8 text \(byte 10"):
        Yolo(str(yolo_dataset))


def test_yolo_class_index_without_names_is_bounded(yolo_dataset):
    (yolo_dataset / "data.yaml").unlink()
    write_text(yolo_dataset / "labels" / "train" / "b.txt", "99999999 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"b\.txt, line 1: class '99999999' is not one of the classes \(0..9999\)"):
        Yolo(str(yolo_dataset))


BILLION_LAUGHS_YAML = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(5)) + \
    "train: images/train\nnames: *f\n"  # 9**6 names when expanded (small, so that a reader without the check ends)


@pytest.mark.parametrize("text, message", [
    (BILLION_LAUGHS_YAML, r"data.yaml, line 2: YAML aliases \(\*a\) are refused"),
    ("base: &b images/train\ntrain: *b\nnames: [a, b]\n", r"data.yaml, line 2: YAML aliases \(\*b\) are refused"),
    ("train: images/train\nnames: " + "[" * 100_000 + "]" * 100_000 + "\n", "is nested too deeply"),
    ("train: images/train\nnc: 1000000000000\n", r"data.yaml': nc must be a whole number from 1 to 10000"),
    ("train: images/train\nnc: true\n", r"data.yaml': nc must be a whole number from 1 to 10000, got True"),
    ("train: images/train\nnames: [[a], b]\n", r"data.yaml', names entry 0: a class name must be a non-empty string"),
    ('train: images/train\nnames: ["a\\nb", c]\n', r"names entry 0: class name 'a\\nb' holds a control character"),
    ("train: images/train\nnames: {.inf: a}\n", r"names must be numbered 0..0"),
    ("train: images/train\nnc: " + "9" * 5000 + "\n", r"data.yaml' holds a value that cannot be read"),
    ("path: ~no-such-user-here/x\ntrain: images/train\n", r"data.yaml': path '~no-such-user-here/x'"),
])
def test_yolo_hostile_data_yaml_is_one_data_error(yolo_dataset, text, message):
    import time

    write_text(yolo_dataset / "data.yaml", text)
    started = time.perf_counter()
    with pytest.raises(DataError, match=message):
        Yolo(str(yolo_dataset))
    assert time.perf_counter() - started < 5


def test_csv_non_finite_boxes_and_control_characters(tmp_path):
    index = write_text(tmp_path / "index.csv", "path,boxes\na.png,dent nan 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"index.csv', line 2: a box's coordinates must be finite numbers"):
        CsvIndex(str(index))
    write_text(index, 'path,label\na.png,"de\nnt"\n')
    with pytest.raises(DataError, match=r"index.csv', line 3: class name 'de\\nnt' holds a control character"):
        CsvIndex(str(index))


def test_yolo_missing_split_folder(yolo_dataset):
    (yolo_dataset / "data.yaml").write_text("train: images/train\nval: images/nothing\nnames: [a, b]\n")
    with pytest.raises(DataError, match="val entry 'images/nothing' not found"):
        Yolo(str(yolo_dataset))


# --- mvtec ---------------------------------------------------------------------------------------------

@pytest.fixture
def mvtec_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "cable"
    for name in ("train/good/000.png", "train/good/001.png", "test/good/000.png",
                 "test/poke_insulation/000.png", "test/cut/000.png", "test/cut/001.png"):
        write_image(root / name, mode="RGB")
    for name in ("poke_insulation/000", "cut/000", "cut/001"):
        write_mask(root / "ground_truth" / f"{name}_mask.png")
    return root


def test_mvtec_classes_splits_and_masks(mvtec_dataset):
    data = open_dataset(str(mvtec_dataset))
    assert isinstance(data, MVTecAD)
    assert data.classes == ["good", "cut", "poke_insulation"] and data.class_counts() == [3, 2, 1]
    by_key = {s.key: i for i, s in enumerate(data.samples)}
    assert [data.samples[i].split for i in by_key.values()].count("train") == 2
    good, cut = by_key["test/good/000.png"], by_key["test/cut/001.png"]
    assert data.samples[good].mask_path is None and data.samples[cut].split == "test"
    assert data.samples[cut].mask_path.endswith("ground_truth/cut/001_mask.png")
    assert data.samples[cut].meta == {"defect_type": "cut"}
    zeros = data.load_mask(good)
    assert zeros.shape == (6, 8) and zeros.dtype == np.uint8 and not zeros.any()
    poke = data.load_mask(by_key["test/poke_insulation/000.png"])
    assert sorted(np.unique(poke)) == [0, 2] and (poke == 2).sum() == 6
    binary = MVTecAD(str(mvtec_dataset), binary_masks=True)
    assert sorted(np.unique(binary.load_mask(by_key["test/poke_insulation/000.png"]))) == [0, 1]


# --- image_mask ----------------------------------------------------------------------------------------

@pytest.fixture
def image_mask_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "pairs"
    write_image(root / "images" / "train" / "a.png")
    write_image(root / "images" / "train" / "b.jpg", mode="RGB")
    write_image(root / "images" / "c.tif")
    write_mask(root / "masks" / "train" / "a.png", on=255)
    write_mask(root / "masks" / "train" / "b_mask.png", on=1)
    write_mask(root / "masks" / "c.bmp", on=255)
    return root


def test_image_mask_pairs_by_stem(image_mask_dataset):
    data = open_dataset(str(image_mask_dataset))
    assert isinstance(data, ImageMask) and data.task == "segment"
    assert data.classes == ["background", "defect"]
    assert [(s.key, Path(s.mask_path).name, s.split) for s in data.samples] == [
        ("c.tif", "c.bmp", None), ("train/a.png", "a.png", "train"), ("train/b.jpg", "b_mask.png", "train")]
    for index in range(len(data)):
        mask = data.load_mask(index)
        assert mask.dtype == np.uint8 and sorted(np.unique(mask)) == [0, 1] and mask.sum() == 6


def test_image_without_mask_says_what_to_do(image_mask_dataset):
    write_image(image_mask_dataset / "images" / "lonely.png")
    with pytest.raises(DefectlabError, match=r"1 image\(s\) in .* have no mask .*\(e.g. lonely.png\); save each mask"):
        open_dataset(str(image_mask_dataset))


def test_mask_of_wrong_size_or_values(image_mask_dataset):
    write_mask(image_mask_dataset / "masks" / "c.bmp", size=(4, 4))
    write_mask(image_mask_dataset / "masks" / "train" / "a.png", on=7)
    data = ImageMask(str(image_mask_dataset))
    with pytest.raises(DataError, match=r"c.bmp' is 4x4 but its image '.*c.tif' is 8x6"):
        data.load_mask(0)
    with pytest.raises(DataError, match=r"a.png' has values \[7\] outside the 2 classes \(background, defect = 0..1\)"):
        data.load_mask(1)
    three = ImageMask(str(image_mask_dataset), classes=("background", "a", "b", "c", "d", "e", "f", "g"))
    assert (three.load_mask(1) == 7).sum() == 6


# --- detection -------------------------------------------------------------------------------------------

def test_each_layout_is_detected_as_exactly_one_format(image_folder, csv_dataset, yolo_dataset, mvtec_dataset,
                                                       image_mask_dataset):
    assert detected(image_folder) == ["image_folder"]
    assert detected(csv_dataset) == ["csv_index"]
    assert detected(yolo_dataset) == ["yolo"] and detected(yolo_dataset / "data.yaml") == ["yolo"]
    assert detected(mvtec_dataset) == ["mvtec"]
    assert detected(image_mask_dataset) == ["image_mask"]


def test_unknown_or_ambiguous_layout_cannot_be_told(tmp_path, image_mask_dataset):
    write_text(tmp_path / "loose" / "readme.txt", "hello")
    write_image(tmp_path / "loose" / "one.png")
    with pytest.raises(DataError, match="cannot tell the format of"):
        open_dataset(str(tmp_path / "loose"))
    (image_mask_dataset / "labels").mkdir()
    assert detected(image_mask_dataset) == []


def test_every_format_documents_its_parameters():
    for component in dl.list_components("dataset"):
        if component.plugin != "datasets":
            continue
        assert component.summary and component.obj.task in ("classify", "detect", "segment", "pretrain")
        assert all(p.doc and p.type_name != "any" for p in component.parameters), component.name


# --- elpv ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def elpv_arrays():
    from elpv_dataset.utils import load_dataset

    return load_dataset()


def test_elpv_cell_types_and_classes(elpv_arrays):
    images, probabilities, types = elpv_arrays
    mono, poly, every = open_dataset("elpv:mono"), open_dataset("elpv:poly"), open_dataset("elpv")
    assert len(mono) == int((types == "mono").sum()) and len(poly) == int((types == "poly").sum())
    assert len(mono) + len(poly) == len(every) == 2624
    assert mono.classes == ["0", "1/3", "2/3", "1"]
    expected = [int(np.isclose(probabilities[types == "mono"], p).sum()) for p in (0, 1 / 3, 2 / 3, 1)]
    assert mono.class_counts() == expected
    binary = dl.create("dataset", "elpv", cell_type="mono", binary="true")
    assert binary.classes == ["functional", "defective"]
    assert binary.class_counts()[1] == int((probabilities[types == "mono"] >= 0.5).sum())
    sample = every.samples[5]
    assert sample.key == "cell0006.png"
    assert sample.meta == {"cell_type": str(types[5]), "probability": float(probabilities[5])}


def test_elpv_images_equal_the_packaged_array(elpv_arrays):
    images, _, types = elpv_arrays
    poly = open_dataset("elpv:poly")
    position = np.flatnonzero(types == "poly")
    for index in (0, 17, len(poly) - 1):
        image = poly.load_image(index)
        assert image.dtype == np.uint8 and image.shape == (300, 300)
        np.testing.assert_array_equal(image, images[position[index]])


def test_elpv_fingerprint_is_stable_and_per_selection():
    assert open_dataset("elpv:mono").fingerprint() == open_dataset("elpv:mono").fingerprint()
    assert open_dataset("elpv:mono").fingerprint() != open_dataset("elpv:poly").fingerprint()
    with pytest.raises(DefectlabError, match="cell_type"):
        open_dataset("elpv:amorphous")
