"""The ``embeddings`` evaluator: penultimate-layer embeddings, their k-NN accuracy and a t-SNE map (Hemmingsson and Olsson 2026 §5.1).

Hemmingsson and Olsson 2026 projects the CLS embeddings of the validation set with PCA to 50 dimensions and then
t-SNE to two, coloured by class, to see how class separation evolves during training. The
leave-one-out k-NN accuracy puts a number on the same separation. scikit-learn is imported
when the embeddings are projected or scored, not with this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from defectlab import DataError, Range
from defectlab_plugins.classification_metrics.collecting import CollectingEvaluator, as_tensor, checked_targets


def knn_accuracy(embeddings: np.ndarray, targets: np.ndarray, neighbours: int) -> float:
    """Leave-one-out k-NN accuracy of ``targets`` in embedding space (Euclidean distance).

    Each sample's class is voted by its ``neighbours`` nearest other samples (k is clipped to
    n − 1); the class with the most votes wins, a tie goes to the tied class whose voters lie
    nearer in sum, and a tie of those sums to the lowest class index.
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(targets)
    if n < 2:
        raise DataError(f"the k-NN accuracy needs at least 2 samples, got {n}")
    k = min(neighbours, n - 1)
    distances, index = NearestNeighbors(n_neighbors=k).fit(embeddings).kneighbors()  # each sample left out
    voters = targets[index]
    rows = np.repeat(np.arange(n), k)
    votes = np.zeros((n, int(targets.max()) + 1))
    distance_sums = np.zeros_like(votes)
    np.add.at(votes, (rows, voters.ravel()), 1)
    np.add.at(distance_sums, (rows, voters.ravel()), distances.ravel())
    tied = votes == votes.max(1, keepdims=True)
    predicted = np.where(tied, distance_sums, np.inf).argmin(1)  # argmin: the lowest class among equal sums
    return float((predicted == targets).mean())


def subsample(targets: np.ndarray, most: int, seed: int) -> tuple[np.ndarray, str]:
    """At most ``most`` sample indices (sorted) and how they were chosen.

    Stratified (each class keeps its share) when every class has at least 2 samples and there
    is room for each class among both the chosen and the rest; else uniformly at random.
    """
    n = len(targets)
    if n <= most:
        return np.arange(n), f"all {n} samples"
    counts = np.unique(targets, return_counts=True)[1]
    if counts.min() >= 2 and min(most, n - most) >= len(counts):
        from sklearn.model_selection import train_test_split

        chosen = train_test_split(np.arange(n), train_size=most, stratify=targets, random_state=seed)[0]
        how = "stratified"
    else:
        chosen = np.random.default_rng(seed).choice(n, size=most, replace=False)
        how = "random"
    return np.sort(chosen), f"{most} of {n} samples ({how} subsample, seed {seed})"


@dataclass(frozen=True)
class ProjectionSettings:
    """The PCA dimension and perplexity used for n samples of dimension D, and notes on what was clipped."""

    pca_dim: int
    perplexity: float
    notes: tuple[str, ...]


def projection_settings(n: int, d: int, pca_dim: int, perplexity: float) -> ProjectionSettings:
    """PCA to min(pca_dim, D, n − 1); perplexity below n − 1 (t-SNE needs it below the sample count)."""
    dim = max(1, min(pca_dim, d, n - 1))
    notes = []
    if perplexity >= n - 1:
        clipped = float(max(n - 2, 1))
        notes.append(f"perplexity {perplexity:g} clipped to {clipped:g} for {n} samples")
        perplexity = clipped
    return ProjectionSettings(dim, perplexity, tuple(notes))


