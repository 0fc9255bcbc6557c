"""Stratified train/val/test splits, nested label-fraction subsets, and the CSV that keeps a split.

Hemmingsson and Olsson 2026 splits 70/15/15 by class with a fixed seed and trains on 1/5/10/20 % of the training
labels with val and test fixed; the ELPV protocol splits 75/25 with no val. Every class keeps
its share in every split, a seed always gives the same split whatever order the classes come
in, and the split is written to a CSV so that a resumed run uses the very same one.
numpy is imported inside the functions so that ``import defectlab`` stays light.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from defectlab.plugin_system.errors import DataError, ParameterError
from defectlab.plugin_system.files import atomic_write

SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {**{name: name for name in SPLIT_NAMES}, "valid": "val", "validation": "val"}
TOLERANCE = 1e-6
_SPLIT_STREAM, _FRACTION_STREAM = 0, 1  # separate random streams for splitting and subsetting


def canonical_split(name: str) -> str | None:
    """'train', 'val' or 'test' for a split's name as data sets spell it (``valid/``, ``Validation``), else None."""
    return SPLIT_ALIASES.get(name.strip().lower())


def _strata(indices: Iterable[int], labels: Sequence[int | None]) -> dict[int | None, list[int]]:
    """Indices grouped by label (None is one stratum), strata in a fixed order: None, then by label."""
    groups: dict[int | None, list[int]] = {}
    for index in indices:
        groups.setdefault(labels[index], []).append(index)
    return dict(sorted(groups.items(), key=lambda item: (item[0] is not None, item[0] or 0)))


def _shuffled(members: list[int], label: int | None, seed: int, stream: int) -> list[int]:
    """``members`` in an order drawn from (seed, label, stream) alone, so classes do not affect each other."""
    import numpy as np

    rng = np.random.default_rng([seed, 0 if label is None else label + 1, stream])
    return [members[i] for i in rng.permutation(len(members))]


def _largest_remainder(total: int, fractions: Sequence[float]) -> list[int]:
    """Integer shares of ``total`` in proportion to ``fractions`` that sum to ``total`` (ties: first wins)."""
    quotas = [total * f for f in fractions]
    counts = [math.floor(q + TOLERANCE) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda s: -(quotas[s] - counts[s]))
    for s in by_remainder[: total - sum(counts)]:
        counts[s] += 1
    return counts


def _allocate(sizes: list[int], fractions: Sequence[float]) -> list[list[int]]:
    """Per-class split counts: each class's floors plus its leftovers, which go by largest remainder.

    Between equal remainders (and where a class's own remainders allow) a leftover goes to the
    split still short of its overall largest-remainder count, so the overall proportions come
    as close as the per-class shares allow (10/5/3 at 70/15/15 gives 12/3/3, not 12/4/2).
    """
    quotas = [[n * f for f in fractions] for n in sizes]
    counts = [[math.floor(q + TOLERANCE) for q in row] for row in quotas]
    spare = [n - sum(row) for n, row in zip(sizes, counts)]
    short = [t - sum(row[s] for row in counts)
             for s, t in enumerate(_largest_remainder(sum(sizes), fractions))]
    remainders = sorted(((round(quotas[c][s] - counts[c][s], 9), c, s) for c in range(len(sizes))
                         for s in range(len(fractions)) if quotas[c][s] - counts[c][s] > TOLERANCE),
                        key=lambda item: (-item[0], item[1], item[2]))
    given = set()
    for _, c, s in remainders:
        if spare[c] > 0 and short[s] > 0:
            counts[c][s] += 1
            spare[c], short[s] = spare[c] - 1, short[s] - 1
            given.add((c, s))
    for _, c, s in remainders:  # what the overall counts could not take goes by the class's own remainders
        if spare[c] > 0 and (c, s) not in given:
            counts[c][s] += 1
            spare[c] -= 1
    return counts


class SplitFractions:
    """The check of a ``split`` setting, declared beside its type: 2 or 3 fractions >= 0 that sum to 1."""

    def __str__(self) -> str:
        return "(2 or 3 fractions summing to 1)"

    def check(self, value: Sequence[float], where: str) -> None:
        try:
            checked_fractions(value)
        except ParameterError as exc:
            raise ParameterError(f"{where}: {exc}") from None


