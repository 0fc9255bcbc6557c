"""``mae_recon``: anomaly maps from the MAE objective's reconstruction error (seed 001 §3, Hemmingsson and Olsson 2026 §2.6).

A masked autoencoder pretrained on good images reconstructs good texture well and a defect badly.
Each image is masked ``samples`` times (the pretraining's masking and ratio; the same seeded masks for
every image, so a score does not depend on the batch it came in), every hidden patch's
reconstruction error is averaged over the masks that hid it, and the fit on the good training images
learns each patch position's mean and spread of that error, so the map is a z-score per position.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from defectlab import DataError, Range, create, read_state_dict
from defectlab_plugins.mae.objective import MAE, NORM_EPS
from defectlab_plugins.mae.patches import normalised_patches, patchify

STD_FLOOR = 1e-6


def pretrain_run(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """(encoder spec, MAE settings, objective state) of a ``defectlab pretrain`` run with the ``mae`` objective."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise DataError(f"mae_recon: weights '{folder}' is not a run folder (no config.json); give the folder of a "
                        f"`defectlab pretrain` run with ssl = 'mae'")
    config = json.loads(config_file.read_text())["config"]
    ssl = dict(config.get("ssl") or {})
    if ssl.pop("name", None) != "mae":
        raise DataError(f"mae_recon: '{folder}' is not an MAE pretraining (its ssl is {config.get('ssl')!r}); "
                        f"pretrain with ssl = 'mae' first")
    file = next((folder / n for n in ("best.pt", "last.pt") if (folder / n).is_file()), None)
    if file is None:
        raise DataError(f"mae_recon: '{folder}' has no best.pt or last.pt; the pretraining did not finish an epoch")
    state = {k.removeprefix("objective."): v for k, v in read_state_dict(file).items()}
    return dict(config["model"]), ssl, state


