"""SPEC 002's label-efficiency protocol on ELPV (4 classes, its 75/25 split): does self-supervised
initialisation beat training from scratch when labels are few?

    python benchmarks/ssl_elpv.py                       # the full protocol (hours of CPU time)
    python benchmarks/ssl_elpv.py --quick               # one seed, 10 % and 100 %, a few epochs

1. Pretrain MAE and DINO (examples/elpv-*-vit-tiny.toml) on the training cells only: the data
   module splits the pretraining images as the downstream runs do (75/25, seed 0), so the test
   cells are never trained on, and their labels are never read.
2. For every seed, one `dl.sweep` of examples/elpv-vit-tiny-downstream.toml over the label
   fractions x {scratch, MAE, DINO} x {linear probe, fine-tune}; `train.seed` changes with the
   seed, the split and the label subsets stay fixed (`data.seed` = 0).
3. Balanced accuracy and macro-F1 on the 656 test cells, mean +- std over the seeds, and the
   CPU-minutes each part took, as a table and ssl_elpv.json in --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import defectlab as dl
from seeded_runs import summary

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ssl-elpv"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15, help="downstream epochs")
    parser.add_argument("--fractions", default="0.05,0.1,0.2,1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--summary", default="ssl_elpv.json", help="file name of the results in --out")
    parser.add_argument("--dino", default="", help="extra ssl settings for DINO, e.g. local_crops=2,out_dim=2048")
    parser.add_argument("--quick", action="store_true",
                        help="one seed, fractions 0.1 and 0.2, 3 pretraining and 4 downstream epochs, a smaller DINO")
    args = parser.parse_args()
    if args.quick:
        args.pretrain_epochs, args.epochs, args.fractions, args.seeds = 3, 4, "0.1,0.2", "0"
        args.dino = args.dino or "local_crops=2,out_dim=2048"
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


if __name__ == "__main__":
    main()
