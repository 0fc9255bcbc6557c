"""The synthetic_defects dataset: determinism, boxes on exactly the drawn defects, classes, sizes per FPN level."""

from __future__ import annotations

from collections import Counter

import defectlab as dl
import numpy as np
import pytest
from defectlab_plugins.synthetic_defects.dataset import NOISE
from defectlab_plugins.synthetic_defects.drawing import DRAWERS, steel_background, upsample

NEU_DET = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


def defects(**params) -> dl.DefectDataset:
    return dl.open_dataset({"name": "synthetic_defects", **params})


@pytest.fixture(scope="module")
def sixty() -> dl.DefectDataset:
    return defects(count=60)


def pixel_boxes(sample: dl.Sample, size: int) -> list[tuple[int, int, int, int, int]]:
    """(label, x1, y1, x2, y2) in pixels; the generator's boxes lie on whole pixels."""
    found = []
    for b in sample.boxes:
        corners = np.array([b.x_center - b.width / 2, b.y_center - b.height / 2, b.x_center + b.width / 2,
                            b.y_center + b.height / 2]) * size
        assert np.allclose(corners, corners.round(), atol=1e-6)
        found.append((b.label, *corners.round().astype(int).tolist()))
    return found


def test_same_seed_same_pixels_and_boxes_other_seed_other_ones():
    a, b, other = defects(count=8, size=64), defects(count=8, size=64), defects(count=8, size=64, seed=1)
    assert [s.boxes for s in a.samples] == [s.boxes for s in b.samples] != [s.boxes for s in other.samples]
    for i in range(8):
        assert np.array_equal(a.load_image(i), b.load_image(i))
    assert not np.array_equal(a.load_image(1), other.load_image(1))
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()
    image = a.load_image(0)
    assert image.shape == (64, 64) and image.dtype == np.uint8


def test_image_i_depends_only_on_seed_and_i():
    small, large, val = defects(count=10, size=64), defects(count=30, size=64), defects(count=30, size=64, split="val")
    assert small.samples[9].boxes == large.samples[9].boxes
    assert np.array_equal(small.load_image(9), large.load_image(9))
    assert [s.key for s in val.samples] == ["00014", "00015", "00016"] and {s.split for s in val.samples} == {"val"}
    assert val.samples[0].boxes == large.samples[14].boxes and np.array_equal(val.load_image(0), large.load_image(14))


def test_boxes_are_the_tight_boxes_of_exactly_the_pixels_the_defects_change(sixty):
    size = 256
    for index in range(0, 60, 3):
        sample, drawn = sixty.samples[index], sixty.defect_map(index)
        rng = np.random.default_rng([0, index, 2])  # the image's own stream: background, then sensor noise
        clean = steel_background(rng, size)
        clean += rng.normal(0.0, NOISE, clean.shape)  # in place, in the image's own precision
        clean = np.clip(clean * 255.0, 0, 255).round()
        changed = sixty.load_image(index) != clean
        assert not (changed & (drawn == 0)).any()  # nothing outside the drawn defects changes
        assert not sample.boxes or changed[drawn > 0].mean() > 0.9  # they change (but where clipping hides it)
        boxes = pixel_boxes(sample, size)
        inside = np.zeros((size, size), dtype=bool)
        for label, x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size
            inside[y1:y2, x1:x2] = True
            region = drawn[y1:y2, x1:x2] == label + 1
            others = [o for o in boxes if o != (label, x1, y1, x2, y2)]
            alone = all(min(x2, o[3]) <= max(x1, o[1]) or min(y2, o[4]) <= max(y1, o[2]) for o in others)
            if alone:  # no other box overlaps it: its defect reaches all four edges of its box
                assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
        assert not (drawn > 0)[~inside].any()


def test_every_class_appears_in_its_own_shape_and_sizes_spread_over_three_fpn_levels(sixty):
    boxes = [b for s in sixty.samples for b in s.boxes]
    assert sixty.classes == NEU_DET and sixty.task == "detect"
    by_class = Counter(sixty.classes[b.label] for b in boxes)
    assert set(by_class) == set(NEU_DET) and min(by_class.values()) >= len(boxes) / 6 / 2
    longer = np.array([max(b.width, b.height) * 256 for b in boxes])
    levels = np.histogram(longer, bins=[0, 64, 128, 256])[0] / len(boxes)  # strides 8, 16, 32
    assert (levels > 0.2).all(), levels
    assert longer.min() >= 8 and longer.max() <= 0.95 * 256
    aspect = {name: np.median([max(b.width, b.height) / min(b.width, b.height) for b in boxes
                               if sixty.classes[b.label] == name]) for name in NEU_DET}
    assert aspect["scratches"] > 3 > max(aspect[name] for name in NEU_DET if name != "scratches")
    inclusions = [b for b in boxes if sixty.classes[b.label] == "inclusion"]
    assert np.mean([b.width > b.height for b in inclusions]) > 0.8  # stretched along the rolling direction


def test_defect_free_share_and_defects_per_image(sixty):
    per_image = [len(s.boxes) for s in sixty.samples]
    assert 5 <= per_image.count(0) <= 7  # defect_free = 0.1 of 60
    assert max(per_image) <= 4 and all(n >= 1 for s, n in zip(sixty.samples, per_image) if not s.meta["defect_free"])
    assert all(len(s.boxes) >= 1 for s in defects(count=20, size=64, defect_free=0).samples)
    assert not any(s.boxes for s in defects(count=5, size=64, defect_free=1).samples)


def test_a_subset_of_the_classes():
    data = defects(count=20, size=64, classes=["scratches", "crazing"])
    assert data.classes == ["scratches", "crazing"] and data.class_counts()[0] > 0 and data.class_counts()[1] > 0
    assert {b.label for s in data.samples for b in s.boxes} == {0, 1}
    with pytest.raises(dl.ParameterError, match="classes must be distinct names among crazing, inclusion"):
        defects(classes=["scratch"])


def test_drawing_helpers():
    coarse = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert np.allclose(upsample(coarse, 3, 5), [[0, 0.25, 0.5, 0.75, 1], [1, 1.25, 1.5, 1.75, 2], [2, 2.25, 2.5, 2.75, 3]])
    assert list(DRAWERS) == NEU_DET
