"""Training throughput of defectlab's Trainer against a plain PyTorch loop, measured side by side in one run.

    python benchmarks/engine_overhead.py [--rounds 2] [--epochs 4] [--image-size 64] [--batch-size 32]

Both sides train the same ResNet-18 (``defectlab.create("backbone", {"name": "resnet18",
"num_classes": 2, "in_chans": 1})``, one random initialisation deep-copied for every run) on the
same batches: the training split of ELPV monocrystalline cells, functional / defective, 75/25
split, at ``--image-size``, collected once from ``DataModule.loader("train", epoch=1)`` into
memory before anything is timed, so data loading and augmentation cost neither side anything.

(a) plain: ``model.train()``; for every batch: forward, ``nn.CrossEntropyLoss``,
    ``zero_grad(set_to_none=True)``, ``backward``, ``AdamW.step``, and ``loss.item()`` for the
    running loss (what any hand-written loop logs);
(b) defectlab: ``Trainer(...).fit()`` with the same loss module, AdamW (same lr and weight
    decay, constant schedule), progress bar off, no validation or test split, given a stand-in
    data module whose ``loader()`` returns the collected batches.

A round is one ``fit()`` of ``--epochs`` epochs with a plain epoch run between every two of
its epochs (through a Trainer callback, outside the timed methods), so the two take turns
epoch by epoch (A B A B ...; every other round the plain loop goes first) and load from other
processes hits both alike. Each round starts both from fresh copies of the same model.
Reported, as medians over every epoch of every round:

* training pass, images/s: plain: the loop over the batches; defectlab: ``Trainer._epoch``
  (the loop with its per-step finiteness check and bookkeeping, the epoch record and the
  schedule step), timed by wrapping the bound method, nothing else changed;
* defectlab epoch incl. bookkeeping: ``_epoch`` + ``_after_epoch`` (metrics.jsonl line, the
  atomic last.pt, best.pt when the training loss improved, run.json), whose cost per epoch
  is also shown on its own;
* once per ``fit()``: set-up (optimiser, schedule) and the end (run.json, curves.png, report.html;
  no test split, so no final evaluation): fit() wall time minus its epochs and the plain epochs
  run in between.

Both sides run with the same ``torch.use_deterministic_algorithms`` setting (the engine's
default, on: the plain epochs run inside fit()) and the same torch thread count. The final weights of both sides are compared
(last.pt against the plain model) as a check that they did the same work. The aim is a
defectlab / plain ratio of at least 0.95 on the training pass; timings are never asserted in
tests.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import defectlab as dl
import torch
from defectlab import format_table
from defectlab.runs.run import write_resolved_config
from torch import nn


class PreloadedData:
    """A stand-in data module: one 'train' split whose loader is the same list of batches every epoch.

    It has what :class:`defectlab.Trainer` uses of a data module: ``splits``, ``classes``,
    ``class_counts``, ``loader``, ``sample_key`` and ``describe``.
    """

    task = "classify"

    def __init__(self, batches: list[dict[str, Any]], classes: list[str]):
        self.batches = batches
        indices = torch.cat([batch["index"] for batch in batches]).tolist()
        self.splits = {"train": indices}
        self.classes = list(classes)
        targets = torch.cat([batch["target"] for batch in batches])
        self.counts = torch.bincount(targets, minlength=len(classes)).tolist()

    def class_counts(self, split: str = "train") -> list[int]:
        return list(self.counts)

    def loader(self, split: str, epoch: int = 0, rank: int = 0, world_size: int = 1) -> list[dict[str, Any]]:
        return self.batches

    def sample_key(self, split: str, index: int) -> str:
        return str(index)

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "classes": self.classes,
                "splits": {"train": {"dataset": "pre-collected batches", "size": len(self.splits["train"]),
                                     "class_counts": self.counts}}}


def collect_batches(image_size: int, batch_size: int, limit: int | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The training batches of epoch 1 of ELPV mono (binary, 75/25 split), in memory."""
    data = dl.DataModule({"name": "elpv", "cell_type": "mono", "binary": True}, split=(0.75, 0.25),
                         image_size=image_size, channels=1, batch_size=batch_size, augment=())
    batches = list(data.loader("train", epoch=1))
    return batches[:limit] if limit else batches, data.classes


