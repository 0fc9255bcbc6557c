"""Colour signatures (SPEC 000 Alg. 1), the RSS elbow (eq. 3-4), and the emd / sinkhorn distances (eq. 10-15)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import defectlab as dl
import numpy as np
import pytest
from defectlab import DefectDataset, Sample
from defectlab_plugins.emd import signatures as color_signatures
from defectlab_plugins.emd.signatures import (
    Signature,
    cache_path,
    dataset_clusters,
    elbow_point,
)
from defectlab_plugins.emd.distances import (
    EMD,
    Sinkhorn,
    earth_movers_distance,
    ground_distances,
)
from scipy.stats import wasserstein_distance

# Well-separated colours; the first four stay clear of 0 and 1 under shifts of up to 0.15.
COLOURS = np.array([[0.25, 0.30, 0.60], [0.60, 0.25, 0.30], [0.30, 0.60, 0.25], [0.55, 0.55, 0.55],
                    [0.25, 0.25, 0.25], [0.70, 0.70, 0.20], [0.20, 0.70, 0.70]])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own signature cache, never ~/.cache."""
    monkeypatch.setenv("DEFECTLAB_CACHE", str(tmp_path / "cache"))


class ArrayDataset(DefectDataset):
    """A tiny in-memory dataset of image arrays."""

    name = "array_dataset"

    def __init__(self, images: list[np.ndarray], tag: str = "a"):
        super().__init__()
        self.images = images
        self.classes = ["good"]
        self.samples = [Sample(key=f"{tag}-{i}", label=0) for i in range(len(images))]

    def load_image(self, index: int) -> np.ndarray:
        return self.images[index]


