"""ONNX Runtime against PyTorch on the CPU, one model per task, from raw images to answers (issue 14).

For each task a run is trained for one epoch on generated images (speed does not depend on
what the weights learnt), exported with ``defectlab export``, and both predictors answer the
same raw uint8 images in turns: the run's PyTorch model (``TorchPredictor``: Pillow resize, the
transform, the model, the model's own NMS) and the ONNX file (``ExportedModel``: the graph with
its resize, onnxruntime, the runtime's numpy NMS). Latency at batch 1 (median of ``--repeats``
calls) and images/s at batch 32 (median of the calls' rates), as ONNX / PyTorch ratios; the
sizes of best.pt, the .onnx and the .torchscript file. Both use every core (torch's default
threads, onnxruntime's default intra-op pool).

    .venv/bin/python benchmarks/export.py --out /tmp/export-bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import defectlab as dl

IMAGE = 300  # side of the raw grey images: ELPV's cells, resized by both predictors to each network's input
TASKS = {
    "classify (resnet18, 224)": {
        "data": {"dataset": {"name": "elpv", "cell_type": "mono", "binary": True}, "image_size": 224,
                 "label_fraction": 0.2, "batch_size": 16},
        "model": {"name": "resnet18"}, "train": {"epochs": 1}},
    "segment (unet-resnet18, 256)": {
        "data": {"dataset": {"name": "synthetic_cracks", "count": 20, "size": IMAGE}, "image_size": 256,
                 "batch_size": 4}, "model": {"name": "unet"}, "train": {"epochs": 1}},
    "detect (fcos-resnet18, 256)": {
        "data": {"dataset": {"name": "synthetic_defects", "count": 20, "size": IMAGE}, "image_size": 256,
                 "channels": 1, "batch_size": 4}, "model": {"name": "fcos"}, "train": {"epochs": 1}},
    "detect (yolov5n, 256)": {
        "data": {"dataset": {"name": "synthetic_defects", "count": 20, "size": IMAGE}, "image_size": 256,
                 "batch_size": 4, "augment": []}, "model": {"name": "yolov5"}, "train": {"epochs": 1}},
    "anomaly (patchcore-resnet18, 224)": {
        "data": {"dataset": {"name": "elpv", "cell_type": "mono"}, "image_size": 224, "batch_size": 16},
        "model": {"name": "patchcore", "coreset_ratio": 0.01}},
}


def timed(function, images, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls, after one warm-up call."""
    function(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(images)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/export-bench"))
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per predictor and batch size")
    parser.add_argument("--only", help="run only the tasks whose name contains this")
    args = parser.parse_args()
    from defectlab.workflows.predict import TorchPredictor, load_trained

    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 256, (IMAGE, IMAGE), dtype=np.uint8) for _ in range(32)]
    rows = []
    for name, config in TASKS.items():
        if args.only and args.only not in name:
            continue
        folder = args.out / name.split(" ")[1].strip("(,")
        if not (folder / "best.pt").is_file():
            dl.train(config, out=folder, overwrite=True)
        onnx = dl.export(folder, "onnx", folder / "best.onnx", overwrite=True, images=16)
        script = dl.export(folder, "torchscript", folder / "best.torchscript", overwrite=True, check=False)
        images = raw  # grey, as ELPV's cells: each side converts to the channels its network takes
        torch_side, onnx_side = TorchPredictor(load_trained(folder)), dl.load_exported(onnx.path)
        one, many = {}, {}
        for side, predictor in (("torch", torch_side), ("onnx", onnx_side)):  # in turns: the same load for both
            one[side] = statistics.median(timed(predictor.outputs, images[:1], args.repeats))
            many[side] = statistics.median(32 / t for t in timed(predictor.outputs, images, max(3, args.repeats // 2)))
        row = {"task": name, "exporter": onnx.exporter,
               "latency_ms_torch": 1000 * one["torch"], "latency_ms_onnx": 1000 * one["onnx"],
               "latency_ratio": one["onnx"] / one["torch"],
               "images_per_s_torch": many["torch"], "images_per_s_onnx": many["onnx"],
               "throughput_ratio": many["onnx"] / many["torch"],
               "mib_checkpoint": (folder / "best.pt").stat().st_size / 2 ** 20,
               "mib_onnx": onnx.path.stat().st_size / 2 ** 20, "mib_torchscript": script.path.stat().st_size / 2 ** 20,
               "parity": onnx.parity.summary()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| task | exporter | batch 1 latency ms, PyTorch / ONNX (ratio) | batch 32 images/s, PyTorch / ONNX "
          "(ratio) | MiB best.pt / .onnx / .torchscript |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['exporter']} | {r['latency_ms_torch']:.1f} / {r['latency_ms_onnx']:.1f} "
              f"({r['latency_ratio']:.2f}) | {r['images_per_s_torch']:.1f} / {r['images_per_s_onnx']:.1f} "
              f"({r['throughput_ratio']:.2f}) | {r['mib_checkpoint']:.1f} / {r['mib_onnx']:.1f} / "
              f"{r['mib_torchscript']:.1f} |")
    (args.out / "export.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
