"""ImageTransform: resizing, channel conversion, normalisation and joint augmentation, by the numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from defectlab import ImageTransform, ParameterError


def test_grey_to_three_channels_and_colour_to_luminance():
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    out = ImageTransform((6, 8), channels=3, normalize="none")(grey)
    assert out.shape == (3, 6, 8) and out.dtype == torch.float32
    assert torch.equal(out[0], out[2]) and out[0, 0, 1].item() == pytest.approx(1 / 255)
    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[..., 0] = 255  # pure red: luminance 0.299 (ITU-R 601)
    out = ImageTransform(4, channels=1, normalize="none")(colour)
    assert out.shape == (1, 4, 4) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full((1, 4, 4), 0.299))


def test_imagenet_normalisation_of_a_constant_image():
    # 128 / 255 = 0.501961; (0.501961 - 0.485) / 0.229 = 0.074065, (0.501961 - 0.456) / 0.224 = 0.205182,
    # (0.501961 - 0.406) / 0.225 = 0.426492; one channel: (0.501961 - 0.449) / 0.226 = 0.234340.
    image = np.full((5, 5), 128, dtype=np.uint8)
    out = ImageTransform(5, channels=3)(image)
    assert out[:, 2, 2].tolist() == pytest.approx([0.074065, 0.205182, 0.426492], abs=1e-5)
    assert ImageTransform(5, channels=1)(image)[0, 0, 0].item() == pytest.approx(0.234340, abs=1e-5)


def test_resize_is_uint8_bilinear_for_images_and_nearest_for_masks():
    transform = ImageTransform(8)
    image = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (10, 1))
    mask = np.zeros((10, 20), dtype=np.int64)
    mask[:, 10:] = 2
    small, small_mask = transform.resize(image, mask)
    assert small.shape == (8, 8) and small.dtype == np.uint8
    assert small_mask.dtype == np.int64 and sorted(np.unique(small_mask)) == [0, 2]
    assert (small_mask[:, :4] == 0).all() and (small_mask[:, 4:] == 2).all()
    assert 0 < small[0, 3] < small[0, 4] < 255  # interpolated, still ordered left to right


def test_flip_and_rotate_move_the_mask_with_the_image():
    values = np.arange(64, dtype=np.int64).reshape(8, 8)  # each pixel's mask value is its own id
    image = (values * 4).astype(np.uint8)
    transform = ImageTransform(8, channels=1, normalize="none", augment=["flip", "rotate"], task="segment")
    layouts = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, mask = transform(image, values, train=True)
        assert mask.dtype == torch.long and mask.shape == (8, 8)
        assert torch.equal(torch.round(out[0] * 255 / 4).long(), mask)
        layouts.add(tuple(mask.flatten().tolist()))
    assert len(layouts) > 4  # the augmentation did move pixels, in several ways


def test_non_square_images_rotate_by_180_only():
    image = np.arange(24, dtype=np.uint8).reshape(4, 6)
    transform = ImageTransform((4, 6), channels=1, normalize="none", augment=["rotate"])
    seen = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out = transform(image, train=True)
        assert out.shape == (1, 4, 6)
        seen.add(round(out[0, 0, 0].item() * 255))
    assert seen == {0, 23}


def test_contrast_brightness_and_noise_stay_in_their_ranges():
    halves = np.zeros((16, 16), dtype=np.uint8)
    halves[:, :8] = 64
    halves[:, 8:] = 191  # mean 127.5: contrast scales the gap of 127 by [0.8, 1.2]
    contrast = ImageTransform(16, channels=1, normalize="none", augment=["contrast"])
    gaps = []
    for seed in range(20):
        torch.manual_seed(seed)
        out = contrast(halves, train=True)[0]
        gaps.append((out[0, 8] - out[0, 0]).item() * 255 / 127)
    assert 0.8 <= min(gaps) < 0.95 and 1.05 < max(gaps) <= 1.2
    grey = np.full((64, 64), 128, dtype=np.uint8)
    torch.manual_seed(0)
    shifted = ImageTransform(64, channels=1, normalize="none", augment=["brightness"])(grey, train=True)
    assert shifted.unique().numel() == 1 and abs(shifted[0, 0, 0].item() - 128 / 255) <= 0.1
    torch.manual_seed(0)
    noisy = ImageTransform(64, channels=1, normalize="none", augment=["noise"])(grey, train=True)
    assert (noisy - 128 / 255).std().item() == pytest.approx(0.02, rel=0.1)


def test_augmentation_is_reproducible_with_torch_seed_and_off_unless_training():
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    transform = ImageTransform(12, augment=["flip", "rotate", "contrast", "brightness", "noise"])
    torch.manual_seed(5)
    first = transform(image, train=True)
    torch.manual_seed(5)
    assert torch.equal(transform(image, train=True), first)
    torch.manual_seed(6)
    assert not torch.equal(transform(image, train=True), first)
    assert torch.equal(transform(image), transform(image, train=False))
    assert torch.equal(transform(image), ImageTransform(12)(image))


def test_unknown_augmentation_and_bad_settings():
    with pytest.raises(ParameterError, match=r"unknown augmentation 'flips'; did you mean 'flip'\?.*choices: flip, "
                                             r"rotate, contrast, brightness, noise"):
        ImageTransform(8, augment=["flips"])
    with pytest.raises(ParameterError, match="channels must be 1 or 3"):
        ImageTransform(8, channels=2)
    with pytest.raises(ParameterError, match="image_size"):
        ImageTransform(0)
    with pytest.raises(ParameterError, match="takes no mask"):
        ImageTransform(8)(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
