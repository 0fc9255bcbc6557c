"""Colour signatures of images and datasets (Valle Salgado et al. 2023, Alg. 1), computed many images at a time.

An image's signature is K centroids in colour space (RGB in [0, 1]; a grey image has one
channel) with the fraction of its pixels in each cluster. A dataset's signature is a weighted
k-means over all its images' centroids: K main clusters whose weights sum to 1. K is chosen once
per dataset at the elbow of the RSS curve (eq. 3-4) on a small sample of images.

Images are clustered in batches by one vectorised Lloyd's k-means (k-means++ start drawn from a
per-image random stream, so results do not depend on the batch size). A grey image is clustered
on the 256-level histogram of all its pixels, which is k-means on every pixel at the cost of 256
weighted points; a colour image on a random subset of its pixels. Dataset signatures are cached
on disk, keyed by the dataset's fingerprint and the settings, so re-screening is immediate.
The settings are the parameters of the distance components (``distances.SignatureSettings``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from defectlab import DataError, DefectDataset, WriteError, atomic_write, pyplot, save_figure

if TYPE_CHECKING:
    from defectlab_plugins.emd.distances import SignatureSettings

log = logging.getLogger("defectlab.signatures")

CACHE_ENV = "DEFECTLAB_CACHE"
ALGORITHM_VERSION = 1  # part of the cache key: bump it when a change alters the signatures
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2 luma, the weights of PIL's convert("L")
GREY_LEVELS = 256
ELBOW_INITS = 3  # k-means restarts per K on the elbow sample (a clean, monotone RSS curve)
ELBOW_PIXELS = 512  # pixels per colour image for the elbow: the curve's shape needs few
BATCH_POINTS = 1 << 21  # at most this many points per k-means batch (memory when every pixel is used)
DATASET_INITS = 50  # k-means restarts for the dataset-level clustering (cheap: N*K points)
DATASET_TOL = 1e-8  # ... run to convergence, so the main clusters do not depend on the seed
# Independent random streams, all derived from the one seed.
_IMAGE_STREAM, _ELBOW_STREAM, _DATASET_STREAM = 0, 1, 2


@dataclass(eq=False)  # arrays have no single truth value; compare fields with numpy
class Signature:
    """K weighted clusters in colour space: ``centroids`` (K, C) in [0, 1] and ``weights`` (K,)."""

    centroids: np.ndarray
    weights: np.ndarray
    k: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        centroids = np.asarray(self.centroids, dtype=np.float64)
        self.centroids = centroids.reshape(-1, 1) if centroids.ndim == 1 else centroids
        self.weights = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        if self.centroids.ndim != 2 or len(self.centroids) != len(self.weights) or not len(self.weights):
            raise DataError(f"a signature needs centroids of shape (K, C) and K weights, got "
                            f"{self.centroids.shape} and {self.weights.shape}")
        if not (np.isfinite(self.centroids).all() and np.isfinite(self.weights).all()) or (self.weights < 0).any():
            raise DataError("signature centroids and weights must be finite and the weights non-negative")

    @property
    def channels(self) -> int:
        """Colour channels of the centroids: 1 (grey) or 3 (RGB)."""
        return int(self.centroids.shape[1])

    def with_channels(self, channels: int) -> Signature:
        """The same signature with its centroids converted to ``channels`` (see ``convert_channels``)."""
        if channels == self.channels:
            return self
        return Signature(convert_channels(self.centroids, channels), self.weights, self.k, dict(self.meta))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: k, channels, centroids, weights and meta."""
        return {"k": self.k, "channels": self.channels, "centroids": self.centroids.tolist(),
                "weights": self.weights.tolist(), "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        """Inverse of ``to_dict``."""
        return cls(np.asarray(data["centroids"], dtype=np.float64), np.asarray(data["weights"], dtype=np.float64),
                   int(data["k"]), dict(data.get("meta", {})))


def convert_channels(values: np.ndarray, channels: int) -> np.ndarray:
    """Colour rows (..., C) to ``channels``: grey -> RGB repeats the value; RGB -> grey takes the luma.

    Both are linear, so converting a centroid gives the mean of its pixels converted.
    """
    have = values.shape[-1]
    if have == channels:
        return values
    if have == 1 and channels == 3:
        return np.repeat(values, 3, axis=-1)
    if have == 3 and channels == 1:
        return (values @ LUMA)[..., None]
    raise DataError(f"cannot convert {have}-channel colours to {channels} channels")


# --------------------------------------------------------------------------------------------
# Settings


#: The settings that do not change a signature, left out of its cache key.
NOT_IN_RESULT = ("cache", "elbow_plot", "batch_size")


def result_fields(settings: SignatureSettings) -> dict[str, Any]:
    """The settings that change the result (K's elbow search only when K is 'auto')."""
    fields = {name: value for name, value in asdict(settings).items() if name not in NOT_IN_RESULT}
    if settings.k != "auto":
        fields.pop("k_max"), fields.pop("elbow_images")
    return fields


def settings_key(settings: SignatureSettings) -> str:
    """A short hash of the result-changing settings and the algorithm version."""
    text = json.dumps({**result_fields(settings), "version": ALGORITHM_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Pixels


def _standardised(image: Any) -> tuple[np.ndarray, float]:
    """(H, W, C) with C = 1 (grey, also RGB with equal channels) or 3, and the value meaning 1.0."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or array.size == 0:
        raise DataError(f"expected an image of shape (H, W) or (H, W, C) with C <= 4, got {array.shape}")
    if array.shape[2] == 2:  # grey + alpha
        array = array[:, :, :1]
    elif array.shape[2] == 4:  # RGBA
        array = array[:, :, :3]
    if array.shape[2] == 3 and np.array_equal(array[..., 0], array[..., 1]) \
            and np.array_equal(array[..., 1], array[..., 2]):
        array = array[:, :, :1]  # a grey image stored as three copies is one channel
    if array.dtype == np.bool_:
        return array.astype(np.uint8), 1.0
    if np.issubdtype(array.dtype, np.integer):
        return array, float(np.iinfo(array.dtype).max)
    return array.astype(np.float64, copy=False), 1.0


def _downscaled(array: np.ndarray, max_side: int | None) -> np.ndarray:
    """Area-average ``array`` so its longer side is at most ``max_side``."""
    height, width = array.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return array
    from PIL import Image

    factor = max_side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if array.dtype == np.uint8:  # Pillow reads (H, W) as mode L and (H, W, 3) as RGB
        image = Image.fromarray(np.ascontiguousarray(array[..., 0] if array.shape[2] == 1 else array))
        return np.asarray(image.resize(size, Image.BOX)).reshape(size[1], size[0], -1)
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(array[..., c], dtype=np.float32)).resize(size, Image.BOX))
              for c in range(array.shape[2])]  # mode F, one channel at a time
    return np.stack(planes, axis=-1)


def image_points(image: Any, pixels_per_image: int | None, max_side: int | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The weighted points that k-means clusters for one image: (P, C) colours in [0, 1] and (P,) weights.

    Grey: the 256 grey levels weighted by their pixel counts over the whole image (exactly
    k-means on every pixel). Colour: ``pixels_per_image`` pixels drawn without replacement
    (every pixel when None or when the image is smaller), each of weight 1.
    """
    array, scale = _standardised(image)
    array = _downscaled(array, max_side)
    if array.shape[2] == 1:
        if array.dtype == np.uint8:
            from PIL import Image  # its histogram of an 8-bit image is 2-3x faster than np.bincount

            counts = np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, 0])).histogram(), dtype=np.float64)
        else:
            unit = np.clip(array.reshape(-1) / scale, 0.0, 1.0)
            levels = np.rint(unit * (GREY_LEVELS - 1)).astype(np.int64)
            counts = np.bincount(levels, minlength=GREY_LEVELS).astype(np.float64)
        return (np.arange(GREY_LEVELS, dtype=np.float64) / (GREY_LEVELS - 1))[:, None], counts
    flat = array.reshape(-1, 3)
    if pixels_per_image is not None and len(flat) > pixels_per_image:
        flat = flat[rng.choice(len(flat), pixels_per_image, replace=False, shuffle=False)]
    return np.clip(flat.astype(np.float64) / scale, 0.0, 1.0), np.ones(len(flat))


