"""CPU training speed: channels_last, bfloat16 autocast and torch.compile beside a plain float32 PyTorch loop.

    python benchmarks/cpu_speed.py [--image-size 224] [--images 128] [--repeats 3]
                                   [--accuracy-size 64] [--accuracy-epochs 8] [--out DIR]

Speed: a ResNet-18 on grey ELPV cells at ``--image-size`` with conv1..layer2 frozen (the set-up
a new user tried in issue 20), batch 32, AdamW. The reference is a hand-written float32 PyTorch
loop (forward, cross-entropy, backward, step) over the same cached batches of the same data
module and the same network; each defectlab variant is ``defectlab.train`` with one setting
changed. Images/s are those of a training epoch after a first one that decodes the images (and
compiles); every variant runs in turn, ``--repeats`` rounds, and the median is reported with its
ratio to the reference of the same round.

Accuracy: every variant trains binary ELPV (75/25 split, seed 0) from random initialisation at
``--accuracy-size`` for ``--accuracy-epochs`` and is scored on the test split, beside its
CPU-minutes. (The float32 variant's training pass is the reference loop's: engine_overhead.py
shows the same final weights.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import defectlab as dl
from defectlab import format_table

FROZEN = ["conv1", "bn1", "layer1", "layer2"]
#: Each variant is train settings laid over float32, contiguous, eager.
VARIANTS: dict[str, dict[str, Any]] = {
    "float32": {"amp": False},
    "channels_last": {"amp": False, "channels_last": True},
    "bfloat16": {"amp": True},
    "bfloat16 + channels_last": {"amp": True, "channels_last": True},
    "bfloat16 + channels_last + compile": {"amp": True, "channels_last": True, "compile": True},
}


def speed_config(size: int, fraction: float, settings: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"dataset": {"name": "elpv", "binary": True}, "split": [0.75, 0.25], "image_size": size,
                     "batch_size": 32, "augment": [], "label_fraction": fraction},
            "model": {"name": "resnet18", "in_chans": 1, "freeze": FROZEN},
            "train": {"epochs": 2, "lr": 1e-3, "device": "cpu", "progress": False, "eval_every": 2, **settings}}


def reference_images_per_s(config: dict[str, Any]) -> float:
    """The hand-written float32 loop: one untimed epoch (decoding, caching), then one timed epoch."""
    import torch

    from defectlab.workflows.train import build_stage

    _, data, model, _, _ = build_stage(config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    model.train()
    seconds, seen = 0.0, 0
    for epoch in (1, 2):
        started = time.perf_counter()
        for batch in data.loader("train", epoch=epoch):
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["target"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(batch["image"]) if epoch == 2 else 0
        seconds = time.perf_counter() - started
    return seen / seconds


def defectlab_images_per_s(config: dict[str, Any], folder: Path) -> float:
    run = dl.train(config, out=folder, overwrite=True)
    return run.metrics[-1]["images_per_s"]


def speed(args: argparse.Namespace, out: Path) -> dict[str, list[float]]:
    """Images/s per variant and round, the reference first in each round."""
    fraction = args.images / 1968  # the 75 % training cells of ELPV
    results: dict[str, list[float]] = {"reference": [], **{name: [] for name in VARIANTS}}
    for round_ in range(args.repeats):
        results["reference"].append(reference_images_per_s(speed_config(args.image_size, fraction, {"amp": False})))
        for name, settings in VARIANTS.items():
            folder = out / "speed" / name.replace(" + ", "-")
            results[name].append(defectlab_images_per_s(speed_config(args.image_size, fraction, settings), folder))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()), file=sys.stderr,
              flush=True)
    return results


def accuracy(args: argparse.Namespace, out: Path) -> dict[str, dict[str, float]]:
    """Test scores and CPU-minutes of each variant trained on binary ELPV."""
    results = {}
    for name, settings in VARIANTS.items():
        config = {"data": {"dataset": {"name": "elpv", "binary": True}, "split": [0.75, 0.25], "seed": 0,
                           "image_size": args.accuracy_size, "batch_size": 32, "augment": ["flip", "rotate"]},
                  "model": {"name": "resnet18", "in_chans": 1},
                  "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
                  "train": {"epochs": args.accuracy_epochs, "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 1,
                            "monitor": "train/loss", "eval_every": args.accuracy_epochs, "device": "cpu",
                            "progress": False, **settings}}
        cpu = time.process_time()
        run = dl.train(config, out=out / "accuracy" / name.replace(" + ", "-"), overwrite=True)
        results[name] = {"accuracy": run.scores["accuracy"], "balanced_accuracy": run.scores["balanced_accuracy"],
                         "cpu_min": (time.process_time() - cpu) / 60}
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=128, help="training cells per speed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accuracy-size", type=int, default=64)
    parser.add_argument("--accuracy-epochs", type=int, default=8, help="0: skip the accuracy part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/bench-cpu-speed-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    from defectlab.training.loop import mixed_precision

    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, amp on this CPU: {mixed_precision(torch.device('cpu'))}")
    rates = speed(args, out)
    rows = []
    for name, values in rates.items():
        ratios = [v / r for v, r in zip(values, rates["reference"])]
        rows.append([name, f"{statistics.median(values):.1f}", f"{statistics.median(ratios):.2f}",
                     " ".join(f"{v:.1f}" for v in values)])
    print(f"\ntraining images/s, ResNet-18 at {args.image_size} px grey, conv1..layer2 frozen, batch 32, "
          f"{args.images} cells per epoch, medians of {args.repeats} rounds in turns")
    print(format_table(["variant", "images/s", "ratio to reference", "rounds"], rows))
    scores = accuracy(args, out) if args.accuracy_epochs else {}
    if scores:
        print(f"\nbinary ELPV 75/25 test split, ResNet-18 from random init at {args.accuracy_size} px, "
              f"{args.accuracy_epochs} epochs, seed 0")
        print(format_table(["variant", "accuracy", "balanced accuracy", "CPU-min"],
                           [[name, f"{s['accuracy']:.2%}", f"{s['balanced_accuracy']:.2%}", f"{s['cpu_min']:.1f}"]
                            for name, s in scores.items()]))
    (out / "results.json").write_text(json.dumps({"speed": rates, "accuracy": scores}, indent=2))


if __name__ == "__main__":
    main()