def tsne_map(embeddings: np.ndarray, settings: ProjectionSettings, seed: int) -> np.ndarray:
    """PCA to ``settings.pca_dim`` dimensions, then t-SNE to 2: one point (x, y) per sample."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=settings.pca_dim, random_state=seed).fit_transform(embeddings)
    tsne = TSNE(n_components=2, perplexity=settings.perplexity, init="pca" if settings.pca_dim >= 2 else "random",
                learning_rate="auto", random_state=seed)
    return tsne.fit_transform(reduced)


def npz_keys(keys: list[Any]) -> np.ndarray:
    """Sample keys as an array that ``np.load`` reads without pickle: numbers as numbers, anything else as text."""
    array = np.asarray(keys)
    return array if array.dtype.kind in "iufU" else np.asarray([str(key) for key in keys])


class EmbeddingsEvaluator(CollectingEvaluator):
    """Penultimate-layer embeddings: their leave-one-out k-NN accuracy and a t-SNE map coloured by class.

    ``update(pred, target, embeddings=None, keys=None)`` keeps the embeddings (N, D) that the
    engine takes from the model's ``forward_features`` (Hemmingsson and Olsson 2026, §5.1: the CLS embedding of a
    ViT), with their class indices and keys. ``compute()`` gives ``knn_accuracy``: each sample's
    class voted by its ``neighbours`` nearest other samples (Euclidean, in the embedding space
    itself); the class with most votes wins, a tie goes to the class whose voters lie nearer in
    sum, then to the lowest class index. ``write(folder)`` saves embeddings.npz (keys, targets,
    embeddings of every sample seen; tsne and tsne_index for the mapped ones) and tsne.png:
    PCA to min(pca_dim, D, n − 1) dimensions, then t-SNE to 2.

    Args:
        max_samples: at most this many samples go into the k-NN accuracy and the t-SNE map;
            beyond it a seeded subsample is taken, stratified by class where every class has at
            least 2 samples, else at random.
        pca_dim: PCA dimension before t-SNE (50 in Hemmingsson and Olsson 2026), clipped to the embedding size and
            to the number of samples − 1.
        perplexity: t-SNE perplexity; clipped below n − 1 for small sets, with a note.
        neighbours: k of the k-NN accuracy, clipped to the number of samples − 1.
        seed: seed of the subsample, PCA and t-SNE.
    """

    name = "embeddings"
    wants = ("embeddings", "keys")

    def __init__(self, max_samples: Annotated[int, Range(2)] = 2000, pca_dim: Annotated[int, Range(1)] = 50,
                 perplexity: Annotated[float, Range(0, low_open=True)] = 30.0,
                 neighbours: Annotated[int, Range(1)] = 5, seed: int = 0):
        self.max_samples, self.pca_dim, self.neighbours, self.seed = max_samples, pca_dim, neighbours, seed
        self.perplexity = float(perplexity)
        super().__init__()

    def reset(self) -> None:
        """Forget every sample seen."""
        super().reset()
        self.embeddings: list[np.ndarray] = []
        self.num_classes = 0
        self.__dict__.pop("chosen", None)

    def update(self, pred: Any, target: Any, embeddings: Any = None, keys: Any = None) -> None:
        """Add a batch's embeddings (N, D), class indices (N,) and optional sample keys; ``pred`` is not used."""
        if embeddings is None:
            raise DataError("the embeddings evaluator got no embeddings: the model has no forward_features(image) "
                            "-> (N, D) to take them from (see docs/training.md), or update() was called without "
                            "embeddings=")
        embeddings = as_tensor(embeddings, "embeddings")
        if embeddings.ndim != 2 or not embeddings.is_floating_point():
            raise DataError(f"embeddings must be floating-point of shape (N, D), got {embeddings.dtype} of shape "
                            f"{tuple(embeddings.shape)}")
        n, d = embeddings.shape
        if self.embeddings and d != self.embeddings[0].shape[1]:
            raise DataError(f"embeddings of dimension {d} but earlier batches had {self.embeddings[0].shape[1]}")
        if self.classes is not None:
            k = len(self.classes)
        else:  # the logits' width where they are (N, K), else any class index ≥ 0
            k = int(pred.shape[1]) if getattr(pred, "ndim", 0) == 2 else None
        target = checked_targets(target, n, k, f"embeddings of shape {(n, d)}")
        embeddings = embeddings.float().cpu().numpy()
        if not np.isfinite(embeddings).all():
            raise DataError("embeddings contain NaN or infinite values")
        self.add_samples(target, keys)
        self.embeddings.append(embeddings)
        self.num_classes = max(self.num_classes, k or 0, int(target.max(initial=-1)) + 1)
        self.__dict__.pop("chosen", None)

    @cached_property
    def chosen(self) -> tuple[np.ndarray, str]:
        """The indices of the samples the k-NN accuracy and t-SNE use, and how they were chosen."""
        return subsample(self.all_targets(), self.max_samples, self.seed)

    def settings(self) -> ProjectionSettings:
        index, _ = self.chosen
        return projection_settings(len(index), self.embeddings[0].shape[1], self.pca_dim, self.perplexity)

    def compute(self) -> dict[str, float]:
        """The leave-one-out k-NN accuracy of the classes in embedding space."""
        index, _ = self.chosen
        return {"knn_accuracy": knn_accuracy(np.concatenate(self.embeddings)[index], self.all_targets()[index],
                                             self.neighbours)}

    def details(self) -> dict[str, Any]:
        """How many samples were seen and used, the PCA dimension and perplexity used, and notes."""
        index, how = self.chosen
        settings = self.settings()
        return {"samples": self.seen, "used": len(index), "subsample": how, "pca_dim": settings.pca_dim,
                "perplexity": settings.perplexity, "neighbours": min(self.neighbours, len(index) - 1),
                "notes": list(settings.notes)}

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Save embeddings.npz and draw tsne.png into ``folder``; returns them by label."""
        from defectlab_plugins.classification_metrics.plots import plot_tsne

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        embeddings, targets = np.concatenate(self.embeddings), self.all_targets()
        index, how = self.chosen
        settings = self.settings()
        if len(index) < 2:
            raise DataError(f"a t-SNE map needs at least 2 samples, got {len(index)}")
        points = tsne_map(embeddings[index], settings, self.seed)
        npz = folder / "embeddings.npz"
        np.savez_compressed(npz, keys=npz_keys(self.keys), targets=targets, embeddings=embeddings, tsne=points,
                            tsne_index=index)
        title = "\n".join([f"t-SNE of embeddings (PCA to {settings.pca_dim}, perplexity {settings.perplexity:g})",
                           how, *settings.notes])
        png = plot_tsne(points, targets[index], self.class_names(self.num_classes), folder / "tsne.png", title)
        return {"embeddings": npz, "tsne": png}
