"""Dataset screening on ELPV: defectlab's colour signatures against the reference per-image k-means.

    python benchmarks/screening.py [--quick]

The reference is the approach of the paper's public code: scikit-learn ``KMeans(n_clusters=5)``
(default settings) on every pixel of one image at a time, the signature being its centres and
the fraction of pixels per cluster. ELPV cells are grey (300 x 300) and the reference gets them
as one channel. A colour variant maps the same cells through the viridis colour map, where
defectlab clusters ``pixels_per_image`` sampled pixels instead of the exact grey histogram.

(a) speed: images/s of both on the same images (20 mono + 20 poly), and the ratio (aim >= 200x);
(b) fidelity: EMD between the mono and poly dataset signatures, K = 5 for both, the reference's
    per-image signatures aggregated by the same weighted k-means; relative difference of the
    means over three seeds (aim <= 2 %), beside each side's own seed-to-seed spread (k-means
    has near-equal optima, so one seed against one seed measures mostly that). The reference
    code's own aggregation (the i-th centroid averaged across images) is shown for comparison;
(c) scale: all 2,624 ELPV cells as four domains (mono / poly x first / second half), streamed
    from the files by the ``elpv`` dataset component: wall time, peak traced memory, the 4 x 4
    EMD matrix, and the time to screen again from the cache.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import defectlab as dl
import numpy as np
from defectlab import DefectDataset, format_table
from defectlab_plugins.emd.distances import (
    EMD,
    SignatureSettings,
    earth_movers_distance,
    ground_distances,
)
from defectlab_plugins.emd.signatures import (
    compute_signature,
    dataset_clusters,
    image_signatures,
    signature_of,
)

REFERENCE_K = 5
SEEDS = (0, 1, 2)  # k-means has near-equal optima: EMDs are compared as means over these seeds


class ArrayImages(DefectDataset):
    """Some of a stack of images held in memory (ELPV cells from ``elpv_dataset.utils.load_dataset``)."""

    name = "elpv_arrays"

    def __init__(self, images: np.ndarray, indices: list[int], tag: str):
        super().__init__()
        self.images, self.indices = images, indices
        self.classes = ["cell"]
        self.samples = [dl.Sample(key=f"{tag}-{i}", label=0) for i in indices]

    def load_image(self, index: int) -> np.ndarray:
        return self.images[self.indices[index]]


class Subset(DefectDataset):
    """Some samples of another dataset, loaded through it (streamed, as the dataset does)."""

    name = "subset"

    def __init__(self, parent: DefectDataset, indices: list[int]):
        super().__init__()
        self.parent, self.indices = parent, indices
        self.classes = list(parent.classes)
        self.samples = [parent.samples[i] for i in indices]
        self.root = parent.root

    def load_image(self, index: int) -> Any:
        return self.parent.load_image(self.indices[index])


def reference_signatures(dataset: DefectDataset, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-image KMeans(5) on every pixel, one image at a time: centroids (N, 5, C), weights (N, 5), seconds."""
    from sklearn.cluster import KMeans

    centroids, weights = [], []
    start = time.perf_counter()
    for _, image in dataset.iter_images():
        pixels = np.asarray(image, dtype=np.float64).reshape(image.shape[0] * image.shape[1], -1) / 255.0
        model = KMeans(n_clusters=REFERENCE_K, random_state=seed).fit(pixels)
        centroids.append(model.cluster_centers_)
        weights.append(np.bincount(model.labels_, minlength=REFERENCE_K) / len(pixels))
    return np.stack(centroids), np.stack(weights), time.perf_counter() - start


def emd_between(centroids_a: np.ndarray, weights_a: np.ndarray, centroids_b: np.ndarray,
                weights_b: np.ndarray) -> float:
    return earth_movers_distance(weights_a, weights_b, ground_distances(centroids_a, centroids_b))[0]


