"""PatchCore and PaDiM (task ``anomaly``): the coreset, the scores against brute force and NumPy, detection of
drawn defects on generated textures, fitted state in the state dict, and the backbones' ``feature_maps``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

import defectlab as dl
from defectlab import ConfigError, ParameterError
from defectlab_plugins.anomaly_models.anomaly_model import gaussian_blur
from defectlab_plugins.anomaly_models.coreset import coreset_size, greedy_coreset, random_projection
from defectlab_plugins.anomaly_models.patch_features import concat_at_first, local_average, pool_channels
from defectlab_plugins.anomaly_models.patchcore import reweighted_score

SIZE = 96  # input side of the textures: a 12 x 12 PatchCore grid, 24 x 24 for PaDiM


def build(name: str, **options):
    return dl.create("backbone", {"name": name, **options}, num_classes=1, in_chans=3, weights=None)


def textures(count: int, generator: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """Smooth random textures (N, 3, size, size): noise on an eighth of the grid, bicubic-upsampled, plus grain."""
    coarse = torch.randn(count, 3, size // 8, size // 8, generator=generator)
    smooth = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    return smooth + 0.1 * torch.randn(count, 3, size, size, generator=generator)


def with_blobs(images: torch.Tensor, generator: torch.Generator, radius: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """The images with a bright disc (value 4) drawn in the middle half of each, and the discs' masks (N, H, W)."""
    images = images.clone()
    n, _, size, _ = images.shape
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        cy, cx = torch.randint(size // 4, size - size // 4, (2,), generator=generator).tolist()
        masks[i] = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
        images[i, :, masks[i]] = 4.0
    return images, masks


@pytest.fixture(scope="module")
def texture_set():
    """16 good training textures, 10 good and 10 defective test textures with the defects' masks."""
    generator = torch.Generator().manual_seed(0)
    train, good = textures(16, generator), textures(10, generator)
    defective, masks = with_blobs(textures(10, generator), generator)
    return train, good, defective, masks


def clusters(dim: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """5 clusters of 20 points (spread 0.1 around centres on a circle of radius 100, in the first two
    coordinates), shuffled: points and cluster labels."""
    generator = torch.Generator().manual_seed(seed)
    angles = torch.arange(5) * 2 * math.pi / 5
    centres = torch.zeros(5, dim)
    centres[:, 0], centres[:, 1] = 100 * angles.cos(), 100 * angles.sin()
    labels = torch.arange(5).repeat_interleave(20)
    points = centres[labels] + 0.1 * torch.randn(100, dim, generator=generator)
    order = torch.randperm(100, generator=generator)
    return points[order], labels[order].numpy()


# --- the coreset ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, projection", [(2, None), (64, 8)])
def test_coreset_takes_one_point_of_each_cluster_before_a_second(dim, projection):
    points, labels = clusters(dim)
    five = greedy_coreset(random_projection(points, projection, seed=0), 5)
    assert sorted(labels[five.numpy()]) == [0, 1, 2, 3, 4]
    assert five[0] == 0
    ten = greedy_coreset(points, 10).numpy()
    assert sorted(labels[ten[:5]]) == [0, 1, 2, 3, 4]
    assert len(set(ten)) == 10


def test_coreset_of_duplicates_never_repeats_an_index():
    points = torch.zeros(6, 3)
    assert sorted(greedy_coreset(points, 6).tolist()) == [0, 1, 2, 3, 4, 5]


def test_coreset_size_rounds_half_up_and_keeps_at_least_one():
    assert coreset_size(100, 0.1) == 10
    assert coreset_size(5, 0.5) == 3  # 2.5 rounds up
    assert coreset_size(7, 0.3) == 2  # 2.1
    assert coreset_size(10, 0.01) == 1
    assert coreset_size(7, 1.0) == 7


def test_random_projection_is_seeded_and_keeps_distances_roughly():
    points = torch.randn(50, 512, generator=torch.Generator().manual_seed(1))
    projected = random_projection(points, 128, seed=3)
    assert torch.equal(projected, random_projection(points, 128, seed=3))
    assert not torch.equal(projected, random_projection(points, 128, seed=4))
    ratio = torch.pdist(projected) / torch.pdist(points)
    assert 0.85 < ratio.mean() < 1.15 and ratio.min() > 0.6


# --- PatchCore ---------------------------------------------------------------------------------------


def test_patchcore_memory_bank_is_the_rounded_coreset_starting_at_the_first_patch():
    images = textures(4, torch.Generator().manual_seed(2), size=64)
    model = build("patchcore")
    result = model.fit([images[:3], images[3:]])
    # 64 px -> layer2 grid 8 x 8: 4 * 64 = 256 patches, 0.1 * 256 = 25.6 -> 26
    assert result == {"memory_bank": 26, "feature_dim": 384, "patches": 256}
    assert model.memory_bank.shape == (26, 384)
    first_patch = model.patch_features(images[:1])[0, :, 0, 0]
    assert torch.equal(model.memory_bank[0], first_patch)


def test_patchcore_scores_match_a_brute_force_search():
    generator = torch.Generator().manual_seed(3)
    model = build("patchcore", coreset_ratio=0.25, neighbours=3)
    model.fit([textures(3, generator, size=48)])
    queries = textures(2, generator, size=48)
    scores, patch_scores = model.score_patches(queries)

    features = model.patch_features(queries).permute(0, 2, 3, 1).numpy().astype(np.float64)  # (N, h, w, D)
    bank = model.memory_bank.numpy().astype(np.float64)
    distances = np.linalg.norm(features[..., None, :] - bank, axis=-1)  # (N, h, w, M)
    np.testing.assert_allclose(patch_scores.numpy(), distances.min(axis=-1), rtol=1e-4, atol=1e-4)

    for i in range(2):
        flat = distances[i].reshape(-1, len(bank))
        top = flat.min(axis=1).argmax()
        nearest = flat[top].argmin()
        s_star = flat[top, nearest]
        hood = np.argsort(np.linalg.norm(bank - bank[nearest], axis=1))[:3]  # m* and its 2 nearest
        expected = (1 - np.exp(s_star) / np.exp(flat[top, hood]).sum()) * s_star
        assert scores[i].item() == pytest.approx(expected, rel=1e-4)


def test_patch_features_by_hand():
    grid = torch.arange(9.0).view(1, 1, 3, 3)
    averaged = local_average(grid, 3)
    assert averaged[0, 0, 1, 1] == 4  # the mean of 0 ... 8
    assert averaged[0, 0, 0, 0] == 2  # the corner: the mean of 0, 1, 3, 4 (nothing outside the map)
    assert averaged[0, 0, 0, 1] == 2.5  # the mean of 0, 1, 2, 3, 4, 5
    coarse = torch.full((1, 2, 1, 1), 5.0)
    joined = concat_at_first([grid, coarse])
    assert joined.shape == (1, 3, 3, 3) and torch.equal(joined[:, :1], grid) and (joined[:, 1:] == 5).all()
    channels = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    assert pool_channels(channels, 2).flatten().tolist() == [1.5, 3.5]


def test_reweighted_score_by_hand():
    # s* = 1, distances to m*'s neighbourhood 1, 2, 3: 1 - e / (e + e^2 + e^3) = 1 - 2.71828 / 30.19287
    assert reweighted_score(torch.tensor([1.0]), torch.tensor([[1.0, 2.0, 3.0]])).item() == pytest.approx(0.909969,
                                                                                                         abs=1e-6)
    # large distances (e^1000 overflows even float64) do not: 1000 * (1 - 1 / (1 + e^0.5))
    big = reweighted_score(torch.tensor([1000.0], dtype=torch.float64),
                           torch.tensor([[1000.0, 1000.5]], dtype=torch.float64)).item()
    assert big == pytest.approx(1000 * (1 - 1 / (1 + math.exp(0.5))), rel=1e-12)
    # only m* in its neighbourhood (b = 1): the weight is 0
    assert reweighted_score(torch.tensor([2.0]), torch.tensor([[2.0]])).item() == 0


def test_patchcore_feature_dim_pools_channels():
    model = build("patchcore", feature_dim=96, patch_size=1)
    images = textures(2, torch.Generator().manual_seed(4), size=32)
    assert model.fit([images])["feature_dim"] == 96
    assert build("patchcore", feature_dim=96).patch_features(images).shape == (2, 96, 4, 4)
    with pytest.raises(ParameterError, match="more than the 384 channels"):
        build("patchcore", feature_dim=500).fit([images])
    with pytest.raises(ParameterError, match="odd"):
        build("patchcore", patch_size=2)


# --- PaDiM -------------------------------------------------------------------------------------------


def test_padim_mahalanobis_matches_numpy():
    generator = torch.Generator().manual_seed(5)
    model = build("padim", feature_dim=6, epsilon=0.01)
    train = textures(9, generator, size=32)
    result = model.fit([train[:4], train[4:]])
    assert result == {"feature_dim": 6, "positions": 64, "patches": 9 * 64}  # layer1 grid 8 x 8
    query = textures(2, generator, size=32)

    def embeddings(x):
        return model.all_channels(x)[:, model.channels].permute(0, 2, 3, 1).numpy().astype(np.float64)

    fitted, tested = embeddings(train), embeddings(query)  # (N, 8, 8, 6)
    expected = np.empty((2, 8, 8))
    for r in range(8):
        for c in range(8):
            mean = fitted[:, r, c].mean(axis=0)
            inverse = np.linalg.inv(np.cov(fitted[:, r, c], rowvar=False) + 0.01 * np.eye(6))
            centred = tested[:, r, c] - mean
            expected[:, r, c] = np.sqrt(np.einsum("ni,ij,nj->n", centred, inverse, centred))
            np.testing.assert_allclose(model.mean[r, c].numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.score_patches(query).numpy(), expected, rtol=1e-3)


def test_padim_channels_are_a_seeded_subset():
    images = textures(3, torch.Generator().manual_seed(6), size=32)
    chosen = []
    for seed in (0, 0, 1):
        model = build("padim", seed=seed)
        model.fit([images])
        chosen.append(model.channels)
    assert torch.equal(chosen[0], chosen[1]) and not torch.equal(chosen[0], chosen[2])
    assert len(chosen[0]) == 100 and len(set(chosen[0].tolist())) == 100 and chosen[0].max() < 448
    with pytest.raises(ParameterError, match="at most 448"):
        build("padim", feature_dim=449).fit([images])


def test_padim_refuses_images_of_another_size():
    model = build("padim", feature_dim=4)
    model.fit([textures(3, torch.Generator().manual_seed(7), size=32)])
    with pytest.raises(dl.DataError, match="8x8 grid.*16x16"):
        model(torch.zeros(1, 3, 64, 64))


# --- both models -------------------------------------------------------------------------------------


def test_gaussian_blur_matches_scipy():
    maps = torch.rand(2, 40, 30, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    expected = np.stack([gaussian_filter(m, sigma=4, mode="nearest", truncate=4.0) for m in maps.numpy()])
    np.testing.assert_allclose(gaussian_blur(maps, 4.0).numpy(), expected, atol=1e-10)
    assert torch.equal(gaussian_blur(maps, 0.0), maps)


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_drawn_defects_score_higher_and_are_located(name, texture_set):
    """Random-init ResNet-18 on 96-pixel textures: image AUROC >= 0.95 (1.0 when written) and the map's
    maximum within 4 pixels of the drawn disc for at least 8 of the 10 defective images (10 when written)."""
    train, good, defective, masks = texture_set
    model = build(name)
    model.fit([train[:8], train[8:]])
    on_good, on_defective = model(good), model(defective)
    assert on_defective["maps"].shape == (10, SIZE, SIZE)
    scores = torch.cat([on_good["scores"], on_defective["scores"]]).numpy()
    assert roc_auc_score([0] * 10 + [1] * 10, scores) >= 0.95
    near = F.max_pool2d(masks[:, None].float(), 9, stride=1, padding=4)[:, 0].bool()  # the disc grown by 4 px
    peaks = on_defective["maps"].flatten(1).argmax(dim=1)
    assert near.flatten(1)[torch.arange(10), peaks].sum() >= 8


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_fitted_state_round_trips_through_a_fresh_model(name, tmp_path):
    images = textures(4, torch.Generator().manual_seed(9), size=32)
    fitted = build(name, seed=3)
    fitted.fit([images])
    torch.save(fitted.state_dict(), tmp_path / "fitted.pt")
    fresh = build(name, seed=3)
    fresh.load_state_dict(torch.load(tmp_path / "fitted.pt", weights_only=True))
    query = textures(2, torch.Generator().manual_seed(10), size=32)
    expected, got = fitted(query), fresh(query)
    assert torch.equal(expected["scores"], got["scores"]) and torch.equal(expected["maps"], got["maps"])


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_forward_before_fit_asks_to_fit(name):
    with pytest.raises(RuntimeError, match="not fitted: call fit"):
        build(name)(torch.zeros(1, 3, 32, 32))
    with pytest.raises(dl.DataError, match="no images"):
        build(name).fit([])


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_extractor_stays_frozen_in_eval_mode(name):
    model = build(name).train()
    assert model.training and not model.extractor.training
    assert not any(m.training for m in model.extractor.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_weights_file_or_run_load_into_the_extractor_and_imagenet_is_the_backbones(tmp_path):
    source = dl.create("backbone", "resnet18", num_classes=5, in_chans=3, weights=None)
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")
    (tmp_path / "run").mkdir()
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "run" / "best.pt")  # a classifier's run
    for weights in (tmp_path / "resnet18.pt", tmp_path / "run"):
        model = dl.create("backbone", "patchcore", num_classes=1, in_chans=3, weights=str(weights))
        for name in ("conv1.weight", "layer1.0.conv1.weight", "layer3.1.bn2.weight", "layer4.0.downsample.0.weight"):
            assert torch.equal(model.extractor.state_dict()[name], source.state_dict()[name])
    with pytest.raises(dl.DataError, match="needs a download, but HF_HUB_OFFLINE is set"):  # a named source
        dl.create("backbone", "padim", weights="imagenet")


def test_backbone_without_feature_maps_is_named(tiny):
    with pytest.raises(ConfigError, match="backbone: 'tiny_cnn' has no feature_maps.*resnet18.*vit_tiny"):
        build("patchcore", backbone="tiny_cnn")


def test_unknown_layer_is_named_with_the_choices():
    with pytest.raises(ParameterError, match="'layer5'.*choices: layer1, layer2, layer3, layer4"):
        build("padim", layers=("layer1", "layer5")).fit([torch.zeros(2, 3, 32, 32)])


# --- the backbones' feature_maps -----------------------------------------------------------------------


def test_resnet_feature_maps_follow_the_forward_path():
    model = dl.create("backbone", "resnet18", num_classes=2, attention=["layer1"], dropblock=["layer3"]).eval()
    with torch.no_grad():
        model.attention["layer1"].gamma.fill_(0.5)  # the attention block changes what follows it
        x = torch.randn(2, 3, 64, 64)
        layer4, layer2 = model.feature_maps(x, ["layer4", "layer2"])
        assert layer2.shape == (2, 128, 8, 8) and layer4.shape == (2, 512, 2, 2)
        assert torch.allclose(layer4.mean(dim=(-2, -1)), model.forward_features(x))


def test_vit_feature_maps_by_block_name_or_index():
    model = dl.create("backbone", "vit_tiny", num_classes=2, img_size=32).eval()
    with torch.no_grad():
        named, indexed, last = model.feature_maps(torch.randn(2, 3, 32, 32), ["blocks.3", "3", "blocks.11"])
    assert named.shape == (2, 192, 2, 2) and torch.equal(named, indexed) and not torch.equal(named, last)
    with pytest.raises(ParameterError, match="'blocks.12'.*blocks.0, blocks.1.*positions 0-11"):
        model.feature_maps(torch.randn(1, 3, 32, 32), ["blocks.12"])


def test_timm_model_feature_maps_and_patchcore_on_it():
    model = build("patchcore", backbone="timm:convnext_atto", layers=("stages.1", "2"), coreset_ratio=0.5)
    result = model.fit([textures(2, torch.Generator().manual_seed(11), size=64)])
    # stages.1 (stride 8, 80 channels) and stages.2 (stride 16, 160): 2 * 8 * 8 patches, half of them kept
    assert result == {"memory_bank": 64, "feature_dim": 80 + 160, "patches": 128}


def test_a_patchcore_run_fits_and_reloads(tmp_path):
    cracks = {"name": "synthetic_cracks", "count": 40, "size": 32, "defect_ratio": 0.02, "seed": 1, "defect_fraction": 0.5}
    dl.train({"data": {"dataset": cracks, "image_size": 32, "batch_size": 8, "channels": 1},
              "model": {"name": "patchcore"}, "evaluators": []}, out=tmp_path / "run")
    fitted = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert fitted["train/memory_bank"] == coreset_size(int(fitted["train/patches"]), 0.1)
    assert fitted["train/patches"] % 16 == 0 and fitted["train/feature_dim"] == 384  # 32 px: a 4 x 4 grid per image
    model = dl.load_trained(tmp_path / "run").model
    assert model.memory_bank.shape == (fitted["train/memory_bank"], 384)
    output = model(torch.zeros(3, 1, 32, 32))
    assert output["scores"].shape == (3,) and output["maps"].shape == (3, 32, 32)


def test_the_export_search_in_bank_blocks_finds_the_same_neighbours(monkeypatch):
    from defectlab_plugins.anomaly_models import patchcore

    monkeypatch.setattr(patchcore, "EXPORT_BANK_BLOCK", 7)  # 50 rows: blocks of 7, 7, ..., 1
    generator = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(30, 5, generator=generator), torch.randn(50, 5, generator=generator)
    blocked = patchcore._nearest_in_bank_blocks(queries, bank, 3)
    expected = torch.cdist(queries, bank).topk(3, dim=1, largest=False).indices
    assert torch.equal(blocked, expected)
