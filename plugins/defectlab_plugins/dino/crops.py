"""Multi-crop views on a tensor batch, on its device, and the crop sizes an encoder accepts.

Every view of every image gets its own random resized crop (torchvision's RandomResizedCrop
sampling: area fraction uniform in ``scale``, log aspect ratio uniform in log(3/4)..log(4/3), ten
tries, then a centre crop), cut and resized for the whole batch in one ``roi_align`` call
(bilinear, averaging several samples per output pixel when shrinking), then a horizontal flip and
a light contrast/brightness jitter. Every random number is drawn on the CPU from torch's global
generator, a fixed number per call, so a seeded run draws the same crops on any device.

Size policy: a timm Vision Transformer (``encoder.encoder`` for the built-in ViTs, or the encoder
itself) is switched to timm's dynamic image size in place, so it takes local crops at their own
size with its position embeddings interpolated, as the reference code does; its output at its
own ``img_size`` is unchanged, and so is its state dict. Its crop sizes must then be multiples of
its patch size. Other encoders (the ResNets) take any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from defectlab import DataError, ParameterError, vision_transformer

#: Aspect ratios of RandomResizedCrop (width / height).
RATIO = (3 / 4, 4 / 3)
TRIES = 10
#: Local crop side / global crop side of the reference recipe (96 / 224).
LOCAL_SHARE = 96 / 224
#: Global crop side when neither the encoder nor ``global_size`` fixes it, unless the images are smaller.
DEFAULT_GLOBAL = 224
#: Probability that a view gets the contrast/brightness jitter.
JITTER_PROBABILITY = 0.8


@dataclass(frozen=True)
class EncoderInput:
    """What input sizes an encoder takes: ``native`` is a ViT's ``img_size`` (None: any), ``patch`` its patch side."""

    native: int | None = None
    patch: int = 1

    def check(self, parameter: str, size: int | None) -> None:
        """ParameterError unless ``size`` (None: chosen later) is a multiple of the patch side."""
        if size is not None and size % self.patch:
            raise ParameterError(f"{parameter} = {size} is not a multiple of the ViT's patch size {self.patch}; "
                                 f"use e.g. {max(self.patch, round(size / self.patch) * self.patch)}")

    def global_size(self, chosen: int | None, height: int, width: int) -> int:
        """``chosen``, else the ViT's ``img_size``, else min(224, the images' shorter side)."""
        if chosen is not None:
            return chosen
        if self.native is not None:
            return self.native
        return min(DEFAULT_GLOBAL, height, width)

    def local_size(self, chosen: int | None, global_size: int) -> int:
        """``chosen``, else 96/224 of the global side rounded to a multiple of the patch side (at least one patch)."""
        if chosen is not None:
            return chosen
        return max(1, round(global_size * LOCAL_SHARE / self.patch)) * self.patch


def prepare_encoder(encoder: nn.Module) -> EncoderInput:
    """Switch a timm ViT to dynamic image size (in place) and say what sizes the encoder takes."""
    vit = vision_transformer(encoder)
    if vit is None:
        return EncoderInput()
    from timm.layers import Format

    embed = vit.patch_embed
    if not vit.dynamic_img_size:  # what timm's constructor does for dynamic_img_size=True
        vit.dynamic_img_size = True
        embed.strict_img_size = False
        embed.flatten = False
        embed.output_fmt = Format.NHWC
    native = min(embed.img_size) if embed.img_size is not None else None
    return EncoderInput(native, max(embed.patch_size))


def check_sizes(height: int, width: int, global_size: int, local_size: int, local_crops: int,
                from_vit: bool = False) -> None:
    """DataError when the images are smaller than the crops made from them (``from_vit``: the global
    size is the ViT's img_size, by default)."""
    side = min(height, width)
    too_big = [f"global_size ({global_size}{', the ViT img_size' if from_vit else ''})"] if global_size > side else []
    if local_crops and local_size > side:
        too_big.append(f"local_size ({local_size})")
    if too_big:
        hint = " (or build the ViT with a smaller img_size)" if from_vit and global_size > side else ""
        raise DataError(f"the images are {height}x{width} pixels, smaller than the DINO crops: set "
                        f"{' and '.join(too_big)} to at most {side}{hint}, or use larger images")


