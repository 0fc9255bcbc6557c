"""Feature-space synthesis of tail-class samples (``train.tail_synthesis``; the ResNet-18 cable notes, after Xu et al., ECCV 2022).

A classifier is ``head(forward_features(images))``. At every training step the batch's features
of the tail classes are remembered, detached, in a small queue per class; virtual features
λ·a + (1 − λ)·b are made from two different remembered features a, b of one tail class, with
λ ~ Beta(α, α); and the head classifies the real and the virtual features in one call of the
loss. Virtual features carry no gradient into the backbone: they train the head.

The queues are emptied, and the random generator (NumPy's, seeded from ``train.seed`` and the
epoch) started again, at the beginning of every epoch. An epoch's virtual samples therefore
depend on that epoch alone, and a resumed run continues exactly as a run that never stopped,
with nothing added to the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from defectlab.plugin_system.errors import DataError, TrainingError
from defectlab.training.contracts import checked_logits
from defectlab.training.settings import TailSynthesis
from torch import Tensor, nn


def tail_classes(counts: Sequence[int], rarest: int, below: float) -> tuple[int, ...]:
    """The tail classes, in index order: the ``rarest`` classes of fewest training samples (ties by index)
    and those with fewer than ``below`` × the largest class's. A class of fewer than two samples has
    nothing to interpolate and is never one."""
    candidates = [c for c, n in enumerate(counts) if n >= 2]
    chosen = set(sorted(candidates, key=lambda c: (counts[c], c))[:rarest])
    chosen.update(c for c in candidates if counts[c] < below * max(counts))
    return tuple(sorted(chosen))


def virtual_count(batch_size: int, share: float) -> int:
    """Virtual samples added to a batch of ``batch_size``: round(share × batch_size), at least one."""
    return max(1, round(share * batch_size))


def interpolate(first: Tensor, second: Tensor, lam: Tensor) -> Tensor:
    """Row i is lam[i]·first[i] + (1 − lam[i])·second[i]: a point on the segment between the two."""
    lam = lam.to(first.dtype).unsqueeze(1)
    return lam * first + (1 - lam) * second


class TailSynthesizer:
    """The per-class queues of recent tail-class features and the virtual samples drawn from them.

    Args:
        tail: Indices of the tail classes.
        settings: The ``train.tail_synthesis`` settings.
        seed: ``train.seed``; with the epoch it seeds each epoch's generator.
    """

    def __init__(self, tail: Sequence[int], settings: TailSynthesis, seed: int = 0):
        self.tail, self.settings, self.seed = tuple(tail), settings, seed
        self.start_epoch(0)

    @classmethod
    def for_trainer(cls, trainer: Any) -> TailSynthesizer:
        """The synthesizer of a Trainer's settings and training split; TrainingError when its model cannot have one."""
        model, settings = trainer.model, trainer.settings.tail_synthesis
        if trainer.world.distributed:
            raise TrainingError("train.tail_synthesis: not available under torchrun (DistributedDataParallel); "
                                "train in one process or switch it off")
        if not callable(getattr(model, "forward_features", None)) or not isinstance(getattr(model, "head", None),
                                                                                    nn.Module):
            raise TrainingError(f"train.tail_synthesis needs a classifier with forward_features(images) -> (N, D) "
                                f"and a head submodule (logits = head(forward_features(images))); "
                                f"{type(model).__name__} lacks them: switch train.tail_synthesis off or use such "
                                f"a backbone (resnet18, ...)")
        counts = trainer.data.class_counts("train")
        tail = tail_classes(counts, settings.rarest, settings.below)
        if not tail:
            raise DataError(f"train.tail_synthesis: no class has the two training samples needed to interpolate "
                            f"(class counts {counts})")
        names = ", ".join(f"'{trainer.data.classes[c]}' ({counts[c]})" for c in tail)
        trainer._say(f"tail synthesis: tail classes {names}; {settings.share:g} of each batch added as virtual "
                     f"samples, λ ~ Beta({settings.alpha:g}, {settings.alpha:g})")
        return cls(tail, settings, trainer.settings.seed)

    def start_epoch(self, epoch: int) -> None:
        """Empty the queues and seed the generator from (seed, epoch)."""
        self.epoch = epoch
        self.memory: dict[int, Tensor] = {}
        self.rng = np.random.default_rng((self.seed, epoch))

    def remember(self, features: Tensor, targets: Tensor) -> None:
        """Append the tail classes' rows of ``features`` (detached), keeping the last ``memory`` per class."""
        for c in self.tail:
            new = features[targets == c].detach()
            if len(new):
                old = self.memory.get(c)
                self.memory[c] = (new if old is None else torch.cat([old, new]))[-self.settings.memory:]

    def synthesize(self, batch_size: int) -> tuple[Tensor, Tensor] | None:
        """``virtual_count(batch_size, share)`` virtual features and their classes, the tail classes in turn
        from a random one; None while no tail class has two remembered features."""
        ready = [c for c in self.tail if len(self.memory.get(c, ())) >= 2]
        if not ready:
            return None
        n = virtual_count(batch_size, self.settings.share)
        which = (self.rng.integers(len(ready)) + np.arange(n)) % len(ready)
        sizes = np.array([len(self.memory[c]) for c in ready])[which]
        first = self.rng.integers(0, sizes)
        second = (first + self.rng.integers(1, sizes)) % sizes  # another remembered feature of the class
        starts = np.concatenate([[0], np.cumsum([len(self.memory[c]) for c in ready])[:-1]])[which]
        bank = torch.cat([self.memory[c] for c in ready])
        lam = torch.from_numpy(self.rng.beta(self.settings.alpha, self.settings.alpha, n)).to(bank.device)
        virtual = interpolate(bank[torch.from_numpy(starts + first)], bank[torch.from_numpy(starts + second)], lam)
        return virtual, torch.tensor([ready[w] for w in which], device=bank.device)

    def loss(self, model: nn.Module, loss: nn.Module, images: Tensor, targets: Tensor, epoch: int) -> Tensor:
        """``loss`` of the real and virtual samples' logits and classes, concatenated: one call, in which a
        virtual sample weighs as much as a real one."""
        if targets.ndim != 1:
            raise TrainingError(f"train.tail_synthesis applies to classification (targets of shape (N,)), but "
                                f"this batch's targets have shape {tuple(targets.shape)}; switch it off")
        if epoch != self.epoch:
            self.start_epoch(epoch)
        features = model.forward_features(images)
        self.remember(features, targets)
        virtual = self.synthesize(len(images))
        if virtual is not None:
            features = torch.cat([features, virtual[0].to(features.dtype)])
            targets = torch.cat([targets, virtual[1].to(targets.dtype)])
        return loss(checked_logits(model, model.head(features)), targets)
