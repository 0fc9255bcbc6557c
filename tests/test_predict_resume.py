"""Predicting at scale: rows appended batch by batch with progress lines, and ``--resume`` after a kill or a
cut-off CSV giving exactly the files of one uninterrupted prediction, for every task; mismatches refused."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import defectlab as dl
from defectlab.plugin_system import progress
from defectlab.runtime.predicting import predict_files
from defectlab.runtime.resuming import settings_path

TASKS = ["classify", "segment", "anomaly", "detect"]
PICTURES = {"segment": "p_masks", "anomaly": "p_maps", "detect": "p_boxes"}


class Brightness:
    """A numpy predictor answering from each image's mean brightness ``m`` (0..1): classify [m, 1 - m]; segment
    the image itself as defect probability; anomaly score m with the image as map; detect one box of score m,
    and a second (class b) on images brighter than 0.5. ``fail_after`` calls raise KeyboardInterrupt (a kill)."""

    def __init__(self, task, fail_after=None):
        self.task, self.classes, self.image_size, self.fail_after, self.calls = task, ["a", "b"], (8, 8), fail_after, 0

    def outputs(self, images):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return [self._output(np.asarray(Image.fromarray(image).resize((8, 8)), np.float32) / 255) for image in images]

    def _output(self, pixels):
        m = float(pixels.mean())
        if self.task == "classify":
            return {"probabilities": np.array([m, 1 - m], np.float32)}
        if self.task == "segment":
            return {"probabilities": pixels}
        if self.task == "anomaly":
            return {"score": np.float32(m), "map": pixels}
        boxes = [[0, 0, 4, 4], [2, 2, 8, 6]][:1 + (m > 0.5)]
        return {"boxes": np.array(boxes, np.float32), "scores": np.array([m, m / 2][:len(boxes)], np.float32),
                "labels": np.array([0, 1][:len(boxes)])}


@pytest.fixture
def images(tmp_path):
    """23 grey images of 12 x 16 in two folders, of rising brightness, and an unreadable file among them."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for index in range(23):
        folder = root / ("ok" if index % 3 else "scratch")
        folder.mkdir(parents=True, exist_ok=True)
        level = 20 + 9 * index
        Image.fromarray(np.clip(rng.normal(level, 30, (12, 16)), 0, 255).astype(np.uint8)).save(
            folder / f"{index:02d}.png")
    (root / "ok" / "07.png").write_bytes(b"not a png")
    return root


def _predict(task, images, out, fail_after=None, **options):
    threshold = 0.3 if task != "classify" else None
    model = {"model": "brightness.onnx", "sha256": "0" * 64, "tta": "none"}
    return predict_files(Brightness(task, fail_after), [images], out, threshold, batch_size=4,
                         model=model, **options)


