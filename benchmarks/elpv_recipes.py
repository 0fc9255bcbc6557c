"""The shipped ELPV recipes: chosen on a validation split of the training cells, then scored on the test split.

    python benchmarks/elpv_recipes.py --recipe 4class --select [--candidates A,B] [--set KEY=VALUE] [--out DIR]
    python benchmarks/elpv_recipes.py --recipe 4class [--seeds 0,1,2] [--set train.epochs=40] [--out DIR]
    python benchmarks/elpv_recipes.py --recipe 4class --posthoc cross-entropy [--out DIR]

A recipe is ``examples/elpv-<recipe>-best.toml`` as shipped: ELPV's stratified 75/25 split (seed
0: 1,968 training and 656 test cells), from random initialisation, within 60 CPU-minutes on
this machine's cores (every process counted: ``time.process_time()`` plus reaped children).

``--select`` trains the recipe with each candidate change (CANDIDATES) on 80 % of the 1,968
training cells and scores it on the other 20 % (a ``csv_index`` dataset of the training cells
alone, as benchmarks/elpv.py --select makes it): replacing ``data.dataset`` is the only change
to the recipe, and the test cells play no part. The validation accuracy after each epoch is
drawn against the CPU-minutes spent (``accuracy-vs-cpu.png``).

``--posthoc CANDIDATE`` reads a finished selection run's validation predictions and sweeps a
post-hoc logit adjustment (Menon et al. 2021): the prediction is argmax_c log p_c − τ·log π_c,
π the class shares of the run's training split, for τ from 0 (the run as it is) to 1.

Without ``--select`` the recipe trains once per seed (``train.seed``; the split stays the
protocol's) and the test split is scored once, at the end: accuracy, balanced accuracy,
macro-F1, per-class F1 and the confusion matrix, mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import defectlab as dl
from defectlab import format_table
from elpv import cpu_seconds, validation_csv
from seeded_runs import summary

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: Candidate changes tried by --select: overrides as on the command line.
CANDIDATES: dict[str, list[str]] = {
    "recipe": [],
    "cross-entropy": ['loss={name = "cross_entropy", label_smoothing = 0.1}'],
    "no mixup": ["train.mixup=false"],
    "no ema": ["train.ema=false"],
    "no tta": ["train.tta=none"],
    "160 px": ["data.image_size=160"],
    "per-image normalisation": ['data.normalize="image"'],
    "per-image without mixup": ['data.normalize="image"', "train.mixup=false"],
    "flips only": ['data.augment=["flip"]', 'train.tta="flips"'],  # busbars stay horizontal, as in every cell
    "lr 5e-4": ["train.lr=5e-4"],
    "regnetx_002 256 px": ['model={name = "timm", model_name = "regnetx_002", in_chans = 1, head_dropout = 0.2}',
                           "data.image_size=256"],
    "regnetx_004 224 px": ['model={name = "timm", model_name = "regnetx_004", in_chans = 1, head_dropout = 0.2}',
                           "data.image_size=224"],
}


class CpuClock(dl.Callback):
    """The process's CPU-minutes at the end of every epoch, beside that epoch's validation accuracy."""

    def __init__(self) -> None:
        self.start, self.points = cpu_seconds(), []

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if "val/accuracy" in record:
            self.points.append(((cpu_seconds() - self.start) / 60, record["val/accuracy"]))


def recipe(name: str) -> dict[str, Any]:
    from defectlab.plugin_system.config import load_toml

    return load_toml(EXAMPLES / f"elpv-{name}-best.toml")


def trained(config: dict[str, Any], overrides: list[str], folder: Path) -> dict[str, Any]:
    """Train into ``folder`` (kept when it has finished); test or val scores, details and CPU-minutes."""
    done = folder / "benchmark.json"
    if not done.is_file():
        clock, cpu, wall = CpuClock(), cpu_seconds(), time.perf_counter()
        run = dl.train(config, out=folder, overrides=overrides, callbacks=[clock], overwrite=True)
        evaluation = run.evaluation
        done.write_text(json.dumps({
            "split": evaluation["split"], "scores": evaluation["scores"],
            "details": evaluation["details"].get("classification", {}), "cpu_min": (cpu_seconds() - cpu) / 60,
            "wall_min": (time.perf_counter() - wall) / 60, "curve": clock.points}))
    return json.loads(done.read_text())


def per_class_f1(result: dict[str, Any]) -> str:
    return " ".join(f"{row['class']}:{row['f1']:.2f}" for row in result["details"]["per_class"])


def select(name: str, candidates: list[str], overrides: list[str], out: Path) -> None:
    dataset, n_train, n_val = validation_csv(name, out)
    results = {}
    for candidate in candidates:
        config = recipe(name)
        config["data"]["dataset"] = dataset
        config["train"]["eval_every"] = 1
        results[candidate] = trained(config, [*overrides, *CANDIDATES[candidate]], out / candidate.replace(" ", "-"))
        scores = results[candidate]["scores"]
        print(f"{candidate}: val accuracy {scores['accuracy']:.2%}, macro-F1 {scores['macro_f1']:.3f}",
              file=sys.stderr, flush=True)
    print(f"{name}: selection on {n_train} training / {n_val} validation cells (the test split is not used)")
    print(format_table(["candidate", "val accuracy", "balanced", "macro-F1", "per-class F1", "CPU-min"],
                       [[c, f"{r['scores']['accuracy']:.2%}", f"{r['scores']['balanced_accuracy']:.2%}",
                         f"{r['scores']['macro_f1']:.3f}", per_class_f1(r), f"{r['cpu_min']:.1f}"]
                        for c, r in results.items()]))
    plot_curves(results, out / "accuracy-vs-cpu.png", f"ELPV {name}: validation accuracy against CPU-minutes")


def plot_curves(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    from defectlab.plugin_system.plotting import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, result in results.items():
        if result["curve"]:
            minutes, accuracy = zip(*result["curve"])
            axes.plot(minutes, [100 * a for a in accuracy], marker=".", label=label)
    axes.set(xlabel="CPU-minutes", ylabel="validation accuracy (%)", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)
    print(f"picture: {path}")


def final(name: str, seeds: list[int], overrides: list[str], out: Path) -> None:
    results = [trained(recipe(name), [*overrides, f"train.seed={seed}"], out / f"seed{seed}") for seed in seeds]

    def spread(key: str, scale: float = 100, digits: int = 2) -> str:
        return summary([r["scores"][key] for r in results], scale, digits)

    classes = results[0]["details"]["classes"]
    split = ("the split of --set data.dataset" if any(o.startswith("data.dataset=") for o in overrides)
             else "75/25 split (seed 0)")
    print(f"ELPV {name}, {split}, test split, seeds {','.join(map(str, seeds))}"
          + (f", overrides {' '.join(overrides)}" if overrides else ""))
    print(format_table(["seed", "accuracy", "balanced", "macro-F1", "per-class F1", "CPU-min", "wall min"],
                       [[s, f"{r['scores']['accuracy']:.2%}", f"{r['scores']['balanced_accuracy']:.2%}",
                         f"{r['scores']['macro_f1']:.3f}", per_class_f1(r), f"{r['cpu_min']:.1f}",
                         f"{r['wall_min']:.1f}"] for s, r in zip(seeds, results)]))
    print(f"mean +- std: accuracy {spread('accuracy')} %, balanced {spread('balanced_accuracy')} %, macro-F1 "
          f"{spread('macro_f1', 1, 3)}")
    f1 = {c: [r["details"]["per_class"][i]["f1"] for r in results] for i, c in enumerate(classes)}
    print("per-class F1 (mean): " + ", ".join(f"{c} {statistics.mean(v):.3f}" for c, v in f1.items()))
    total = [[sum(r["details"]["confusion_matrix"][i][j] for r in results) for j in range(len(classes))]
             for i in range(len(classes))]
    print(f"confusion matrix, summed over the seeds (rows: true {', '.join(classes)}; columns: predicted)")
    print(format_table(["true \\ predicted", *classes], [[c, *row] for c, row in zip(classes, total)]))


def posthoc(candidate: str, out: Path) -> None:
    import numpy as np
    import torch

    folder = out / candidate.replace(" ", "-")
    if not (folder / "benchmark.json").is_file():
        raise SystemExit(f"{folder} has not finished; run --select --candidates '{candidate}' first")
    with (folder / "splits.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    classes = json.loads((folder / "benchmark.json").read_text())["details"]["classes"]
    truth = {row["key"]: classes.index(row["label"]) for row in rows if row["split"] == "val"}
    counts = np.array([sum(row["split"] == "train" and row["label"] == c for row in rows) for c in classes], float)
    predictions = dl.predict(folder, list(truth), out / f"{folder.name}-val-predictions.csv", overwrite=True)
    with predictions.csv.open(newline="", encoding="utf-8") as handle:
        predicted = list(csv.DictReader(handle))
    log_p = np.log(np.array([[float(row[f"p_{c}"]) for c in classes] for row in predicted]) + 1e-12)
    y = np.array([truth[row["path"]] for row in predicted])
    table = []
    for tau in (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0):
        evaluator = dl.create("evaluator", "classification")  # the engine's scores, of the adjusted logits
        evaluator.setup(classes=classes, class_counts=counts.astype(int).tolist())
        evaluator.update(torch.from_numpy(log_p - tau * np.log(counts / counts.sum())), torch.from_numpy(y))
        result = {"scores": evaluator.compute(), "details": evaluator.details()}
        table.append([f"{tau:.1f}", f"{result['scores']['accuracy']:.2%}", f"{result['scores']['balanced_accuracy']:.2%}",
                      f"{result['scores']['macro_f1']:.3f}", per_class_f1(result)])
    print(f"{candidate}: post-hoc logit adjustment on {len(y)} validation cells (the test split is not used)")
    print(format_table(["tau", "val accuracy", "balanced", "macro-F1", "per-class F1"], table))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=["4class", "binary"], required=True)
    parser.add_argument("--select", action="store_true", help="compare CANDIDATES on a validation split")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, for --select")
    parser.add_argument("--posthoc", metavar="CANDIDATE", help="sweep a post-hoc logit adjustment on its run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for the recipe")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out or f"runs/bench-elpv-recipes/{args.recipe}")
    out.mkdir(parents=True, exist_ok=True)
    if args.posthoc:
        posthoc(args.posthoc, out / "select")
    elif args.select:
        unknown = [c for c in args.candidates.split(",") if c not in CANDIDATES]
        if unknown:
            parser.error(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)}")
        select(args.recipe, args.candidates.split(","), args.overrides, out / "select")
    else:
        final(args.recipe, [int(s) for s in args.seeds.split(",")], args.overrides, out / "test")


if __name__ == "__main__":
    main()
