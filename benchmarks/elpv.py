"""ELPV solar cells with the paper's protocol: a ResNet-18 trained on the CPU from scratch, beside the published anchors.

    python benchmarks/elpv.py [--task 4class|binary|both] [--epochs 12] [--image-size 96] [--out DIR]
    python benchmarks/elpv.py --select [--task ...]    # how the default settings were chosen (no test split)

Protocol (Deitsch et al. 2019): all 2,624 cells (mono + poly), a stratified 75/25 train/test
split (``data.split = [0.75, 0.25]``, seed 0: 1,968 training and 656 test cells), scored on the
25 % test split. Two tasks:

* ``4class``: ``elpv``, the four expert defect probabilities 0, 1/3, 2/3 and 1 as classes;
* ``binary``: ``{"name": "elpv", "binary": True}``, functional / defective (probability >= 0.5).

The model is ``resnet18`` with ``in_chans = 1`` and GeM pooling, trained by
``defectlab.train`` with AdamW, a cosine schedule with one warm-up epoch, label smoothing,
and flip / rotate (multiples of 90 degrees) / contrast augmentation, on grey images at
``--image-size``. There is no validation split in this protocol, so best.pt is the epoch of
lowest training loss (docs/training.md) and the test split is scored once, at the end, with
it. No ImageNet weights are available offline: the model starts from random initialisation,
where both anchors fine-tuned or designed networks with other budgets (see ANCHORS).

Cost is reported as process CPU time (``time.process_time()``: every thread of this process)
plus the CPU time of reaped child processes (``resource.getrusage(RUSAGE_CHILDREN)``; none
with the default ``workers = 0``), in CPU-minutes, beside wall minutes. Other processes on
a shared machine lengthen the wall time much more than the CPU time.

The default settings (SETTINGS) were chosen with ``--select``: a few candidates trained on
80 % of the training split and scored on the other 20 % (a validation split carved from the
1,968 training cells, as a ``csv_index`` dataset); the test split plays no part in it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import defectlab as dl
from defectlab import format_table

TASKS = {"4class": "elpv", "binary": {"name": "elpv", "binary": True}}

#: The default settings (chosen with --select on a validation split of the training cells).
SETTINGS: dict[str, Any] = {
    "image_size": 96,
    "epochs": 12,
    "batch_size": 32,
    "augment": ["flip", "rotate", "contrast"],
    "lr": 1e-3,
    "weight_decay": 0.05,
    "label_smoothing": 0.1,
    "pooling": "gem",
    "head_dropout": 0.2,
    "class_weights": "none",
}

#: Candidates tried by --select: each changes SETTINGS in one way.
CANDIDATES: dict[str, dict[str, Any]] = {
    "lr 1e-3": {},
    "lr 3e-3": {"lr": 3e-3},
    "lr 3e-4": {"lr": 3e-4},
    "lr 1e-3, inverse-frequency class weights": {"class_weights": "inverse_frequency"},
}
SELECT_EPOCHS = 6  # --select trains each candidate this long unless --epochs says otherwise

ANCHORS = [
    ("Deitsch et al. 2019 (Solar Energy 185), CNN", "VGG-19 fine-tuned from ImageNet, GPU, all cells, 75/25",
     "88.42 % average accuracy", "the abstract's headline CNN figure on the test split (both cell types); "
     "later work compares against it as the functional/defective result"),
    ("Deitsch et al. 2019, SVM", "hand-crafted features + SVM, CPU, all cells, 75/25", "82.44 % average accuracy",
     "the paper's CPU approach"),
    ("Hindawi Comput. Intell. Neurosci. 2023, art. 2663150", "light CNN designed for the CPU", "83.5 % accuracy",
     "4-class (fault-level grading)"),
]


def task_config(task: str, settings: dict[str, Any], dataset: Any = None) -> dict[str, Any]:
    """The training config of ``task`` with ``settings``: ELPV split 75/25, or ``dataset`` with its own splits."""
    data: dict[str, Any] = {"dataset": TASKS[task] if dataset is None else dataset, "seed": 0,
                            "image_size": settings["image_size"], "batch_size": settings["batch_size"],
                            "augment": list(settings["augment"]), "workers": 0}
    if dataset is None:
        data["split"] = [0.75, 0.25]
    loss: dict[str, Any] = {"name": "cross_entropy", "label_smoothing": settings["label_smoothing"]}
    if settings["class_weights"] != "none":
        loss["class_weights"] = settings["class_weights"]
    return {
        "data": data,
        "model": {"name": "resnet18", "in_chans": 1, "pooling": settings["pooling"],
                  "head_dropout": settings["head_dropout"]},
        "loss": loss,
        "evaluators": [{"name": "classification"}],
        "train": {"epochs": settings["epochs"], "optimizer": "adamw", "lr": settings["lr"],
                  "weight_decay": settings["weight_decay"], "schedule": "cosine", "warmup_epochs": min(1, settings["epochs"] - 1),
                  "min_lr": settings["lr"] / 100, "device": "cpu", "progress": False, "seed": 0},
    }


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its reaped children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def train_measured(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Train ``config`` into ``folder``; its final scores, wall and CPU minutes, epochs and images/s."""
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), cpu_seconds()
    run = dl.train(config, out=folder)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    metrics = run.metrics
    return {"folder": str(folder), "scores": run.scores, "split": run.evaluation.get("split"),
            "samples": run.evaluation.get("samples"), "wall_min": wall / 60, "cpu_min": cpu / 60,
            "epochs": len(metrics), "best_epoch": run.status.get("best", {}).get("epoch"),
            "images_per_s": sorted(m["images_per_s"] for m in metrics)[len(metrics) // 2] if metrics else None,
            "load": [load_before, os.getloadavg()[0]]}


def validation_csv(task: str, folder: Path) -> tuple[dict[str, Any], int, int]:
    """A csv_index dataset of the 75/25 protocol's training cells only, split 80/20 into train/val (stratified).

    Returns the dataset spec and the numbers of train and val cells; the test cells are not in it.
    """
    from defectlab import stratified_split

    data = dl.DataModule(TASKS[task], split=(0.75, 0.25), seed=0, image_size=32, channels=1)
    cells = data.datasets["train"]
    indices = data.splits["train"]
    parts = stratified_split([cells.samples[i].label for i in indices], [0.8, 0.2], seed=1, names=["train", "val"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"elpv-{task}-train-cells.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for index, part in zip(indices, parts):
            sample = cells.samples[index]
            writer.writerow([sample.path, data.classes[sample.label], part])
    return ({"name": "csv_index", "root": str(path), "classes": list(data.classes)},
            parts.count("train"), parts.count("val"))


def select(tasks: list[str], args: argparse.Namespace, out: Path) -> None:
    """Train every candidate on 80 % of the training cells and score it on the other 20 %."""
    rows = []
    for task in tasks:
        dataset, n_train, n_val = validation_csv(task, out / "select")
        for name, change in CANDIDATES.items():
            settings = {**SETTINGS, **change, "epochs": args.epochs or SELECT_EPOCHS,
                        "image_size": args.image_size or SETTINGS["image_size"]}
            config = task_config(task, settings, dataset)
            # as in the protocol: best.pt by training loss; val scored once, at the end
            config["train"].update(monitor="train/loss", eval_every=settings["epochs"])
            folder = out / "select" / task / name.replace(" ", "-").replace(",", "")
            result = train_measured(config, folder)
            scores = result["scores"]
            rows.append([task, name, f"{n_train}/{n_val}", f"{scores['accuracy']:.2%}", f"{scores['macro_f1']:.4f}",
                         f"{result['cpu_min']:.1f}", f"{result['wall_min']:.1f}"])
            print(format_table(["task", "candidate", "train/val", "val accuracy", "val macro-F1", "CPU min",
                                "wall min"], rows[-1:]), file=sys.stderr, flush=True)
    print("selection on a validation split of the training cells (the test split is not used)")
    print(format_table(["task", "candidate", "train/val", "val accuracy", "val macro-F1", "CPU min", "wall min"],
                       rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["4class", "binary", "both"], default="both")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {SETTINGS['epochs']}")
    parser.add_argument("--image-size", type=int, default=None, help=f"default {SETTINGS['image_size']}")
    parser.add_argument("--out", default=None, help="folder for the runs (default runs/bench-elpv-<time>)")
    parser.add_argument("--select", action="store_true",
                        help="compare CANDIDATES on a validation split of the training cells instead")
    args = parser.parse_args(argv)
    tasks = ["4class", "binary"] if args.task == "both" else [args.task]
    out = Path(args.out or f"runs/bench-elpv-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    import torch

    header = (f"torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} torch "
              f"threads, {os.cpu_count()} CPUs, no GPU used (device cpu)")
    if args.select:
        print(header)
        select(tasks, args, out)
        return

    settings = {**SETTINGS, "epochs": args.epochs or SETTINGS["epochs"],
                "image_size": args.image_size or SETTINGS["image_size"]}
    results = {}
    for task in tasks:
        results[task] = train_measured(task_config(task, settings), out / task)
        result = results[task]
        print(f"{task}: accuracy {result['scores']['accuracy']:.2%}, macro-F1 {result['scores']['macro_f1']:.4f}, "
              f"{result['cpu_min']:.1f} CPU-min, {result['wall_min']:.1f} wall min", file=sys.stderr, flush=True)
    (out / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))

    print(header)
    print("ELPV, all 2,624 cells, stratified 75/25 train/test (seed 0), scored on the test split; ResNet-18 from "
          "random initialisation (no ImageNet weights offline)")
    print(f"settings: image {settings['image_size']}x{settings['image_size']} grey (in_chans 1), GeM pooling, head "
          f"dropout {settings['head_dropout']}, {settings['epochs']} epochs, batch {settings['batch_size']}, AdamW lr "
          f"{settings['lr']:g} wd {settings['weight_decay']:g}, cosine (1 warm-up epoch, min lr "
          f"{settings['lr'] / 100:g}), label smoothing {settings['label_smoothing']}, augment "
          f"{'/'.join(settings['augment'])}, class weights {settings['class_weights']}; best.pt = lowest training "
          f"loss (no validation split); settings chosen with --select on a validation split of the training cells")
    rows = []
    for task, result in results.items():
        scores = result["scores"]
        rows.append([task, result["samples"], f"{scores['accuracy']:.2%}", f"{scores['macro_f1']:.4f}",
                     f"{scores['balanced_accuracy']:.2%}", f"{result['best_epoch']}/{result['epochs']}",
                     f"{result['images_per_s']:.0f}", f"{result['cpu_min']:.1f}", f"{result['wall_min']:.1f}",
                     f"{result['load'][0]:.1f}/{result['load'][1]:.1f}"])
    print()
    print(format_table(["task", "test cells", "accuracy", "macro-F1", "balanced acc", "best/epochs",
                        "train img/s (median)", "CPU-min", "wall min", "load before/after"], rows))
    print("\nCPU-min: process CPU time of training + final evaluation + report (all threads) plus reaped children; "
          "load: 1-minute load average of the machine (other processes share the CPUs)")
    print("\npublished anchors (not re-run here; other models, pretraining and hardware)")
    print(format_table(["source", "model", "figure", "what it measures"], [list(a) for a in ANCHORS]))
    print(f"\nruns and results.json: {out}")


if __name__ == "__main__":
    main()
