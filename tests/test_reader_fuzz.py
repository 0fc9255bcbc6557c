"""Hostile and malformed input files, generated and mutated by hypothesis: every dataset reader (COCO, VOC,
YOLO, the CSV index, class folders) ends in samples or in one DataError, and a TOML config in a config or a
DefectlabError, within a time bound; never in another exception (a RecursionError, a TypeError, a hang)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from defectlab import DataError, DefectlabError
from defectlab.plugin_system.config import load_config
from defectlab_plugins.datasets.coco import Coco
from defectlab_plugins.datasets.csv_index import CsvIndex
from defectlab_plugins.datasets.image_folder import ImageFolder
from defectlab_plugins.datasets.voc import Voc
from defectlab_plugins.datasets.yolo import Yolo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

SECONDS = 10  # the most one file may take to be read or refused
EXAMPLES = int(os.environ.get("DEFECTLAB_FUZZ_EXAMPLES", "40"))  # more for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _png(width: int = 8, height: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()

# pieces that broke readers, or could: deep nesting, BOMs, NUL bytes, non-finite numbers, huge numbers,
# entities, aliases, control characters
HOSTILE = [b"[" * 3000, b"{" * 3000, b"\xef\xbb\xbf", b"\x00", b"NaN", b"nan", b"Infinity", b"-inf", b"1e999",
           b"9" * 5000, b"true", b"null", b"[]", b"{}", b'"', b"\n", b"\r\n", b"\t", b"\x01", b"\xff\xfe",
           b"<!DOCTYPE a [<!ENTITY x 'y'>]>", b"&x;", b"&a [1]", b"*a", b"<<: *a", b"---", b"- ", b": ",
           b"]]]]", b"<", b"/>", b"\xc3", b";", b",", b"'", b"=", b"[[x]]", b"2024-13-45"]

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() |
           st.text(max_size=6) | st.sampled_from(["a.png", "dent", "0", "", "\n", "x\x00y"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


def either(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[Any]:
    """Mostly (9 in 10) a plausible value, else any other value (any JSON value by default)."""
    return st.integers(0, 9).flatmap(lambda i: other if i == 9 else valid)


@st.composite
def mutated(draw: st.DrawFn, content: bytes) -> bytes:
    """``content`` with a few bytes inserted, deleted, replaced or repeated."""
    data = bytearray(content)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        piece = draw(st.sampled_from(HOSTILE) | st.binary(min_size=1, max_size=4))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "replace":
            data[at:at + len(piece)] = piece
        else:
            data[at:at] = bytes(data[at:at + 8]) * draw(st.integers(2, 50))
    return bytes(data)


def file_content(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Generated text as UTF-8, a third of the time mutated."""
    return text.map(lambda t: t.encode("utf-8", "surrogatepass")).flatmap(
        lambda b: st.integers(0, 2).flatmap(lambda i: mutated(b) if i == 2 else st.just(b)))


@contextlib.contextmanager
def time_bound(seconds: int = SECONDS) -> Iterator[None]:
    """A TimeoutError when the block takes longer than ``seconds`` (a hang fails instead of blocking)."""
    def expired(*_: Any) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_or_refuse(read: Callable[[], Any], refused: type[Exception] = DataError) -> Any:
    """The reader's result, or None when it refused the input with ``refused``; anything else fails the test."""
    with time_bound():
        try:
            dataset = read()
            if hasattr(dataset, "samples"):
                assert all(s.key for s in dataset.samples) and all(isinstance(c, str) for c in dataset.classes)
            return dataset
        except refused as exc:
            assert str(exc).strip(), "an error must say what is wrong"
            return None


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# image names that lead to tmp/a.png, outside the dataset (OUTSIDE: its absolute path), to be refused
OUTSIDE = "@outside@"
LEAVING = st.sampled_from(["../a.png", "../../a.png", "x/../../../a.png", "..\\..\\a.png", OUTSIDE])


def stays_in(dataset: Any, folder: Path) -> None:
    """Every image the reader accepted lies in ``folder``: none was taken from outside the dataset."""
    for sample in getattr(dataset, "samples", ()):
        assert Path(sample.path).resolve().is_relative_to(folder.resolve()), sample.path


