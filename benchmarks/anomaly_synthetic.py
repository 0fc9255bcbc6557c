"""Anomaly maps against known masks: patchcore and padim on ``synthetic_cracks``, pixel AUROC and PRO.

    python benchmarks/anomaly_synthetic.py [--count 200] [--size 128] [--contrast 0.3] [--seeds 0,1,2]
                                           [--methods patchcore,padim] [--out runs/anomaly-synthetic]

``synthetic_cracks`` draws each crack's mask exactly, so the maps can be scored pixel by pixel.
Half the cells are cracked (``defect_fraction`` 0.5); the format's own split (70/15/15 by index)
puts the cracked training cells into test, so every model is fitted on the crack-free training
cells alone. Each method reads a randomly initialised ResNet-18 (no ImageNet weights can be
downloaded here; see docs/anomaly.md); the dataset's seed changes between repeats. Scores on the
test split: image AUROC, pixel AUROC, PRO (area up to FPR 0.3, normalised) and the best F1, mean
+- std over the seeds, and the fit's seconds. Finished runs are kept and not repeated.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import defectlab as dl
from seeded_runs import summary

SCORES = ("image_auroc", "pixel_auroc", "pro", "f1")


def run_once(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = args.out / f"{method}-seed{seed}"
    if not (folder / "run.json").is_file() or dl.Run(folder).status.get("status") != "finished":
        dataset = {"name": "synthetic_cracks", "count": args.count, "size": args.size, "contrast": args.contrast,
                   "defect_fraction": 0.5, "seed": seed}
        dl.train({"data": {"dataset": dataset, "image_size": args.size, "channels": 3, "batch_size": 16},
                  "model": {"name": method}, "train": {"progress": False}}, out=folder, overwrite=True)
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
    scores = dl.Run(folder).scores
    return {**{k: scores.get(k, float("nan")) for k in SCORES}, "fit_seconds": record["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/anomaly-synthetic"))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--contrast", type=float, default=0.3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="patchcore,padim")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {m: [run_once(m, s, args) for s in seeds] for m in args.methods.split(",")}
    rows = [[method, *(summary([r[k] for r in runs]) for k in SCORES),
             f"{statistics.median(r['fit_seconds'] for r in runs):.0f}"] for method, runs in results.items()]
    print(f"synthetic_cracks ({args.count} cells, {args.size} px, contrast {args.contrast}), seeds {seeds}; "
          f"test split, % (mean +- std)")
    print(dl.format_table(["method", "image AUROC", "pixel AUROC", "PRO", "F1", "fit s (median)"], rows))
    (args.out / "anomaly_synthetic.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
