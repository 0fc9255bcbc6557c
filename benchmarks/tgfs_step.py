"""What TGFS (SPEC 004) costs: a training step of FCOS with assigner "tgfs" against "fcos", and inference of both.

    python benchmarks/tgfs_step.py [--size 256] [--batch 8] [--boxes 4] [--depth 18] [--steps 10] [--rounds 3]

Both models are defectlab's ``fcos`` backbone with the same weights (ResNet-``--depth`` + FPN,
grey input), on the same batch of random images with ``--boxes`` random boxes per image
spread over the sizes of P3-P5. A step is forward with targets, the sum of the losses,
``backward`` and an SGD step; the two take turns step by step (the order swapped every step)
so that load from other processes hits both alike. Each round gives each assigner's median
step; the table shows the median over rounds and the ratio tgfs / fcos with the range of the
per-round ratios. Inference (eval mode, no gradient) is timed the same way, and the detections
of the two models for the same weights are compared: they must be identical, since TGFS only
changes which samples the loss trains.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import defectlab as dl


def batch(size: int, count: int, boxes: int, generator: torch.Generator) -> tuple[torch.Tensor, list[dict]]:
    images = torch.randn(count, 1, size, size, generator=generator)
    targets = []
    for _ in range(count):
        sides = torch.randint(size // 16, size // 2, (boxes, 2), generator=generator).float()
        corners = torch.rand(boxes, 2, generator=generator) * (size - sides)
        targets.append({"boxes": torch.cat([corners, corners + sides], 1),
                        "labels": torch.randint(0, 6, (boxes,), generator=generator)})
    return images, targets


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--boxes", type=int, default=4)
    parser.add_argument("--depth", type=int, default=18, choices=(18, 34, 50))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = {name: dl.create("backbone", {"name": "fcos", "num_classes": 6, "in_chans": 1, "depth": args.depth,
                                            "assigner": name}) for name in ("fcos", "tgfs")}
    models["tgfs"].load_state_dict(models["fcos"].state_dict())
    optimisers = {name: torch.optim.SGD(m.parameters(), lr=1e-4) for name, m in models.items()}
    images, targets = batch(args.size, args.batch, args.boxes, torch.Generator().manual_seed(1))

    def train_step(name: str) -> None:
        model = models[name].train()
        loss = sum(model(images, targets).values())
        optimisers[name].zero_grad()
        loss.backward()
        optimisers[name].step()

    def infer(name: str) -> None:
        with torch.no_grad():
            models[name].eval()(images)

    rows = []
    for what, step in (("inference", infer), ("training step", train_step)):  # inference first: same weights
        medians = {"fcos": [], "tgfs": []}
        for _ in range(args.rounds):
            times = {"fcos": [], "tgfs": []}
            for index in range(args.warmup + args.steps):
                order = ("fcos", "tgfs") if index % 2 else ("tgfs", "fcos")
                for name in order:
                    seconds = timed(lambda: step(name))
                    if index >= args.warmup:
                        times[name].append(seconds)
            for name in times:
                medians[name].append(statistics.median(times[name]))
        ratios = [t / f for t, f in zip(medians["tgfs"], medians["fcos"])]
        rows.append([what, f"{1000 * statistics.median(medians['fcos']):.1f}",
                     f"{1000 * statistics.median(medians['tgfs']):.1f}",
                     f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"])
    models["tgfs"].load_state_dict(models["fcos"].state_dict())  # the training steps moved them apart
    with torch.no_grad():
        a, b = models["fcos"].eval()(images), models["tgfs"].eval()(images)
    same = all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    print(f"FCOS-ResNet{args.depth}, {args.batch} images of {args.size} px, {args.boxes} boxes each, "
          f"{args.rounds} rounds x {args.steps} steps, torch threads {torch.get_num_threads()}")
    print(dl.format_table(["", "fcos ms", "tgfs ms", "tgfs / fcos (rounds)"], rows))
    print(f"detections identical for the same weights: {same}")


if __name__ == "__main__":
    main()