# --- COCO --------------------------------------------------------------------------------------------

coco_image = st.fixed_dictionaries(
    {"id": either(st.integers(0, 1)), "file_name": either(st.just("a.png"), LEAVING | json_values)},
    optional={"width": either(st.just(8)), "height": either(st.just(6))})
coco_annotation = st.fixed_dictionaries(
    {"image_id": either(st.integers(0, 1)), "category_id": either(st.integers(1, 2)),
     "bbox": either(st.tuples(st.integers(0, 3), st.floats(0, 2), st.integers(1, 4), st.floats(0.5, 3)).map(list))},
    optional={"id": either(st.integers(0, 9)), "iscrowd": either(st.integers(0, 1))})
coco_category = st.fixed_dictionaries({"id": either(st.integers(1, 2)),
                                       "name": either(st.sampled_from(["dent", "scratch"]))})
coco_files = st.fixed_dictionaries({
    "images": either(st.lists(coco_image, min_size=1, max_size=2, unique_by=lambda image: repr(image["id"]))),
    "annotations": either(st.lists(coco_annotation, max_size=4)),
    "categories": either(st.lists(coco_category, min_size=1, max_size=2, unique_by=lambda c: repr(c["id"])))})


@FUZZ
@given(file_content(coco_files.map(json.dumps)))
def test_coco_reads_or_refuses_any_json(content):
    with tempfile.TemporaryDirectory() as tmp:
        inside = Path(tmp) / "data"  # the JSON's folder and its parent, where images are looked for
        write(Path(tmp) / "a.png", PNG)
        write(inside / "json" / "a.png", PNG)
        content = content.replace(OUTSIDE.encode(), str(Path(tmp) / "a.png").encode())
        stays_in(read_or_refuse(lambda: Coco(str(write(inside / "json" / "instances.json", content)))), inside)


# --- VOC ---------------------------------------------------------------------------------------------

numbers_as_text = st.floats().map(str) | st.text(max_size=4) | st.sampled_from(["nan", "inf", "1e999", "0", "-3"])
voc_object = st.tuples(either(st.sampled_from(["dent", "scratch"]), st.text(max_size=6)),
                       st.tuples(*(either(st.just(str(v)), numbers_as_text) for v in (1, 2, 5, 4))))


def voc_xml(name: str, size: tuple[str, str], objects: list[tuple[str, list[str]]]) -> str:
    boxes = "".join(f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                    f"<ymax>{b[3]}</ymax></bndbox></object>\n" for name, b in objects)
    return (f"<annotation>\n<filename>{name}</filename>\n<size><width>{size[0]}</width><height>{size[1]}</height>"
            f"</size>\n{boxes}</annotation>\n")


voc_files = st.builds(voc_xml, either(st.just("a.png"), LEAVING), st.tuples(either(st.just("8"), numbers_as_text),
                                                                           either(st.just("6"), numbers_as_text)),
                      st.lists(voc_object, max_size=3))


@FUZZ
@given(file_content(voc_files))
def test_voc_reads_or_refuses_any_xml(content):
    with tempfile.TemporaryDirectory() as tmp:
        inside = Path(tmp) / "voc"
        write(Path(tmp) / "a.png", PNG)
        write(inside / "JPEGImages" / "a.png", PNG)
        write(inside / "Annotations" / "a.xml", content.replace(OUTSIDE.encode(), str(Path(tmp) / "a.png").encode()))
        stays_in(read_or_refuse(lambda: Voc(str(inside))), inside / "JPEGImages")


# --- YOLO --------------------------------------------------------------------------------------------

label_token = st.sampled_from(["0", "1", "0.5", "0.2", "nan", "inf", "-1", "1e300", "1.5", "x"]) | \
    st.floats().map(str)
label_box = st.tuples(st.integers(0, 1), st.floats(0.3, 0.7), st.floats(0.3, 0.7), st.floats(0.05, 0.5),
                      st.floats(0.05, 0.5)).map(lambda box: " ".join(map(str, box)))