class MAEReconstruction(nn.Module):
    """Anomaly maps from a pretrained MAE's reconstruction error, standardised per patch position.

    Scoring an image: ``samples`` masks of the pretraining's kind and ratio (drawn once from
    ``seed`` and used for every image, so a score is reproducible), the MAE predicts every hidden patch, and each patch's error e is the mean squared
    difference to its target (the normalised patch when the MAE was pretrained with
    norm_pix_loss), averaged over the masks that hid it. ``fit`` learns, over the good training
    images, the mean mu and standard deviation s of e at each patch position; the map is
    (e - mu) / max(s, 1e-6) per patch (e itself with ``standardise`` off), upsampled bilinearly to
    the input size and blurred (Gaussian, ``blur_sigma`` pixels); the image score is the map's
    maximum.

    Args:
        num_classes: Unused (one score per image).
        in_chans: Input channels; must match the pretraining's.
        weights: The folder of a ``defectlab pretrain`` run with ssl = 'mae' (its best.pt holds the
            encoder and decoder); None builds an untrained MAE on ``encoder`` (for tests only).
        img_size: Side of the images; must match the pretraining's.
        encoder: The ViT backbone when ``weights`` is None (a run brings its own).
        samples: Masks drawn per image; a patch is hidden about samples x mask_ratio times.
        mask_ratio: Share of patches hidden per mask (None: the pretraining's).
        standardise: Map z-scores per patch position (learnt by fit) instead of raw errors.
        blur_sigma: Standard deviation of the Gaussian smoothing of the map, in pixels (0: none).
        seed: Seed of the masks.
    """

    name = "mae_recon"
    tasks = ("anomaly",)

    def __init__(self, num_classes: int = 1, in_chans: Annotated[int, Range(1)] = 3, weights: str | None = None,
                 img_size: Annotated[int, Range(16)] = 224, encoder: str = "vit_tiny",
                 samples: Annotated[int, Range(1)] = 8,
                 mask_ratio: Annotated[float | None, Range(0, 1, low_open=True, high_open=True)] = None,
                 standardise: bool = True, blur_sigma: Annotated[float, Range(0)] = 4.0,
                 seed: Annotated[int, Range(0)] = 0) -> None:
        super().__init__()
        spec, settings, state = ({"name": encoder}, {}, None) if weights is None else pretrain_run(Path(weights))
        spec.update(in_chans=in_chans, img_size=img_size, weights=None)
        spec.pop("num_classes", None)
        if mask_ratio is not None:
            settings["mask_ratio"] = mask_ratio
        self.samples, self.seed = samples, seed
        self._build(spec, settings)
        if state is not None:
            try:
                missing = self.mae.load_state_dict(state, strict=False).missing_keys
            except RuntimeError as exc:  # a tensor of another shape
                missing = [str(exc).splitlines()[1].strip()]
            if missing:
                raise DataError(f"mae_recon: the run '{weights}' does not hold this MAE's tensors ({missing[0]}, "
                                f"...); check in_chans and img_size against the pretraining")
        self.standardise, self.blur_sigma = standardise, blur_sigma
        patches = self.mae.grid[0] * self.mae.grid[1]
        self.register_buffer("error_mean", torch.zeros(0))
        self.register_buffer("error_std", torch.ones(patches))

    def _build(self, spec: dict[str, Any], settings: dict[str, Any]) -> None:
        """The MAE of ``spec`` (its encoder) and ``settings``, frozen, and its ``samples`` masks drawn from ``seed``."""
        self.spec, self.settings = dict(spec), dict(settings)
        self.mae = MAE(create("backbone", spec, num_classes=2), **settings).requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            blank = torch.zeros(self.samples, self.mae.in_chans, *self.mae.img_size)
            self.register_buffer("masks", self.mae.views(blank)["mask"], persistent=False)

    def get_extra_state(self) -> dict[str, Any]:
        """The MAE's architecture, saved with the weights: a model rebuilt from a checkpoint (``weights=None``) needs it."""
        return {"encoder": self.spec, "mae": self.settings}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Nothing left to do: ``_load_from_state_dict`` rebuilt the MAE before its tensors were loaded."""

    def train(self, mode: bool = True) -> MAEReconstruction:
        """Always in eval mode: the MAE is a fixed scorer (no dropout, no statistics to update)."""
        return super().train(False)

    def patch_errors(self, images: Tensor) -> Tensor:
        """Mean reconstruction error of every patch (N, L) over ``samples`` seeded masks."""
        mae = self.mae
        pixels = patchify(images.float(), mae.patch)
        target = normalised_patches(pixels, NORM_EPS) if mae.norm_pix_loss else pixels
        total = torch.zeros(pixels.shape[:2], device=images.device)
        hidden = torch.zeros_like(total)
        for mask in self.masks:
            mask = mask.expand(len(images), -1)
            error = (mae.predict(images, mask).float() - target).pow(2).mean(-1)
            total += error * mask
            hidden += mask
        mean_error = total / hidden.clamp(min=1)
        never = hidden == 0  # a patch no mask hid (rare): the image's mean error stands in
        return torch.where(never, (total.sum(1, keepdim=True) / hidden.sum(1, keepdim=True)), mean_error)

    def fit(self, batches: Any) -> dict[str, float]:
        """The mean and standard deviation of each patch position's error over the good images."""
        errors = torch.cat([self.patch_errors(images) for images in batches])
        self.error_mean = errors.mean(0)
        self.error_std = errors.std(0, unbiased=False) if len(errors) > 1 else torch.ones_like(self.error_mean)
        return {"images": len(errors), "patches": errors.shape[1], "mean_error": float(errors.mean())}

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        if prefix + "error_mean" in state_dict:  # the fitted statistics' size comes with them
            self.error_mean = torch.empty_like(state_dict[prefix + "error_mean"])
        saved = state_dict.get(prefix + "_extra_state")
        if isinstance(saved, dict) and (saved["encoder"], saved["mae"]) != (self.spec, self.settings):
            self._build(saved["encoder"], saved["mae"])  # the children load into the MAE that was trained
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``{"scores": (N,), "maps": (N, H, W)}``: the blurred, upsampled error z-scores and their maximum."""
        if not self.error_mean.numel():
            raise RuntimeError("mae_recon has not been fitted: train it (defectlab train) on good images first")
        errors = self.patch_errors(images)
        if self.standardise:
            errors = (errors - self.error_mean) / self.error_std.clamp(min=STD_FLOOR)
        maps = errors.reshape(len(images), 1, *self.mae.grid)
        maps = nn.functional.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.blur_sigma > 0:
            from torchvision.transforms.functional import gaussian_blur

            radius = min(int(4 * self.blur_sigma + 0.5), min(images.shape[-2:]) - 1)  # reflection needs < side
            maps = gaussian_blur(maps, [2 * radius + 1] * 2, [self.blur_sigma] * 2)
        maps = maps[:, 0]
        return {"scores": maps.flatten(1).amax(1), "maps": maps}