def _written(folder):
    """Every file a prediction wrote below ``folder``: its bytes, by path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _uninterrupted(task, images, tmp_path):
    whole = _predict(task, images, tmp_path / "whole" / "p.csv")
    assert (whole.predicted, whole.failed, whole.resumed) == (22, 1, 0)
    return _written(tmp_path / "whole")


def _same_as_whole(task, tmp_path, expected, folder):
    """The files in ``folder`` are those of the uninterrupted prediction, the paths inside the CSV aside."""
    got = _written(folder)
    assert sorted(got) == sorted(expected)
    for name, data in expected.items():
        assert got[name] == data.replace(b"whole", folder.name.encode()), name


@pytest.mark.parametrize("task", TASKS)
def test_a_killed_prediction_resumes_to_the_same_files(task, images, tmp_path):
    expected = _uninterrupted(task, images, tmp_path)
    out = tmp_path / "killed" / "p.csv"
    with pytest.raises(KeyboardInterrupt):
        _predict(task, images, out, fail_after=3)  # three batches of 4 images written, the fourth in flight
    rows = list(csv.DictReader(out.open()))
    assert len({row["path"] for row in rows}) == 12  # flushed as they came
    if task in PICTURES:
        assert len(list((out.parent / PICTURES[task]).rglob("*.png"))) == 11  # one of the 12 is unreadable
    with pytest.raises(dl.DataError, match="--resume"):
        _predict(task, images, out)  # neither resumed nor overwritten: refused
    resumed = _predict(task, images, out, resume=True)
    assert (resumed.predicted, resumed.failed, resumed.resumed) == (22, 1, 12)
    _same_as_whole(task, tmp_path, expected, out.parent)
    again = _predict(task, images, out, resume=True)  # nothing left: the same files once more
    assert (again.predicted, again.resumed) == (22, 23)
    _same_as_whole(task, tmp_path, expected, out.parent)


@pytest.mark.parametrize("task", TASKS)
def test_a_cut_off_csv_is_repaired_and_completed(task, images, tmp_path):
    expected = _uninterrupted(task, images, tmp_path)
    text = expected["p.csv"]
    lines = text.split(b"\r\n")
    # cut inside the last character of a row, inside the 10th row, and (detection) between the two rows of a
    # bright image's boxes, where the row is whole but the image is not
    cuts = [len(b"\r\n".join(lines[:9])) + 1 + 5, len(text) - 1]
    if task == "detect":
        first_of_two = next(i for i, line in enumerate(lines) if line.split(b",")[1:2] == [b"2"])
        cuts.append(len(b"\r\n".join(lines[:first_of_two + 1])) + 2)
    for number, cut in enumerate(cuts):
        folder = tmp_path / f"cut{number}"
        shutil.copytree(tmp_path / "whole", folder)
        (folder / "p.csv").write_bytes(text[:cut].replace(b"whole", folder.name.encode()))
        (folder / "p.json").unlink(missing_ok=True)
        settings = settings_path(folder / "p.csv")
        settings.write_text(settings.read_text().replace("whole", folder.name))
        _predict(task, images, folder / "p.csv", resume=True)
        _same_as_whole(task, tmp_path, expected, folder)


def test_an_empty_or_headless_csv_starts_again(images, tmp_path):
    expected = _uninterrupted("classify", images, tmp_path)
    out = tmp_path / "headless" / "p.csv"
    with pytest.raises(KeyboardInterrupt):
        _predict("classify", images, out, fail_after=0)
    assert out.read_text(encoding="utf-8").startswith("path,predicted,confidence,p_a,p_b,error")
    out.write_bytes(b"path,predic")  # killed while writing the header
    assert _predict("classify", images, out, resume=True).resumed == 0
    _same_as_whole("classify", tmp_path, expected, out.parent)


def test_resume_refuses_other_settings_another_model_and_other_columns(images, tmp_path):
    out = tmp_path / "p.csv"
    _predict("anomaly", images, out)
    with pytest.raises(dl.DataError, match=r"threshold 0\.3 then, 0\.5 now"):
        predict_files(Brightness("anomaly"), [images], out, 0.5, model={"model": "brightness.onnx",
                                                                           "sha256": "0" * 64, "tta": "none"},
                      resume=True)
    with pytest.raises(dl.DataError, match=r"sha256 000000000000 \(brightness.onnx\) then, 111111111111 \(b.onnx\)"):
        predict_files(Brightness("anomaly"), [images], out, 0.3, model={"model": "b.onnx", "sha256": "1" * 64,
                                                                           "tta": "none"}, resume=True)
    with pytest.raises(dl.DataError, match="inputs"):
        _predict("anomaly", images / "ok", out, resume=True)
    with pytest.raises(dl.DataError, match="columns"):
        _predict("classify", images, out, resume=True)
    with pytest.raises(dl.DataError, match="pass one of them"):
        _predict("anomaly", images, out, resume=True, overwrite=True)
    out.write_text(out.read_text().replace("decision", "verdict"))  # the settings agree, the CSV does not
    with pytest.raises(dl.DataError, match="has the columns path, score, verdict"):
        _predict("anomaly", images, out, resume=True)
    settings_path(out).unlink()
    with pytest.raises(dl.DataError, match="--resume needs .*p_settings.json"):
        _predict("anomaly", images, out, resume=True)
    assert _predict("anomaly", images, out, overwrite=True).resumed == 0  # --overwrite starts again


def test_a_damaged_row_before_the_end_is_refused_not_cut(images, tmp_path):
    out = tmp_path / "p.csv"
    _predict("classify", images, out)
    lines = out.read_bytes().decode().split("\r\n")
    lines[3] = lines[3].rsplit(",", 2)[0]  # two columns short, in the middle
    out.write_text("\r\n".join(lines), encoding="utf-8", newline="")
    size = out.stat().st_size
    with pytest.raises(dl.DataError, match="line 4 has 4 columns, not 6"):
        _predict("classify", images, out, resume=True)
    assert out.stat().st_size == size


def test_without_a_terminal_progress_is_a_line_per_interval(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "PROGRESS_EVERY", 0.0)  # every batch; 30 s by default
    _predict("classify", images, tmp_path / "p.csv")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6  # 23 files in batches of 4
    assert re.fullmatch(r"predict batch 1/6, \d+ img/s, eta 0:\d\d", lines[0])
    assert lines[-1].startswith("predict batch 6/6, ") and lines[-1].endswith("eta 0:00")


def test_the_settings_name_the_model_and_what_shapes_the_rows(images, tmp_path):
    _predict("detect", images, tmp_path / "p.csv", slice_size=None)
    saved = json.loads(settings_path(tmp_path / "p.csv").read_text())
    assert saved["model"] == "brightness.onnx" and saved["threshold"] == 0.3 and saved["inputs"] == [str(images)]
    assert saved["columns"][:4] == ["path", "boxes", "class", "score"] and saved["task"] == "detect"
    boxes = json.loads((tmp_path / "p.json").read_text())
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(boxes) == 23 and sum(len(image["boxes"]) or 1 for image in boxes) == len(rows)
    assert boxes[-1]["boxes"][1] == {"class": "b", "score": float(rows[-1]["score"]),
                                     "box": [float(rows[-1][k]) for k in ("x1", "y1", "x2", "y2")]}