def colour_images(colours: np.ndarray, count: int = 6, size: int = 32, shift: float | np.ndarray = 0.0,
                  noise: float = 0.01, seed: int = 0) -> list[np.ndarray]:
    """Images whose pixels are drawn evenly from ``colours`` (+ shift + Gaussian noise), as uint8 RGB."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        labels = rng.integers(0, len(colours), (size, size))
        pixels = colours[labels] + shift + rng.normal(0.0, noise, (size, size, colours.shape[1]))
        images.append((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
    return images


# --- EMD against hand computations -------------------------------------------------------------


def test_emd_two_by_two_by_hand():
    # a = {(0,0): 0.6, (1,0): 0.4}, b = {(0,1): 0.5, (1,1): 0.5}; ground distances
    # g = [[1, sqrt2], [sqrt2, 1]]. Diagonal moves cost 1, cross moves sqrt2, and a1 holds 0.1
    # more than b1 can take, so the optimum is f11 = 0.5, f12 = 0.1, f22 = 0.4, f21 = 0:
    # work = 0.5*1 + 0.1*sqrt2 + 0.4*1 = 0.9 + 0.1*sqrt2, total flow 1, EMD = 1.041421...
    a = Signature([[0, 0], [1, 0]], [0.6, 0.4], 2)
    b = Signature([[0, 1], [1, 1]], [0.5, 0.5], 2)
    value, flow = earth_movers_distance(a.weights, b.weights, ground_distances(a.centroids, b.centroids))
    assert value == pytest.approx(0.9 + 0.1 * math.sqrt(2), abs=1e-12)
    np.testing.assert_allclose(flow, [[0.5, 0.1], [0.0, 0.4]], atol=1e-12)
    assert EMD()(a, b) == pytest.approx(value, abs=1e-12)
    # cityblock: cross moves cost 2, work = 0.5 + 0.2 + 0.4 = 1.1; sqeuclidean: 0.5 + 0.2 + 0.4 too.
    assert EMD(ground="cityblock")(a, b) == pytest.approx(1.1, abs=1e-12)
    assert EMD(ground="sqeuclidean")(a, b) == pytest.approx(1.1, abs=1e-12)


def test_emd_partial_matching_by_hand():
    # a = {0: 0.4, 1: 0.2} (total 0.6), b = {0: 0.3, 0.5: 0.5} (total 0.8) on a line.
    # Total flow = min(0.6, 0.8) = 0.6, so a ships all its weight and b takes at most its own:
    # a(0) -> b(0) 0.3 at cost 0, a(0) -> b(0.5) 0.1 at 0.5, a(1) -> b(0.5) 0.2 at 0.5
    # (a(1) -> b(0) would cost 1). Work = 0.05 + 0.10 = 0.15; EMD = 0.15 / 0.6 = 0.25.
    # Normalising both to 1 first (wrong here) would give 0.3125.
    a = Signature([[0.0], [1.0]], [0.4, 0.2], 2)
    b = Signature([[0.0], [0.5]], [0.3, 0.5], 2)
    value, flow = earth_movers_distance(a.weights, b.weights, ground_distances(a.centroids, b.centroids))
    assert value == pytest.approx(0.25, abs=1e-12)
    np.testing.assert_allclose(flow, [[0.3, 0.1], [0.0, 0.2]], atol=1e-12)
    assert flow.sum() == pytest.approx(0.6) and EMD()(b, a) == pytest.approx(0.25, abs=1e-12)
    # a = {0: 0.5} against b = {0: 0.5, 1: 0.5}: a's half matches b's half at 0 exactly, EMD = 0
    # (normalised, half of the mass would have to travel 1: 0.5).
    assert EMD()(Signature([[0.0]], [0.5], 1), Signature([[0.0], [1.0]], [0.5, 0.5], 2)) == pytest.approx(0.0)


def test_emd_in_one_dimension_equals_scipy_wasserstein():
    rng = np.random.default_rng(3)
    for _ in range(5):
        u, v = rng.uniform(0, 1, 4), rng.uniform(0, 1, 6)
        wu, wv = rng.uniform(0.1, 1, 4), rng.uniform(0.1, 1, 6)
        wu, wv = wu / wu.sum(), wv / wv.sum()
        expected = wasserstein_distance(u, v, wu, wv)
        assert EMD()(Signature(u, wu, 4), Signature(v, wv, 6)) == pytest.approx(expected, abs=1e-10)


def test_sinkhorn_is_within_its_entropy_bound_of_the_emd():
    # The entropic plan is feasible, so its cost is >= EMD, and at most reg * log(n*m) above it.
    rng = np.random.default_rng(4)
    a = Signature(rng.uniform(0, 1, (4, 3)), rng.dirichlet(np.ones(4)), 4)
    b = Signature(rng.uniform(0, 1, (5, 3)), rng.dirichlet(np.ones(5)), 5)
    exact = EMD()(a, b)
    for reg in (0.05, 0.01):
        value = Sinkhorn(reg=reg)(a, b)
        assert exact - 1e-9 <= value <= exact + reg * math.log(4 * 5)


def test_grey_and_colour_signatures_compare_as_rgb():
    grey = Signature([[0.5]], [1.0], 1)
    colour = Signature([[0.5, 0.5, 0.8]], [1.0], 1)
    assert EMD()(grey, colour) == pytest.approx(0.3)


# --- signatures ----------------------------------------------------------------------------------


def test_grey_images_give_one_channel_centroids_at_their_grey_levels():
    # 30 % of the pixels at 51 (0.2), 70 % at 204 (0.8); as (H, W) and as three equal channels.
    image = np.full((10, 10), 204, dtype=np.uint8)
    image[:3] = 51
    for images in ([image, image.copy()], [np.repeat(image[:, :, None], 3, axis=2)] * 2):
        signature = EMD(k=2).represent(ArrayDataset(images, tag=f"grey{images[0].ndim}"))
        assert signature.centroids.shape == (2, 1) and signature.meta["channels"] == 1
        np.testing.assert_allclose(signature.centroids[:, 0], [0.8, 0.2], atol=1e-12)
        np.testing.assert_allclose(signature.weights, [0.7, 0.3], atol=1e-12)
    assert EMD().represent(ArrayDataset([image], tag="grey-auto")).k == 2  # RSS(2) = 0: the elbow


def test_signature_is_deterministic_by_seed_and_independent_of_batch_size():
    dataset = ArrayDataset(colour_images(COLOURS[:3], count=5, size=48), tag="det")
    settings = {"k": 3, "pixels_per_image": 256, "cache": False}
    first = EMD(seed=7, **settings).represent(dataset)
    again = EMD(seed=7, batch_size=2, **settings).represent(dataset)
    other = EMD(seed=8, **settings).represent(dataset)
    assert np.array_equal(first.centroids, again.centroids) and np.array_equal(first.weights, again.weights)
    assert not np.array_equal(first.centroids, other.centroids)  # other pixels were drawn...
    np.testing.assert_allclose(np.sort(first.centroids, axis=0), np.sort(other.centroids, axis=0), atol=0.01)


def test_dataset_signature_clusters_centroids_instead_of_averaging_index_i():
    # k-means numbers clusters arbitrarily: image 1 lists (0.1, 0.9), image 2 (0.9, 0.1).
    # Averaging the i-th centroids would give 0.5 twice; the main clusters are 0.1 and 0.9.
    # Weights: 0.1 holds (0.2 + 0.6) / 2 = 0.4 of the images, 0.9 holds (0.8 + 0.4) / 2 = 0.6.
    centroids, weights = dataset_clusters(np.array([[[0.1], [0.9]], [[0.9], [0.1]]]),
                                          np.array([[0.2, 0.8], [0.4, 0.6]]), k=2)
    np.testing.assert_allclose(centroids[:, 0], [0.9, 0.1], atol=1e-12)
    np.testing.assert_allclose(weights, [0.6, 0.4], atol=1e-12)


@pytest.mark.parametrize("count", [3, 5, 7])  # a linear-scale knee finds 5 of the 7
def test_elbow_finds_the_number_of_well_separated_colours(count, tmp_path):
    dataset = ArrayDataset(colour_images(COLOURS[:count], count=6, seed=count), tag=f"elbow{count}")
    plot = tmp_path / "elbow.png"
    signature = EMD(elbow_plot=str(plot), elbow_images=4).represent(dataset)
    assert signature.k == count and signature.meta["k_source"] == "elbow"
    rss = signature.meta["elbow"]["rss"]
    assert len(rss) == 10 and rss[count - 1] < 0.01 * rss[0]  # eq. 3-4 collapses at the right K
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_elbow_point_of_given_curves():
    assert elbow_point([1.0, 0.3, 0.01, 0.009, 0.008, 0.007]) == 3
    assert elbow_point([0.0, 0.0, 0.0]) == 1  # one colour
    assert elbow_point([5.0, 5.0, 5.0, 5.0]) == 1


def test_dataset_signatures_rank_colour_shifts_and_emd_equals_the_shift():
    # Shifting every pixel by a vector d moves the whole distribution; with a Euclidean ground
    # distance the EMD between a distribution and its translate is |d|.
    direction = np.array([1.0, 1.0, -1.0]) / math.sqrt(3)
    target = ArrayDataset(colour_images(COLOURS[:4], seed=1), tag="target")
    near = ArrayDataset(colour_images(COLOURS[:4], shift=0.04 * direction, seed=2), tag="near")
    far = ArrayDataset(colour_images(COLOURS[:4], shift=0.12 * direction, seed=3), tag="far")
    emd = EMD(k=4)
    to_near, to_far = emd(target, near), emd(target, far)
    assert to_near < to_far
    assert to_near == pytest.approx(0.04, rel=0.15) and to_far == pytest.approx(0.12, rel=0.1)


def test_mixed_grey_and_colour_images_use_the_majority():
    images = colour_images(COLOURS[:2], count=3, seed=5) + [np.full((32, 32), 128, dtype=np.uint8)]
    signature = EMD(k=2).represent(ArrayDataset(images, tag="mixed"))
    assert signature.channels == 3
    assert signature.meta["converted"] == {"images": 1, "from": 1, "to": 3}


# --- cache --------------------------------------------------------------------------------------


def test_cache_hit_returns_the_same_signature_without_recomputing(monkeypatch):
    dataset = ArrayDataset(colour_images(COLOURS[:3], count=4), tag="cached")
    first = EMD(k=3).represent(dataset)
    path = cache_path(dataset, EMD(k=3).settings)
    assert path.exists() and first.meta["cached"] is False

    def fail(*args, **kwargs):
        raise AssertionError("k-means ran although the signature is cached")

    with monkeypatch.context() as patch:
        patch.setattr(color_signatures, "batched_kmeans", fail)
        second = EMD(k=3).represent(dataset)
        assert second.meta["cached"] is True
        with pytest.raises(AssertionError, match="k-means ran"):
            EMD(k=2).represent(dataset)  # other settings, other cache entry
    assert np.array_equal(first.centroids, second.centroids) and np.array_equal(first.weights, second.weights)

    path.write_text("{not json")  # a corrupt entry is ignored and rewritten
    third = EMD(k=3).represent(dataset)
    assert third.meta["cached"] is False and np.array_equal(third.centroids, first.centroids)
    assert json.loads(path.read_text())["k"] == 3
    assert not list(path.parent.glob("*.tmp"))


# --- components and command line ----------------------------------------------------------------


def test_components_are_registered_with_validated_parameters():
    names = {p["name"] for p in dl.describe("distance", "emd")["parameters"]}
    assert {"k", "ground", "pixels_per_image", "max_side", "seed", "cache", "elbow_plot"} <= names
    assert "reg" in {p["name"] for p in dl.describe("distance", "sinkhorn")["parameters"]}
    assert dl.create("distance", "emd", k="3").settings.k == 3
    for kind, params in (("emd", {"ground": "manhattan"}), ("emd", {"k": "many"}), ("sinkhorn", {"reg": 0})):
        with pytest.raises(dl.ParameterError):
            dl.create("distance", kind, **params)


def test_entry_point_module_imports_nothing_heavy():
    code = ("import sys, defectlab_plugins.emd; "
            "print(sorted(m for m in ('numpy', 'ot', 'sklearn', 'torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _write_folder(root, dark: int, count: int = 3):
    """ROOT/good/*.png: grey images, half the pixels at ``dark``, half at 200."""
    from PIL import Image

    (root / "good").mkdir(parents=True)
    image = np.full((16, 16), 200, dtype=np.uint8)
    image[:8] = dark
    for i in range(count):
        Image.fromarray(image).save(root / "good" / f"{i}.png")
    return str(root)


def test_distance_verb_on_two_image_folders(run_cli, tmp_path):
    # A = {50/255: 0.5, 200/255: 0.5}, B = {80/255: 0.5, 200/255: 0.5}: half the weight moves
    # 30/255, so EMD = 0.5 * 30 / 255 = 0.0588235...
    a, b = _write_folder(tmp_path / "a", 50), _write_folder(tmp_path / "b", 80)
    result = run_cli("distance", "emd", "--data", a, "--data", b, "--set", "k=2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["value"] == pytest.approx(0.5 * 30 / 255, abs=1e-12)
    assert [s["k"] for s in data["signatures"]] == [2, 2]
    np.testing.assert_allclose(data["signatures"][0]["centroids"], [[200 / 255], [50 / 255]], atol=1e-12)
    np.testing.assert_allclose(data["signatures"][1]["weights"], [0.5, 0.5])
    result = run_cli("distance", "emd", "--data", a, "--data", b, "--set", "k=2")
    assert result.exit_code == 0 and "emd = 0.0588" in result.output and "yes" in result.output  # cached
    result = run_cli("distance", "emd", "--data", a)
    assert result.exit_code == 2 and "exactly two" in result.output


def test_downscaling_averages_areas():
    # 64 x 64 with the top 24 rows dark: a 4 x 4 area average to 16 x 16 keeps 6 dark rows of 16,
    # so the weights stay 0.375 / 0.625, for grey (Pillow mode L) and colour (RGB) alike; a
    # one-pixel checkerboard of 0 and 200 averages to 100 everywhere: one cluster of weight 1.
    grey = np.full((64, 64), 200, dtype=np.uint8)
    grey[:24] = 40
    colour = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    for image, tag in ((grey, "small-grey"), (colour, "small-colour")):
        signature = EMD(k=2, max_side=16, pixels_per_image=None).represent(ArrayDataset([image], tag=tag))
        np.testing.assert_allclose(signature.weights, [0.625, 0.375], atol=1e-12)
        np.testing.assert_allclose(signature.centroids[1], image[0, 0] / 255.0, atol=1e-12)
    checkerboard = (np.indices((64, 64)).sum(axis=0) % 2 * 200).astype(np.uint8)
    signature = EMD(k=2, max_side=16).represent(ArrayDataset([checkerboard], tag="checkerboard"))
    np.testing.assert_allclose(signature.weights, [1.0, 0.0], atol=1e-12)
    assert signature.centroids[0, 0] == pytest.approx(100 / 255, abs=1e-12)