def checked_fractions(fractions: Sequence[float]) -> dict[str, float]:
    """Split name -> fraction: three fractions are train/val/test, two are train/test (no val).

    ParameterError (a ValueError) unless there are 2 or 3 fractions >= 0 summing to 1.
    """
    values = [float(f) for f in fractions]
    if len(values) not in (2, 3) or any(f < 0 for f in values) or abs(sum(values) - 1) > TOLERANCE:
        raise ParameterError(f"split needs 2 or 3 fractions >= 0 that sum to 1, got {values} "
                             f"(sum {sum(values):.6g})")
    return dict(zip(SPLIT_NAMES if len(values) == 3 else ("train", "test"), values))


def stratified_split(labels: Sequence[int | None], fractions: Sequence[float], seed: int = 0,
                     names: Sequence[str] | None = None) -> list[str]:
    """The split name of each sample: every class divided by ``fractions``, shuffled by ``seed``.

    Counts per class come from the largest-remainder method, so a class's shares sum to its
    size exactly; samples without a label (None) form one stratum of their own.

    Args:
        labels: Class index (or None) of each sample.
        fractions: Two or three shares summing to 1: (train, val, test), or (train, test) for a
            protocol without a validation split (ELPV's 75/25).
        seed: Seed of the shuffle (>= 0); the same seed gives the same split.
        names: Split names for the fractions (default train/val/test, or train/test for two).
    """
    shares = checked_fractions(fractions)
    names, fractions = tuple(shares) if names is None else tuple(names), list(shares.values())
    if len(names) != len(fractions):
        raise ParameterError(f"{len(fractions)} fractions but {len(names)} split names {list(names)}")
    strata = _strata(range(len(labels)), labels)
    result = [""] * len(labels)
    for (label, members), counts in zip(strata.items(), _allocate([len(m) for m in strata.values()], fractions)):
        order = iter(_shuffled(members, label, seed, _SPLIT_STREAM))
        for name, count in zip(names, counts):
            for _ in range(count):
                result[next(order)] = name
    return result


def label_fraction_subset(indices: Sequence[int], labels: Sequence[int | None], fraction: float,
                          seed: int = 0) -> list[int]:
    """A stratified share of ``indices`` (the training split) for label-fraction training (Hemmingsson and Olsson 2026).

    Each class keeps round(n_c * fraction) samples (halves round up), at least one. The kept
    samples are a prefix of one seeded order per class, so for one seed a smaller fraction's
    subset lies inside a larger one's (the 1 % subset is part of the 5 % subset).
    Returns the kept indices in ascending order.

    Args:
        indices: Candidate sample indices (into ``labels``).
        labels: Class index (or None) of every sample.
        fraction: Share to keep, in (0, 1].
        seed: Seed of the per-class order.
    """
    if not 0 < fraction <= 1:
        raise ParameterError(f"label fraction must be in (0, 1], got {fraction}")
    kept: list[int] = []
    for label, members in _strata(indices, labels).items():
        count = max(1, math.floor(len(members) * fraction + 0.5))
        kept.extend(_shuffled(members, label, seed, _FRACTION_STREAM)[:count])
    return sorted(kept)


def write_split_csv(path: str | os.PathLike[str], rows: Iterable[tuple[str, str, str | None]]) -> Path:
    """Write (key, split, class name or None) rows as a CSV with columns key,split,label, atomically.

    The file is written under a temporary name and renamed, so it is never half-written.
    """
    path = Path(path)
    with atomic_write(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "split", "label"])
        writer.writerows((key, split, label or "") for key, split, label in rows)
    return path


def read_split_csv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Sample key -> split name from a CSV written by :func:`write_split_csv`."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"key", "split"} <= set(reader.fieldnames or []):
            raise DataError(f"splits file '{path}' needs the columns key,split (found: "
                            f"{', '.join(reader.fieldnames or []) or 'nothing'}); delete it to split again")
        result = {row["key"]: row["split"] for row in reader}
    unknown = sorted(set(result.values()) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"splits file '{path}' has split names {unknown}; use train, val or test")
    return result
