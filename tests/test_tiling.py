"""Tiles of large images and their masks, stitching predictions back, joint image+mask augmentation."""

from __future__ import annotations

import defectlab as dl
import numpy as np
import pytest


def test_1344_cell_gives_nine_448_tiles_and_stitches_back():
    image = np.random.default_rng(0).integers(0, 256, (1344, 1344), dtype=np.uint8)
    tiles, offsets = dl.tile(image, 448)
    assert tiles.shape == (9, 448, 448)
    assert offsets == [(y, x) for y in (0, 448, 896) for x in (0, 448, 896)]
    assert np.array_equal(tiles[5], image[448:896, 896:1344])
    assert np.array_equal(dl.untile(tiles, offsets, image.shape), image)


def test_image_and_mask_are_cut_alike_and_overlaps_cover_the_border():
    rng = np.random.default_rng(1)
    image, mask = rng.random((100, 130, 3)), rng.integers(0, 2, (100, 130))
    image_tiles, offsets = dl.tile(image, 48, overlap=16)
    mask_tiles, mask_offsets = dl.tile(mask, 48, overlap=16)
    assert offsets == mask_offsets and image_tiles.shape[1:] == (48, 48, 3)
    assert sorted({y for y, _ in offsets}) == [0, 32, 52]  # step 32, the last tile moved back to the border
    assert sorted({x for _, x in offsets}) == [0, 32, 64, 82]
    for (y, x), piece, mask_piece in zip(offsets, image_tiles, mask_tiles):
        assert np.array_equal(piece, image[y:y + 48, x:x + 48]) and np.array_equal(mask_piece, mask[y:y + 48, x:x + 48])
    assert np.allclose(dl.untile(image_tiles, offsets, (100, 130)), image)


def test_untile_averages_overlapping_predictions():
    _, offsets = dl.tile(np.zeros((10, 16)), (10, 8), overlap=4)
    assert offsets == [(0, 0), (0, 4), (0, 8)]
    predictions = np.stack([np.full((10, 8), value) for value in (0.0, 1.0, 2.0)])
    row = dl.untile(predictions, offsets, (10, 16))[0]
    assert row.tolist() == [0.0] * 4 + [0.5] * 4 + [1.5] * 4 + [2.0] * 4


def test_tiles_that_do_not_fit_are_errors():
    with pytest.raises(dl.DataError, match="does not fit"):
        dl.tile(np.zeros((300, 300)), 448)
    with pytest.raises(ValueError, match="overlap"):
        dl.tile(np.zeros((64, 64)), 32, overlap=32)
    with pytest.raises(dl.DataError, match="in no tile"):
        dl.untile(np.zeros((1, 8, 8)), [(0, 0)], (8, 16))
