"""Distances between colour signatures: the exact Earth Mover's Distance (Valle Salgado et al. 2023 eq. 10-15) and Sinkhorn.

Both components summarise a dataset with the same colour signature (``signatures``) and differ
only in how they transport one signature onto the other. The signature's parameters are declared
once, in ``SignatureDistance``'s constructor: ``SignatureSettings`` is made from it, and Sinkhorn
takes them after its own.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np

from defectlab import DataError, DefectDataset, Range, open_dataset
from defectlab_plugins.emd.signatures import Signature, signature_of

log = logging.getLogger("defectlab.distance")

Ground = Literal["euclidean", "sqeuclidean", "cityblock"]
GROUNDS = ("euclidean", "sqeuclidean", "cityblock")


def ground_distances(a: np.ndarray, b: np.ndarray, ground: Ground = "euclidean") -> np.ndarray:
    """The ground-distance matrix g[u, v] between centroids a (M, C) and b (N, C)."""
    from scipy.spatial.distance import cdist

    if ground not in GROUNDS:
        raise DataError(f"unknown ground distance {ground!r}; use one of {', '.join(GROUNDS)}")
    return cdist(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), metric=ground)


def _checked(weights_a: Any, weights_b: Any, cost: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.ascontiguousarray(weights_a, dtype=np.float64).reshape(-1)
    b = np.ascontiguousarray(weights_b, dtype=np.float64).reshape(-1)
    m = np.ascontiguousarray(cost, dtype=np.float64)
    if m.shape != (len(a), len(b)):
        raise DataError(f"ground distances of shape {m.shape} do not match {len(a)} x {len(b)} weights")
    if (a < 0).any() or (b < 0).any() or a.sum() <= 0 or b.sum() <= 0:
        raise DataError("signature weights must be non-negative with a positive total")
    return a, b, m


def earth_movers_distance(weights_a: Any, weights_b: Any, cost: Any) -> tuple[float, np.ndarray]:
    """EMD of eq. 10-15 and its optimal flow (M, N), solved exactly by POT's network simplex.

    Minimises sum g*f over flows f >= 0 whose row sums are at most ``weights_a``, column sums at
    most ``weights_b``, and whose total is min(sum weights_a, sum weights_b) (partial matching
    when the totals differ); EMD = sum g*f / sum f. The partial case is made a balanced
    transportation problem by a dummy node that takes the heavier side's excess at zero cost;
    its flows are then dropped. This is exact: the lighter side must ship all of its weight.
    """
    import ot

    a, b, m = _checked(weights_a, weights_b, cost)
    total_a, total_b = a.sum(), b.sum()
    if np.isclose(total_a, total_b, rtol=1e-12, atol=0.0):
        flow = ot.emd(a, b * (total_a / total_b), m)
    elif total_a < total_b:
        flow = ot.emd(np.append(a, total_b - total_a), b, np.vstack([m, np.zeros((1, len(b)))]))[:-1]
    else:
        flow = ot.emd(a, np.append(b, total_a - total_b), np.hstack([m, np.zeros((len(a), 1))]))[:, :-1]
    return float((flow * m).sum() / flow.sum()), flow


def sinkhorn_distance(weights_a: Any, weights_b: Any, cost: Any, reg: float = 0.05) -> float:
    """Transport cost sum g*P of the entropy-regularised plan P (POT ``sinkhorn2``, log domain).

    Sinkhorn has no partial matching: both weight vectors are normalised to sum to 1. The value
    is at least the EMD of the normalised signatures and tends to it as ``reg`` -> 0.
    """
    import ot

    a, b, m = _checked(weights_a, weights_b, cost)
    return float(ot.sinkhorn2(a / a.sum(), b / b.sum(), m, reg, method="sinkhorn_log", numItermax=10000))


_SIGNATURE_ARGS = """\
    ground: Ground distance between centroids in colour space (RGB or grey in [0, 1]).
    k: Clusters per image and in the dataset signature; "auto" picks K at the elbow of the RSS
        curve (eq. 3-4) on ``elbow_images`` sample images.
    pixels_per_image: Pixels drawn per colour image for its k-means (None: every pixel). Grey
        images are clustered on the histogram of all their pixels, which is exact and cheaper.
    max_side: Downscale images (area average) so the longer side is at most this (None: keep).
    k_max: Largest K tried by the elbow search.
    elbow_images: Images sampled (by ``seed``) for the elbow search.
    elbow_plot: Save the elbow's RSS curve as a PNG to this path (None: no plot).
    seed: Seed of every random choice (pixel samples, k-means++ starts); same seed, same result.
    cache: Reuse signatures cached under $DEFECTLAB_CACHE (default ~/.cache/defectlab), keyed by
        the dataset's fingerprint and these settings.
    batch_size: Images clustered at once (memory vs speed; the result does not depend on it).