def _stacked(point_sets: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Point sets of different sizes as (B, P, C) and (B, P), padded with zero-weight points."""
    size = max(len(points) for points, _ in point_sets)
    channels = point_sets[0][0].shape[1]
    points = np.zeros((len(point_sets), size, channels))
    weights = np.zeros((len(point_sets), size))
    for row, (p, w) in enumerate(point_sets):
        points[row, : len(p)], weights[row, : len(w)] = p, w
    return points, weights


# --------------------------------------------------------------------------------------------
# Batched weighted k-means


@dataclass
class Clusters:
    """k-means of B point sets: centroids (B, K, C), weights (B, K) summing to 1 per row, rss (B,)."""

    centroids: np.ndarray
    weights: np.ndarray
    rss: np.ndarray


def _nearest(planes: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centroid, both (B, P).

    ``planes`` holds the points channel-first (C, B, P) so that each pass reads contiguous
    memory; centroids are compared one at a time, which keeps memory at B*P.
    """
    best = labels = None
    for j in range(centroids.shape[1]):
        distance = (planes[0] - centroids[:, j, 0, None]) ** 2
        for c in range(1, len(planes)):
            distance += (planes[c] - centroids[:, j, c, None]) ** 2
        if best is None:
            best, labels = distance, np.zeros(distance.shape, dtype=np.intp)
        else:
            closer = distance < best
            best = np.where(closer, distance, best)
            labels[closer] = j
    return labels, best


def _draw(probabilities: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """One index per row, with probability proportional to ``probabilities`` (B, P)."""
    cumulative = np.cumsum(probabilities, axis=1)
    targets = uniforms * cumulative[:, -1]
    return np.minimum((cumulative <= targets[:, None]).sum(axis=1), probabilities.shape[1] - 1)


def local_trials(k: int) -> int:
    """Candidates per step of greedy k-means++: 2 + ln K, as scikit-learn draws them."""
    return 2 + int(np.log(k))


def kmeans_uniforms(rng: np.random.Generator, leading: tuple[int, ...], k: int) -> np.ndarray:
    """The uniform draws that seed k-means with K clusters: shape ``leading + (K, local_trials(K))``."""
    return rng.random(leading + (k, local_trials(k)))


def _kmeans_plus_plus(planes: np.ndarray, weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Greedy k-means++ starting centroids (B, K, C).

    The first centroid is drawn with probability ~ weight; each next one by drawing L candidates
    with probability ~ weight * D^2 (D: distance to the nearest centroid so far) and keeping the
    one that lowers the weighted sum of D^2 most. ``uniforms`` (B, K, L) supplies the draws.
    """
    rows = np.arange(weights.shape[0])
    k, trials = uniforms.shape[1:]
    centroids = np.empty((weights.shape[0], k, len(planes)))
    centroids[:, 0] = planes[:, rows, _draw(weights, uniforms[:, 0, 0])].T
    nearest = _nearest(planes, centroids[:, :1])[1]
    for j in range(1, k):
        probabilities = weights * nearest
        degenerate = probabilities.sum(axis=1) <= 0  # fewer distinct points than K
        probabilities[degenerate] = weights[degenerate]
        best_potential = best_distance = None
        for trial in range(trials):
            candidate = planes[:, rows, _draw(probabilities, uniforms[:, j, trial])].T
            distance = np.minimum(nearest, _nearest(planes, candidate[:, None])[1])
            potential = (weights * distance).sum(axis=1)
            better = np.ones(len(rows), dtype=bool) if best_potential is None else potential < best_potential
            centroids[better, j] = candidate[better]
            best_distance = distance if best_distance is None else np.where(better[:, None], distance, best_distance)
            best_potential = potential if best_potential is None else np.where(better, potential, best_potential)
        nearest = best_distance
    return centroids


def _weighted_means(planes: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                    previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster means and masses (B, K) from labels; an empty cluster keeps its previous centroid."""
    batch, k = previous.shape[:2]
    flat = (labels + k * np.arange(batch)[:, None]).reshape(-1)
    mass = np.bincount(flat, weights=weights.reshape(-1), minlength=batch * k).reshape(batch, k)
    sums = np.stack([np.bincount(flat, weights=(weights * plane).reshape(-1), minlength=batch * k)
                     for plane in planes], axis=-1).reshape(previous.shape)
    means = np.where(mass[..., None] > 0, sums / np.maximum(mass, 1e-300)[..., None], previous)
    return means, mass


def batched_kmeans(points: np.ndarray, weights: np.ndarray, uniforms: np.ndarray,
                   max_iter: int = 100, tol: float = 1e-4) -> Clusters:
    """Weighted Lloyd's k-means on B point sets at once; K = ``uniforms.shape[1]``.

    ``points`` (B, P, C), ``weights`` (B, P) (zero for padding), ``uniforms`` (B, K, L) in [0, 1)
    drive the greedy k-means++ start, so each row's result depends only on its own inputs. A row stops
    when its centroids' summed squared shift is at most ``tol`` times the mean per-channel
    variance of its points (scikit-learn's rule). ``rss`` is eq. 3-4 per unit weight.
    """
    planes = np.ascontiguousarray(np.moveaxis(points, 2, 0), dtype=np.float64)
    total = weights.sum(axis=1)
    mean = (planes * weights).sum(axis=2, keepdims=True) / total[:, None]
    variance = (((planes - mean) ** 2) * weights).sum(axis=2).mean(axis=0) / total
    centroids = _kmeans_plus_plus(planes, weights, uniforms)
    active = np.arange(len(weights))
    for _ in range(max_iter):
        whole = len(active) == len(weights)
        p, w, c = (planes, weights, centroids) if whole else (planes[:, active], weights[active], centroids[active])
        means, _ = _weighted_means(p, w, _nearest(p, c)[0], c)
        moved = ((means - c) ** 2).sum(axis=(1, 2))
        centroids[active] = means
        active = active[moved > tol * variance[active]]
        if not len(active):
            break
    labels, distances = _nearest(planes, centroids)
    _, mass = _weighted_means(planes, weights, labels, centroids)
    return Clusters(centroids, mass / total[:, None], (weights * distances).sum(axis=1) / total)


def best_of_kmeans(points: np.ndarray, weights: np.ndarray, uniforms: np.ndarray, **options: Any) -> Clusters:
    """``batched_kmeans`` restarted R times per row (``uniforms`` (B, R, K, L)); the lowest RSS wins."""
    batch, restarts = uniforms.shape[:2]
    clusters = batched_kmeans(np.repeat(points, restarts, axis=0), np.repeat(weights, restarts, axis=0),
                              uniforms.reshape((batch * restarts,) + uniforms.shape[2:]), **options)
    best = clusters.rss.reshape(batch, restarts).argmin(axis=1) + restarts * np.arange(batch)
    return Clusters(clusters.centroids[best], clusters.weights[best], clusters.rss[best])


# --------------------------------------------------------------------------------------------
# Elbow (eq. 3-4) and dataset signature


def elbow_point(rss: Iterable[float]) -> int:
    """K at the elbow of an RSS curve given for K = 1, 2, ...: the point farthest below the chord.

    The curve is taken on a log scale, because RSS falls by orders of magnitude while K is
    below the number of distinct colours and only slowly after it, and both axes are scaled
    to [0, 1], so the chord runs from (0, 1) to (1, 0) and a point's distance below it is
    1 - x - y (Kneedle). On a linear scale the first big drop hides the later ones and K comes
    out too small when there are many colours. A curve that starts at zero (one colour) gives 1.
    """
    curve = np.asarray(list(rss), dtype=np.float64)
    if len(curve) < 3 or curve[0] <= 1e-12:
        return 1
    logs = np.log(np.maximum(curve, curve[0] * 1e-12))
    span = logs[0] - logs[-1]
    if span <= 1e-9:
        return 1
    x = np.arange(len(curve)) / (len(curve) - 1)
    y = (logs - logs[-1]) / span
    return int(np.argmax(1.0 - x - y)) + 1


def rss_curve(point_sets: list[tuple[np.ndarray, np.ndarray]], k_max: int, seed: int) -> np.ndarray:
    """Mean over images of the per-pixel RSS (eq. 3-4) of their k-means, for K = 1..k_max."""
    points, weights = _stacked(point_sets)
    rng = np.random.default_rng([seed, _ELBOW_STREAM])
    return np.array([best_of_kmeans(points, weights, kmeans_uniforms(rng, (len(points), ELBOW_INITS), k)).rss.mean()
                     for k in range(1, k_max + 1)])


def dataset_clusters(image_centroids: np.ndarray, image_weights: np.ndarray, k: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The K main clusters of a dataset: weighted k-means over all image centroids (N, K_i, C).

    Every image's weights are normalised to sum to 1 first, so each image counts equally; the
    main clusters' weights are the summed weights of their members, renormalised to sum to 1,
    and they are returned heaviest first. (Averaging the i-th centroid across images, as the
    reference code does, mixes unrelated clusters: k-means numbers its clusters arbitrarily.)
    """
    channels = image_centroids.shape[-1]
    weights = image_weights / image_weights.sum(axis=1, keepdims=True)
    points, mass = image_centroids.reshape(1, -1, channels), weights.reshape(1, -1)
    uniforms = kmeans_uniforms(np.random.default_rng([seed, _DATASET_STREAM]), (1, DATASET_INITS), k)
    clusters = best_of_kmeans(points, mass, uniforms, max_iter=300, tol=DATASET_TOL)
    main = clusters.weights[0] / clusters.weights[0].sum()
    order = np.argsort(-main, kind="stable")
    return clusters.centroids[0][order], main[order]


def save_elbow_plot(elbow: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Draw the RSS curve with the chosen K marked and save it as a PNG."""
    figure, axes = pyplot().subplots(figsize=(5, 3.5))
    axes.plot(elbow["k"], elbow["rss"], "o-", color="tab:blue")
    axes.axvline(elbow["chosen"], color="tab:red", linestyle="--", label=f"elbow: K = {elbow['chosen']}")
    axes.set_xlabel("K (clusters per image)")
    axes.set_ylabel("RSS per pixel (eq. 3-4)")
    axes.set_title(f"Elbow on {elbow['images']} sample images")
    axes.legend()
    figure.tight_layout()
    return save_figure(figure, path, dpi=120)


# --------------------------------------------------------------------------------------------
# Whole datasets, cached


def cache_dir() -> Path:
    """Where derived results are cached: ``$DEFECTLAB_CACHE``, else ``~/.cache/defectlab``."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "defectlab"


def cache_path(dataset: DefectDataset, settings: SignatureSettings) -> Path:
    """The cache file of ``dataset``'s signature under ``settings``."""
    return cache_dir() / "signatures" / f"{dataset.fingerprint()}-{settings_key(settings)}.json"


def _read_cache(path: Path) -> Signature | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return Signature.from_dict(json.load(handle))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
        log.warning("ignoring unreadable signature cache %s (%s); recomputing", path, exc)
        return None


def _write_cache(path: Path, signature: Signature) -> None:
    """Write atomically, so a killed run never leaves half a file; a cache that cannot be written is only a warning."""
    try:
        with atomic_write(path) as temporary:
            temporary.write_text(json.dumps(signature.to_dict()), encoding="utf-8")
    except WriteError as exc:
        log.warning("not caching the signature: %s", exc)


def signature_of(dataset: DefectDataset, settings: SignatureSettings) -> Signature:
    """The dataset's signature: from the cache when ``settings.cache`` and it is there, else computed."""
    path = cache_path(dataset, settings) if settings.cache else None
    signature = _read_cache(path) if path is not None else None
    if signature is not None:
        signature.meta["cached"] = True
    else:
        signature = compute_signature(dataset, settings)
        if path is not None:
            _write_cache(path, signature)
    if settings.elbow_plot and "elbow" in signature.meta:
        save_elbow_plot(signature.meta["elbow"], settings.elbow_plot)
    return signature


def _majority_channels(counts: dict[int, int]) -> int:
    """The channel count of most images; a tie goes to colour (grey -> RGB is exact)."""
    return max(counts, key=lambda c: (counts[c], c))


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _IMAGE_STREAM, index])


def choose_k(dataset: DefectDataset, settings: SignatureSettings) -> dict[str, Any]:
    """The RSS elbow (eq. 3-4) on ``elbow_images`` images drawn by the seed: curve and chosen K."""
    n = len(dataset)
    picked = np.random.default_rng([settings.seed, _ELBOW_STREAM]).choice(n, min(settings.elbow_images, n),
                                                                         replace=False)
    pixels = min(settings.pixels_per_image or ELBOW_PIXELS, ELBOW_PIXELS)
    sets = [image_points(image, pixels, settings.max_side, _image_rng(settings.seed, i))
            for i, image in dataset.iter_images(sorted(int(i) for i in picked))]
    if not sets:
        raise DataError(f"none of the {len(picked)} sample images of {dataset!r} could be read")
    channels = _majority_channels({c: sum(p.shape[1] == c for p, _ in sets) for c in (1, 3)})
    sets = [(convert_channels(p, channels), w) for p, w in sets]
    curve = rss_curve(sets, settings.k_max, settings.seed)
    return {"k": list(range(1, settings.k_max + 1)), "rss": curve.tolist(), "chosen": elbow_point(curve),
            "images": len(sets), "channels": channels}


@dataclass
class ImageSignatures:
    """Every readable image's signature: centroids (N, K, C) and weights (N, K), in dataset order."""

    centroids: np.ndarray
    weights: np.ndarray
    indices: list[int]
    converted: dict[str, int] | None = None  # mixed grey/colour: how many images were converted


def image_signatures(dataset: DefectDataset, k: int, settings: SignatureSettings) -> ImageSignatures:
    """Alg. 1 step 2: k-means of every image, many images at a time, in the majority's channels."""
    from tqdm.auto import tqdm

    pending: dict[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {1: [], 3: []}
    results: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}  # index -> centroids, weights, channels
    widest = {1: 0, 3: 0}  # most points of one image in the pending batch (the padded width)

    def flush(channels: int) -> None:
        batch = pending[channels]
        widest[channels] = 0
        if batch:
            points, weights = _stacked([(p, w) for _, p, w, _ in batch])
            clusters = batched_kmeans(points, weights, np.stack([u for *_, u in batch]))
            for row, (index, *_rest) in enumerate(batch):
                results[index] = (clusters.centroids[row], clusters.weights[row], channels)
            batch.clear()

    images = tqdm(dataset.iter_images(), total=len(dataset), desc="signatures", unit="img",
                  disable=None, leave=False)
    for index, image in images:
        rng = _image_rng(settings.seed, index)
        points, weights = image_points(image, settings.pixels_per_image, settings.max_side, rng)
        channels = points.shape[1]
        batch = pending[channels]
        batch.append((index, points, weights, kmeans_uniforms(rng, (), k)))
        widest[channels] = max(widest[channels], len(points))
        if len(batch) >= settings.batch_size or len(batch) * widest[channels] >= BATCH_POINTS:
            flush(channels)
    for channels in pending:
        flush(channels)
    if not results:
        raise DataError(f"no image of {dataset!r} could be read ({len(dataset.unreadable)} unreadable)")

    counts = {c: sum(r[2] == c for r in results.values()) for c in (1, 3)}
    channels = _majority_channels(counts)
    converted = None
    if counts[1] and counts[3]:
        minority = 4 - channels  # 1 <-> 3
        converted = {"images": counts[minority], "from": minority, "to": channels}
        log.warning("%s mixes %d grey and %d colour images; converted the %d %s ones to %s",
                    type(dataset).__name__, counts[1], counts[3], counts[minority],
                    "grey" if minority == 1 else "colour", "RGB" if channels == 3 else "grey (luma)")
    indices = sorted(results)
    return ImageSignatures(np.stack([convert_channels(results[i][0], channels) for i in indices]),
                           np.stack([results[i][1] for i in indices]), indices, converted)


def compute_signature(dataset: DefectDataset, settings: SignatureSettings) -> Signature:
    """Alg. 1 on one dataset: K by the elbow (or given), per-image k-means in batches, then the main clusters."""
    if len(dataset) == 0:
        raise DataError(f"{dataset!r} has no samples")
    start = time.perf_counter()
    elbow = choose_k(dataset, settings) if settings.k == "auto" else None
    k = elbow["chosen"] if elbow else int(settings.k)
    images = image_signatures(dataset, k, settings)
    centroids, weights = dataset_clusters(images.centroids, images.weights, k, settings.seed)
    meta: dict[str, Any] = {
        "images": len(images.indices), "unreadable": len(dataset) - len(images.indices),
        "channels": int(centroids.shape[1]), "k_source": "elbow" if elbow else "given",
        "settings": result_fields(settings), "fingerprint": dataset.fingerprint(),
        "dataset": type(dataset).__name__, "seconds": round(time.perf_counter() - start, 3), "cached": False,
    }
    if images.converted:
        meta["converted"] = images.converted
    if elbow:
        meta["elbow"] = elbow
    return Signature(centroids, weights, k, meta)