class PlainLoop:
    """A hand-written training loop on its own copy of the model, one epoch per call."""

    def __init__(self, base: nn.Module, batches: list[dict[str, Any]], args: argparse.Namespace):
        self.model = copy.deepcopy(base)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.criterion = nn.CrossEntropyLoss()
        self.batches = batches
        self.times: list[tuple[float, float]] = []  # (wall, process CPU) seconds of each epoch

    def epoch(self) -> float:
        """One pass over the batches; returns the mean loss."""
        model, optimizer, criterion = self.model, self.optimizer, self.criterion
        model.train()
        total, seen = 0.0, 0
        start, start_cpu = time.perf_counter(), time.process_time()
        for batch in self.batches:
            images, targets = batch["image"], batch["target"]
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(images)
            seen += len(images)
        self.times.append((time.perf_counter() - start, time.process_time() - start_cpu))
        return total / seen


def timed(method: Any, into: list[tuple[float, float]]) -> Any:
    """``method`` with each call's wall and process CPU time appended to ``into``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            into.append((time.perf_counter() - start, time.process_time() - start_cpu))

    return wrapper


def one_round(base: nn.Module, data: PreloadedData, folder: Path, plain_first: bool, args: argparse.Namespace
              ) -> dict[str, Any]:
    """One fit() of ``args.epochs`` epochs, taking turns epoch by epoch with a plain loop on its own copy.

    Returns the (wall, CPU) seconds of the Trainer's passes and bookkeeping and of the plain
    epochs, the part of fit() outside its epochs, and the final weights of both.
    """
    settings = dl.TrainSettings(epochs=args.epochs, optimizer="adamw", lr=args.lr, weight_decay=args.weight_decay,
                                schedule="constant", device="cpu", progress=False,
                                deterministic=args.deterministic)
    # A Trainer built by hand (docs/training.md, "piece by piece") ends in write_run_report ->
    # Run(folder), which needs the config.json that only defectlab.train writes; write a minimal one.
    folder.mkdir(parents=True, exist_ok=True)
    write_resolved_config(folder, {"benchmark": "engine_overhead", "train": settings.to_dict()}, settings.seed)
    plain = PlainLoop(base, data.batches, args)

    def take_turn(trainer: Any, record: dict[str, Any]) -> None:
        if len(plain.times) < args.epochs:
            plain.epoch()

    trainer = dl.Trainer(copy.deepcopy(base), nn.CrossEntropyLoss(), data, folder, [], settings, [take_turn])
    passes: list[tuple[float, float]] = []
    bookkeeping: list[tuple[float, float]] = []
    trainer._epoch = timed(trainer._epoch, passes)  # the instance attribute shadows the method; _loop calls it
    trainer._after_epoch = timed(trainer._after_epoch, bookkeeping)
    start = time.perf_counter()
    with Deterministic(args.deterministic):  # as fit() has it, for a plain epoch run before fit()
        if plain_first:
            plain.epoch()
        with contextlib.redirect_stderr(io.StringIO()):  # the Trainer's epoch lines would break up the table
            trainer.fit()
    total = time.perf_counter() - start
    weights = torch.load(folder / "last.pt", map_location="cpu", weights_only=True)["model"]
    outside = total - sum(w for w, _ in passes + bookkeeping + plain.times)
    return {"passes": passes, "bookkeeping": bookkeeping, "plain": plain.times, "outside": outside,
            "weights": weights, "plain_weights": plain.model.state_dict(),
            "checkpoint_mb": (folder / "last.pt").stat().st_size / 2**20}


class Deterministic:
    """``torch.use_deterministic_algorithms(on, warn_only=True)`` for a block, as the Trainer does in fit()."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self) -> None:
        self.previous = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        if self.on:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: Any) -> None:
        torch.use_deterministic_algorithms(self.previous[0], warn_only=self.previous[1])