def random_boxes(count: int, height: int, width: int, scale: tuple[float, float]) -> Tensor:
    """``count`` RandomResizedCrop boxes (x0, y0, x1, y1) in pixel units, float64 on the CPU."""
    area = height * width
    u = torch.rand(count, TRIES, 4, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_low, log_high = math.log(RATIO[0]), math.log(RATIO[1])
    aspect = torch.exp(log_low + (log_high - log_low) * u[..., 1])
    w, h = torch.sqrt(target * aspect), torch.sqrt(target / aspect)
    fits = (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.double().argmax(1), torch.full((count,), -1, dtype=torch.long))
    # centre crop at the nearest allowed ratio when no try fits
    image_ratio = width / height
    if image_ratio < RATIO[0]:
        fallback_w, fallback_h = width, width / RATIO[0]
    elif image_ratio > RATIO[1]:
        fallback_w, fallback_h = height * RATIO[1], height
    else:
        fallback_w, fallback_h = width, height
    rows = torch.arange(count)
    pick = first.clamp_min(0)
    ok = first >= 0
    w = torch.where(ok, w[rows, pick], torch.tensor(float(fallback_w), dtype=torch.float64))
    h = torch.where(ok, h[rows, pick], torch.tensor(float(fallback_h), dtype=torch.float64))
    x0 = torch.where(ok, (width - w) * u[rows, pick, 2], (width - w) / 2)
    y0 = torch.where(ok, (height - h) * u[rows, pick, 3], (height - h) / 2)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def crop_views(images: Tensor, views: int, size: int, scale: tuple[float, float], flip: float,
               jitter: float) -> list[Tensor]:
    """``views`` random resized crops of every image, each (N, C, size, size), flipped and jittered."""
    from torchvision.ops import roi_align

    n, _, height, width = images.shape
    count = views * n
    boxes = random_boxes(count, height, width, scale)
    flips = torch.rand(count) < flip
    jitter_on = torch.rand(count) < JITTER_PROBABILITY
    contrast = 1.0 + jitter * (2 * torch.rand(count) - 1)
    brightness = jitter * (2 * torch.rand(count) - 1)

    device = images.device
    source = images if images.is_floating_point() else images.float()
    index = torch.arange(n, dtype=torch.float64).repeat(views)  # view-major: view v of image i is row v*n + i
    rois = torch.cat([index[:, None], boxes], dim=1).to(device=device, dtype=source.dtype)
    crops = roi_align(source, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    crops = torch.where(flips.to(device)[:, None, None, None], crops.flip(-1), crops)
    if jitter > 0:
        # x <- m + c (x - m) + b s, per view and channel (m, s: the crop's mean and std), on the
        # normalised values: a contrast and brightness change that needs no pixel statistics.
        mean = crops.mean(dim=(-2, -1), keepdim=True)
        std = crops.std(dim=(-2, -1), keepdim=True) if size > 1 else torch.zeros_like(mean)
        c = torch.where(jitter_on, contrast, torch.ones(count)).to(device=device, dtype=crops.dtype)
        b = torch.where(jitter_on, brightness, torch.zeros(count)).to(device=device, dtype=crops.dtype)
        crops = mean + c[:, None, None, None] * (crops - mean) + b[:, None, None, None] * std
    return list(crops.unflatten(0, (views, n)).unbind(0))


def multi_crop(images: Tensor, global_size: int, global_scale: tuple[float, float], local_crops: int,
               local_size: int, local_scale: tuple[float, float], flip: float, jitter: float) -> list[Tensor]:
    """The 2 global views then the ``local_crops`` local ones, each (N, C, side, side)."""
    views = crop_views(images, 2, global_size, global_scale, flip, jitter)
    if local_crops:
        views += crop_views(images, local_crops, local_size, local_scale, flip, jitter)
    return views
