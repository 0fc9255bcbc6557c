"""Train U-Net on synthetic cracks once per segmentation loss of Yi et al. 2022 and compare them
(their Table 4 style; docs/references.md).

    python examples/compare_losses.py --quick                 # 12 tiny runs, about a minute or two on a CPU
    python examples/compare_losses.py --epochs 20 --count 200 --size 128 --out runs/compare-losses
    python examples/compare_losses.py --losses tversky,dibe_reg,dibe --epochs 10

Every loss trains the same U-Net (ResNet-18 encoder, grey input, random initialisation) on
the same images, split and seed with the paper's optimiser (SGD lr 0.01, momentum 0.9) and its
§4.3.2 loss defaults (each loss's own defaults in defectlab). The test split's IoU, PA, recall,
Dice and OII of each run's best epoch (by validation IoU) are printed as a table, and one
report.html with the table and every run's curves is written into --out/comparison (each run
has its own folder in --out).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import defectlab as dl
from defectlab import format_table

LOSSES = ("bce", "wbce", "focal", "dice", "tversky", "focal_tversky", "combo", "exp_log", "hybrid_focal",
          "dibe_dis", "dibe_reg", "dibe")
QUICK = {"epochs": 3, "count": 60, "size": 32, "defect_ratio": 0.02, "contrast": 0.3}


def crack_config(loss: str, args: argparse.Namespace) -> dict:
    """The training config of one loss: everything but the loss is the same for every run."""
    return {
        "data": {"dataset": {"name": "synthetic_cracks", "count": args.count, "size": args.size,
                             "defect_ratio": args.defect_ratio, "contrast": args.contrast, "seed": args.seed},
                 "image_size": args.size, "channels": 1, "batch_size": args.batch_size,
                 "augment": ["flip", "contrast", "brightness"]},
        "model": {"name": "unet", "encoder": "resnet18", "in_chans": 1},
        "loss": {"name": loss},
        "evaluators": [{"name": "segmentation"}],
        "train": {"epochs": args.epochs, "optimizer": "sgd", "lr": args.lr, "momentum": 0.9, "weight_decay": 1e-4,
                  "schedule": "constant", "eval_every": args.eval_every, "monitor": "val/iou", "seed": args.seed,
                  "progress": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a small smoke run: {', '.join(f'{k} {v}' for k, v in QUICK.items())} unless given")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated loss names (default: all 12)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--count", type=int, default=200, help="images in all (70/15/15 train/val/test)")
    parser.add_argument("--size", type=int, default=128, help="side of the square images")
    parser.add_argument("--defect-ratio", type=float, default=0.002, help="defect:background pixels per cracked image")
    parser.add_argument("--contrast", type=float, default=0.15, help="how much darker crack pixels are (relative)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/compare-losses"))
    args = parser.parse_args()
    if args.quick:  # the small settings, except those given on the command line
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    for name in losses:
        dl.get_component("loss", name)  # an unknown name fails here, before any training

    print(f"U-Net/resnet18 on synthetic_cracks: {args.count} images of {args.size}x{args.size}, defect ratio "
          f"{args.defect_ratio:g}, contrast {args.contrast:g}; {args.epochs} epochs, SGD lr {args.lr:g} momentum 0.9, "
          f"batch {args.batch_size}, seed {args.seed}")
    runs, rows = [], []
    for name in losses:
        started = time.perf_counter()
        run = dl.train(crack_config(name, args), out=args.out / name)
        runs.append(run)
        rows.append({"loss": name, **{k: run.scores.get(k) for k in ("iou", "pa", "recall", "dice", "oii")},
                     "best epoch": (run.status.get("best") or {}).get("epoch"),
                     "seconds": f"{time.perf_counter() - started:.1f}"})
        print(f"{name}: test IoU {run.scores['iou']:.4f}, OII {run.scores['oii']:.4f}", flush=True)
    report = dl.compare_runs(runs, args.out / "comparison",
                             title="segmentation losses on synthetic cracks (U-Net)").report
    print()
    print(format_table(["loss", "iou", "pa", "recall", "dice", "oii", "best epoch", "seconds"], rows))
    best = max(rows, key=lambda r: r["iou"])
    print(f"\nhighest test IoU: {best['loss']} ({best['iou']:.4f}); report: {report}")


if __name__ == "__main__":
    try:
        main()
    except dl.DefectlabError as exc:  # a wrong name or parameter: one line, not a traceback
        sys.exit(f"error: {exc}")
