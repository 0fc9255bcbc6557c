"""Predicting boxes: pixels of the original image, slices moved back and merged, the files written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from defectlab.data.datasets import read_image
from defectlab.runtime.predicting import detect_images, predict_files, tiles_of
from defectlab.workflows.predict import TorchPredictor, TrainedModel


class BrightBoxDetector(torch.nn.Module):
    """'Detects' the bounding box of the pixels above 0.5 of each input (normalize='none'), score 0.9, class 1."""

    def forward(self, images):
        found = []
        for image in images:
            rows, cols = torch.nonzero(image[0] > 0.5, as_tuple=True)
            if len(rows):
                box = torch.tensor([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32)
                found.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
            else:
                found.append({"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)})
        return found


def _trained(size: int) -> TorchPredictor:
    return TorchPredictor(TrainedModel(BrightBoxDetector(), "detect", ["scratch", "pit"],
                        {"image_size": size, "channels": 1, "normalize": "none"}, checkpoint=None))


def _image(tmp_path, name="big.png"):
    image = np.zeros((200, 300), dtype=np.uint8)
    image[20:40, 140:180] = 255  # x 140..180, y 20..40: inside the first row of 100 px slices
    Image.fromarray(image).save(tmp_path / name)
    return tmp_path / name


def test_whole_images_are_scaled_back_to_their_own_pixels(tmp_path):
    (name, score, *box), = detect_images(_trained(100), [read_image(_image(tmp_path))], 4, 0.5)[0]
    assert name == "pit" and score == pytest.approx(0.9)
    assert box == pytest.approx([140, 20, 180, 40], abs=3)  # 300x200 seen at 100x100: 3 px x, 2 px y per pixel


def test_slices_cover_the_image_and_their_boxes_merge_into_one(tmp_path):
    image = np.zeros((200, 300), dtype=np.uint8)
    pieces, tiles = tiles_of(image, 0, 100, 0.2, (50, 50))
    assert len(pieces) == 3 * 4 and {t.scale_x for t in tiles} == {2.0}
    assert sorted({t.x for t in tiles}) == [0, 80, 160, 200] and sorted({t.y for t in tiles}) == [0, 80, 100]
    found = detect_images(_trained(50), [read_image(_image(tmp_path))], 5, 0.5, 100, 0.2)[0]
    boxes = [box for _, _, *box in found]
    # the slices starting at x = 80 and x = 160 both hold part of the rectangle; x = 80's holds it whole
    assert [140, 20, 180, 40] in [[round(v) for v in b] for b in boxes]
    assert len(boxes) <= 2


def test_low_scores_are_left_out_and_files_are_written(tmp_path):
    path = _image(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert detect_images(_trained(100), [read_image(path), None], 4, 0.95) == [[], []]
    predict_files(_trained(100), [path, broken], tmp_path / "out" / "p.csv", 0.5, batch_size=4)
    rows = list(csv.DictReader((tmp_path / "out" / "p.csv").open()))
    assert [r["class"] for r in rows] == ["pit", ""] and rows[0]["boxes"] == "1" and rows[1]["error"]
    saved = json.loads((tmp_path / "out" / "p.json").read_text())
    assert saved[0]["boxes"][0]["class"] == "pit" and len(saved[0]["boxes"][0]["box"]) == 4
    drawn = np.asarray(Image.open(tmp_path / "out" / "p_boxes" / "big.png"))
    assert drawn.shape == (200, 300, 3) and (drawn[40, 150] != drawn[40, 150, 0]).any()  # a coloured edge
