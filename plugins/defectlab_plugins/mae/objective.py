"""The MAE objective (Hemmingsson and Olsson 2026, seed §2.6): hide most patches, encode the rest, reconstruct the hidden ones.

The encoder is a defectlab ViT backbone (``vit_tiny``, ``vit_small``, ``vit_base``, ``timm:vit_*``)
whose timm VisionTransformer is ``encoder.encoder``. Only the visible patches go through it: their
patch embeddings plus their position embeddings, behind the prefix tokens (CLS, registers), then
timm's blocks and final norm. A light decoder (a linear map to its width, a learnt mask token at
every hidden patch, fixed 2-D sine-cosine positions, transformer blocks, a linear map to the
pixels of a patch) predicts every patch; the loss is the MSE over the hidden patches only
(eq. 2.12). The decoder stays behind: ``export_encoder`` returns the backbone alone.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn

from defectlab import DataError, ParameterError, Range, pyplot, save_figure, vision_transformer
from defectlab_plugins.mae.masking import make_masks, masked_count
from defectlab_plugins.mae.patches import normalised_patches, patchify, sincos_positions, unpatchify

MaskRatio = Annotated[float, Range(0, 1, low_open=True, high_open=True)]
Positive = Annotated[int, Range(1)]
NORM_EPS = 1e-6
#: Parameters by their last name component that weight decay never touches.
NO_DECAY = {"pos_embed", "cls_token", "reg_token", "dist_token", "mask_token"}
MAX_PICTURES = 8


def timm_vit(encoder: nn.Module) -> Any:
    """The timm VisionTransformer of a defectlab ViT backbone (or the ViT itself); ParameterError if none."""
    vit = vision_transformer(encoder)
    if vit is None:
        raise ParameterError(f"ssl 'mae' needs a ViT encoder (vit_tiny, vit_small, vit_base or timm:vit_*), "
                             f"got {type(encoder).__name__}")
    return vit


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over the hidden patches of each patch's mean squared error (eq. 2.12); visible ones count nowhere.

    Args:
        pred: predicted patches (N, L, P).
        target: target patches (N, L, P).
        mask: bool (N, L), True where a patch is hidden.
    """
    per_patch = (pred.float() - target.float()).square().mean(dim=-1)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum()  # no boolean indexing: no device sync


