"""Few labels on ELPV: does self-supervised pretraining on the training cells beat training from scratch?

Two protocols, both on ELPV's 4 classes and its 75/25 split:

    python benchmarks/ssl_elpv.py                        # the shipped 4-class recipe, scratch vs DINO
    python benchmarks/ssl_elpv.py --protocol vit-tiny    # SPEC 002's ViT-Tiny sweep (hours of CPU time)
    python benchmarks/ssl_elpv.py --protocol vit-tiny --quick   # one seed, a few epochs

``recipe`` (the default): DINO pretrains the ResNet-18 of examples/elpv-4class-best.toml
(examples/elpv-dino-resnet18.toml: the same 128 px cells, per-image normalisation, the same 75/25
split with seed 0, so the test cells are never trained on and no label is read). Then
examples/elpv-4class-best.toml, unchanged but for ``data.label_fraction`` (a stratified share of
the training labels, the same cells for every seed) and ``train.seed``, trains once per fraction,
seed and initialisation: from scratch, and from the DINO encoder (``train.init_from``). Scores on
the 656 test cells, mean +- std over the seeds, the gain of DINO per seed, and CPU-minutes.

``vit-tiny``: SPEC 002's protocol on its own encoder.

1. Pretrain MAE and DINO (examples/elpv-*-vit-tiny.toml) on the training cells only: the data
   module splits the pretraining images as the downstream runs do (75/25, seed 0), so the test
   cells are never trained on, and their labels are never read.
2. For every seed, one `dl.sweep` of examples/elpv-vit-tiny-downstream.toml over the label
   fractions x {scratch, MAE, DINO} x {linear probe, fine-tune}; `train.seed` changes with the
   seed, the split and the label subsets stay fixed (`data.seed` = 0).
3. Balanced accuracy and macro-F1 on the 656 test cells, mean +- std over the seeds, and the
   CPU-minutes each part took, as a table and ssl_elpv.json in --out.

Finished runs are kept and reused when the script runs again with the same --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import defectlab as dl
from elpv_recipes import recipe, trained
from seeded_runs import summary, timed_train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCORES = ("balanced_accuracy", "macro_f1", "accuracy")


def cpu_minutes(since: float) -> float:
    return (time.process_time() - since) / 60


def pretrain(name: str, args: argparse.Namespace) -> tuple[Path, float]:
    """The pretraining run of objective ``name`` (kept if it finished before) and its CPU-minutes."""
    folder = args.out / name
    started = time.process_time()
    if not (folder / "encoder.pt").is_file():
        overrides = [f"train.epochs={args.pretrain_epochs}", f"data.image_size={args.image_size}",
                     "train.progress=false", f"train.warmup_epochs={max(1, args.pretrain_epochs // 10)}"]
        if name == "mae":
            overrides.append("pretrain.picture_every=0")
        else:
            overrides += [f"ssl.{setting}" for setting in args.dino.split(",") if setting]
        dl.pretrain(EXAMPLES / f"elpv-{name}-vit-tiny.toml", out=folder, overrides=overrides,
                    overwrite=True)
    return folder, cpu_minutes(started)


def pretrained_resnet(args: argparse.Namespace) -> tuple[Path, float]:
    """The DINO ResNet-18 of the recipe protocol (kept once finished) and its CPU-minutes."""
    from defectlab.plugin_system.config import load_toml

    config = load_toml(EXAMPLES / "elpv-dino-resnet18.toml")
    config["train"]["progress"] = False
    if args.pretrain_epochs:
        config["train"]["epochs"] = args.pretrain_epochs
    folder = args.out / "dino-resnet18"
    return folder, timed_train(config, folder)["cpu_minutes"]  # a config with [ssl] trains as a pretraining


def recipe_protocol(args: argparse.Namespace) -> None:
    """Scratch against DINO initialisation of the 4-class recipe at each label fraction."""
    encoder, pretrain_cost = pretrained_resnet(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    inits = {"scratch": [], "dino": [f"train.init_from={encoder}"]}
    extra = [f"train.epochs={args.epochs}"] if args.epochs else []
    rows, gains, report = [], [], []
    for fraction in args.fractions.split(","):
        results = {init: [trained(recipe("4class"),
                                  [f"data.label_fraction={fraction}", f"train.seed={seed}", *extra, *init_override],
                                  args.out / f"labels-{fraction}" / init / f"seed{seed}") for seed in seeds]
                   for init, init_override in inits.items()}
        for init, runs in results.items():
            scores = {s: [r["scores"][s] for r in runs] for s in SCORES}
            f1 = [statistics.mean(r["details"]["per_class"][c]["f1"] for r in runs)
                  for c in range(len(runs[0]["details"]["classes"]))]
            rows.append([f"{float(fraction):.0%}", init, *(summary(scores[s]) for s in SCORES),
                         " ".join(f"{v:.2f}" for v in f1), f"{statistics.mean(r['cpu_min'] for r in runs):.1f}"])
            report.append({"labels": fraction, "init": init, **scores, "per_class_f1": f1,
                           "cpu_minutes": [r["cpu_min"] for r in runs]})
        gain = [100 * (d["scores"]["balanced_accuracy"] - s["scores"]["balanced_accuracy"])
                for d, s in zip(results["dino"], results["scratch"])]
        gains.append([f"{float(fraction):.0%}", " ".join(f"{g:+.1f}" for g in gain),
                      f"{statistics.mean(gain):+.1f}"])
    print(f"ELPV 4-class recipe, test split, seeds {args.seeds}; "
          f"DINO ResNet-18 pretrained in {pretrain_cost:.1f} CPU-min")
    print(dl.format_table(["labels", "init", *(f"{s} %" for s in SCORES), "per-class F1", "CPU-min/run"], rows))
    print()
    print(dl.format_table(["labels", "DINO - scratch, balanced accuracy points, per seed", "mean"], gains))
    (args.out / args.summary).write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "pretrain_cpu_minutes": pretrain_cost,
         "results": report}, indent=2))


def vit_protocol(args: argparse.Namespace) -> None:
    """MAE and DINO ViT-Tiny against scratch, linear probe and fine-tuning, at each label fraction."""
    seeds = [int(s) for s in args.seeds.split(",")]
    cost = {}
    encoders = {}
    for name in ("mae", "dino"):
        encoders[name], cost[f"pretrain {name}"] = pretrain(name, args)
    results: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    started = time.process_time()
    for seed in seeds:
        grid = {"data.label_fraction": [float(f) for f in args.fractions.split(",")],
                "train.init_from": ["none", str(encoders["mae"]), str(encoders["dino"])],
                "train.linear_probe": [True, False]}
        sweep = dl.sweep(EXAMPLES / "elpv-vit-tiny-downstream.toml", grid, out=args.out / f"sweep-seed-{seed}",
                         overrides=[f"train.seed={seed}", f"train.epochs={args.epochs}",
                                    f"train.warmup_epochs={min(5, args.epochs - 1)}",
                                    f"data.image_size={args.image_size}", "train.progress=false"])
        for run, settings in zip(sweep.runs, sweep.settings):
            init = Path(str(settings["train.init_from"])).name if settings["train.init_from"] != "none" else "scratch"
            key = (f"{settings['data.label_fraction']:g}", init,
                   "linear probe" if settings["train.linear_probe"] else "fine-tune")
            for score in SCORES:
                results.setdefault(key, {}).setdefault(score, []).append(run.scores[score])
    cost["downstream (all seeds)"] = cpu_minutes(started)

    rows = [[*key, *(summary(scores[s]) for s in SCORES)] for key, scores in sorted(results.items())]
    print(dl.format_table(["labels", "init", "protocol", *(f"{s} %" for s in SCORES)], rows))
    print()
    print(dl.format_table(["part", "CPU-minutes"], [[k, f"{v:.1f}"] for k, v in cost.items()]))
    (args.out / args.summary).write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "cpu_minutes": cost,
         "results": [{"labels": k[0], "init": k[1], "protocol": k[2], **v} for k, v in sorted(results.items())]},
        indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["recipe", "vit-tiny"], default="recipe")
    parser.add_argument("--out", type=Path, default=None, help="runs/ssl-<protocol> by default")
    parser.add_argument("--image-size", type=int, default=64, help="vit-tiny only")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="default: the pretraining config's (recipe), 30 (vit-tiny)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="downstream epochs; default: the recipe's, 15 (vit-tiny)")
    parser.add_argument("--fractions", default=None, help="default 0.1,0.2 (recipe), 0.05,0.1,0.2,1 (vit-tiny)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--summary", default="ssl_elpv.json", help="file name of the results in --out")
    parser.add_argument("--dino", default="",
                        help="vit-tiny: extra ssl settings for DINO, e.g. local_crops=2,out_dim=2048")
    parser.add_argument("--quick", action="store_true",
                        help="vit-tiny: one seed, fractions 0.1 and 0.2, 3 pretraining and 4 downstream epochs, "
                             "a smaller DINO")
    args = parser.parse_args()
    args.out = args.out or Path(f"runs/ssl-{args.protocol}")
    if args.protocol == "recipe":
        args.fractions = args.fractions or "0.1,0.2"
        recipe_protocol(args)
        return
    args.pretrain_epochs, args.epochs = args.pretrain_epochs or 30, args.epochs or 15
    args.fractions = args.fractions or "0.05,0.1,0.2,1"
    if args.quick:
        args.pretrain_epochs, args.epochs, args.fractions, args.seeds = 3, 4, "0.1,0.2", "0"
        args.dino = args.dino or "local_crops=2,out_dim=2048"
    vit_protocol(args)


if __name__ == "__main__":
    main()
