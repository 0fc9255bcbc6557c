"""Anomaly detection from good cells only on ELPV (seed 001 §3): patchcore, padim and mae_recon, random or pretrained.

    python benchmarks/anomaly_elpv.py [--cells mono,poly] [--image-size 96] [--methods patchcore,padim,mae_recon]
                                      [--pretrain-epochs 10] [--dino-epochs 6] [--dino-size 64]
                                      [--out runs/anomaly-elpv]

For each cell type separately: the anomaly split of ELPV (``good_class = "0"``, split 70/30, seed
0) fits every model on the defect-free training cells; the test split holds the other defect-free
cells and every defective cell. Scored by the ``anomaly`` evaluator: image AUROC of the cells of
defect probability 1 against the good test cells (``auroc/1``), the same for 2/3 (``auroc/2/3``)
and for all defective cells. Each method runs twice: on a randomly initialised network, and on one
pretrained by ``defectlab pretrain`` on the same good training cells (labels unused, test cells
never seen): DINO for the ResNet-18 that patchcore and padim read (at --dino-size px: CPU time),
MAE for mae_recon's ViT-Tiny (at the fit's size, which its position embeddings fix). mae_recon
runs only pretrained: an untrained MAE's reconstruction is noise, and its default decoder (8 x 512)
alone costs more CPU than all the other fits together.
Costs: the fit's seconds, the memory bank's rows (patchcore), the process's peak memory (each fit
runs in its own process) and images/s at inference (batch 32, one thread). Finished steps are kept
and not repeated when the script is run again with the same --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import defectlab as dl

GOOD = "0"
SCORES = ("auroc/1", "auroc/2/3", "image_auroc")


def data_config(cells: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"dataset": {"name": "elpv", "cell_type": cells}, "good_class": GOOD, "split": [0.7, 0.3], "seed": 0,
            "image_size": args.image_size, "channels": 3, "batch_size": 32}


def good_training_cells(cells: str, args: argparse.Namespace, folder: Path) -> Path:
    """A csv_index of the good training cells: what the pretraining sees (the fit's own images)."""
    index = folder / "good-train.csv"
    if not index.is_file():
        data = dl.DataModule(**{**data_config(cells, args), "task": "anomaly"})
        train = data.datasets["train"]
        folder.mkdir(parents=True, exist_ok=True)
        with index.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows([train.samples[i].path, GOOD] for i in data.splits["train"])
    return index


def pretrained(kind: str, cells: str, args: argparse.Namespace, folder: Path) -> Path:
    """A pretraining run on the good training cells: DINO of ResNet-18, or MAE of ViT-Tiny."""
    run = folder / f"{kind}-pretrain"
    if (run / "run.json").is_file() and json.loads((run / "run.json").read_text()).get("status") == "finished":
        return run
    size = args.dino_size if kind == "dino" else args.image_size  # a CNN's weights serve any input size
    data = {"dataset": {"name": "csv_index", "root": str(good_training_cells(cells, args, folder))},
            "split": [0.9, 0.1], "image_size": size, "channels": 3, "batch_size": 32, "augment": []}
    epochs = args.dino_epochs if kind == "dino" else args.pretrain_epochs
    if kind == "dino":
        model = {"name": "resnet18"}
        ssl = {"name": "dino", "out_dim": 4096, "local_crops": 2, "local_size": size // 2, "center_momentum": 0.99}
        train = {"lr": 5e-4, "warmup_epochs": 1}
    else:
        model = {"name": "vit_tiny"}
        ssl = {"name": "mae", "mask_ratio": 0.75, "decoder_depth": 2, "decoder_width": 128, "decoder_heads": 4,
               "norm_pix_loss": True}
        train = {"lr": 1.5e-4, "warmup_epochs": 2}
    dl.pretrain({"data": data, "model": model, "ssl": ssl,
                 "train": {"epochs": epochs, "optimizer": "adamw", "weight_decay": 0.05,
                           "progress": False, "seed": 0, **train}}, out=run, overwrite=True)
    return run


def model_spec(method: str, weights: Path | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": method}
    if weights is not None:
        spec["weights"] = str(weights)
    return spec


def fit(method: str, init: str, cells: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One fit in its own process (for its peak memory), its scores and its costs."""
    run = folder / f"{method}-{init}"
    result = run / "benchmark.json"
    if not result.is_file():
        weights = None
        if init == "pretrained":
            weights = pretrained("mae" if method == "mae_recon" else "dino", cells, args, folder)
        config = {"data": data_config(cells, args), "model": model_spec(method, weights),
                  "train": {"progress": False}}
        code = ("import json, resource, sys, defectlab as dl; "
                "dl.train(json.loads(sys.argv[1]), out=sys.argv[2], overwrite=True); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        done = subprocess.run([sys.executable, "-c", code, json.dumps(config), str(run)], check=True,
                              capture_output=True, text=True)
        peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        result.write_text(json.dumps({"peak_mb": peak_mb, "fit_seconds": record["seconds"],
                                      "memory_bank": record.get("train/memory_bank"),
                                      "images_per_s": inference_speed(run, cells, args)}))
    scores = dl.Run(run).scores
    return {**{k: scores.get(k, float("nan")) for k in SCORES}, **json.loads(result.read_text())}


def inference_speed(run: Path, cells: str, args: argparse.Namespace) -> float:
    """Test images per second at batch 32 in this process (one thread), median of three passes."""
    import torch

    torch.set_num_threads(1)
    model = dl.load_trained(run).model
    data = dl.DataModule(**{**data_config(cells, args), "task": "anomaly"})
    images = torch.cat([batch["image"] for batch in data.loader("test")])[:96]
    speeds = []
    for _ in range(3):
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(images), 32):
                model(images[start:start + 32])
        speeds.append(len(images) / (time.perf_counter() - started))
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/anomaly-elpv"))
    parser.add_argument("--cells", default="mono,poly")
    parser.add_argument("--methods", default="patchcore,padim,mae_recon")
    parser.add_argument("--inits", default="random,pretrained")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="MAE's epochs")
    parser.add_argument("--dino-epochs", type=int, default=6)
    parser.add_argument("--dino-size", type=int, default=64, help="DINO's global crop size (its local crops: half)")
    args = parser.parse_args()
    rows, results = [], {}
    for cells in args.cells.split(","):
        for method in args.methods.split(","):
            for init in args.inits.split(","):
                if method == "mae_recon" and init == "random":
                    continue
                found = fit(method, init, cells, args, args.out / cells)
                results[f"{cells}/{method}/{init}"] = found
                rows.append([cells, method, init, *(f"{100 * found[k]:.1f}" for k in SCORES),
                             f"{found['fit_seconds']:.0f}", int(found["memory_bank"] or 0) or "-", f"{found['peak_mb']:.0f}",
                             f"{found['images_per_s']:.1f}"])
    print(f"ELPV, good cells only for the fit, {args.image_size} px; test split, image AUROC %")
    print(dl.format_table(["cells", "method", "network", "prob 1", "prob 2/3", "all defects", "fit s",
                           "memory bank", "peak MB", "img/s"], rows))
    (args.out / "anomaly_elpv.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                            "results": results, "maxrss_self_mb":
                                                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
                                                           indent=2))


if __name__ == "__main__":
    main()