"""


def _with_signature_args(*own: str) -> Any:
    """Class decorator: end the docstring with an ``Args:`` section, the class's ``own`` lines first."""

    def decorate(cls: type) -> type:
        lines = "".join(f"    {line}\n" for line in own)
        cls.__doc__ = f"{inspect.cleandoc(cls.__doc__ or '')}\n\nArgs:\n{lines}{_SIGNATURE_ARGS}"
        return cls

    return decorate


class SignatureDistance:
    """Base of the distances between colour signatures: shared ``represent`` and ``__call__``."""

    def __init__(self, ground: Ground = "euclidean", k: Annotated[int | Literal["auto"], Range(1)] = "auto",
                 pixels_per_image: Annotated[int | None, Range(16)] = 2048,
                 max_side: Annotated[int | None, Range(8)] = None, k_max: Annotated[int, Range(3)] = 10,
                 elbow_images: Annotated[int, Range(1)] = 20, elbow_plot: str | None = None, seed: int = 0,
                 cache: bool = True, batch_size: Annotated[int, Range(1)] = 256):
        if ground not in GROUNDS:
            raise ValueError(f"ground must be one of {', '.join(GROUNDS)}, got {ground!r}")
        self.ground = ground
        given = locals()
        self.settings = SignatureSettings(**{f.name: given[f.name] for f in dataclasses.fields(SignatureSettings)})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ground={self.ground!r}, {self.settings})"

    def represent(self, dataset: DefectDataset | str | dict[str, Any]) -> Signature:
        """The dataset's colour signature (a dataset object, or a path / name / spec to open)."""
        if not isinstance(dataset, DefectDataset):
            dataset = open_dataset(dataset)
        return signature_of(dataset, self.settings)

    def __call__(self, a: Signature | DefectDataset, b: Signature | DefectDataset) -> float:
        """Distance between two signatures (datasets are represented first)."""
        first, second = (s if isinstance(s, Signature) else self.represent(s) for s in (a, b))
        channels = max(first.channels, second.channels)
        if first.channels != second.channels:
            log.info("comparing a grey with a colour signature: grey values g are read as RGB (g, g, g)")
        first, second = first.with_channels(channels), second.with_channels(channels)
        cost = ground_distances(first.centroids, second.centroids, self.ground)
        return self.transport(first.weights, second.weights, cost)

    def transport(self, weights_a: np.ndarray, weights_b: np.ndarray, cost: np.ndarray) -> float:
        """The distance given both weight vectors and their ground-distance matrix."""
        raise NotImplementedError


#: How signatures are computed: every parameter of ``SignatureDistance`` but ``ground``, with its default.
SignatureSettings = dataclasses.make_dataclass(
    "SignatureSettings",
    [(p.name, p.annotation, dataclasses.field(default=p.default))
     for p in inspect.signature(SignatureDistance).parameters.values() if p.name != "ground"],
    frozen=True, namespace={"__module__": __name__, "__doc__": "How signatures are computed (see SignatureDistance)."})


def with_signature_parameters(init: Callable[..., None]) -> Callable[..., None]:
    """Present ``init(self, <own parameters>, **signature)`` with SignatureDistance's parameters after its own,
    so that the registry checks them and ``show`` lists them while they are declared once."""
    own = [p for p in inspect.signature(init).parameters.values() if p.kind is not p.VAR_KEYWORD]
    shared = list(inspect.signature(SignatureDistance.__init__).parameters.values())[1:]
    init.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    init.__annotations__ = {**SignatureDistance.__init__.__annotations__, **init.__annotations__}
    return init


@_with_signature_args()
class EMD(SignatureDistance):
    """Earth Mover's Distance between datasets' colour signatures, solved exactly (network simplex).

    Lower = more similar domains. Signatures follow Valle Salgado et al. 2023, Alg. 1; the EMD is eq. 10-15 with
    partial matching when the total weights differ.
    """

    name = "emd"

    def transport(self, weights_a: np.ndarray, weights_b: np.ndarray, cost: np.ndarray) -> float:
        return earth_movers_distance(weights_a, weights_b, cost)[0]


@_with_signature_args("reg: Entropic regularisation (in units of the ground distance); smaller is closer to the EMD.")
class Sinkhorn(SignatureDistance):
    """Entropy-regularised optimal transport (Sinkhorn) between datasets' colour signatures.

    A smooth, approximate alternative to ``emd`` on the same signatures; weights are normalised
    to sum to 1 (no partial matching).
    """

    name = "sinkhorn"

    @with_signature_parameters
    def __init__(self, reg: Annotated[float, Range(0, low_open=True)] = 0.05, **signature: Any):
        super().__init__(**signature)
        self.reg = reg

    def transport(self, weights_a: np.ndarray, weights_b: np.ndarray, cost: np.ndarray) -> float:
        return sinkhorn_distance(weights_a, weights_b, cost, self.reg)