label_lines = st.lists(either(label_box, st.lists(label_token, max_size=8).map(" ".join)), max_size=4).map("\n".join)
yaml_files = st.fixed_dictionaries(
    {"train": either(st.just("images/train"))},
    optional={"path": either(st.just(".")), "val": either(st.just("images/train")),
              "names": either(st.just(["dent", "scratch"]) | st.just({0: "dent", 1: "scratch"}),
                              json_values | st.lists(st.sampled_from(["dent", "x"]), max_size=3)),
              "nc": either(st.just(2))}).map(lambda d: yaml.safe_dump(d, allow_unicode=True))


@FUZZ
@given(file_content(yaml_files), file_content(label_lines))
def test_yolo_reads_or_refuses_any_data_yaml_and_labels(data_yaml, labels):
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "images" / "train" / "a.png", PNG)
        write(Path(tmp) / "labels" / "train" / "a.txt", labels)
        write(Path(tmp) / "data.yaml", data_yaml)
        read_or_refuse(lambda: Yolo(tmp))


# --- CSV index ---------------------------------------------------------------------------------------

csv_cell = st.sampled_from(["a.png", "missing.png", "dent", "scratch", "train", "", "dent 0.5 0.5 0.2 0.2",
                            "dent nan 0.5 0.2 0.2; x 0.1 0.1 1e9 0.1", '"quoted, cell"']) | st.text(max_size=6)
csv_row = st.tuples(st.sampled_from(["a.png", "missing.png"]), st.sampled_from(["dent", "dent 0.5 0.5 0.2 0.2"]),
                    st.sampled_from(["train", "val", ""])).map(",".join)
csv_files = st.tuples(either(st.just("path,label,split") | st.just("path,boxes,split"),
                             st.sampled_from(["path;label", "label", "path,boxes"])),
                      st.lists(either(csv_row, st.lists(csv_cell, min_size=1, max_size=4).map(",".join)), max_size=4)
                      ).map(lambda t: "\n".join([t[0], *t[1]]) + "\n")


@FUZZ
@given(file_content(csv_files))
def test_csv_index_reads_or_refuses_any_csv(content):
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "a.png", PNG)
        dataset = read_or_refuse(lambda: CsvIndex(str(write(Path(tmp) / "index.csv", content))))
        for index in range(len(dataset or ())):
            read_or_refuse(lambda: dataset.load_image(index))  # noqa: B023 - called at once


# --- class folders -----------------------------------------------------------------------------------

folder_names = st.text(st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)),
                       min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))
image_bytes = st.one_of(st.just(PNG), mutated(PNG), st.binary(max_size=64))


@settings(FUZZ, max_examples=max(EXAMPLES * 5 // 8, 1))
@given(st.dictionaries(folder_names, st.lists(st.tuples(st.sampled_from([".png", ".jpg", ".txt", ""]), image_bytes),
                                              max_size=3), max_size=3))
def test_image_folder_reads_or_refuses_any_folders_and_images(classes):
    with tempfile.TemporaryDirectory() as tmp:
        for name, files in classes.items():
            (Path(tmp) / name).mkdir()
            for number, (suffix, content) in enumerate(files):
                write(Path(tmp) / name / f"{number}{suffix}", content)
        dataset = read_or_refuse(lambda: ImageFolder(tmp))
        for index in range(len(dataset or ())):
            read_or_refuse(lambda: dataset.load_image(index))  # noqa: B023 - called at once


# --- TOML configs ------------------------------------------------------------------------------------

toml_files = st.lists(st.sampled_from([
    "[loss]", 'name = "cross_entropy"', "alpha = 0.5", "[[evaluators]]", 'name = "accuracy"', "[data]",
    'name = "image_folder"', "root = 'x'", "x = [1, 2, [3]]", "y = {a = 1, b = {c = 2}}", "z = nan", "w = 1e999",
    "[train]", "epochs = 2", "epochs = 'many'", "[unknown]", "k = 1979-05-27T07:32:00Z", "q = '''multi\nline'''",
]), max_size=8, unique=True).map("\n".join)


@FUZZ
@given(file_content(toml_files))
def test_toml_config_loads_or_is_refused(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "run.toml", content)
        result = read_or_refuse(lambda: load_config(path), refused=DefectlabError)
        assert result is None or isinstance(result, dict)

