"""Tail-class synthesis in feature space against class-weighted cross-entropy and oversampling, on ELPV 4-class.

    OMP_NUM_THREADS=1 python benchmarks/tail_synthesis.py [--seeds 0,1,2] [--epochs 8] [--image-size 64]
        [--methods weighted,oversample,synthesis] [--out runs/tail-synthesis-benchmark]

Data: ELPV's four classes ('0', '1/3', '2/3', '1'; the 2/3 class holds 106 of the 2,624 cells),
the stratified 75/25 train/test split of benchmarks/elpv.py with ``data.seed`` = 0 for every
run; only the training seed changes between repeats. Every method trains the same ResNet-18
(one input channel, GeM pooling, head dropout 0.2, random initialisation) on grey cells at
``--image-size`` with flip/rotate/contrast augmentation, AdamW (lr 1e-3, wd 0.05), a cosine
schedule after one warm-up epoch, and cross-entropy with label smoothing 0.1. They differ in
one setting each:

* ``weighted``: ``loss.class_weights = "inverse_frequency"``;
* ``oversample``: ``data.balance = "oversample"`` (plain cross-entropy);
* ``synthesis``: ``train.tail_synthesis`` with the two rarest classes (1/3 and 2/3) as tail and the
  other settings at their defaults (plain cross-entropy);
* ``synthesis-share1``: the same with ``share = 1`` (as many virtual samples as real ones);
* ``plain``: none of them.

The last two are run only when named in ``--methods``.

As in benchmarks/elpv.py there is no validation split: best.pt is the epoch of lowest training
loss, and the test split is scored with it; last.pt (the last epoch) is scored too, since a loss
on virtual or resampled samples is not the plain training loss. Reported: macro-F1, the 2/3
class's F1 and recall and accuracy on the test split (mean +- std over the seeds), and each
run's CPU and wall minutes of training.
Finished runs are kept and not repeated when the script is run again with the same --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import defectlab as dl
from seeded_runs import summary, timed_train

SCORES = {"macro-F1": "macro_f1", "F1 2/3": "f1/2/3", "recall 2/3": "recall/2/3", "accuracy": "accuracy"}
#: What each method changes in the shared config: (section, setting, value).
METHODS: dict[str, tuple[str, str, Any] | None] = {
    "weighted": ("loss", "class_weights", "inverse_frequency"),
    "oversample": ("data", "balance", "oversample"),
    "synthesis": ("train", "tail_synthesis", {"rarest": 2}),
    "synthesis-share1": ("train", "tail_synthesis", {"rarest": 2, "share": 1.0}),
    "plain": None,
}


def config(method: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One run's config: ELPV 4-class at 75/25 (data seed 0), the shared model and training, the method's change."""
    values: dict[str, Any] = {
        "data": {"dataset": {"name": "elpv"}, "split": [0.75, 0.25], "seed": 0, "image_size": args.image_size,
                 "batch_size": 32, "augment": ["flip", "rotate", "contrast"], "workers": 0},
        "model": {"name": "resnet18", "in_chans": 1, "pooling": "gem", "head_dropout": 0.2},
        "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
        "evaluators": [{"name": "classification"}],
        "train": {"epochs": args.epochs, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
                  "schedule": "cosine", "warmup_epochs": min(1, args.epochs - 1), "min_lr": 1e-5,
                  "device": "cpu", "progress": False, "seed": seed},
    }
    change = METHODS[method]
    if change is not None:
        section, key, value = change
        values[section][key] = value
    return values


def run_once(method: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The test scores and cost of one (method, seed), from its finished run if there is one."""
    folder = args.out / f"{method}-seed{seed}"
    cost = timed_train(config(method, args, seed), folder)
    last = folder / "eval-last" / "metrics.json"
    if not last.is_file():
        dl.evaluate_run(folder, which="last", out=last.parent, overwrite=True)
    status = json.loads((folder / "run.json").read_text())
    return {"best": {key: status["evaluation"]["scores"][key] for key in SCORES.values()},
            "last": {key: json.loads(last.read_text())["scores"][key] for key in SCORES.values()},
            "best_epoch": status["best"]["epoch"], **cost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tail-synthesis-benchmark"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--methods", default="weighted,oversample,synthesis",
                        help=f"comma-separated, from {', '.join(METHODS)}")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {m: [run_once(m, args, s) for s in seeds] for m in methods}
    print(f"ELPV 4-class, 75/25 split (data seed 0), ResNet-18 at {args.image_size} px, {args.epochs} epochs, "
          f"seeds {seeds}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; test split, % (mean +- std)")
    for checkpoint, title in (("best", "best.pt (lowest training loss, as benchmarks/elpv.py)"),
                              ("last", f"last.pt (epoch {args.epochs})")):
        rows = [[method, *(summary([r[checkpoint][key] for r in runs]) for key in SCORES.values()),
                 "/".join(str(r["best_epoch"]) for r in runs),
                 f"{statistics.mean(r['cpu_minutes'] for r in runs):.1f}",
                 f"{statistics.mean(r['wall_minutes'] for r in runs):.1f}"] for method, runs in results.items()]
        print(f"\n{title}")
        print(dl.format_table(["method", *SCORES, "best epochs", "CPU-min/run", "wall-min/run"], rows))
    (args.out / "tail_synthesis.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
