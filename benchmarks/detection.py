"""SPEC 004's claim on the built-in steel defects: FCOS against FCOS + TGFS against YOLOv5n, same data, size and epochs.

    python benchmarks/detection.py [--seeds 0,1,2] [--epochs 12] [--image-size 128] [--count 240]
                                   [--methods fcos,tgfs,yolov5n] [--out runs/detection-benchmark]

Data: ``synthetic_defects`` (NEU-DET style, six classes, boxes over the first three FPN levels)
with a fixed seed and a fixed 70/15/15 split (``data.seed`` = 0); only the training seed
changes between repeats. Each method is one ``defectlab.train`` run per seed with the same
image size, batch, epochs and augmentation: FCOS (ResNet-18 + FPN) with torchvision's assigner,
the same with TGFS, and ultralytics' YOLOv5n (the ``yolov5`` backbone, trained by ultralytics'
own trainer; it needs the ``defectlab[yolo]`` extra, and is left out with a note without it).
Every method takes one optimiser step per batch: the yolov5 plugin sets ultralytics' nominal
batch ``nbs`` to the batch size (ultralytics' own 64 would accumulate 8 batches per step).
The test split is scored by the one ``detection`` evaluator: mAP@0.5, mAP@0.5:0.95 and AP for
small/medium/large boxes (COCO areas in pixels of the network's input), mean +- std over the
seeds, with each run's training time (CPU-minutes of this process, and wall minutes).
Finished runs are kept and not repeated when the script is run again with the same --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path
from typing import Any

import defectlab as dl
from seeded_runs import summary, timed_train

SCORES = ("map_50", "map", "map_small", "map_medium", "map_large")
METHODS: dict[str, dict[str, Any]] = {
    "fcos": {"name": "fcos", "depth": 18, "assigner": "fcos"},
    "tgfs": {"name": "fcos", "depth": 18, "assigner": "tgfs"},
    "yolov5n": {"name": "yolov5", "size": "n"},
}


def config(method: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One run's config: the shared data and training settings, the method's model, the seed."""
    train = {"epochs": args.epochs, "seed": seed, "progress": False, "warmup_epochs": 1, "lr": args.lr,
             "optimizer": "adamw", "weight_decay": 1e-4, "monitor": "val/map_50"}
    if method != "yolov5n":
        train["clip_grad_norm"] = 10.0
    return {"data": {"dataset": {"name": "synthetic_defects", "count": args.count, "size": args.image_size,
                                 "seed": 0},
                     "image_size": args.image_size, "channels": 1 if method != "yolov5n" else 3,
                     "batch_size": args.batch, "augment": ["flip"], "split": [0.7, 0.15, 0.15], "seed": 0},
            "model": dict(METHODS[method]), "evaluators": [{"name": "detection"}], "train": train}


def run_once(method: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The scores and cost of one (method, seed), from its finished run if there is one."""
    folder = args.out / f"{method}-seed{seed}"
    cost = timed_train(config(method, args, seed), folder)
    scores = json.loads((folder / "run.json").read_text())["evaluation"]["scores"]
    return {**{k: scores.get(k, float("nan")) for k in SCORES}, **cost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/detection-benchmark"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--count", type=int, default=240)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--methods", default="fcos,tgfs,yolov5n")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if "yolov5n" in methods and importlib.util.find_spec("ultralytics") is None:
        print('yolov5n left out: ultralytics is not installed (pip install "defectlab[yolo]")')
        methods.remove("yolov5n")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {m: [run_once(m, args, s) for s in seeds] for m in methods}
    rows = []
    for method, runs in results.items():
        rows.append([method, *(summary([r[k] for r in runs]) for k in SCORES),
                     f"{statistics.mean(r['cpu_minutes'] for r in runs):.1f}",
                     f"{statistics.mean(r['wall_minutes'] for r in runs):.1f}"])
    print(f"synthetic_defects ({args.count} images, {args.image_size} px), {args.epochs} epochs, seeds {seeds}; "
          f"test split, % (mean +- std)")
    print(dl.format_table(["method", "mAP@0.5", "mAP@0.5:0.95", "AP small", "AP medium", "AP large",
                           "CPU-min/run", "wall-min/run"], rows))
    (args.out / "detection.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