class MAE(nn.Module):
    """Masked autoencoder (He et al. 2022): reconstruct hidden patches from visible ones.

    As in Hemmingsson and Olsson 2026 (§2.6, docs/references.md). Each step hides exactly round(mask_ratio · N) of the N patches of every image (random,
    block-wise or grid-wise), encodes the visible patches only, and decodes all patches with a
    light transformer; the loss is the mean squared error on the hidden patches. The decoder is
    left behind: ``export_encoder()`` is the ViT backbone, which ``train --init-from`` loads.

    Masks: ``random`` draws the hidden patches uniformly; ``block`` hides one contiguous block (a
    rectangle of random aspect, one edge row or column cut short to the exact count) at a random
    place; ``grid`` puts the smaller of the visible and hidden sets on a regular lattice with a
    random offset (0.75 on an even grid: one visible patch per 2 × 2 cell), evenly thinned to the
    exact count. Masks come from torch's global generator, so a seeded run is reproducible.

    Args:
        encoder: the ViT backbone being pretrained, built for the embed task (vit_tiny,
            vit_small, vit_base or timm:vit_*; any size, grey or RGB); its image size must be a
            multiple of its patch size.
        mask_ratio: fraction of the patches hidden in every image, exactly round(mask_ratio · N)
            of N; at least one patch must stay hidden and one visible. Hemmingsson and Olsson's
            tuned value is 0.9 with ImageNet initialisation, 0.75 from scratch.
        masking: where the hidden patches lie: 'random' (uniformly), 'block' (one contiguous
            block) or 'grid' (a regular lattice with a random offset).
        decoder_depth: number of transformer blocks of the decoder.
        decoder_width: token width of the decoder; a multiple of 4 and of decoder_heads.
        decoder_heads: attention heads of each decoder block.
        decoder_mlp_ratio: hidden width of the decoder blocks' MLPs, as a multiple of decoder_width.
        norm_pix_loss: reconstruct each patch normalised by its own mean and variance (eps 1e-6),
            as in MAE's recipe, instead of the raw pixels.
    """

    name = "mae"

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: MaskRatio = 0.75,
        masking: Literal["random", "block", "grid"] = "random",
        decoder_depth: Positive = 8,
        decoder_width: Positive = 512,
        decoder_heads: Positive = 16,
        decoder_mlp_ratio: Annotated[float, Range(0, low_open=True)] = 4.0,
        norm_pix_loss: bool = False,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        vit = timm_vit(encoder)
        self.encoder = encoder
        embed = vit.patch_embed
        self.patch = tuple(embed.patch_size)
        self.img_size = tuple(embed.img_size)
        if self.img_size[0] % self.patch[0] or self.img_size[1] % self.patch[1]:
            raise ParameterError(f"ssl 'mae': the encoder's image size {self.img_size[0]}x{self.img_size[1]} is not "
                                 f"a multiple of its patch size {self.patch[0]}x{self.patch[1]}")
        self.grid = (self.img_size[0] // self.patch[0], self.img_size[1] // self.patch[1])
        self.in_chans = embed.proj.in_channels
        patches = self.grid[0] * self.grid[1]
        self.count = masked_count(mask_ratio, patches)
        if not 0 < self.count < patches:
            raise ParameterError(f"ssl 'mae': mask_ratio {mask_ratio} hides round({mask_ratio} x {patches}) = "
                                 f"{self.count} of the {patches} patches; at least one must be hidden and one visible")
        if decoder_width % 4 or decoder_width % decoder_heads:
            raise ParameterError(f"ssl 'mae': decoder_width {decoder_width} must be a multiple of 4 (its sine-cosine "
                                 f"positions) and of decoder_heads {decoder_heads}")
        self.mask_ratio, self.masking, self.norm_pix_loss = mask_ratio, masking, norm_pix_loss

        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        self.register_buffer("decoder_pos_embed", sincos_positions(decoder_width, self.grid)[None], persistent=False)
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder_width, decoder_heads, mlp_ratio=decoder_mlp_ratio, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_width, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_width, self.patch[0] * self.patch[1] * self.in_chans)
        self._init_decoder()
        self._sum, self._images = 0.0, 0

    def _init_decoder(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for name, module in self.named_modules():
            if not name.startswith("decoder"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # --- the contract ------------------------------------------------------------------------

    def views(self, images: Tensor) -> dict[str, Tensor]:
        """The batch and its masks: ``{"images": (N, C, H, W), "mask": bool (N, L), True where hidden}``."""
        expected = (self.in_chans, *self.img_size)
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise DataError(f"ssl 'mae' expects images (N, {expected[0]}, {expected[1]}, {expected[2]}) for its "
                            f"encoder, got {shape}")
        mask = make_masks(self.masking, images.shape[0], *self.grid, self.count)
        return {"images": images, "mask": mask.to(images.device)}

    def loss(self, views: dict[str, Tensor]) -> Tensor:
        """MSE between predicted and target pixels over the hidden patches only."""
        images, mask = views["images"], views["mask"]
        pred = self.predict(images, mask)
        pixels = patchify(images.float(), self.patch)
        target = normalised_patches(pixels, NORM_EPS) if self.norm_pix_loss else pixels
        loss = masked_mse(pred, target, mask)
        if self.training:
            with torch.no_grad():
                self._sum += masked_mse(self.to_pixels(pred, pixels), pixels, mask).detach() * len(images)
                self._images += len(images)
        return loss

    def forward(self, images: Tensor) -> Tensor:
        """``loss(views(images))``, for wrappers that call the module."""
        return self.loss(self.views(images))

    def param_groups(self) -> list[dict[str, Any]]:
        """Weights with weight decay; biases, norms, position embeddings and tokens without."""
        decayed, plain = [], []
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                exempt = parameter.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY
                (plain if exempt else decayed).append(parameter)
        return [{"params": decayed}, {"params": plain, "weight_decay": 0.0}]

    def after_step(self, progress: float, optimizer: Any) -> None:
        """Nothing to update: MAE has no teacher and no schedule of its own."""

    def export_encoder(self) -> nn.Module:
        """The ViT backbone alone; the decoder and mask token stay behind."""
        return self.encoder

    def epoch_metrics(self) -> dict[str, float]:
        """``masked_pixel_mse``: the MSE of the hidden patches in the images' own pixel values over the
        training batches since the last call, weighted by batch size (the loss itself without
        norm_pix_loss; with it, the prediction is taken back to pixels with each target patch's mean
        and variance, so runs with and without norm_pix_loss compare)."""
        if not self._images:
            return {}
        found = {"masked_pixel_mse": float(self._sum) / self._images}
        self._sum, self._images = 0.0, 0
        return found

    def write(self, folder: str | Path, images: Tensor) -> dict[str, Path]:
        """A PNG of up to 8 images: the image, what the encoder sees, and the reconstruction.

        The masks are drawn from a fixed seed without touching the global generator, so the
        pictures of successive epochs hide the same patches and training stays reproducible.
        """
        images = images[:MAX_PICTURES]
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                mask = self.views(images)["mask"]
                rebuilt = self.reconstruct(images, mask)
        finally:
            self.train(was_training)
        hidden = unpatchify(mask[..., None].expand(-1, -1, self.patch[0] * self.patch[1]).float(), self.grid,
                            self.patch)
        path = Path(folder) / "mae_reconstructions.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return {"reconstructions": save_figure(self._figure(images.float(), hidden.bool(), rebuilt), path)}

    # --- the model ---------------------------------------------------------------------------

    @property
    def vit(self) -> Any:
        """The encoder's timm VisionTransformer."""
        return timm_vit(self.encoder)

    def encode_visible(self, images: Tensor, mask: Tensor) -> Tensor:
        """The encoder's tokens (N, prefix + K, D) from the K visible patches of each image."""
        vit = self.vit
        x = vit.patch_embed(images)
        if x.ndim == 4:  # NHWC from a ViT with dynamic image size
            x = x.flatten(1, 2)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        if vit.pos_embed is not None:
            start = 0 if vit.no_embed_class else vit.num_prefix_tokens
            x = x + vit.pos_embed[:, start:]
            if prefix and not vit.no_embed_class:
                prefix = [torch.cat(prefix, dim=1) + vit.pos_embed[:, :start]]
        order = self.visible_first(mask)
        keep = order[:, :mask.shape[1] - self.count]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        x = vit.norm_pre(vit.pos_drop(torch.cat([*prefix, x], dim=1)))
        return vit.norm(vit.blocks(x))

    def decode(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Predicted patches (N, L, ph·pw·C) from the encoder's tokens and the masks."""
        x = self.decoder_embed(tokens)
        prefix_count = x.shape[1] - (mask.shape[1] - self.count)
        prefix, visible = x[:, :prefix_count], x[:, prefix_count:]
        hidden = self.mask_token.to(x.dtype).expand(x.shape[0], self.count, -1)
        restore = self.visible_first(mask).argsort(dim=1)
        patches = torch.gather(torch.cat([visible, hidden], dim=1), 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([prefix, patches + self.decoder_pos_embed.to(x.dtype)], dim=1)
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, prefix_count:])

    def predict(self, images: Tensor, mask: Tensor) -> Tensor:
        """Predicted patches (N, L, ph·pw·C) of every patch, normalised ones with norm_pix_loss."""
        return self.decode(self.encode_visible(images, mask), mask)

    def reconstruct(self, images: Tensor, mask: Tensor) -> Tensor:
        """Images (N, C, H, W) whose hidden patches are the prediction and visible ones the input."""
        pixels = patchify(images.float(), self.patch)
        pred = self.to_pixels(self.predict(images, mask).float(), pixels)
        return unpatchify(torch.where(mask[..., None], pred, pixels), self.grid, self.patch)

    def to_pixels(self, pred: Tensor, pixels: Tensor) -> Tensor:
        """Predictions in pixel values: with norm_pix_loss, scaled back by each target patch's statistics."""
        if not self.norm_pix_loss:
            return pred
        return pred * (pixels.var(dim=-1, keepdim=True) + NORM_EPS).sqrt() + pixels.mean(dim=-1, keepdim=True)

    @staticmethod
    def visible_first(mask: Tensor) -> Tensor:
        """Patch indices (N, L): each image's visible patches in raster order, then its hidden ones."""
        return mask.to(torch.int8).argsort(dim=1, stable=True)

    def _figure(self, images: Tensor, hidden: Tensor, rebuilt: Tensor) -> Any:
        plt = pyplot()
        columns = images.shape[0]
        figure, axes = plt.subplots(3, columns, figsize=(1.8 * columns, 5.6), squeeze=False)
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-8)
        rows = {"image": images, "encoder input": images.masked_fill(hidden, float("nan")),
                "reconstruction": rebuilt.float()}
        for row, (label, batch) in enumerate(rows.items()):
            shown = ((batch - low) / span).clamp(0, 1).nan_to_num(0.5).cpu()
            for column in range(columns):
                axis = axes[row, column]
                picture = shown[column].permute(1, 2, 0).numpy()
                if picture.shape[-1] == 1:
                    axis.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1)
                else:
                    axis.imshow(picture[..., :3])
                axis.set_xticks([])
                axis.set_yticks([])
            axes[row, 0].set_ylabel(label)
        figure.suptitle(f"MAE, {self.masking} masking: {self.count} of {self.grid[0] * self.grid[1]} patches hidden")
        figure.tight_layout()
        return figure

