"""The synthetic_cracks dataset: determinism, defect ratio and fraction, aligned masks, export and check-data."""

from __future__ import annotations

from pathlib import Path

import defectlab as dl
import numpy as np
import pytest
from scipy.ndimage import binary_dilation


def cracks(**params) -> dl.DefectDataset:
    return dl.open_dataset({"name": "synthetic_cracks", **params})


def arrays(dataset: dl.DefectDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    return dataset.load_image(index), dataset.load_mask(index)


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b, other = cracks(count=6), cracks(count=6), cracks(count=6, seed=1)
    for i in range(6):
        for x, y in zip(arrays(a, i), arrays(b, i)):
            assert np.array_equal(x, y)
    assert not np.array_equal(a.load_image(1), other.load_image(1))
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()


def test_image_i_depends_only_on_seed_and_i():
    small, large, val = cracks(count=16), cracks(count=40), cracks(count=40, split="val")
    for x, y in zip(arrays(small, 15), arrays(large, 15)):
        assert np.array_equal(x, y)
    first_val = val.samples[0]
    assert first_val.key == "00014" and first_val.split == "val"  # index % 20 in 14..16 is val
    for x, y in zip(arrays(val, 0), arrays(large, 14)):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("ratio", [1 / 500, 1 / 2000])
def test_defect_background_ratio_of_each_cracked_image(ratio):
    data = cracks(count=30, defect_ratio=ratio)
    target = 128 * 128 * ratio / (1 + ratio)  # defect pixels d with d / (N - d) = ratio
    measured = []
    for i in range(len(data)):
        defect = int(data.load_mask(i).sum())
        if data.samples[i].meta["crack"]:
            assert abs(defect - target) <= 0.5  # the stated tolerance: the nearest pixel count
            measured.append(defect / (128 * 128 - defect))
        else:
            assert defect == 0
    assert measured and all(abs(m / ratio - 1) < 0.3 for m in measured)
    assert data.pixel_counts() == [30 * 128 * 128 - len(measured) * round(target), len(measured) * round(target)]


def test_too_few_crack_pixels_is_refused():
    with pytest.raises(dl.ParameterError, match="use size >= 101"):
        cracks(size=64, defect_ratio=1 / 2000)


@pytest.mark.parametrize("fraction", [0.8, 0.3])
def test_defect_fraction_over_100_images(fraction):
    data = cracks(count=100, defect_fraction=fraction)
    with_crack = sum(bool(data.load_mask(i).any()) for i in range(100))
    assert abs(with_crack - 100 * fraction) <= 2
    assert data.class_counts() == [100 - with_crack, with_crack]


def test_splits_are_70_15_15_by_index():
    data = cracks(count=100)
    assert [sum(s.split == part for s in data.samples) for part in ("train", "val", "test")] == [70, 15, 15]
    parts = {part: {s.key for s in cracks(count=100, split=part).samples} for part in ("train", "val", "test")}
    assert set.union(*parts.values()) == {s.key for s in data.samples} and sum(map(len, parts.values())) == 100


@pytest.mark.parametrize("contrast", [0.15, 0.3])
def test_masks_are_binary_and_mark_the_darker_pixels(contrast):
    data = cracks(count=12, contrast=contrast)
    local, crack_values, background_values = [], [], []
    for i in range(len(data)):
        image, mask = arrays(data, i)
        assert image.dtype == mask.dtype == np.uint8 and image.shape == mask.shape == (128, 128)
        assert set(np.unique(mask).tolist()) <= {0, 1}
        on = mask.astype(bool)
        if on.any():
            ring = binary_dilation(on, iterations=2) & ~on  # the background around the crack
            local.append(1 - image[on].mean() / image[ring].mean())
            crack_values.append(image[on].mean())
            background_values.append(image[~on].mean())
    assert np.mean(local) == pytest.approx(contrast, abs=0.02)
    assert 1 - np.mean(crack_values) / np.mean(background_values) == pytest.approx(contrast, abs=0.04)


def test_textures_poly_is_grainy_mono_is_uniform():
    def roughness(texture: str) -> float:
        """Mean jump between neighbouring 4x4 block means: grain edges count, noise averages out."""
        data = cracks(count=4, texture=texture, defect_fraction=0.0)
        blocks = [data.load_image(i).astype(float).reshape(32, 4, 32, 4).mean(axis=(1, 3)) for i in range(4)]
        return float(np.mean([np.abs(np.diff(b, axis=1)).mean() for b in blocks]))

    assert roughness("poly") > 2 * roughness("mono")
    kinds = [s.meta["texture"] for s in cracks(count=20).samples]
    assert kinds.count("mono") == 10 and kinds.count("poly") == 10


def test_name_value_shorthand_sets_count():
    data = dl.open_dataset("synthetic_cracks:32")
    assert len(data) == 32 and data.classes == ["background", "defect"] and data.task == "segment"
    assert all(s.path is None for s in data.samples)


def test_export_reads_back_as_image_mask_with_identical_pixels(tmp_path):
    data = cracks(count=20, size=64, defect_ratio=1 / 200)
    folder = data.export(tmp_path / "export")
    back = dl.open_dataset(str(folder))
    assert back.name == "image_mask" and len(back) == 20
    by_stem = {Path(s.key).stem: i for i, s in enumerate(back.samples)}
    for i, sample in enumerate(data.samples):
        j = by_stem[sample.key]
        assert back.samples[j].split == sample.split
        for x, y in zip(arrays(data, i), arrays(back, j)):
            assert np.array_equal(x, y)
    with pytest.raises(dl.DataError, match="not empty"):
        data.export(folder)


def test_check_data_reports_no_problems(run_cli):
    result = run_cli("check-data", "synthetic_cracks:20")
    assert result.exit_code == 0, result.output
    assert result.stdout == "key,path,problem\n"
    assert "checked 20 images: 0 problems" in result.stderr
