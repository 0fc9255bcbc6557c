"""From a decoded image (and mask) to the normalised tensor a model takes, with training augmentation.

:class:`ImageTransform` needs no dataset, so ``predict`` builds the same one from a run's
settings for arbitrary files. It works in two steps: :meth:`ImageTransform.resize` (uint8 in,
uint8 out: what a data module caches) and the call, which converts channels, augments when
training (Valle Salgado et al. 2023 §2.5: flip, rotation, contrast, noise; Yi et al. 2022: brightness; torchvision's
RandAugment, TrivialAugment and random resized crops) and normalises. Masks and detection boxes
(x1, y1, x2, y2 in pixels of the output size) go through the same geometry as the image.
Randomness comes from torch's global generator, so ``torch.manual_seed`` makes it repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from defectlab.plugin_system.errors import DataError, ParameterError, did_you_mean
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

PIXEL_AUGMENTATIONS = ("resized_crop", "randaugment", "trivialaugment")  # torchvision v2, on the uint8 image
AUGMENTATIONS = ("flip", "rotate", "contrast", "brightness", "noise", *PIXEL_AUGMENTATIONS)
CROP_SCALE = (0.5, 1.0)  # share of the image's area a resized crop keeps: a small defect mostly stays in
CROP_RATIO = (3 / 4, 4 / 3)  # the crop's width / height, before it is resized to the output size
GEOMETRIC_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})  # of torchvision's auto-augment
MIN_BOX_SIDE = 1.0  # pixels; a box that an augmentation leaves narrower or lower is dropped
BOX_TOLERANCE = 1e-3  # pixels of rounding in torchvision's box geometry
CONTRAST = 0.2  # factor drawn from [1 - CONTRAST, 1 + CONTRAST], about the image mean
BRIGHTNESS = 0.1  # shift drawn from [-BRIGHTNESS, BRIGHTNESS] of the full range
NOISE_STD = 0.02
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")
NORMALIZATIONS = ("imagenet", "image", "none")
MIN_STD = 1 / 255  # 'image' normalisation divides by at least one grey level: a flat image stays about 0


def standardized(x: torch.Tensor, min_std: float = MIN_STD) -> torch.Tensor:
    """``x`` (…, C, H, W) with each image's channels shifted to mean 0 and scaled to standard deviation 1 (the
    population one, at least ``min_std``); the exported graph (TorchScript too) calls this as well."""
    centred = x - x.mean((-2, -1), keepdim=True)
    return centred / centred.square().mean((-2, -1), keepdim=True).sqrt().clamp_min(min_std)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = 0.449, 0.226  # the means of ImageNet's per-channel values


class ImageTransform:
    """Resize, channel conversion, augmentation (training only) and normalisation of one image.

    Augmentations run in a fixed order whatever order they are named in. First torchvision's, on
    the uint8 image: resized_crop (``RandomResizedCrop`` to the output size, keeping 0.5 to 1 of
    the area, width / height 3/4 to 4/3), then randaugment (``RandAugment``: 2 ops of magnitude 9
    out of 31 bins) or trivialaugment (``TrivialAugmentWide``: 1 op of random magnitude), not
    both. Then, on the image in [0, 1]: flip (horizontal and vertical, each with probability
    1/2), rotate (a random multiple of 90 degrees; only 180 for non-square images), contrast,
    brightness and Gaussian noise, clipped to [0, 1]. On a square image flip and rotate together
    draw each of the 8 symmetries of the square with probability 1/8.

    A mask or the boxes follow every geometric step: masks by nearest neighbour, keeping their
    values, with 0 (background) where a rotation, shear or translation brings in new area;
    boxes are clamped to the image, and those left narrower or lower than 1 pixel are dropped
    (with their labels). For classification a crop or a translation can cut a small defect out
    of a defective image, which then teaches the wrong label: keep crops for defects that are not
    near the border, or for segmentation and detection. Augmentation runs before channel
    conversion, so a grey image repeated to three channels stays grey.

    Args:
        image_size: Output size: one int for square images, or (height, width).
        channels: Channels of the output: 3 (grey images repeated) or 1 (colour to luminance).
        normalize: 'imagenet' (ImageNet mean/std; for one channel mean 0.449, std 0.226), 'image'
            (each image's channels to mean 0 and standard deviation 1, for cells or parts whose
            exposure varies from image to image; brightness and contrast augmentation then change
            nothing) or 'none'.
        augment: Augmentations applied when training, from flip, rotate, contrast, brightness,
            noise, resized_crop, randaugment, trivialaugment.
        task: 'classify' (images only), 'segment' (a mask may come with each image, and goes
            through the same geometry) or 'detect' (boxes may come with each image).
    """

    def __init__(self, image_size: int | tuple[int, int], channels: int = 3,
                 normalize: Literal["imagenet", "image", "none"] = "imagenet", augment: Sequence[str] = (),
                 task: Literal["classify", "segment", "detect"] = "classify") -> None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
            raise ParameterError(f"image_size must be a positive int or (height, width), got {image_size!r}")
        if channels not in (1, 3):
            raise ParameterError(f"channels must be 1 or 3, got {channels!r}")
        if normalize not in NORMALIZATIONS:
            raise ParameterError(f"normalize must be one of {', '.join(map(repr, NORMALIZATIONS))}, got {normalize!r}")
        if task not in ("classify", "segment", "detect"):
            raise ParameterError(f"task must be 'classify', 'segment' or 'detect', got {task!r}")
        for name in augment:
            if name not in AUGMENTATIONS:
                raise ParameterError(f"unknown augmentation {name!r}{did_you_mean(name, AUGMENTATIONS)} "
                                 f"(choices: {', '.join(AUGMENTATIONS)})")
        if {"randaugment", "trivialaugment"} <= set(augment):
            raise ParameterError("augment names both 'randaugment' and 'trivialaugment'; they are two policies for "
                                 "the same thing, so give one of them")
        self.size: tuple[int, int] = size  # type: ignore[assignment]
        self.channels, self.normalize, self.augment, self.task = channels, normalize, frozenset(augment), task
        pixel_ops: list[v2.Transform] = []
        if "resized_crop" in self.augment:
            pixel_ops.append(RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True))
        if "randaugment" in self.augment:
            pixel_ops.append(RandAugment())
        if "trivialaugment" in self.augment:
            pixel_ops.append(TrivialAugmentWide())
        self._pixel_ops = v2.Compose(pixel_ops) if pixel_ops else None
        if normalize == "imagenet":
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((GREY_MEAN,), (GREY_STD,))
            self._mean, self._std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __repr__(self) -> str:
        return (f"ImageTransform(image_size={self.size}, channels={self.channels}, normalize={self.normalize!r}, "
                f"augment={sorted(self.augment, key=AUGMENTATIONS.index)}, task={self.task!r})")

    def resize(self, image: np.ndarray, mask: np.ndarray | None = None
               ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The image resized bilinearly (uint8) and, if given, the mask by nearest neighbour (its dtype kept)."""
        height, width = self.size
        image = np.asarray(image)
        if image.shape[:2] != (height, width):
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        if mask is None:
            return image
        mask = np.asarray(mask)
        if mask.shape[:2] != (height, width):  # nearest pixel centre, for any integer dtype
            rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
            cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
            mask = mask[rows[:, None], cols[None, :]]
        return image, mask

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, train: bool = False,
                 boxes: torch.Tensor | None = None, labels: torch.Tensor | None = None
                 ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """A float tensor (C, H, W), normalised; with a mask also a long tensor (H, W), with boxes also the
        boxes (N, 4) moved with the image, and with labels also the labels of the boxes kept.

        ``image`` is a uint8 array (H, W) or (H, W, 3), resized here unless it already has the
        output size. Augmentation runs only when ``train`` is True. Only a 'segment' transform
        takes a mask, only a 'detect' one boxes (x1, y1, x2, y2 in pixels of the output size) and
        their labels (N,); boxes that a crop or RandAugment's geometry pushes out are dropped.
        """
        if mask is not None and self.task != "segment":
            raise ParameterError(f"a '{self.task}' transform takes no mask; build it with task='segment'")
        if boxes is not None and self.task != "detect":
            raise ParameterError(f"a '{self.task}' transform takes no boxes; build it with task='detect'")
        if labels is not None and (boxes is None or len(labels) != len(boxes)):
            raise ParameterError(f"labels must come with boxes, one each; got {len(labels)} labels for "
                                 f"{'no' if boxes is None else len(boxes)} boxes")
        resized = self.resize(image, mask)
        image, mask = resized if mask is not None else (resized, None)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise DataError(f"expected a grey (H, W) or colour (H, W, 3) image, got shape {image.shape}")
        pixels = torch.tensor(image).permute(2, 0, 1)  # a copy: cached arrays stay as they are
        target = None if mask is None else torch.tensor(mask, dtype=torch.long)
        if boxes is not None:
            target = boxes.clone().float()
        if train and self._pixel_ops is not None:
            pixels, target, keep = self._pixel_augmented(pixels, target, boxes is not None)
            labels = labels if labels is None or keep is None else labels[keep]
        tensor = pixels.float().div_(255.0)
        if train and self.augment:
            tensor, target = self._augmented(tensor, target, boxes is not None)
        tensor = self._with_channels(tensor)
        if self.normalize == "imagenet":
            tensor = (tensor - self._mean) / self._std
        elif self.normalize == "image":
            tensor = standardized(tensor)
        if labels is not None:
            return tensor, target, labels
        return tensor if target is None else (tensor, target)

    def _pixel_augmented(self, pixels: torch.Tensor, target: torch.Tensor | None, boxes: bool
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """torchvision's augmentations of the uint8 image (C, H, W) and its mask or boxes; for boxes also
        which of them are kept: clamped to the image, a box whose shorter side fell below ``MIN_BOX_SIDE``
        pixels (or below its length before, when that was shorter) is dropped."""
        image = tv_tensors.Image(pixels)
        if target is None:
            return self._pixel_ops(image).as_subclass(torch.Tensor), None, None
        if not boxes:
            image, mask = self._pixel_ops(image, tv_tensors.Mask(target))
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor), None
        height, width = pixels.shape[-2:]
        image, moved = self._pixel_ops(image, tv_tensors.BoundingBoxes(target, format="XYXY",
                                                                       canvas_size=(height, width)))
        moved = moved.as_subclass(torch.Tensor).clone()
        moved[:, 0::2] = moved[:, 0::2].clamp(0, width)
        moved[:, 1::2] = moved[:, 1::2].clamp(0, height)
        short = (moved[:, 2:] - moved[:, :2]).amin(dim=1)  # a box under 1 pixel from the start stays unless cut
        short_before = (target[:, 2:] - target[:, :2]).amin(dim=1).clamp(max=MIN_BOX_SIDE)
        keep = (short > 0) & (short >= short_before - BOX_TOLERANCE)
        return image.as_subclass(torch.Tensor), moved[keep], keep

    def _augmented(self, image: torch.Tensor, target: torch.Tensor | None, boxes: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Random geometry for image and mask (or boxes) together, then random photometry for the image."""
        move = box_geometry if boxes else mask_geometry
        mask = None if target is None else target if boxes else target[None]
        if "flip" in self.augment:
            flips = torch.rand(2)
            for axis, draw in ((-1, flips[0]), (-2, flips[1])):
                if draw < 0.5:
                    image, mask = image.flip(axis), move(mask, image.shape, flip=axis)
        if "rotate" in self.augment:
            square = image.shape[-1] == image.shape[-2]
            turns = int(torch.randint(4, ())) if square else 2 * int(torch.randint(2, ()))
            for _ in range(turns):
                image, mask = torch.rot90(image, 1, dims=(-2, -1)), move(mask, image.shape, flip=None)
        mask = mask if mask is None or boxes else mask[0]
        if "contrast" in self.augment:
            factor = torch.empty(()).uniform_(1 - CONTRAST, 1 + CONTRAST)
            mean = image.mean()
            image = mean + (image - mean) * factor
        if "brightness" in self.augment:
            image = image + torch.empty(()).uniform_(-BRIGHTNESS, BRIGHTNESS)
        if "noise" in self.augment:
            image = image + torch.randn_like(image) * NOISE_STD
        return image.clamp_(0.0, 1.0).contiguous(), None if mask is None else mask.contiguous()

    def _with_channels(self, image: torch.Tensor) -> torch.Tensor:
        """Grey repeated to three channels, or colour reduced to luminance, as ``channels`` asks."""
        if image.shape[0] == self.channels:
            return image
        if self.channels == 3:
            return image.expand(3, -1, -1).contiguous()
        weights = torch.tensor(LUMINANCE, dtype=image.dtype).view(3, 1, 1)
        return (image * weights).sum(dim=0, keepdim=True)


class RandomResizedCrop(v2.RandomResizedCrop):
    """``torchvision.transforms.v2.RandomResizedCrop`` resizing a mask by its pixel centres, as the image is.

    torchvision's mask kernel resizes with the flooring ``NEAREST``, which puts the mask up to half a
    source pixel below and right of the bilinearly resized image; ``NEAREST_EXACT`` keeps them aligned.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            cropped = F.crop(inpt, params["top"], params["left"], params["height"], params["width"])
            return F.resize(cropped, list(self.size), interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return super().transform(inpt, params)


class _TargetsFollow:
    """Makes a torchvision auto-augment transform, which takes images only, apply each geometric op it draws
    for the image (shear, translation, rotation) to the mask or boxes given after it, nearest and filled with 0.

    It records the ops through torchvision's ``_apply_image_or_video_transform``, which dispatches on the
    tv_tensor type, so the targets move exactly as the image does.
    """

    def forward(self, image: tv_tensors.Image, *targets: torch.Tensor) -> Any:
        self._moves: list[tuple[str, float]] = []
        image = super().forward(image)  # type: ignore[misc]
        for name, magnitude in self._moves:
            targets = tuple(super(_TargetsFollow, self)._apply_image_or_video_transform(  # type: ignore[misc]
                target, name, magnitude, interpolation=v2.InterpolationMode.NEAREST, fill=self._fill)
                for target in targets)
        return (image, *targets) if targets else image

    def _apply_image_or_video_transform(self, image: Any, transform_id: str, magnitude: float,
                                        interpolation: Any, fill: Any) -> Any:
        if transform_id in GEOMETRIC_OPS:
            self._moves.append((transform_id, magnitude))
        return super()._apply_image_or_video_transform(  # type: ignore[misc]
            image, transform_id, magnitude, interpolation=interpolation, fill=fill)


class RandAugment(_TargetsFollow, v2.RandAugment):
    """``torchvision.transforms.v2.RandAugment`` (2 ops, magnitude 9 of 31) with masks and boxes following."""


class TrivialAugmentWide(_TargetsFollow, v2.TrivialAugmentWide):
    """``torchvision.transforms.v2.TrivialAugmentWide`` with masks and boxes following."""


def mask_geometry(mask: torch.Tensor | None, shape: torch.Size, flip: int | None) -> torch.Tensor | None:
    """A (1, H, W) mask flipped along axis ``flip``, or turned a quarter like ``torch.rot90(k=1)`` when None."""
    if mask is None:
        return None
    return mask.flip(flip) if flip is not None else torch.rot90(mask, 1, dims=(-2, -1))


def box_geometry(boxes: torch.Tensor | None, shape: torch.Size, flip: int | None) -> torch.Tensor | None:
    """Boxes (N, 4: x1, y1, x2, y2) of an image of ``shape`` (…, H, W) after the move ``mask_geometry`` makes.

    A horizontal flip maps x to W - x, a vertical one y to H - y; ``torch.rot90(k=1)`` moves the
    point (x, y) to (y, W - x).
    """
    if boxes is None or not len(boxes):
        return boxes
    height, width = shape[-2], shape[-1]
    x1, y1, x2, y2 = boxes.unbind(-1)
    if flip == -1:
        return torch.stack([width - x2, y1, width - x1, y2], -1)
    if flip == -2:
        return torch.stack([x1, height - y2, x2, height - y1], -1)
    return torch.stack([y1, width - x2, y2, width - x1], -1)
