"""The ``patchcore`` and ``padim`` backbone components: parameters, documentation and task, without importing torch."""

from __future__ import annotations

from typing import Annotated, Any

from defectlab import Range

Count = Annotated[int, Range(1)]
Sigma = Annotated[float, Range(0)]

COMMON_ARGS = """\
        num_classes: Ignored (one anomaly score per image); the engine passes 1.
        in_chans: Input channels: 1 for grey images, 3 for colour.
        weights: The feature extractor's weights: None (random initialisation), a local state-dict
            file or a run folder (a `defectlab pretrain` run's encoder, a classifier's best.pt),
            loaded as transfer learning does, the source's head left out; or a source the backbone
            knows, "imagenet" (a download, or the Hugging Face cache).
        backbone: A registered backbone that has feature_maps(x, layers): resnet18, resnet34,
            resnet50, vit_tiny, vit_small, vit_base (224-pixel inputs) or timm:NAME. Built with
            weights=None, then loaded from weights."""
TAIL_ARGS = """\
        blur_sigma: Standard deviation in input pixels of the Gaussian that smooths the map (0: none).
        seed: Seed of the random choice ({what})."""


def patchcore(num_classes: Count = 1, in_chans: Count = 3, weights: str | None = None, backbone: str = "resnet18",
              layers: tuple[str, ...] = ("layer2", "layer3"), patch_size: Count = 3,
              feature_dim: Annotated[int | None, Range(1)] = None,
              coreset_ratio: Annotated[float, Range(0, 1, low_open=True)] = 0.1,
              projection_dim: Annotated[int | None, Range(1)] = 128, neighbours: Count = 9,
              blur_sigma: Sigma = 4.0, seed: int = 0) -> Any:
    settings = dict(locals())
    del settings["num_classes"]
    from defectlab_plugins.anomaly_models.patchcore import PatchCore

    return PatchCore(**settings)


def padim(num_classes: Count = 1, in_chans: Count = 3, weights: str | None = None, backbone: str = "resnet18",
          layers: tuple[str, ...] = ("layer1", "layer2", "layer3"), feature_dim: Count = 100,
          epsilon: Annotated[float, Range(0)] = 0.01, blur_sigma: Sigma = 4.0, seed: int = 0) -> Any:
    settings = dict(locals())
    del settings["num_classes"]
    from defectlab_plugins.anomaly_models.padim import PaDiM

    return PaDiM(**settings)


# The two docstrings share the Args of the common parameters, so they are assembled here.
patchcore.__doc__ = f"""PatchCore (Roth et al. 2022): each patch's distance to a coreset memory bank of good patches.

    Patch features: the backbone's maps of ``layers``, each averaged over a patch_size x
    patch_size neighbourhood (stride 1, positions outside the map left out of the mean), the
    deeper maps resized (bilinear) to the first one's grid and concatenated along channels
    (ResNet-18 layer2 + layer3: 128 + 256 = 384 channels at stride 8), then, if feature_dim is
    set, averaged down to feature_dim channels (adaptive average pooling over channels).

    Fit (good training images only, no gradient descent): every patch of every image is
    collected; a greedy k-centre coreset of them is chosen in a seeded Gaussian random
    projection (Johnson-Lindenstrauss) to projection_dim dimensions, starting from the first
    patch and adding each time the patch farthest from those chosen; the chosen patches, at
    full dimension, are the memory bank M (buffer ``memory_bank``).

    Inference: a patch's score is its Euclidean distance to its nearest entry of M; the map is
    these scores resized (bilinear) to the input and blurred (Gaussian, blur_sigma pixels). The
    image score reweights the largest patch score s* = ||m_test - m*|| (m* the nearest entry of
    M to that patch m_test) by the b = neighbours entries of M nearest to m*, N_b(m*), m*
    included:

        s = (1 - exp(||m_test - m*||) / sum over m in N_b(m*) of exp(||m_test - m||)) * s*

    computed as -expm1(s* - logsumexp over N_b(m*) of ||m_test - m||) * s*, which cannot
    overflow. The extractor is frozen and stays in eval mode.

    Args:
{COMMON_ARGS}
        layers: Feature layers of the backbone: layer1 ... layer4 for the ResNets; for timm models
            a name of the model's feature_info (blocks.3 for a ViT) or its position ("3").
        patch_size: Side of the odd neighbourhood each patch feature is averaged over (1: none).
        feature_dim: Channels the concatenated features are averaged down to; None keeps all. The
            paper's 1024 is for Wide-ResNet-50's 1536 channels: ResNet-18's 384 need no reduction.
        coreset_ratio: Fraction of the patches kept in the memory bank: round(coreset_ratio *
            patches), rounded half up, at least 1 (1.0 keeps them all).
        projection_dim: Dimensions of the random projection the coreset is chosen in; None, or not
            fewer than the features', chooses in the features themselves.
        neighbours: b, the entries of the memory bank nearest to m* (m* included) in the image
            score's reweighting; at most the bank's size.
{TAIL_ARGS.format(what="the random projection")}
    """

padim.__doc__ = f"""PaDiM (Defard et al. 2021): each patch's Mahalanobis distance to a Gaussian fitted at its position.

    Patch embeddings: the backbone's maps of ``layers`` resized (bilinear) to the first one's
    grid and concatenated along channels (ResNet-18 layer1 + layer2 + layer3: 448 channels at
    stride 4), of which a seeded random subset of feature_dim channels is kept.

    Fit (good training images only, no gradient descent): at each position (i, j) of the grid,
    the mean mu_ij and covariance Sigma_ij of the good images' embeddings, plus epsilon * I;
    the buffers hold mu (h, w, d) and the inverse covariance (h, w, d, d), so the model scores
    images of the size it was fitted on.

    Inference: the map is M_ij = sqrt((x_ij - mu_ij)^T Sigma_ij^-1 (x_ij - mu_ij)), resized
    (bilinear) to the input and blurred (Gaussian, blur_sigma pixels); the image score is the
    map's maximum. The extractor is frozen and stays in eval mode.

    Args:
{COMMON_ARGS}
        layers: Feature layers of the backbone: layer1 ... layer4 for the ResNets; for timm models
            a name of the model's feature_info (blocks.3 for a ViT) or its position ("3").
        feature_dim: Channels kept, drawn at random (seeded) from the concatenated ones (the paper:
            100 of ResNet-18's 448); at most their number.
        epsilon: Added to the diagonal of each covariance so that it can be inverted.
{TAIL_ARGS.format(what="the channels kept")}
    """

patchcore.tasks = ("anomaly",)  # type: ignore[attr-defined]
padim.tasks = ("anomaly",)  # type: ignore[attr-defined]
