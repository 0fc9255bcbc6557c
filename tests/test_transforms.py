"""ImageTransform: resizing, channel conversion, normalisation and joint augmentation, by the numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from defectlab import DataModule, ImageTransform, ParameterError


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
                                             r"rotate, contrast, brightness, noise, resized_crop, randaugment, "
                                             r"trivialaugment"):
        ImageTransform(8, augment=["flips"])
    with pytest.raises(ParameterError, match="did you mean 'randaugment'"):
        ImageTransform(8, augment=["rand_augment"])
    with pytest.raises(ParameterError, match="both 'randaugment' and 'trivialaugment'.*give one of them"):
        ImageTransform(8, augment=["flip", "trivialaugment", "randaugment"])
    with pytest.raises(ParameterError, match="channels must be 1 or 3"):
        ImageTransform(8, channels=2)
    with pytest.raises(ParameterError, match="image_size"):
        ImageTransform(0)
    with pytest.raises(ParameterError, match="takes no mask"):
        ImageTransform(8)(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ParameterError, match="one each; got 2 labels for 1 boxes"):
        ImageTransform(8, task="detect")(np.zeros((8, 8), np.uint8), boxes=torch.ones(1, 4), labels=torch.ones(2))


def test_flip_and_rotate_draw_the_eight_symmetries_of_the_square_equally():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)  # no symmetry: each of the 8 moves gives its own layout
    symmetries = {tuple(np.rot90(flipped, k).flatten().tolist()) for flipped in (image, image.T) for k in range(4)}
    transform = ImageTransform(4, channels=1, normalize="none", augment=["rotate", "flip"])
    counts: dict[tuple[int, ...], int] = {}
    draws = 1600
    for seed in range(draws):
        torch.manual_seed(seed)
        layout = tuple(torch.round(transform(image, train=True)[0] * 255).long().flatten().tolist())
        counts[layout] = counts.get(layout, 0) + 1
    assert set(counts) == symmetries
    chi_square = sum((n - draws / 8) ** 2 / (draws / 8) for n in counts.values())
    assert chi_square < 24.32  # the 0.999 quantile of chi-square with 7 degrees of freedom


def blocks(size: int, block: int) -> np.ndarray:
    """A grey image of square blocks, each with its own value in 20..240."""
    ids = np.arange((size // block) ** 2).reshape(size // block, size // block)
    values = np.linspace(20, 240, ids.size).round().astype(np.uint8)
    return values[ids].repeat(block, 0).repeat(block, 1)


def purity(image: torch.Tensor, mask: torch.Tensor) -> float:
    """The share of the mask's inner pixels (3x3 neighbourhood of one label, label > 0) whose image value is
    their label's most common one: 1 when the mask moved as the image did, whatever happened to pixel values."""
    labels = mask[None, None].float()
    inner = (torch.nn.functional.max_pool2d(labels, 3, 1, 1) == -torch.nn.functional.max_pool2d(-labels, 3, 1, 1))
    inner = inner[0, 0] & (mask > 0)
    values, under = image[inner], mask[inner]
    agree = sum(int((values[under == k] == values[under == k].mode().values).sum()) for k in under.unique())
    return agree / max(len(values), 1)


