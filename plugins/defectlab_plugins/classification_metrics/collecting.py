"""What both classification evaluators share: input checks and the samples kept since the last ``reset()``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from defectlab import DataError


def as_tensor(value: Any, name: str) -> Tensor:
    """A torch tensor (detached) of ``value``, a tensor or anything NumPy can read."""
    if isinstance(value, Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{name} must be a tensor or an array, got {type(value).__name__}: {exc}") from None


def checked_targets(target: Any, n: int, k: int | None, fits: str) -> np.ndarray:
    """``target`` as an int64 array of shape (n,) holding class indices in [0, k) (any ≥ 0 if k is None)."""
    target = as_tensor(target, "target")
    if tuple(target.shape) != (n,):
        raise DataError(f"target of shape {tuple(target.shape)} does not fit {fits}: expected class indices of "
                        f"shape ({n},)")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise DataError(f"target must hold integer class indices, got dtype {target.dtype}")
    target = target.cpu().numpy().astype(np.int64)
    bad = (target < 0) | (target >= k) if k is not None else target < 0
    if bad.any():
        allowed = f"[0, {k})" if k is not None else "≥ 0"
        raise DataError(f"target must hold class indices in {allowed}; found {sorted(set(target[bad].tolist()))[:5]}")
    return target


class CollectingEvaluator:
    """Base of the evaluators that keep every sample seen: its target, its key, and the class names."""

    def __init__(self) -> None:
        self.classes: list[str] | None = None
        self.reset()

    def setup(self, *, classes: list[str], class_counts: list[int]) -> None:
        """Name the classes (the counts are not needed); without it classes are called "0", "1", ..."""
        self.classes = [str(name) for name in classes]

    def reset(self) -> None:
        """Forget every sample seen."""
        self.targets: list[np.ndarray] = []
        self.keys: list[Any] = []
        self.seen = 0

    def class_names(self, k: int) -> list[str]:
        """The names given to ``setup``, else "0" ... "k-1"."""
        return list(self.classes) if self.classes is not None else [str(c) for c in range(k)]

    def add_samples(self, target: np.ndarray, keys: Sequence[Any] | Tensor | None) -> None:
        """Keep the targets of a batch and its keys (the running sample number where ``keys`` is None)."""
        n = len(target)
        if keys is None:
            keys = range(self.seen, self.seen + n)
        elif isinstance(keys, (Tensor, np.ndarray)):
            keys = keys.tolist()
        if len(keys) != n:
            raise DataError(f"got {len(keys)} keys for a batch of {n} samples: expected one key per sample")
        self.targets.append(target)
        self.keys.extend(keys)
        self.seen += n

    def all_targets(self) -> np.ndarray:
        if not self.seen:
            raise DataError(f"no sample seen yet: call update(pred, target) on the {self.name} evaluator first")
        return np.concatenate(self.targets)