def best_time(function: Any, repeat: int = 3) -> tuple[Any, float]:
    """The result of ``function()`` and its fastest wall time over ``repeat`` runs."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, min(times)


def spread(values: list[float]) -> str:
    """``mean (min-max)`` of a few EMDs."""
    return f"{np.mean(values):.5f} ({min(values):.5f}-{max(values):.5f})"


def speed_and_fidelity(cells: np.ndarray, mono: int, label: str) -> tuple[list[list[Any]], list[list[Any]]]:
    """Rows of the speed table (a) and the fidelity table (b) for ``cells``, the first ``mono`` of them mono."""
    n = len(cells)
    both = ArrayImages(cells, list(range(n)), f"{label}-both")
    references = [reference_signatures(both, seed) for seed in SEEDS]
    ref_seconds = references[0][2]
    fixed = SignatureSettings(k=REFERENCE_K, cache=False)
    _, per_image_seconds = best_time(lambda: image_signatures(both, REFERENCE_K, fixed))
    _, fixed_seconds = best_time(lambda: compute_signature(both, fixed))
    auto, auto_seconds = best_time(lambda: compute_signature(both, SignatureSettings(cache=False)))

    def row(method: str, seconds: float) -> list[Any]:
        return [label, method, n, f"{seconds:.3f}", f"{n / seconds:.0f}", f"{ref_seconds / seconds:.0f}x"]

    speed = [
        [label, "reference: KMeans(5) on every pixel, per image", n, f"{ref_seconds:.2f}",
         f"{n / ref_seconds:.1f}", "1"],
        row("defectlab: image signatures, K=5", per_image_seconds),
        row("defectlab: dataset signature, K=5", fixed_seconds),
        row(f"defectlab: dataset signature, K by elbow ({auto.k})", auto_seconds),
    ]

    halves = slice(0, mono), slice(mono, n)
    reference, averaged = [], []
    for centroids, weights, _ in references:
        main = [dataset_clusters(centroids[h], weights[h], REFERENCE_K) for h in halves]
        reference.append(emd_between(*main[0], *main[1]))
        by_index = [(centroids[h].mean(axis=0), weights[h].mean(axis=0)) for h in halves]
        averaged.append(emd_between(*by_index[0], *by_index[1]))
    mono_set = ArrayImages(cells, list(range(mono)), f"{label}-mono")
    poly_set = ArrayImages(cells, list(range(mono, n)), f"{label}-poly")
    ours = [EMD(k=REFERENCE_K, cache=False, seed=seed)(mono_set, poly_set) for seed in SEEDS]

    def versus(values: list[float]) -> str:
        return f"{abs(np.mean(values) - np.mean(reference)) / np.mean(reference):.2%}"

    fidelity = [
        [label, "reference per-image signatures -> weighted k-means", spread(reference),
         f"{(max(reference) - min(reference)) / np.mean(reference):.1%}", "-"],
        [label, "defectlab signatures", spread(ours), f"{(max(ours) - min(ours)) / np.mean(ours):.1%}",
         versus(ours)],
        [label, "reference code's aggregation (i-th centroid averaged)", spread(averaged),
         f"{(max(averaged) - min(averaged)) / np.mean(averaged):.1%}", versus(averaged)],
    ]
    return speed, fidelity


def elpv_domains(limit: int | None) -> dict[str, DefectDataset]:
    """Four ELPV domains (mono/poly x first/second half), streamed from files by the ``elpv`` component."""
    domains = {}
    for cell_type in ("mono", "poly"):
        cells = dl.open_dataset(f"elpv:{cell_type}")
        order = list(range(len(cells)))[: limit or None]
        half = len(order) // 2
        domains[f"{cell_type}-1"] = Subset(cells, order[:half])
        domains[f"{cell_type}-2"] = Subset(cells, order[half:])
    return domains


def scale(limit: int | None) -> None:
    """(c): screen four ELPV domains cold, measure memory, then again from the cache."""
    domains = elpv_domains(limit)
    count = sum(len(d) for d in domains.values())
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DEFECTLAB_CACHE"] = cache
        emd = EMD()
        start = time.perf_counter()
        signatures = {name: emd.represent(d) for name, d in domains.items()}
        cold = time.perf_counter() - start
        matrix = [[name] + [f"{emd(signatures[name], signatures[other]):.4f}" for other in domains]
                  for name in domains]
        start = time.perf_counter()
        for d in domains.values():
            emd.represent(d)
        warm = time.perf_counter() - start

    tracemalloc.start()
    for d in domains.values():
        signature_of(d, SignatureSettings(cache=False))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    print(f"\n(c) scale: {count} ELPV cells as 4 domains, streamed from the package's PNG files (cache off)")
    print(format_table(["", "value"], [
        ["wall time, cold (elbow + signatures of 4 domains)", f"{cold:.2f} s ({count / cold:.0f} images/s)"],
        ["K per domain (elbow)", ", ".join(f"{n}: {s.k}" for n, s in signatures.items())],
        ["peak traced memory while screening (tracemalloc)", f"{peak / 2**20:.1f} MiB"],
        ["process max RSS (whole benchmark so far)", f"{max_rss:.0f} MiB"],
        ["screen again from the cache", f"{warm * 1000:.1f} ms"],
    ]))
    print("\nEMD between the domains")
    print(format_table([""] + list(domains), matrix))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 + 5 images for (a, b) and 400 cells for (c)")
    args = parser.parse_args(argv)

    from elpv_dataset.utils import load_dataset
    from matplotlib import colormaps

    images, _, types = load_dataset()
    per_type = 5 if args.quick else 20
    rng = np.random.default_rng(0)
    mono = sorted(rng.choice(np.flatnonzero(types == "mono"), per_type, replace=False).tolist())
    poly = sorted(rng.choice(np.flatnonzero(types == "poly"), per_type, replace=False).tolist())
    viridis = (colormaps["viridis"](np.arange(256))[:, :3] * 255).round().astype(np.uint8)

    speed, fidelity = [], []
    cells = images[mono + poly]  # colour-mapped once, so that neither side's timing includes it
    for label, variant in (("grey", cells), ("colour", viridis[cells])):
        rows = speed_and_fidelity(variant, len(mono), label)
        speed += rows[0]
        fidelity += rows[1]
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"\n(a) speed: signatures of the same {2 * per_type} ELPV cells (defectlab: best of 3, cache off)")
    print(format_table(["images", "method", "n", "seconds", "images/s", "speed-up"], speed))
    print(f"\n(b) fidelity: EMD(mono, poly) from {per_type} + {per_type} cells, K = {REFERENCE_K}, "
          f"mean (min-max) over seeds {SEEDS}")
    print(format_table(["images", "dataset signatures from", "EMD", "seed spread", "mean vs reference"],
                       fidelity))
    scale(200 if args.quick else None)  # 200 per cell type


if __name__ == "__main__":
    main()