def test_resized_crop_moves_the_mask_with_the_image():
    squares = np.indices((64, 64)) // 16
    image = ((squares[0] + squares[1]) % 2 * 255).astype(np.uint8)  # a checkerboard of 16-pixel squares
    mask = (image > 127).astype(np.int64)
    transform = ImageTransform(64, channels=1, normalize="none", augment=["resized_crop"], task="segment")
    moved = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out, got = transform(image, mask, train=True)
        assert got.dtype == torch.long and set(got.unique().tolist()) <= {0, 1}
        assert (got == (out[0] > 0.5)).float().mean() > 0.995  # a mask half a pixel off would miss ~3 % here
        moved += not torch.equal(got, torch.tensor(mask))
    assert moved >= 15


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_auto_augment_geometry_moves_the_mask_with_the_image(policy):
    image = blocks(64, 16)
    mask = (np.arange(16).reshape(4, 4) + 1).repeat(16, 0).repeat(16, 1)  # labels 1..16, one per block
    transform = ImageTransform(64, channels=1, normalize="none", augment=[policy], task="segment")
    moved = filled = 0
    for seed in range(30):
        torch.manual_seed(seed)
        out, got = transform(image, mask, train=True)
        assert got.dtype == torch.long and set(got.unique().tolist()) <= set(range(17))
        assert purity(torch.round(out[0] * 255), got) > 0.95
        moved += not torch.equal(got, torch.tensor(mask))
        filled += bool((got == 0).any())  # background 0 where a shear, translation or rotation brought in area
    assert moved >= 5 and filled >= 3


def test_a_mask_that_does_not_follow_fails_the_purity_check():
    image, mask = blocks(64, 16), (np.arange(16).reshape(4, 4) + 1).repeat(16, 0).repeat(16, 1)
    shifted = torch.tensor(np.roll(image, 7, axis=1)).float()  # what a translation of 7 pixels does to the image
    assert purity(shifted, torch.tensor(mask)) < 0.7 and purity(shifted, torch.tensor(np.roll(mask, 7, axis=1))) == 1


def bright_box(boxes: torch.Tensor, image: torch.Tensor) -> tuple[list[float], bool]:
    """The bounding box of the bright pixels (above the middle of the image's range) and whether the box covers
    them, give or take 2 pixels (a crop's bilinear edge, which an equalize may brighten)."""
    low, high = image.min(), image.max()
    rows, cols = torch.nonzero(image >= (low + high) / 2, as_tuple=True)
    bright = [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
    x1, y1, x2, y2 = boxes.tolist()
    return bright, x1 <= bright[0] + 2 and y1 <= bright[1] + 2 and x2 >= bright[2] - 2 and y2 >= bright[3] - 2


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("names", [["resized_crop"], ["randaugment"], ["trivialaugment"],
                                   ["resized_crop", "randaugment", "flip", "rotate"]])
def test_boxes_follow_crops_and_auto_augment_geometry(names):
    image = np.zeros((64, 64), dtype=np.uint8)
    image[20:36, 24:48] = 255  # x 24..48, y 20..36
    transform = ImageTransform(64, channels=1, normalize="none", augment=names, task="detect")
    checked = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out, boxes, labels = transform(image, train=True, boxes=torch.tensor([[24.0, 20.0, 48.0, 36.0]]),
                                       labels=torch.tensor([3]))
        assert len(boxes) == len(labels) == 1 and labels.tolist() == [3]  # the box stays inside every view
        if out.max() - out.min() < 0.2:  # a solarize or posterize left no bright region to compare with
            continue
        bright, covered = bright_box(boxes[0], out[0])
        assert covered and iou(bright, boxes[0].tolist()) > 0.7
        checked += 1
    assert checked >= 30


def test_boxes_pushed_out_are_dropped_with_their_labels():
    image = np.zeros((64, 64), dtype=np.uint8)
    image[28:36, 28:36] = image[0:6, 0:6] = 255
    boxes, labels = torch.tensor([[28.0, 28.0, 36.0, 36.0], [0.0, 0.0, 6.0, 6.0]]), torch.tensor([1, 2])
    transform = ImageTransform(64, channels=1, normalize="none", augment=["resized_crop"], task="detect")
    outcomes = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out, moved, kept = transform(image, train=True, boxes=boxes, labels=labels)
        assert kept.tolist() in ([1, 2], [1]) and len(moved) == len(kept)  # the centre one is in every crop
        assert ((moved >= 0) & (moved <= 64)).all() and (moved[:, 2:] - moved[:, :2] >= 1).all()
        outcomes.add(len(kept))
    assert outcomes == {1, 2}
    torch.manual_seed(0)
    assert len(transform(image, train=True, boxes=boxes)[1]) in (1, 2)  # boxes without labels still work


@pytest.mark.parametrize("names", [["resized_crop"], ["randaugment"], ["trivialaugment"],
                                   ["resized_crop", "trivialaugment", "flip", "rotate", "contrast", "noise"]])
def test_new_augmentations_keep_grey_and_colour_and_repeat_with_the_seed(names):
    rng = np.random.default_rng(1)
    for image, channels in ((rng.integers(0, 256, (24, 24), dtype=np.uint8), 1),
                            (rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), 3)):
        transform = ImageTransform(24, channels=channels, normalize="none", augment=names)
        outputs = []
        for seed in (3, 3, 4):
            torch.manual_seed(seed)
            outputs.append(transform(image, train=True))
        assert all(out.shape == (channels, 24, 24) and 0 <= out.min() and out.max() <= 1 for out in outputs)
        assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
        assert torch.equal(transform(image), ImageTransform(24, channels=channels, normalize="none")(image))
    colour = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    transform = ImageTransform(24, normalize="none", augment=names)
    grey = 0
    for seed in range(5):  # an op may darken or desaturate a view strongly, but colour stays colour
        torch.manual_seed(seed)
        out = transform(colour, train=True)
        grey += torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert grey <= 1