def rate(images: int, times: list[tuple[float, float]], which: int) -> float:
    """Images per second from the median (wall: which=0, CPU: which=1) time of the epochs in ``times``."""
    return images / statistics.median(t[which] for t in times)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="fit() calls, each with its plain twin (default 2)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per round and side (default 4)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="train on only the first N batches of the epoch (default: all, 26 at batch 32)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                        help="both sides without torch.use_deterministic_algorithms (the engine's default is on)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    batches, classes = collect_batches(args.image_size, args.batch_size, args.limit_batches)
    collect_seconds = time.perf_counter() - start
    data = PreloadedData(batches, classes)
    images = sum(len(batch["image"]) for batch in batches)
    torch.manual_seed(0)
    base = dl.create("backbone", {"name": "resnet18", "num_classes": len(classes), "in_chans": 1})
    parameters = sum(p.numel() for p in base.parameters())

    PlainLoop(base, batches[:3], args).epoch()  # warm-up (allocator, oneDNN primitives), not counted

    Times = list[tuple[float, float]]  # (wall, process CPU) seconds
    plain_passes: Times = []
    engine_passes: Times = []
    engine_bookkeeping: Times = []
    engine_once: list[float] = []
    differences: list[float] = []
    checkpoint_mb = 0.0
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="defectlab-engine-bench-") as scratch:
        for round_ in range(args.rounds):
            plain_first = round_ % 2 == 1
            result = one_round(base, data, Path(scratch) / f"run{round_}", plain_first, args)
            plain_passes += result["plain"]
            engine_passes += result["passes"]
            engine_bookkeeping += result["bookkeeping"]
            engine_once.append(result["outside"])
            checkpoint_mb = result["checkpoint_mb"]
            differences.append(max_difference(result["plain_weights"], result["weights"]))
            loads.append(os.getloadavg()[0])
            print(f"round {round_ + 1}/{args.rounds} ({'plain' if plain_first else 'defectlab'} first): plain "
                  f"{rate(images, result['plain'], 0):.1f} img/s, defectlab "
                  f"{rate(images, result['passes'], 0):.1f} img/s, load average {loads[-1]:.2f}",
                  file=sys.stderr, flush=True)

    epochs = [(p[0] + b[0], p[1] + b[1]) for p, b in zip(engine_passes, engine_bookkeeping)]
    results = {"plain": plain_passes, "pass": engine_passes, "epoch": epochs}
    wall = {name: rate(images, times, 0) for name, times in results.items()}
    cpu = {name: rate(images, times, 1) for name, times in results.items()}

    print(f"torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, deterministic algorithms {'on' if args.deterministic else 'off'} on both sides; "
          f"1-minute load average {min(loads):.2f}-{max(loads):.2f} during the run (other processes share the CPUs)")
    print(f"ResNet-18 ({parameters / 1e6:.1f} M parameters, random init, in_chans 1, 2 classes) on {len(batches)} "
          f"batches = {images} ELPV mono cells at {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"collected in {collect_seconds:.1f} s (not timed); AdamW lr {args.lr:g}, weight decay {args.weight_decay:g}")
    print(f"{args.rounds} rounds x {args.epochs} epochs per side, taking turns epoch by epoch; medians over the "
          f"{len(plain_passes)} epochs of each side\n")
    what = {"plain": ("plain PyTorch loop", "training pass"),
            "pass": ("defectlab Trainer", "training pass (Trainer._epoch)"),
            "epoch": ("defectlab Trainer", "epoch incl. metrics.jsonl, last.pt, best.pt, run.json")}
    rows = [[*what[name], f"{wall[name]:.1f}", f"{wall[name] / wall['plain']:.3f}", f"{cpu[name]:.1f}",
             f"{cpu[name] / cpu['plain']:.3f}"] for name in results]
    print(format_table(["loop", "what is timed", "images/s", "x plain", "images/CPU-s", "x plain"], rows))
    bookkeeping = statistics.median(w for w, _ in engine_bookkeeping)
    print(f"\nbookkeeping per epoch (Trainer._after_epoch): median {bookkeeping:.3f} s wall; last.pt is "
          f"{checkpoint_mb:.0f} MiB (weights + AdamW state), best.pt is written again whenever the training loss "
          f"improved")
    print(f"once per fit() (set-up; run.json, curves.png, report.html at the end; no test split, so no final "
          f"evaluation): median {statistics.median(engine_once):.2f} s wall")
    print(f"final weights, defectlab last.pt vs plain: max |difference| {max(differences):.3g} "
          f"({'identical' if max(differences) == 0 else 'not identical'})")
    print(f"\nratio defectlab / plain, training pass: {wall['pass'] / wall['plain']:.3f} wall, "
          f"{cpu['pass'] / cpu['plain']:.3f} CPU (aim >= 0.95); with the per-epoch bookkeeping: "
          f"{wall['epoch'] / wall['plain']:.3f} wall")
    pairs = [p[0] / e[0] for p, e in zip(plain_passes, engine_passes)]  # neighbouring epochs: the same load
    print(f"median of the epoch-by-epoch ratios (plain epoch time / defectlab epoch time, run one after the other): "
          f"{statistics.median(pairs):.3f} (range {min(pairs):.3f}-{max(pairs):.3f})")


if __name__ == "__main__":
    main()