def test_a_detection_data_module_keeps_boxes_and_labels_matched_under_crops():
    module = DataModule({"name": "synthetic_defects", "count": 20, "size": 64}, split=(1.0, 0.0), image_size=64,
                        channels=1, augment=("resized_crop", "randaugment"), batch_size=20)
    torch.manual_seed(0)
    batch = next(iter(module.loader("train")))
    for target in batch["target"]:
        assert len(target["boxes"]) == len(target["labels"]) and target["labels"].dtype == torch.long


def test_image_normalisation_gives_each_image_mean_0_and_std_1():
    from defectlab.workflows.export_graph import Preprocessing

    rng = np.random.default_rng(3)
    image = rng.integers(40, 200, (12, 12), dtype=np.uint8)
    for channels in (1, 3):
        x = ImageTransform(12, channels, "image")(image)
        assert x.shape == (channels, 12, 12)
        assert torch.allclose(x.mean((1, 2)), torch.zeros(channels), atol=1e-6)
        assert torch.allclose(x.std((1, 2), unbiased=False), torch.ones(channels), atol=1e-5)
        # by hand: (v - mean) / population std of the image's values in [0, 1]
        values = image.astype(np.float64) / 255
        assert x[0].numpy() == pytest.approx((values - values.mean()) / values.std(), abs=1e-5)
        graph = Preprocessing((12, 12), channels, "image")(torch.tensor(image)[None, :, :, None])
        assert torch.allclose(graph[0], x, atol=1e-5)  # the exported graph normalises the same way
    brighter = ImageTransform(12, 1, "image")(image + np.uint8(30))  # exposure and gain drop out
    assert torch.allclose(brighter, ImageTransform(12, 1, "image")(image), atol=1e-5)
    flat = ImageTransform(12, 1, "image")(np.full((12, 12), 90, np.uint8))
    assert flat.abs().max() < 1e-4  # no division by zero: a flat image stays flat


def test_an_unknown_normalisation_is_named():
    with pytest.raises(ParameterError, match="normalize must be one of 'imagenet', 'image', 'none', got 'per_image'"):
        ImageTransform(12, 1, "per_image")


def test_image_normalisation_scripts_for_torchscript():
    from defectlab.workflows.export_graph import Preprocessing

    image = torch.tensor(np.random.default_rng(4).integers(0, 256, (1, 10, 10, 1), dtype=np.uint8))
    graph = Preprocessing((10, 10), 1, "image")
    assert torch.allclose(torch.jit.script(graph)(image), graph(image), atol=1e-6)
